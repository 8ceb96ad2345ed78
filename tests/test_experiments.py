"Every experiment notebook runs end to end at its smoke preset and records real results."
import json, time
import pytest
from conftest import cli
from localrules.cli import experiments

EXPERIMENTS = sorted(experiments())

def finals(out):
    rows = [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]
    return [r for r in rows if r['kind'] == 'final']

def value(rows, metric, **where):
    vs = [r['value'] for r in rows if r['metric'] == metric and all(str(r.get(k)) == str(v) for k, v in where.items())]
    assert vs, f'no {metric} row with {where}'
    return sum(vs) / len(vs)

# What each smoke run must show beyond running (the issues' "done when" conditions).
CHECKS = {
    'bp_vs_fa': lambda rs: value(rs, 'test_acc', rule='bp') > 50 and value(rs, 'test_acc', rule='fa') > 50,
}

@pytest.mark.parametrize('name', EXPERIMENTS)
def test_smoke(name, tmp_path):
    out = tmp_path/name
    t = time.time()
    cli('run', name, '--preset', 'smoke', '--out', out, '--quiet', check=True, timeout=900)
    took = time.time() - t
    assert (out/'DONE').exists(), 'run did not finish'
    rs = finals(out)
    assert rs, 'no final results recorded'
    assert all(r['preset'] == 'smoke' and r['commit'] and r['device'] for r in rs)
    assert list((out/'figures').glob('*.png')), 'no figure saved'
    if name in CHECKS: assert CHECKS[name](rs), f'{name}: smoke results do not show what they must: {[(r["metric"], r["value"]) for r in rs][:20]}'
    print(f'{name}: {took:.1f} s')

def test_experiment_metadata_is_complete():
    for name, e in experiments().items():
        m, presets = e['EXPERIMENT'], e['PRESETS']
        assert m['name'] == name and m.get('paper') and m.get('figure') and set(m.get('time', {})) >= {'smoke', 'paper'}
        assert set(presets) == {'smoke', 'paper'} and set(presets['smoke']) == set(presets['paper']), name
        missing = [k for k in presets['smoke'] if k not in e['params']]
        assert not missing, f'{name}: preset keys not in the parameters cell: {missing}'
        for k in ('preset', 'device', 'out_dir'): assert k in e['params'], f'{name}: no {k} parameter'
