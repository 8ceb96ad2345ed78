#!/usr/bin/env python
"""Fault injection over the experiments: kill smoke runs with SIGKILL at random moments, resume them, compare.

For every experiment notebook (or `--experiments a,b`), the smoke preset (shrunk with `-p` where listed in `SHRINK`)
runs once uninterrupted (or a given `--reference NAME=DIR` is reused). Then one run is started and killed `--kills`
times (default 3), each attempt continuing the previous one with `localrules run NAME --resume`:
the first kill at a random time (with `--signals` a SIGINT or SIGTERM, as a user stops a run: it must exit with one
line, no traceback and no kernel left), the others at the N-th fault point of a kind (`LOCALRULES_FAULT_AT`, see
`localrules.store.fault_point`): a checkpoint or unit result written but not yet renamed into place, a unit just
recorded before its checkpoint is removed, any atomic write (run.json, figures, results.jsonl, DONE). The kernel stops
itself there (SIGSTOP) and is SIGKILLed with the command, as a machine crash would. A last `--resume` finishes it.

Checked: every recorded result (unit rows, results.jsonl; provenance fields and wall-clock metrics excluded) equals the
uninterrupted run's exactly; after every kill the visible files are whole and the units finished before it keep their
bytes, inode and mtime; when done, no temporary file, checkpoint, claim or failed notebook is left and every file is
readable by others (mode 0644). Writes a JSON summary (default benchmarks/results/fault_check.json) after each
experiment; exits 1 on any mismatch or problem.

    nice -n 15 python scripts/fault_check.py                       # every experiment
    python scripts/fault_check.py --experiments bp_vs_fa --kills 2 --out /tmp/fc.json
"""
import argparse, contextlib, datetime, json, os, platform, random, re, shutil, signal, socket, subprocess, sys
import tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALRULES = str(Path(sys.executable).parent/'localrules')       # the installed console command
FAULT_ENV = 'LOCALRULES_FAULT_AT'

# Smoke presets whose run is long here (over ~1 min on one shared CPU thread), shrunk with -p overrides.
SHRINK = {
    'clapp_table2': ['-p', 'methods', "['clapp++', 'bp_infonce']", '-p', 'steps_per_epoch', '30',
                     '-p', 'probe_epochs', '3', '-p', 'probe_layers', '[0, 5]'],
    'byom_resnet': ['-p', 'rules', "['bp', 'dfa']", '-p', 'epochs', '3', '-p', 'milestones', '[2]'],
}
PROVENANCE = ('run_id', 'commit', 'device', 'torch', 'date', 'tf32')    # differ between runs by design
WALL_CLOCK = re.compile(r'(epoch_time|seconds|images_per_s|ms_per_image.*|sec_per_epoch|speedup.*)')   # not compared


# ---- processes ----
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

def stopped(proc) -> bool:
    "Whether a process of the command (its kernel) stopped itself at a fault point (state T)."
    for pid in descendants(proc.pid):
        try:
            if Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] in 'Tt':
                return True
        except (OSError, IndexError):
            pass
    return False

def start(name:str, args:list, runs:Path, resume:bool, log:Path, fault:str=None):
    "`localrules run NAME ARGS --runs RUNS [--resume]` in the background (output appended to `log`)."
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    cmd = [LOCALRULES, 'run', name, '--device', 'cpu', '--quiet', '--runs', str(runs), *args] + (['--resume'] * resume)
    with open(log, 'a') as f:
        f.write(f"\n$ {FAULT_ENV}={fault or ''} {' '.join(cmd)}\n")
        f.flush()
        return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)

def finished(out) -> bool:
    "Whether run folder `out` is complete: DONE written by the kernel, the executed notebook saved by the command."
    return bool(out) and (out/'DONE').exists() and (out/'notebook.ipynb').exists()

def run_folder(runs:Path, name:str):
    "The one run folder of `name` under `runs` (None before the first attempt made it)."
    dirs = sorted((runs/name).glob('*')) if (runs/name).exists() else []
    if len(dirs) > 1:
        raise RuntimeError(f"{runs/name} holds {len(dirs)} run folders; --resume should have continued one")
    return dirs[0] if dirs else None


# ---- files ----
def problems_after_kill(out:Path) -> list:
    "No half-written visible file: every JSON, JSON-lines and notebook file under `out` parses."
    bad = []
    for p in sorted(out.rglob('*')):
        if not p.is_file() or p.name.startswith('.'):
            continue
        try:
            if p.suffix in ('.json', '.ipynb'):
                json.loads(p.read_text())
            elif p.suffix == '.jsonl':
                for line in p.read_text().splitlines():
                    json.loads(line)
            elif p.suffix == '.png' and not p.read_bytes().endswith(b'IEND\xaeB`\x82'):
                bad.append(f"{p.relative_to(out)}: a truncated PNG")
        except (ValueError, UnicodeDecodeError) as e:
            bad.append(f"{p.relative_to(out)}: half-written ({type(e).__name__}: {e})")
    return bad

def leftovers(out:Path) -> list:
    """What a finished run folder must not hold: temporary files, checkpoints, claims, locks, failed notebooks, files
    not readable by others, half-written files; or lack: DONE, results.jsonl, notebook.ipynb."""
    bad = [f"{p.relative_to(out)}: left over" for p in sorted(out.rglob('*')) if p.is_file() and
           (p.name.startswith('.') or p.suffix == '.lock' or p.parent.name in ('claims', 'checkpoints')
            or p.name.endswith('.failed.ipynb'))]
    bad += [f"{p.relative_to(out)}: mode {oct(p.stat().st_mode & 0o777)}, not readable by others"
            for p in sorted(out.rglob('*')) if p.is_file() and not p.stat().st_mode & 0o004]
    bad += [f"{n} missing" for n in ('DONE', 'results.jsonl', 'notebook.ipynb') if not (out/n).exists()]
    return bad + problems_after_kill(out)

def snapshot(out:Path) -> dict:
    "{unit file: (bytes, inode, mtime_ns)} of the finished units of run folder `out`."
    units = sorted((out/'units').glob('*.json')) if out and (out/'units').exists() else []
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in units}

def checkpoints(out:Path) -> set:
    "{(name, mtime_ns)} of the checkpoints in `out` now."
    cks = (out/'checkpoints').glob('*.pt') if out and (out/'checkpoints').exists() else []
    out = set()
    for p in cks:
        try:
            out.add((p.name, p.stat().st_mtime_ns))
        except FileNotFoundError:
            pass
    return out


# ---- results ----
def comparable(row:dict) -> dict:
    "A result row without the fields that differ between runs by design (provenance)."
    return {k: v for k, v in row.items() if k not in PROVENANCE}

def wall_clock(row:dict) -> bool: return bool(row.get('metric') and WALL_CLOCK.fullmatch(str(row['metric'])))

def unit_rows(out:Path) -> dict:
    "{unit file: [comparable rows]} of run folder `out`."
    return {p.name: [comparable(r) for r in json.loads(p.read_text())] for p in sorted((out/'units').glob('*.json'))}

def compare_rows(want:list, got:list, where:str) -> tuple:
    "(values compared, wall-clock values skipped, mismatches) of two lists of rows, in order."
    if len(want) != len(got):
        return 0, 0, [f"{where}: {len(got)} rows, {len(want)} in the uninterrupted run"]
    n, skipped, bad = 0, 0, []
    for a, b in zip(want, got):
        if wall_clock(a) and wall_clock(b) and {**a, 'value': 0} == {**b, 'value': 0}:
            skipped += 1
            continue
        n += 1
        if a != b:
            diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
            what = {k: a.get(k) for k in ('kind', 'metric', 'step', 'seed')}
            bad.append(f"{where} {what}: (uninterrupted, resumed) = {diff}")
    return n, skipped, bad

def compare_runs(ref:Path, got:Path) -> tuple:
    "(values compared, skipped, mismatches) between two finished run folders: every unit, then results.jsonl."
    want, have = unit_rows(ref), unit_rows(got)
    bad = [f"unit {u}: missing after resume" for u in sorted(set(want) - set(have))]
    bad += [f"unit {u}: not in the uninterrupted run" for u in sorted(set(have) - set(want))]
    n = skipped = 0
    for u in sorted(set(want) & set(have)):
        c, s, b = compare_rows(want[u], have[u], f"unit {u}")
        n, skipped, bad = n + c, skipped + s, bad + b
    lines = [[comparable(json.loads(line)) for line in (d/'results.jsonl').read_text().splitlines()]
             for d in (ref, got)]
    _, _, b = compare_rows(*lines, 'results.jsonl')
    return n, skipped, bad + b


# ---- one experiment ----
def reference_run(name:str, args:list, work:Path, timeout:float) -> dict:
    "Run `name` uninterrupted into work/ref; watch its checkpoints (how many it writes, seen by polling)."
    runs = work/'ref'
    work.mkdir(parents=True, exist_ok=True)
    t0, seen, began = time.time(), set(), None
    proc = start(name, args, runs, False, work/'log.txt')
    while proc.poll() is None and time.time() - t0 < timeout:
        out = run_folder(runs, name)
        seen |= checkpoints(out)
        if began is None and out and (out/'run.json').exists():
            began = time.time() - t0                     # the kernel has started the run: work begins
        time.sleep(0.01)
    if proc.poll() is None:
        kill_all(proc)
        raise RuntimeError(f"the uninterrupted run of {name} took over {timeout:.0f} s")
    if proc.returncode:
        raise RuntimeError(f"the uninterrupted run of {name} failed (rc {proc.returncode}); see {work/'log.txt'}")
    seconds = time.time() - t0
    return dict(dir=run_folder(runs, name), seconds=seconds, startup=began or 0., checkpoints=len(seen))

def moments(rng:random.Random, i:int, ref:dict, out:Path) -> tuple:
    "Kill `i`'s moment: ('time', seconds after the kernel started the run) first, then ('event', 'EVENT:N')."
    if i == 0:
        return 'time', round(rng.uniform(0.05, 0.8) * (ref['seconds'] - ref['startup']), 2)
    left = ref['units'] - len(snapshot(out)) if out else ref['units']
    per_unit = max(1, ref['checkpoints'] // max(ref['units'], 1))
    cks = bool(ref['checkpoints']) and left > 0
    events = ['write'] + ['unit', 'recorded'] * (left > 0) + ['checkpoint'] * cks
    event = 'checkpoint' if i == 1 and cks else rng.choice(events)      # a kill while a checkpoint is written
    most = {'write': 3, 'checkpoint': min(3, per_unit * left)}.get(event, min(3, left))
    return 'event', f'{event}:{rng.randint(1, most)}'

def attempt(name:str, args:list, runs:Path, moment:tuple, resume:bool, work:Path, timeout:float) -> dict:
    """Start (or resume) the run and SIGKILL it at `moment`: ('time', s after its kernel started the run), ('in-unit', s
    after its first checkpoint), ('event', 'EVENT:N') (the fault point); returns what happened."""
    kind, at = moment
    t0 = began = time.time()
    logged = (work/'log.txt').stat().st_size if (work/'log.txt').exists() else 0
    proc = start(name, args, runs, resume, work/'log.txt', fault=at if kind == 'event' else None)
    while proc.poll() is None and time.time() - t0 < timeout:
        out = run_folder(runs, name)
        if kind == 'time' and began == t0 and out and (out/'run.json').exists() and \
                (out/'run.json').stat().st_mtime >= t0:
            began = time.time()                          # this attempt's kernel has (re)started the run
        if kind == 'in-unit' and began == t0 and any(m / 1e9 >= t0 for _, m in checkpoints(out)):
            began = time.time()                          # this attempt has written a checkpoint: it is inside a unit
        if kind in SIGNALS and began == t0 and out and (out/'run.json').exists() and \
                (out/'run.json').stat().st_mtime >= t0:
            began = time.time()
        if (kind != 'event' and began > t0 and time.time() - began >= at) or (kind == 'event' and stopped(proc)):
            break
        time.sleep(0.01)
    killed = proc.poll() is None
    told = []
    if killed and kind in SIGNALS:
        told = signal_stop(proc, SIGNALS[kind], work/'log.txt', logged)
    elif killed:
        kill_all(proc)
    when = {'time': f'{at} s after the run started', 'in-unit': f'{at} s after a checkpoint'}.get(kind, at)
    if kind in SIGNALS: when = f'{kind.upper()} {at} s after the run started'
    return dict(moment=f"{kind} {when}", killed=killed, signal_problems=told,
                seconds=round(time.time() - t0, 2), rc=None if killed else proc.returncode)

SIGNALS = {'sigint': signal.SIGINT, 'sigterm': signal.SIGTERM}    # moments that stop the run with a signal instead

def signal_stop(proc, sig:int, log:Path, offset:int) -> list:
    """Stop the command with `sig` as a user would (SIGINT: Ctrl-C, to its process group; SIGTERM: to it) and check
    what `localrules run` promises: it exits with 128 + sig within 30 s, printing one 'stopped by' line and no
    traceback, and leaves no kernel running. Returns the problems."""
    kernels = descendants(proc.pid)
    if sig == signal.SIGINT: os.killpg(proc.pid, sig)
    else: proc.send_signal(sig)
    try: proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_all(proc)
        return [f"{signal.Signals(sig).name}: the command did not exit within 30 s"]
    text = log.read_text(errors='replace')[offset:]
    lines = [line for line in text.splitlines() if line.startswith('stopped by')]
    problems = []
    if proc.returncode != 128 + sig: problems.append(f"{signal.Signals(sig).name}: exit status {proc.returncode}")
    if len(lines) != 1: problems.append(f"{signal.Signals(sig).name}: {len(lines)} 'stopped by' lines, not one")
    if 'Traceback' in text: problems.append(f"{signal.Signals(sig).name}: a traceback was printed")
    time.sleep(1)
    alive = [k for k in kernels if Path(f'/proc/{k}').exists() and stopped_or_running(k)]
    if alive: problems.append(f"{signal.Signals(sig).name}: processes left running: {alive}")
    for k in alive:
        with contextlib.suppress(ProcessLookupError): os.kill(k, signal.SIGKILL)
    return problems

def stopped_or_running(pid:int) -> bool:
    "Whether `pid` is a live process (not a zombie waiting for its parent)."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError): return False

def check_experiment(name:str, kills:int, rng:random.Random, work:Path, reference:Path=None, timeout:float=900,
                     args:list=None, # `-p` overrides (default: `SHRINK`'s, if any)
                     at:list=None, # kill moments, e.g. [None, ('event', 'recorded:1')] (None: drawn by `moments`)
                     signals:bool=False, # the first, timed kill is a SIGINT or SIGTERM (`signal_stop`'s checks)
                    ) -> dict:
    "Kill and resume one experiment `kills` times; compare with the uninterrupted run. Returns its summary."
    args = SHRINK.get(name, []) if args is None else args
    work.mkdir(parents=True, exist_ok=True)
    res = dict(experiment=name, overrides=args, kills=[], problems=[], mismatches=[])
    if reference:                              # its duration: from run.json's writing to DONE's, plus a start
        d = Path(reference)
        ref = dict(dir=d, seconds=(d/'DONE').stat().st_mtime - (d/'run.json').stat().st_mtime, startup=0.,
                   checkpoints=1)
    else:
        ref = reference_run(name, args, work, timeout)
    ref['units'] = len(snapshot(ref['dir']))
    res.update(reference_s=round(ref['seconds'], 1), units=ref['units'], checkpoints_seen=ref['checkpoints'])
    runs, kept, out = work/'runs', {}, None
    for i in range(kills):
        if finished(out):
            break
        moment = at[i] if at and at[i] else moments(rng, i, ref, out)
        if i == 0 and signals and moment[0] == 'time':      # stopped by a user's signal instead of a crash
            moment = (rng.choice(sorted(SIGNALS)), moment[1])
        a = attempt(name, args, runs, moment, i > 0, work, timeout)
        out = run_folder(runs, name)
        now = snapshot(out)
        changed = [u for u, v in kept.items() if now.get(u) != v]
        res['problems'] += [f"kill {i + 1}: finished unit {u} changed" for u in changed]
        res['problems'] += [f"kill {i + 1}: {p}" for p in (problems_after_kill(out) if out else [])]
        res['problems'] += [f"kill {i + 1}: {p}" for p in a.get('signal_problems', [])]
        if not a['killed'] and a['rc']:
            res['problems'].append(f"attempt {i + 1} failed (rc {a['rc']}); see {work/'log.txt'}")
        a.update(units_done=len(now), temporaries=len([p for p in out.rglob('.*') if p.is_file()]) if out else 0,
                 checkpoints=len(checkpoints(out)))
        res['kills'].append(a)
        kept = {**now, **kept}
        print(f"  {name}: attempt {i + 1} {a['moment']}: {'killed' if a['killed'] else 'finished'} after "
              f"{a['seconds']} s, {a['units_done']}/{ref['units']} units, {a['checkpoints']} checkpoint(s), "
              f"{a['temporaries']} temporary file(s)", flush=True)
    resumes = 0
    while not finished(out) and resumes < 3:
        a = attempt(name, args, runs, ('end', None), True, work, timeout)
        out, resumes = run_folder(runs, name), resumes + 1
        if a['killed'] or a['rc']:
            res['problems'].append(f"the final resume failed ({a}); see {work/'log.txt'}")
    res['resumes'] = resumes
    if not finished(out):
        res['problems'].append('the run did not finish')
        return res
    now = snapshot(out)
    res['problems'] += [f"finished unit {u} changed by the resume" for u, v in kept.items() if now.get(u) != v]
    res['problems'] += leftovers(out)
    n, skipped, bad = compare_runs(ref['dir'], out)
    res.update(results_compared=n, wall_clock_skipped=skipped, mismatches=bad)
    if bad and not reference:                  # a second uninterrupted run tells a resume bug from nondeterminism
        again = reference_run(name, args, work/'control', timeout)
        res['control_mismatches'] = len(compare_runs(ref['dir'], again['dir'])[2])
    return res


# ---- all ----
def provenance() -> dict:
    def git(*a):
        return subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    import torch
    return dict(commit=git('rev-parse', 'HEAD'), dirty=bool(git('status', '--porcelain', '--untracked-files=no')),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                machine=dict(host=socket.gethostname(), platform=platform.platform(), cpus=os.cpu_count(),
                             python=platform.python_version(), torch=torch.__version__,
                             omp_threads=os.environ.get('OMP_NUM_THREADS')))

def totals(results:list) -> dict:
    return dict(experiments=len(results), kills=sum(sum(k['killed'] for k in r['kills']) for r in results),
                results_compared=sum(r.get('results_compared', 0) for r in results),
                mismatches=sum(len(r['mismatches']) for r in results),
                problems=sum(len(r['problems']) for r in results))

def write_summary(path:Path, meta:dict, results:list):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(dict(meta, totals=totals(results), experiments=results), indent=1) + '\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)

def all_experiments() -> list:
    return sorted(p.stem for p in (ROOT/'nbs'/'experiments').glob('*.ipynb') if not p.name.startswith('_'))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--experiments', default=None, help='comma-separated names (default: every experiment)')
    p.add_argument('--kills', type=int, default=3, help='kills per experiment')
    p.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
    p.add_argument('--reference', action='append', default=[], metavar='NAME=DIR', help='reuse a finished run folder')
    p.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'fault_check.json'), help='the JSON summary')
    p.add_argument('--work', default=None, help='folder for the runs (default: a temporary one, removed)')
    p.add_argument('--timeout', type=float, default=900, help='seconds per run attempt')
    p.add_argument('--signals', action='store_true',
                   help='the first kill of each experiment is a SIGINT or SIGTERM: one line, no traceback, no kernel')
    p.add_argument('--merge', nargs='+', default=None, metavar='JSON', help='only merge these summaries into --out')
    a = p.parse_args(argv)
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        results = list({r['experiment']: r for part in parts[::-1] for r in part['experiments']}.values())  # 1st wins
        meta = {k: v for k, v in parts[0].items() if k not in ('totals', 'experiments')}
        meta['settings']['merged_from'] = [part['settings']['command'] for part in parts]
        meta['provenance']['merged'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
        write_summary(Path(a.out), meta, sorted(results, key=lambda r: r['experiment']))
        print(totals(results))
        return 0
    names = a.experiments.split(',') if a.experiments else all_experiments()
    unknown = [n for n in names if n not in all_experiments()]
    if unknown:
        raise SystemExit(f"error: --experiments names unknown experiment(s) {unknown}; allowed: {all_experiments()}")
    if a.kills < 1:
        raise SystemExit(f"error: --kills={a.kills} must be >= 1")
    refs = dict(r.split('=', 1) for r in a.reference)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix='fault_check.'))
    meta = dict(provenance=provenance(), settings=dict(kills_per_experiment=a.kills, seed=a.seed, shrunk=SHRINK,
                command=' '.join(['python', 'scripts/fault_check.py', *(argv or sys.argv[1:])]),
                wall_clock_metrics=WALL_CLOCK.pattern, provenance_fields=PROVENANCE))
    results = []
    for name in names:
        print(f"{name}:", flush=True)
        rng = random.Random(f"{a.seed}-{name}")
        t0 = time.time()
        try:
            r = check_experiment(name, a.kills, rng, work/name, refs.get(name), a.timeout, signals=a.signals)
        except RuntimeError as e:
            r = dict(experiment=name, kills=[], mismatches=[], problems=[str(e)])
        r['seconds'] = round(time.time() - t0, 1)
        results.append(r)
        write_summary(Path(a.out), meta, results)
        verdict = 'ok' if not (r['mismatches'] or r['problems']) else 'FAILED'
        print(f"  {name}: {verdict}: {r.get('results_compared', 0)} results compared, {len(r['mismatches'])} "
              f"mismatch(es), {len(r['problems'])} problem(s), {r['seconds']} s", flush=True)
        for line in (r['mismatches'] + r['problems'])[:10]:
            print(f"    {line}", flush=True)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    t = totals(results)
    print(f"{t['experiments']} experiment(s), {t['kills']} kill(s), {t['results_compared']} results compared, "
          f"{t['mismatches']} mismatch(es), {t['problems']} problem(s); summary: {a.out}", flush=True)
    return 1 if t['mismatches'] or t['problems'] else 0

if __name__ == '__main__':
    sys.exit(main())
