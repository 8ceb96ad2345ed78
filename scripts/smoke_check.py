"""Do the committed smoke numbers still come out of the code, bit for bit? (issue 24: max difference 0 against the
ledger's smoke rows)

For each experiment (default: every one `localrules list` shows, variants included), this reruns its `smoke` preset
into a scratch folder (`localrules run NAME --preset smoke --out SCRATCH/NAME/smoke`), gathers the run with
the ledger's own `collect` into a scratch ledger (so the rows are exactly those `localrules report --update-ledger`
would commit), and compares every metric of every unit with the ledger's smoke rows of the same commit-independent
key: the unit's parameters (rule, dataset, seed, ...), the run's parameters, the row kind, metric and step
(wall-clock metrics, speeds and epoch times, are counted and not compared: they differ between any two runs). Ledger
smoke rows of runs with other parameters (smoke runs with `-p` overrides, e.g. longer CPU-scale studies) are counted
as "other" and not compared. Where the ledger holds several smoke runs with the fresh run's parameters, the newest
(by date) is compared, as `localrules report` shows it. It prints, per experiment, the number of rows compared, the
ledger rows the fresh run lacks (missing), the fresh rows the ledger lacks (extra) and the largest absolute difference,
and exits with 1 on any difference, missing or extra row, or failed run.

The comparison is exact only on the same kind of CPU (instruction set: AVX2 / AVX-512, oneDNN's ISA) and the same
number of torch threads as the run behind the ledger's rows: float rounding differs between them, and a smoke run
trains for thousands of steps. The ledger rows record their device only as `cpu:<arch> x<cores>` (and the torch
version), not the CPU model or ISA, so the script prints both sides' device and this machine's CPU model, torch CPU
capability, ISA settings and threads; a difference on another machine says nothing by itself.

    python scripts/smoke_check.py                                  # every experiment (about an hour on 1 core)
    python scripts/smoke_check.py bp_vs_fa fig2b_ode_theory        # these only
    python scripts/smoke_check.py --runs /tmp/smokeruns            # compare finished run folders RUNS/NAME/smoke
    python scripts/smoke_check.py --scratch /tmp/sc --keep         # keep the fresh runs
"""
import argparse, json, math, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATCH = ('kind', 'metric', 'step', 'seed', 'status')       # row fields that belong to the key beside the unit's own
sys.path.insert(0, str(ROOT/'scripts'))
# wall-clock measurements (speeds, epoch times) differ between any two runs: counted, not compared (fault_check's rule)
from fault_check import wall_clock                               # noqa: E402


def ledger_api():
    """The module holding the ledger functions (`collect`, `read_jsonl`, `key_fields`): `localrules.store`, or before
    it existed `localrules.runs`."""
    try:
        from localrules import store
        return store
    except ImportError:
        from localrules import runs
        return runs


def row_key(r:dict) -> str:
    "The commit-independent key of a ledger row: unit fields, run parameters, kind, metric, step, seed, status."
    key_fields = ledger_api().key_fields
    params = r['params'] if isinstance(r['params'], dict) else json.loads(r['params'])
    return json.dumps(dict(key_fields(r), params=params, **{k: r.get(k) for k in MATCH}), sort_keys=True)


def run_params(r:dict) -> str:
    "The run-level parameters of a row, normalised."
    return json.dumps(r['params'] if isinstance(r['params'], dict) else json.loads(r['params']), sort_keys=True)


def same(a, b) -> bool:
    "Bitwise equality of two row values (NaN equals NaN, None equals None)."
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b): return True
    return a == b


def diff(a, b) -> float:
    "|a - b| for numbers; inf where one is missing or they are not comparable numbers but differ."
    if same(a, b): return 0.
    if isinstance(a, (int, float)) and isinstance(b, (int, float)): return abs(a - b)
    return math.inf


def this_machine() -> str:
    "CPU model, torch CPU capability, ISA settings and torch threads of this machine."
    import torch
    model = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.exists():
        model = next((ln.split(':', 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                      if ln.startswith('model name')), model)
    env = os.environ.get
    return (f'{model}, {os.cpu_count()} cores, torch {torch.__version__} CPU capability '
            f'{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={env("ONEDNN_MAX_CPU_ISA", "-")}, '
            f'ATEN_CPU_CAPABILITY={env("ATEN_CPU_CAPABILITY", "-")}, OMP_NUM_THREADS={env("OMP_NUM_THREADS", "-")}')


def run_smoke(name:str, out:Path) -> tuple:
    "Run `name`'s smoke preset into `out`: (ok, wall seconds, last lines of its output)."
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'), MPLBACKEND='Agg',
               PYTHONHASHSEED='0')
    exe = Path(sys.executable).with_name('localrules')
    cmd = [str(exe) if exe.exists() else 'localrules', 'run', name, '--preset', 'smoke', '--out', str(out)]
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    return p.returncode == 0, time.time() - t, (p.stdout + p.stderr).strip().splitlines()[-5:]


def fresh_rows(runs:Path, name:str) -> list:
    "The rows `localrules report --update-ledger` would gather from the run folder runs/name/smoke."
    api = ledger_api()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)/'runs'/name
        staged.mkdir(parents=True)
        (staged/'smoke').symlink_to((runs/name/'smoke').resolve())
        api.collect(Path(tmp)/'runs', Path(tmp)/'ledger')
        return api.read_jsonl(Path(tmp)/'ledger'/f'{name}.jsonl')


def ledger_smoke_rows(name:str, params:set) -> tuple:
    "(rows of the newest ledger smoke run with run parameters in `params`, rows of other smoke runs, its device)."
    rows = [r for r in ledger_api().read_jsonl(ROOT/'results'/'ledger'/f'{name}.jsonl') if r.get('preset') == 'smoke']
    mine = [r for r in rows if run_params(r) in params]
    newest = max((r['date'] for r in mine), default=None)
    run_ids = {r['run_id'] for r in mine if r['date'] == newest}
    chosen = [r for r in mine if r['run_id'] in run_ids]
    devices = sorted({f"{r.get('device')} (torch {r.get('torch')}, commit {r.get('commit')})" for r in chosen})
    return chosen, len(rows) - len(mine), devices


def compare(name:str, runs:Path) -> dict:
    "Compare the fresh run runs/name/smoke with the ledger's smoke rows of the same key."
    fresh = fresh_rows(runs, name)
    params = {run_params(r) for r in fresh}
    ledger, other, devices = ledger_smoke_rows(name, params)
    clock = sum(wall_clock(r) for r in fresh)
    a = {row_key(r): r.get('value') for r in ledger if not wall_clock(r)}
    b = {row_key(r): r.get('value') for r in fresh if not wall_clock(r)}
    both = a.keys() & b.keys()
    worst = max((diff(a[k], b[k]) for k in both), default=0.)
    fresh_dev = sorted({f"{r.get('device')} (torch {r.get('torch')}, commit {r.get('commit')})" for r in fresh})
    return dict(compared=len(both), missing=len(a.keys() - b.keys()), extra=len(b.keys() - a.keys()), other=other,
                differ=sum(not same(a[k], b[k]) for k in both), max_abs_diff=worst, ledger_device=devices,
                fresh_device=fresh_dev, clock=clock)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('names', nargs='*', help='experiments (default: every one `localrules list` shows)')
    p.add_argument('--scratch', default=None, help='folder for the fresh runs (default: a temporary folder)')
    p.add_argument('--keep', action='store_true', help='keep the scratch folder')
    p.add_argument('--runs', default=None, help='compare the finished run folders RUNS/NAME/smoke, run nothing')
    a = p.parse_args(argv)
    from localrules.catalog import experiments
    known = experiments()
    bad = [n for n in a.names if n not in known]
    if bad: p.error(f'unknown experiment(s) {bad}; available: {", ".join(known)}')
    if a.runs is not None and not Path(a.runs).is_dir(): p.error(f'--runs {a.runs}: no such folder')
    names = a.names or list(known)
    scratch = Path(a.runs or a.scratch or tempfile.mkdtemp(prefix='smoke_check-'))
    print(f'# this machine: {this_machine()}', flush=True)
    failed = []
    try:
        for n in names:
            out = scratch/n/'smoke'
            if a.runs is None:
                if out.exists(): p.error(f'--scratch {scratch}: {out} exists already; give an empty folder')
                ok, wall, tail = run_smoke(n, out)
                if not ok:
                    print(f'{n}: the smoke run failed ({wall:.0f} s):\n  ' + '\n  '.join(tail), flush=True)
                    failed.append(n)
                    continue
            elif not (out/'DONE').exists():
                print(f'{n}: {out} is no finished run (no DONE)', flush=True)
                failed.append(n)
                continue
            r = compare(n, scratch)
            print(f"{n}: compared {r['compared']}, missing {r['missing']}, extra {r['extra']}, "
                  f"differing {r['differ']}, max |diff| {r['max_abs_diff']:.3g}; "
                  f"wall-clock rows (not compared) {r['clock']}; "
                  f"other smoke rows (other parameters, not compared) {r['other']}"
                  f"\n  ledger: {'; '.join(r['ledger_device']) or 'no smoke rows with these parameters'}"
                  f"\n  fresh:  {'; '.join(r['fresh_device'])}", flush=True)
            if r['missing'] or r['extra'] or r['differ'] or not r['compared']: failed.append(n)
    finally:
        if a.runs is None and a.scratch is None and not a.keep: shutil.rmtree(scratch, ignore_errors=True)
    print(f"{len(names) - len(failed)} of {len(names)} experiments reproduce the ledger's smoke rows bit for bit"
          + (f"; not: {', '.join(failed)}" if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
