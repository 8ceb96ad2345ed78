"Fault injection: a run killed (SIGKILL) at random moments and resumed into its folder ends as an uninterrupted one."
import json, os, random, signal, subprocess, time
from pathlib import Path
import pytest
from conftest import cli, LOCALRULES, ROOT

ARGS = ['bp_vs_fa', '--quiet', '-p', 'epochs', '4', '-p', 'milestones', '[]', '-p', 'seeds', '[0, 1]']     # 4 units, checkpoints every epoch

def descendants(pid:int) -> list:
    "Every process below `pid` (the papermill kernel runs in a session of its own: killing the group misses it)."
    kids = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += kids.get(p, [])
        todo += kids.get(p, [])
    return out

def kill_all(proc):
    "SIGKILL the command and its kernel, as a machine crash would."
    for pid in [proc.pid] + descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()

def every_file_whole(out:Path):
    "No half-written file: every JSON and JSON-lines file parses, and so does the executed notebook."
    for p in out.rglob('*.json'):
        json.loads(p.read_text())
    for p in out.rglob('*.jsonl'):
        for line in p.read_text().splitlines(): json.loads(line)
    if (out/'notebook.ipynb').exists():
        json.loads((out/'notebook.ipynb').read_text())

def fresh_checkpoint(out:Path, since:float) -> bool:
    "Whether a checkpoint was written after `since` (the run is inside a unit)."
    cks = (out/'checkpoints').glob('*.pt') if (out/'checkpoints').exists() else []
    return any(p.stat().st_mtime > since for p in cks)

def snapshot(out:Path) -> dict:
    units = sorted((out/'units').glob('*.json')) if (out/'units').exists() else []
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in units}

def results(out:Path) -> dict:
    rows = [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]
    return {(r['kind'], r['rule'], r['seed'], r['metric'], r['step']): r['value'] for r in rows}

def test_sigkill_at_random_moments_then_resume(tmp_path):
    ref, out = tmp_path/'ref', tmp_path/'run'
    t0 = time.time()
    cli('run', *ARGS, '--out', ref, check=True)
    whole = time.time() - t0
    interrupted = 0
    rng = random.Random(0)
    kept = {}
    for i in range(3):
        proc = subprocess.Popen([LOCALRULES, 'run', *ARGS, '--out', str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        t = time.time()
        while proc.poll() is None and not fresh_checkpoint(out, t) and time.time() - t < 2 * whole:
            time.sleep(0.02)                                     # until an epoch of this attempt is checkpointed
        time.sleep(rng.uniform(0, 0.5))                          # then a random moment: mid-unit, mid-write, ...
        kill_all(proc)
        every_file_whole(out)
        now = snapshot(out)
        assert all(now[n] == v for n, v in kept.items()), 'a finished unit file changed'
        kept = now
        cks = len(list((out/'checkpoints').glob('*.pt'))) if (out/'checkpoints').exists() else 0
        print(f"kill {i + 1}: {len(now)} unit(s) finished, {cks} checkpoint(s)")
        interrupted += cks > 0
    assert not (out/'DONE').exists() or len(kept) == 4
    p = cli('run', *ARGS, '--out', out, check=True)
    every_file_whole(out)
    assert all(snapshot(out)[n] == v for n, v in kept.items()), 'a finished unit file changed on resume'
    assert (out/'DONE').exists() and len(snapshot(out)) == 4
    got, want = results(out), results(ref)
    assert set(got) == set(want)                                   # the same rows: every unit, every epoch
    finals = {k: v for k, v in want.items() if k[0] == 'final'}
    assert {k: got[k] for k in finals} == finals                   # identical numbers, not close ones
    assert got == want
    assert interrupted, 'no kill landed inside a unit: the test did not exercise resuming from a checkpoint'
