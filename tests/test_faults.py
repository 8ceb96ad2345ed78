"""Fault injection: a run killed (SIGKILL) at random moments and at fault points, resumed with `--resume`, ends exactly
as an uninterrupted one (scripts/fault_check.py does it for every experiment; here two small ones, for CI)."""
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

def test_population_killed_inside_a_unit(tmp_path):
    # Table 1's two PEPITA rows train as one population of two, with dropout (a random draw per step): killed at a
    # random moment after an epoch's checkpoint, resumed from it, they must end with the same numbers, bit for bit.
    # (A kill between the two members' records, the other trained again alone: scripts/fault_check.py, `recorded`.)
    args = ['-p', 'entries', "['pepita', 'pepita/wd']", '-p', 'epochs', '6', '-p', 'milestones', '[]',
            '-p', 'hidden', '32', '-p', 'limit', '1000']
    moment = ('in-unit', round(random.Random(0).uniform(0, 0.01), 3))               # a random moment inside the unit
    r = check(tmp_path, 'table1_mlp_1hl', args, [moment])
    assert r['units'] == 2 and r['kills'][0]['units_done'] == 0 and r['kills'][0]['checkpoints'] == 1, \
        'the kill should land inside the population, its checkpoint on disk'

def test_clapp_killed_while_writing_its_checkpoint(tmp_path):
    "CLAPP++ pre-training killed while its second epoch's checkpoint is written: resumed from the first epoch's."
    args = ['-p', 'methods', "['clapp++']", '-p', 'epochs', '2', '-p', 'steps_per_epoch', '3', '-p', 'limit', '256',
            '-p', 'align_batches', '1']
    r = check(tmp_path, 'clapp_figA2_alignment', args, [('event', 'checkpoint:2')])
    assert r['kills'][0]['checkpoints'] == 1 and r['kills'][0]['temporaries'] >= 1
