"Every experiment notebook runs end to end at its smoke preset and records real results."
import json, os, time
from pathlib import Path
import pytest
from conftest import cli
from localrules.cli import experiments
from localrules.runs import resolve_params

EXPERIMENTS = sorted(experiments())

def finals(out):
    rows = [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]
    return [r for r in rows if r['kind'] == 'final']

def value(rows, metric, **where):
    vs = [r['value'] for r in rows if r['metric'] == metric and all(str(r.get(k)) == str(v) for k, v in where.items())]
    assert vs, f'no {metric} row with {where}'
    return sum(vs) / len(vs)

SSL_METHODS = ['clapp++', 'clapp++_no2d', 'clapp++dfb', 'clapp++both', 'bp_clapp++', 'bp_infonce', 'dfa_ssl']

# What each smoke run must show beyond running (the issues' "done when" conditions).
# Chance is 10% on digits / Fashion-MNIST.
CHECKS = {
    'bp_vs_fa': lambda rs: value(rs, 'test_acc', rule='bp') > 50 and value(rs, 'test_acc', rule='fa') > 50,
    # issue 3: Table 1's MNIST column at smoke scale (real MNIST images: mnist5k) shows PEPITA and FA clearly above
    # chance
    'table1_mlp_1hl': lambda rs: all(value(rs, 'test_acc', rule=r, variant='base', dataset='mnist5k') > 50
                                     for r in ('pepita', 'fa')),
    # issue 4: NSM read-out clearly above the random-filter baseline; batched and conventional learn the same filters
    'sm_scalability': lambda rs: value(rs, 'nsm_minus_random') > 3 and value(rs, 'filter_cos_to_pytorch') > 0.999,
    'sm_supervision': lambda rs: value(rs, 'test_acc', part='alpha',
                                       alpha=1.0) > value(rs, 'test_acc', part='alpha', alpha=100.0),
    # issue 5: every Table 2 row lowers its own SSL objective on fixed views (a sign error in a rule raises it). The
    # "probe beats the random encoder" claim does not hold on Fashion-MNIST at this scale (both are recorded; see the
    # notebook's section on it, and the CIFAR-10 JPEG runs in the ledger, where it holds)
    'clapp_table2': lambda rs: (ms := {r['method'] for r in rs if r['metric'] == 'ssl_loss_start'}) == set(SSL_METHODS)
                    and all(value(rs, 'ssl_loss_end', method=m) < value(rs, 'ssl_loss_start', method=m) for m in ms),
    'clapp_fig2_theorem31': lambda rs: value(rs, 'min_cos', variant='theorem') > 1 - 1e-6,
    # Theorem 3.3 (linear f): direct feedback from the last layer is closer to the BP-SSL update than the same-layer
    # reference
    'clapp_fig3a_widths_dfb': lambda rs: (value(rs, 'sqdist', f='linear', rule='dfb')
                                          < value(rs, 'sqdist', f='linear', rule='local')),
    # issue 11: the user's ResNet-20 learns under every method and PEPITA its small convnet; sign-concordant feedback
    # aligns with BP better than FA/DFA
    'byom_resnet': lambda rs: (all(value(rs, 'test_acc', rule=m) > 50 for m in ('bp', 'fa', 'dfa', 'usf', 'pepita'))
                               and value(rs, 'angle_to_bp', rule='usf') < min(value(rs, 'angle_to_bp', rule=m)
                                                                              for m in ('fa', 'dfa'))),
}

@pytest.mark.parametrize('name', EXPERIMENTS)
def test_smoke(name, tmp_path):
    keep = os.environ.get('LOCALRULES_KEEP_RUNS')       # e.g. runs/: keep the folders for `localrules report`
    out = Path(keep)/name/'smoke-tests' if keep else tmp_path/name
    if out.exists():
        import shutil
        shutil.rmtree(out)
    t = time.time()
    cli('run', name, '--preset', 'smoke', '--out', out, '--quiet', check=True, timeout=900)
    took = time.time() - t
    assert (out/'DONE').exists(), 'run did not finish'
    rs = finals(out)
    assert rs, 'no final results recorded'
    assert all(r['preset'] == 'smoke' and r['commit'] and r['device'] for r in rs)
    assert list((out/'figures').glob('*.png')), 'no figure saved'
    if name in CHECKS:
        assert CHECKS[
            name](
                rs), f'{name}: smoke results do not show what they must: {[(r["metric"], r["value"]) for r in rs][:20]}'
    print(f'{name}: {took:.1f} s')

def test_experiment_metadata_is_complete():
    for name, e in experiments().items():
        m, presets = e['EXPERIMENT'], e['PRESETS']
        assert m['name'] == name and m.get('paper') and m.get('figure') and set(m.get('time', {})) >= {'smoke', 'paper'}
        assert set(presets) == {'smoke', 'paper'} and set(presets['smoke']) == set(presets['paper']), name
        missing = [k for k in presets['smoke'] if k not in e['params']]
        assert not missing, f'{name}: preset keys not in the parameters cell: {missing}'
        for k in ('preset', 'device', 'out_dir'): assert k in e['params'], f'{name}: no {k} parameter'
        # the notebook's own checks
        for p in presets: resolve_params(presets, p, {}, e['CHOICES'], e['SPEC'], e['RELATIONS'])

def test_paper_check_shrinks_every_experiment_with_real_parameters():
    """scripts/paper_check.py (paper presets end to end, shrunk) knows every experiment and only overrides its real
    parameters."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('paper_check', Path(__file__).parents[1]/'scripts'/'paper_check.py')
    pc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pc)
    assert set(pc.SHRINK) == set(EXPERIMENTS)
    for name, over in pc.SHRINK.items():
        e = experiments()[name]
        assert set(over) <= set(e['params']), f'{name}: {set(over) - set(e["params"])} are not parameters'
        resolve_params(e['PRESETS'], 'paper', over, e['CHOICES'], e['SPEC'], e['RELATIONS'])
