"""Fault injection: a run killed (SIGKILL) at random moments and at fault points, resumed with `--resume`, ends exactly
as an uninterrupted one (scripts/fault_check.py over every experiment; here three small ones)."""
import random, sys
from conftest import ROOT

sys.path.insert(0, str(ROOT/'scripts'))
import fault_check as fc                                         # noqa: E402

def check(tmp_path, name:str, args:list, at:list) -> dict:
    "Kill `name` (with `args`) at the moments `at`, resume until done; no mismatch, no problem. Returns the summary."
    r = fc.check_experiment(name, len(at), random.Random(0), tmp_path, args=args, at=at, timeout=300)
    for k in r['kills']:
        print(f"{name}: {k}")
    assert r['kills'] and all(k['killed'] for k in r['kills']), f"a kill did not land: {r['kills']}"
    assert not r['problems'], r['problems']
    assert r['results_compared'] > 0 and not r['mismatches'], r['mismatches'][:5]
    return r

def test_bp_vs_fa_killed_at_random_moments_and_mid_checkpoint(tmp_path):
    args = ['-p', 'epochs', '4', '-p', 'milestones', '[]', '-p', 'seeds', '[0, 1]']   # 2 units, 4 checkpoints each
    moment = ('in-unit', round(random.Random(0).uniform(0, 0.5), 2))                # a random moment inside a unit
    r = check(tmp_path, 'bp_vs_fa', args, [moment, ('event', 'checkpoint:2')])
    assert r['kills'][1]['checkpoints'] == 1, 'the second kill should land inside a unit, its checkpoint on disk'

def test_population_killed_between_members(tmp_path):
    # Table 1's two PEPITA rows train as one population: killed after its first member is recorded, the other one is
    # trained again on resume (in a population of one) and must give the same numbers.
    args = ['-p', 'entries', "['pepita', 'pepita/wd']", '-p', 'epochs', '2', '-p', 'milestones', '[]',
            '-p', 'limit', '500', '-p', 'hidden', '32']
    r = check(tmp_path, 'table1_mlp_1hl', args, [('event', 'recorded:1')])
    assert r['units'] == 2 and r['kills'][0]['units_done'] == 1

def test_clapp_killed_while_writing_its_checkpoint(tmp_path):
    "CLAPP++ pre-training killed while its second epoch's checkpoint is written: resumed from the first epoch's."
    args = ['-p', 'methods', "['clapp++']", '-p', 'epochs', '2', '-p', 'steps_per_epoch', '3', '-p', 'limit', '256',
            '-p', 'align_batches', '1']
    r = check(tmp_path, 'clapp_figA2_alignment', args, [('event', 'checkpoint:2')])
    assert r['kills'][0]['checkpoints'] == 1 and r['kills'][0]['temporaries'] >= 1
