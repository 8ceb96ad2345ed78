"""The margins of every training-outcome assertion in the library notebooks and tests (issue 21, item 1).

Each such assertion is a registered check of `localrules.margins` (`register_check`): the notebook or test runs
`check.run(0)` and asserts its margins; this script runs the very same `run(seed)` for several seeds and prints, per
asserted inequality, the worst and mean margin (positive: the assertion holds; in the assertion's own units). It exits
with 1 if a margin is not positive. Test modules that register checks (`register_check(` in tests/*.py) are imported
by path. Other CPUs' rounding can be imitated:

    python scripts/margin_check.py                                  # seeds 0-4, every registered check but the slow
    python scripts/margin_check.py --slow                           # also those that run subprocesses (cli, ddp)
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=default python scripts/margin_check.py --threads 2
    python scripts/margin_check.py -k 33_ssl_protocol -k contract --seeds 0 1 2 3 4 5 6 7
    python scripts/margin_check.py --experiments                    # also the experiments' smoke checks (hours)
"""
import argparse, importlib.util, math, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_TESTS = {'test_experiments.py'}            # its experiment checks: scripts/experiment_margins.py


def import_path(path:Path, name:str):
    "Import the module at `path` under `name` (tests/ on sys.path for their `conftest` imports)."
    for p in (str(ROOT/'tests'), str(ROOT)):
        if p not in sys.path: sys.path.insert(0, p)
    if name in sys.modules: return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def registering_tests() -> list:
    "The test files (not test_experiments.py) that register checks."
    return sorted(p for p in (ROOT/'tests').glob('test_*.py')
                  if p.name not in SKIP_TESTS and 'register_check(' in p.read_text())


def all_checks() -> dict:
    "Every registered check: the library notebooks' (localrules.margins) and the test modules'."
    from localrules.margins import CHECKS
    for p in registering_tests(): import_path(p, p.stem)
    return CHECKS


def fmt(v:float) -> str: return f'{v:.3g}' if abs(v) < 1e3 else f'{v:.0f}'


def cell(x) -> str: return '' if x is None else str(x).replace('|', '\\|')


def table(rows:list) -> str:
    "Markdown table: one row per asserted inequality (and case)."
    out = ['| where | asserted | case | worst margin | mean margin | seeds |', '|---|---|---|---|---|---|']
    for r in rows:
        m = r['margins']
        worst = min(m) if m and all(math.isfinite(v) for v in m) else float('nan')
        seeds = r['seeds']
        span = f'{seeds[0]}-{seeds[-1]}' if seeds == list(range(seeds[0], seeds[-1] + 1)) else ','.join(map(str, seeds))
        out.append(f"| {cell(r['where'])} | {cell(r['label'])} | {cell(r['case'])} | {fmt(worst)} | "
                   f"{fmt(sum(m) / len(m))} | {span} |")
    return '\n'.join(out)


def experiment_rows(seeds:list) -> list:
    "Rows of scripts/experiment_margins.py's `experiment_margins` (if that file exists)."
    path = ROOT/'scripts'/'experiment_margins.py'
    if not path.exists():
        print(f'--experiments: {path.relative_to(ROOT)} does not exist; no experiment checks measured', file=sys.stderr)
        return []
    res = import_path(path, 'experiment_margins').experiment_margins(seeds=seeds)
    return [dict(where=f'tests/test_experiments.py: {exp}', label=check, case=None, seeds=seeds, margins=list(ms))
            for exp, checks in res.items() for check, ms in checks.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('-k', action='append', default=[], help='only checks whose name contains this (repeatable)')
    p.add_argument('--seeds', type=int, nargs='+', default=list(range(5)), help='seeds to run (default 0-4)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: OMP_NUM_THREADS or 1)')
    p.add_argument('--slow', action='store_true', help='also the checks that run subprocesses (minutes a seed)')
    p.add_argument('--experiments', action='store_true', help="also the experiments' smoke checks (hours)")
    p.add_argument('--list', action='store_true', help='list the registered checks and exit')
    a = p.parse_args(argv)
    if len(a.seeds) < 1: p.error('--seeds: give at least one seed')
    import torch
    torch.set_num_threads(a.threads or int(os.environ.get('OMP_NUM_THREADS', '1')))
    checks = all_checks()
    names = [n for n in checks if (a.slow or not checks[n].slow) and (not a.k or any(k in n for k in a.k))]
    if a.list:
        for n in names: print(f"{n}{' (slow)' if checks[n].slow else ''}: {checks[n].where}: {checks[n].claim}")
        return 0
    if not names and not a.experiments: p.error(f'-k {a.k}: no registered check matches; see --list')
    from localrules.margins import measure
    isa = os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')
    cap = os.environ.get('ATEN_CPU_CAPABILITY', 'unset')
    used = torch.backends.cpu.get_cpu_capability()       # the ATen kernels in use (the variable's effect)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} thread(s), ONEDNN_MAX_CPU_ISA={isa}, '
          f'ATEN_CPU_CAPABILITY={cap} (ATen kernels: {used}), seeds {a.seeds}', flush=True)
    rows = []
    for n in names:
        t = time.time()
        got = measure(n, a.seeds)
        rows += got
        worst = min(min(r['margins']) for r in got)
        print(f'{n}: worst margin {fmt(worst)} ({time.time() - t:.0f} s)', file=sys.stderr, flush=True)
    if a.experiments: rows += experiment_rows(a.seeds)
    print(table(rows))
    bad = [r for r in rows if not all(v > 0 for v in r['margins'])]
    for r in bad:
        print(f"NEGATIVE MARGIN: {r['where']}: {r['label']} {r['case'] or ''}: {r['margins']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
