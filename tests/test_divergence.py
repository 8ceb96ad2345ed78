"""Divergence, in every experiment: a huge learning rate or scale given on the command line makes a unit diverge; it
must be recorded as a 'diverged' status row (epoch, step, message) and no final value of that unit may be a result.
Each case is one short `localrules run NAME --preset smoke -p ...` (pytest -n friendly: one run per test).

The nine experiments of the fully connected protocol (2302.05440: Tables 1-3, Figs. 2a and 3, Sup. Figs. 5, 6, 8, 9-10)
take their learning rates from the paper's tables; their `lr_scale` multiplies every rule's rate, and drives them here
on 200 training digits, 16 hidden units, one epoch. Their run must also train exactly the units that
`mlp_protocol.preset_units` (the cost `localrules list` shows) counts for the run's parameters.

The four CLAPP theory experiments (clapp_fig2_theorem31, clapp_fig3a_widths_dfb, clapp_fig4b_linear_cnn,
clapp_figA1_lowrank) train no network by gradient steps: each unit fits the loss's linear predictors with LBFGS under a
strong-Wolfe line search (`clapp_theory.fit_predictor`, which accepts only steps that lower the loss) and measures the
alignment of the CLAPP updates with BP's (2601.21683, Theorem 3.1). No parameter sets a step size; their scale is the
predictors' L2 strength `lam`, and `lam` 1e308 makes the fit's loss infinite: `fit_predictor` raises `Diverged` and
`run.unit` records the unit diverged."""
import json, math, tempfile
from pathlib import Path
import pytest
from conftest import cli
from localrules.store import key_fields
from localrules.margins import assert_margins, register_check
from localrules.protocols.mlp_protocol import preset_units

BIG = 1e30
# experiment -> the overrides that make (at least) one unit diverge, kept small so that each run takes seconds
CASES = {
    'bp_vs_fa': {'lr': BIG, 'epochs': 1, 'milestones': []},
    'byom_resnet': {'rules': ['pepita'], 'pepita_F_scale': BIG, 'pepita_lr': BIG, 'epochs': 1, 'milestones': [],
                    'limit': 500},
    'clapp_fig3b_mlp_mnist': {'lr': BIG, 'epochs': 1, 'variants': ['local']},
    'clapp_fig4c_alignment': {'lr': BIG, 'methods': ['clapp++'], 'epochs': 1, 'steps_per_epoch': 3, 'limit': 300},
    'clapp_figA2_alignment': {'lr': BIG, 'methods': ['clapp++'], 'epochs': 1, 'steps_per_epoch': 3, 'limit': 300},
    'clapp_table2': {'lr': BIG, 'methods': ['clapp++'], 'steps_per_epoch': 3, 'limit': 300, 'probe_epochs': 1},
    'fig2b_ode_theory': {'lr': BIG, 'seeds': [0], 'rules': ['afa'], 'n_mc': 1000},
    'supfig7_feedback_norm': {'lr': BIG, 'init_seeds': [0]},
    'supfig4_time_local': {'lr': BIG, 'epochs': 1, 'milestones': []},
    'sm_scalability': {'lr': BIG, 'epochs': 1},
    'sm_kmeans_baseline': {'lr': BIG, 'epochs': 1, 'filters': [4], 'kmeans_extra': []},
    'sm_supervision': {'lr': BIG, 'epochs': 1, 'mlp_rules': ['bp'], 'mlp_lr': {'bp': BIG}, 'mlp_epochs': 1,
                       'alphas': [1.0]},
    'sm_pretraining': {'pre_lr': [BIG, BIG], 'ft_lr': BIG, 'pre_epochs': 1, 'ft_epochs': 1, 'inits': ['nsm'],
                       'n_train': 300, 'n_test': 200},
    'sm_depth_speed': {'lr': BIG, 'depths': [1], 'repeats': 1},
    'sm_cifar_study': {'rates': [[BIG, BIG]], 'filters': [4], 'preps': ['white'], 'dynamics': ['fixed40'],
                       'extra': [], 'epochs': 1},
    # the CLAPP theory experiments: an infinite L2 term makes the LBFGS fit's loss inf (no step size to push)
    'clapp_fig2_theorem31': {'lam': 1e308, 'max_iter': 5, 'variants': ['theorem']},
    'clapp_fig3a_widths_dfb': {'lam': 1e308, 'max_iter': 5, 'fs': ['linear']},
    'clapp_fig4b_linear_cnn': {'lam': 1e308, 'max_iter': 5, 'variants': ['independent']},
    'clapp_figA1_lowrank': {'lam': 1e308, 'max_iter': 5, 'ranks': [1]},
}
# the fully connected protocol: its smoke units on 200 training digits, 16 hidden units, one epoch
TINY = {'lr_scale': BIG, 'epochs': 1, 'milestones': [], 'hidden': 16, 'limit': 200}
MLP_CASES = {
    'fig2_pepita_afa_alignment': TINY,
    'fig3_depth_init_wd_angle': dict(TINY, premirror_epochs=0),
    'supfig5_goodness': dict(TINY, snapshots=[0, 1]),
    'supfig6_pepita_afa_cifar': dict(TINY, datasets=['digits']),
    # batch-normalised PEPITA keeps a finite loss at lr x 1e30 (it sits at 10-15 %, chance: no unit diverges there);
    # x 1e38 puts its rate (100 x 1e38) beyond float32 and every depth diverges at epoch 1, step 2
    'supfig8_depth_norm': dict(TINY, lr_scale=1e38),
    'supfig9_10_angles': dict(TINY, premirror_epochs=0),
    'table1_mlp_1hl': dict(TINY, datasets=['digits']),
    'table2_mlp_deep': dict(TINY, datasets=['digits']),
    'table3_slowness': dict(TINY, datasets=['digits'], epochs=2, window=2, premirror_epochs=0),    # a slope: 2 epochs
}
CASES.update(MLP_CASES)

def _rows(out) -> list:
    return [json.loads(line) for line in (out/'results.jsonl').read_text().splitlines()]

@pytest.mark.parametrize('name', sorted(CASES))
def test_divergence_is_recorded_not_a_result(name, tmp_path):
    out = tmp_path/name
    args = [a for k, v in CASES[name].items() for a in ('-p', k, repr(v))]
    p = cli('run', name, '--preset', 'smoke', *args, '--out', out, '--quiet', timeout=600)
    assert p.returncode == 0, p.output[-3000:]
    rows = _rows(out)
    diverged = [r for r in rows if r['kind'] == 'status' and r.get('status') == 'diverged']
    assert diverged, f"{name}: no unit marked diverged:\n{p.output[-2000:]}"
    for d in diverged:
        assert d.get('message') and 'finite' in d['message'], d
        assert d.get('epoch') is not None or d.get('step') is not None, f"no epoch or step: {d}"
        unit = dict(key_fields(d), seed=d.get('seed'))
        results = [r for r in rows if r['kind'] == 'final' and dict(key_fields(r), seed=r.get('seed')) == unit]
        assert not results, f"{name}: the diverged unit {unit} has final values recorded: {results[:3]}"
    said = json.loads((out/'notebook.ipynb').read_text())
    said = ''.join(''.join(o.get('text', '')) for c in said['cells'] for o in c.get('outputs', []))
    assert 'DIVERGED' in said, f"{name}: the run does not say that a unit diverged"
    params = json.loads((out/'run.json').read_text())['params']
    if name in MLP_CASES:                    # issue 25: the cost counts the units the run trains, no more, no less
        units = {json.dumps(dict(key_fields(r), seed=r.get('seed')), sort_keys=True) for r in rows
                 if r['kind'] in ('final', 'status')}
        assert len(units) == len(preset_units(params, name)), (name, len(units), preset_units(params, name))
    elif name == 'supfig4_time_local':
        units = {(r['feedback'], r['seed']) for r in rows if r['kind'] in ('final', 'status')}
        assert len(units) == len(preset_units(params, name)) == 2 * len(params['seeds']), units

def test_mlp_protocol_population_member_diverges_alone(tmp_path):
    """The nine experiments of the fully connected protocol (Tables 1-3, Figs. 2-3, Sup. Figs. 4-10) have no learning
    rate parameter (the paper's tables fix it): their one path, `train_units`, is driven here with a huge rate for one
    member of a population. That member is recorded diverged (epoch, step) with no final value; the other is a
    result."""
    from localrules.protocols.mlp_protocol import settings, train_units, load_data
    from localrules.runs import Run
    run = Run(tmp_path/'run', 'demo', 'smoke', {})
    data = load_data('digits', str(tmp_path/'data'), 'cpu', False, limit=300)
    units = [(dict(rule='bp', variant='base', dataset='digits', depth=1, seed=s),
              settings('bp', 'digits', 1, 'base', hidden=16, epochs=2, lr=lr, milestones=[]), s)
             for s, lr in ((0, BIG), (1, 0.05))]
    train_units(run, units, data, 'cpu', on_done=None)
    status, finals = run.rows('status'), run.rows('final')
    # step 1's loss is on the initial weights (finite); its update of 1e30 x the gradient makes step 2's non-finite
    assert [(r['seed'], r['status'], r['epoch'], r['step']) for r in status] == [(0, 'diverged', 1, 2)], status
    assert 'non-finite loss at epoch 1, step 2' in status[0]['message']
    assert {r['seed'] for r in finals} == {1} and all(math.isfinite(r['value']) for r in finals)

def _collapse_run(seed:int, folder) -> tuple:
    "BP on the digits, one population of two: lr x 100 after epoch 1 ('blowup') and the protocol's x 0.1 ('healthy')."
    from localrules.protocols.mlp_protocol import settings, train_units, load_data
    from localrules.runs import Run
    run = Run(Path(folder)/'run', 'demo', 'smoke', {})
    data = load_data('digits', str(Path(folder)/'data'), 'cpu', False)
    units = [(dict(rule='bp', variant=v, dataset='digits', depth=1, seed=seed),
              settings('bp', 'digits', 1, 'base', hidden=32, epochs=3, milestones=[1], gamma=g), seed)
             for v, g in (('blowup', 100.), ('healthy', 0.1))]
    train_units(run, units, data, 'cpu', on_done=None)
    return run


def _collapse_numbers(run) -> dict:
    "The healthy unit's final test accuracy and the collapsed unit's after epoch 1 and at the end (%)."
    finals = [r for r in run.rows('final') if r['metric'] == 'test_acc']
    curve = [r['value'] for r in run.rows('curve') if r['variant'] == 'blowup' and r['metric'] == 'test_acc']
    return dict(healthy=next((r['value'] for r in finals if r['variant'] == 'healthy'), float('nan')),
                epoch1=curve[1], end=curve[-1])


@register_check('divergence.collapse', 'tests/test_divergence.py::test_collapse_to_chance_is_recorded_not_a_result',
                'BP on digits, lr x 100 after epoch 1: > 70 % after epoch 1, < 15.28 % at the end (flagged); '
                'its partner with the x 0.1 decay ends > 80 %',
                margins=lambda r: {'healthy > 80': r['healthy'] - 80, 'epoch 1 > 70': r['epoch1'] - 70,
                                   'end < 15.28': 15.28 - r['end']})
def collapse_numbers(seed:int=0) -> dict:
    "`_collapse_numbers` of `_collapse_run` from `seed`, in a temporary folder."
    with tempfile.TemporaryDirectory() as d: return _collapse_numbers(_collapse_run(seed, d))


def test_collapse_to_chance_is_recorded_not_a_result(tmp_path):
    """A unit whose loss stays finite but whose accuracy falls back to chance after it had learned is no result: BP on
    the digits (Table 4's MNIST settings, 32 hidden units) learns in epoch 1, then its learning rate x 100 kills the
    network (loss ln 10, every input the same class). `fit` flags it, `train_units` records it diverged with the
    reason and the epoch it reached chance; its population partner with the protocol's decay (x 0.1) is a result.
    Over seeds 0-4: the collapsed unit is at 76.4-86.9 % after epoch 1 and at 10.0 % at the end (flagged at <= 15.28 %:
    the most frequent test class, 10.28 %, + 5); the healthy one ends at 84.2-91.1 % (the margins of the flag itself:
    `train._CHANCE_MARGIN`)."""
    run = _collapse_run(0, tmp_path)
    status, finals = run.rows('status'), run.rows('final')
    assert [(r['variant'], r['status'], r['epoch']) for r in status] == [('blowup', 'diverged', 2)], status
    assert 'collapsed to chance at epoch 2' in status[0]['message'], status[0]['message']
    assert {r['variant'] for r in finals} == {'healthy'}
    # worst margins over seeds 0-4: healthy 84.17 (seed 1) - 80, epoch 1 76.39 - 70, end 10.0 vs 15.28
    assert_margins('divergence.collapse', _collapse_numbers(run))
