"""Divergence, in every experiment: a huge learning rate or scale given on the command line makes a unit diverge; it
must be recorded as a 'diverged' status row (epoch, step, message) and no final value of that unit may be a result.
Each case is one short `localrules run NAME --preset smoke -p ...` (pytest -n friendly: one run per test)."""
import json, math
import pytest
from conftest import cli
from localrules.runs import key_fields

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
}

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

def test_mlp_protocol_population_member_diverges_alone(tmp_path):
    """The nine experiments of the fully connected protocol (Tables 1-3, Figs. 2-3, Sup. Figs. 4-10) have no learning
    rate parameter (the paper's tables fix it): their one path, `train_units`, is driven here with a huge rate for one
    member of a population. That member is recorded diverged (epoch, step) with no final value; the other is a
    result."""
    from localrules.mlp_protocol import settings, train_units, load_data
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
