"Shards and claims: a run split over submitit jobs trains each unit once and gives the numbers of one unsharded run."
import json, multiprocessing, os, re, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import cli, REF_ARGS
from localrules.store import _Holder
from localrules.runs import Run, unit_shard

SMOKE = REF_ARGS          # 4 units (bp, fa) x (seed 0, 1), the arguments of conftest's bp_vs_fa_ref

def finals(out):
    rows = [json.loads(l) for l in (Path(out)/'results.jsonl').read_text().splitlines()]
    return {(r['rule'], r['seed'], r['metric']): r['value'] for r in rows if r['kind'] == 'final'}

def trained(nb) -> list:
    "The units a notebook trained (its 'rule seed s: test accuracy' lines)."
    cells = json.loads(Path(nb).read_text())['cells']
    text = ''.join(''.join(o.get('text', '')) for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', []))
    return re.findall(r'\b(bp|fa) seed (\d+): test accuracy', text)

def test_submitit_local_shards_then_gather(tmp_path, bp_vs_fa_ref):
    ref, out = bp_vs_fa_ref, tmp_path/'sharded'           # ref: one unsharded run with the same SMOKE arguments
    p = cli('run', 'bp_vs_fa', '--out', out, *SMOKE, '--executor', 'local', '--shards', '2', check=True)
    assert 'shards done; gathering' in p.output and (out/'DONE').exists()
    runs = [trained(nb) for nb in sorted((out/'shards').glob('notebook-*-of-2.ipynb'))]
    gather = trained(out/'notebook.ipynb')
    assert len(runs) == 2 and gather == []                       # the gather trains nothing: every unit was done
    every = runs[0] + runs[1]
    assert sorted(every) == sorted(set(every)) and len(every) == 4, runs   # each unit trained once, by one shard
    assert not (out/'claims').exists()                           # every claim released, the folder removed at the end
    units = sorted(p.name for p in (out/'units').glob('*.json'))
    assert units == sorted(p.name for p in (ref/'units').glob('*.json'))
    assert finals(out) == finals(ref) and len(finals(ref)) == 8   # the same numbers as one unsharded run
    meta = json.loads((out/'run.json').read_text())
    assert meta['resumed'] == 2                                  # two shards and the gather shared one run.json

def test_shard_needs_out_and_fits_its_range(tmp_path):
    p = cli('run', 'bp_vs_fa', '--shard', '0/2')
    assert p.returncode != 0 and '--shard needs --out' in p.output
    p = cli('run', 'bp_vs_fa', '--shard', '2/2', '--out', tmp_path/'r')
    assert p.returncode != 0 and "must be 'I/N' with 0 <= I < N" in p.output
    p = cli('run', 'bp_vs_fa', '--shards', '2', '--out', tmp_path/'r')
    assert p.returncode != 0 and '--executor local|slurm and --shards N go together' in p.output

# --- claims across processes --------------------------------------------------------------------------------------

KEYS = [dict(rule=r, seed=s) for r in ('bp', 'fa') for s in range(6)]

def _worker(d, go, shard, q):
    os.environ.pop('LOCALRULES_SHARD', None)
    run = Run(d, 'demo', 'smoke', {'lr': 0.1}, shard=shard)
    go.wait()
    got = []
    for k in KEYS:
        if run.claim(**k):
            got.append(k)
            time.sleep(0.01)                                     # "train"
            run.record(k, {'acc': 1.})
    q.put((os.getpid(), got))

def race(d, n, shards=None):
    ctx = multiprocessing.get_context('fork')
    go, q = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(d, go, shards and f'{i % shards}/{shards}', q)) for i in range(n)]
    for p in ps: p.start()
    go.set()
    # 300 s: on a loaded shared machine four forked workers took over 60 s (a deadlock still fails, only later)
    res = [q.get(timeout=300) for _ in ps]
    for p in ps: p.join(timeout=300)
    return res

def test_racing_processes_claim_each_unit_once(tmp_path):
    res = race(tmp_path, 4)
    claimed = [json.dumps(k, sort_keys=True) for _, got in res for k in got]
    assert len(claimed) == len(KEYS) == len(set(claimed))         # every unit once, none twice
    meta = json.loads((tmp_path/'run.json').read_text())
    assert meta['resumed'] == 3                                   # 4 processes opened the run: none lost

def test_racing_takeover_of_dead_claims(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()                                                      # its pid is dead now
    Run(tmp_path, 'demo', 'smoke', {'lr': 0.1})
    for k in KEYS:
        dead = dict(_Holder.info(key=k), pid=p.pid, pid_start=None)
        name = '-'.join(f'{a}={b}' for a, b in sorted(k.items()))
        (tmp_path/'claims'/f'{name}.json').write_text(json.dumps(dead))
    res = race(tmp_path, 4)
    claimed = [json.dumps(k, sort_keys=True) for _, got in res for k in got]
    assert len(claimed) == len(KEYS) == len(set(claimed))
    assert not list((tmp_path/'claims').glob('*.json'))            # all released after recording

def test_sharded_processes_split_the_units(tmp_path):
    res = race(tmp_path, 4, shards=2)                             # two processes per shard
    claimed = [json.dumps(k, sort_keys=True) for _, got in res for k in got]
    assert len(claimed) == len(KEYS) == len(set(claimed))
    for pid, got in res:
        assert len({unit_shard(k, 2) for k in got}) <= 1           # a process trains only its shard's units

def _slow_holder(d, go, done):
    run = Run(d, 'demo', 'smoke', {'lr': 0.1})
    assert run.claim(seed=0)
    go.set()
    time.sleep(1.5)
    run.record(dict(seed=0), {'acc': 7.})
    done.set()

def _holder_started(tmp_path):
    "(process, run, done): another worker holding unit seed=0, and this worker's view of the run."
    ctx = multiprocessing.get_context('fork')
    go, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_slow_holder, args=(tmp_path, go, done))
    p.start()
    assert go.wait(30)
    return p, Run(tmp_path, 'demo', 'smoke', {'lr': 0.1}), done

def test_unsharded_workers_wait_for_each_other(tmp_path):
    "A second unsharded worker skips the unit another live worker trains, and waits for it before reading results."
    p, run, done = _holder_started(tmp_path)
    assert not run.claim(seed=0)                                  # held by a live worker
    assert run.claim(seed=1)
    run.record(dict(seed=1), {'acc': 8.})
    rows = run.rows('final')                                      # waits for seed 0
    assert done.is_set() and sorted(r['value'] for r in rows) == [7., 8.]
    p.join(30)

def test_waiting_for_a_worker_that_died_says_what_to_do(tmp_path):
    p, run, done = _holder_started(tmp_path)
    assert not run.claim(seed=0)
    p.kill()
    p.join(30)
    with pytest.raises(RuntimeError, match='stopped before finishing it; run again into the same folder'):
        run.rows()
