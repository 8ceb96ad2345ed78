"""The margins of the experiments' smoke checks over several seeds (issue 21, item 2).

`tests/test_experiments.py` runs every experiment once at its `smoke` preset (the preset's own seed) and asserts that
each margin of `CHECKS[name](rows)` is positive. This script reruns each smoke preset with several seeds into a scratch
folder, applies the same margin functions to each seed's rows and prints, per check, the worst margin and the mean:
the numbers written beside the checks. Runs already finished (`DONE`) are reused, so an interrupted sweep resumes.

    python scripts/experiment_margins.py                      # all experiments, seeds 0-4, into /tmp/margins
    python scripts/experiment_margins.py bp_vs_fa sm_scalability --seeds 5 --jobs 2

It then applies the broken results of `MUTANTS` (test_experiments.py) to each seed's rows and prints, per broken
result, its best margin over the seeds: each must be <= 0 (the check rejects it on every seed).

`scripts/margin_check.py --experiments` imports `experiment_margins` by path.
"""
import argparse, importlib.util, json, math, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALRULES = str(Path(sys.executable).parent/'localrules')   # the installed console command
DEFAULT_ROOT = Path('/tmp/margins')

def load_checks():
    "`CHECKS` and the experiment names of tests/test_experiments.py (loaded by path, with tests/ on sys.path)."
    tests = str(ROOT/'tests')
    if tests not in sys.path: sys.path.insert(0, tests)
    spec = importlib.util.spec_from_file_location('test_experiments', ROOT/'tests'/'test_experiments.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

def seed_plan(name:str, # experiment name
              preset:dict, # its smoke preset
              seeds:list, # the seeds to measure
             ) -> list:
    """The runs that measure `seeds`: a list of (folder name, parameter overrides, seeds the run holds). An experiment
    with a `seeds` list runs once with all of them (its rows carry `seed`); one with a `seed` runs once per seed. The
    two teacher-student experiments keep their initial network(s) (deterministic ODE theory) and vary the simulations'
    data seeds: fig2b_ode_theory averages two simulation seeds, so its seed k is the pair (2k, 2k+1)."""
    if name == 'fig2b_ode_theory':
        return [(f'seed{k}', {'seeds': [2 * k, 2 * k + 1]}, [k]) for k in seeds]
    if 'seeds' in preset:
        return [('seeds' + '-'.join(map(str, seeds)), {'seeds': list(seeds)}, list(seeds))]
    if 'seed' in preset:
        return [(f'seed{k}', {'seed': k}, [k]) for k in seeds]
    raise ValueError(f'{name}: its smoke preset has neither `seed` nor `seeds`: {sorted(preset)}')

def _run(name, out, over, timeout, nice=10):
    "Run one smoke preset into `out` at `nice` (an existing unfinished folder is resumed); returns an error or None."
    if (out/'DONE').exists(): return None
    args = ['nice', '-n', str(nice), LOCALRULES, 'run', name, '--preset', 'smoke', '--out', str(out), '--quiet']
    for k, v in over.items(): args += ['-p', k, json.dumps(v)]
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env.setdefault('OMP_NUM_THREADS', '1')
    out.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    (out.parent/f'{out.name}.log').write_text(p.stdout + p.stderr)
    if p.returncode or not (out/'DONE').exists():
        return f'{name} {over}: exit {p.returncode}: {(p.stdout + p.stderr)[-800:]}'
    print(f'done {name} {over}', flush=True)
    return None

def _rows(out):
    "Every row (final and curve) of a run folder."
    return [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines() if l.strip()]

def _per_seed(rows, held):
    """Split a run's rows by seed; rows without a seed (no key or `seed: None`: shared by all seeds, e.g. the ODE
    theory of the teacher-student experiments) go to every seed."""
    if len(held) == 1: return {held[0]: rows}
    return {k: [r for r in rows if r.get('seed') in (None, k)] for k in held}

def experiment_margins(names=None, # experiment names (default: all); each must have a check in CHECKS
                       seeds=range(5), # seeds to measure
                       root=DEFAULT_ROOT, # scratch folder for the runs (never runs/ or results/)
                       jobs:int=2, # runs at once
                       timeout:int=3600, # seconds per run
                       run:bool=True, # run what is missing; False: use only finished runs
                       nice:int=10, # niceness of the runs (0: normal priority)
                      ) -> dict:
    """{experiment: {check: [margin of each seed]}} from smoke runs of each experiment under `root`/NAME/ (margin > 0:
    the check holds; NaN: the rows it needs are missing). A run that fails raises RuntimeError naming it (after all
    others finished)."""
    mod = load_checks()
    from localrules.catalog import experiments
    exps = experiments()
    names = sorted(exps) if names is None else list(names)
    unknown = [n for n in names if n not in exps]
    if unknown: raise ValueError(f'names: unknown experiments {unknown}; allowed: {sorted(exps)}')
    seeds = list(seeds)
    root = Path(root)
    plans = {n: seed_plan(n, exps[n]['PRESETS']['smoke'], seeds) for n in names}
    if run:
        todo = [(n, root/n/folder, over) for n in names for folder, over, _ in plans[n]]
        with ThreadPoolExecutor(max(1, jobs)) as ex:
            errors = [e for e in ex.map(lambda a: _run(*a, timeout, nice), todo) if e]
        if errors: raise RuntimeError('runs failed:\n' + '\n'.join(errors))
    res = {}
    for n in names:
        res[n] = {}
        for folder, _, held in plans[n]:
            out = root/n/folder
            if not (out/'DONE').exists(): continue
            for k, rows in _per_seed(_rows(out), held).items():
                try:
                    margins = mod.check_margins(n, rows)
                except AssertionError as e:                 # rows a check needs are missing: a failed check
                    margins = {f'rows present ({e})': float('nan')}
                for check, m in margins.items(): res[n].setdefault(check, []).append(m)
    return res

def mutant_margins(names, # experiment names
                   seeds=range(5), # seeds to read
                   root=DEFAULT_ROOT, # the folder experiment_margins ran into
                  ) -> dict:
    """{experiment: {broken result: [its worst margin on each seed's rows]}} for the MUTANTS of
    tests/test_experiments.py applied to the finished runs under `root`: every number must be <= 0 (the check rejects
    the broken result)."""
    mod = load_checks()
    from localrules.catalog import experiments
    exps = experiments()
    res = {}
    for n in names:
        for folder, _, held in seed_plan(n, exps[n]['PRESETS']['smoke'], list(seeds)):
            out = Path(root)/n/folder
            if not (out/'DONE').exists(): continue
            for rows in _per_seed(_rows(out), held).values():
                for what, m in mod.mutant_verdicts(n, rows).items():
                    res.setdefault(n, {}).setdefault(what, []).append(m)
    return res

def mutant_table(res:dict) -> str:
    "Markdown table: experiment, broken result, its best margin over seeds (must be <= 0), n seeds."
    lines = ['| experiment | broken result | best margin (must be <= 0) | n seeds |', '|---|---|---:|---:|']
    for n, ms in res.items():
        for what, v in ms.items(): lines.append(f'| {n} | {what} | {max(v):.4g} | {len(v)} |')
    return '\n'.join(lines)

def table(res:dict) -> str:
    "Markdown table: experiment, check, worst margin, mean, n seeds."
    lines = ['| experiment | check | worst margin | mean | n seeds |', '|---|---|---:|---:|---:|']
    for n, checks in res.items():
        for c, ms in checks.items():
            worst = min(ms, key=lambda m: (not math.isnan(m), m))
            lines.append(f'| {n} | {c} | {worst:.4g} | {sum(ms) / len(ms):.4g} | {len(ms)} |')
    return '\n'.join(lines)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('names', nargs='*', help='experiments (default: all)')
    ap.add_argument('--seeds', type=int, default=5, help='measure seeds 0 .. N-1 (default 5)')
    ap.add_argument('--root', default=str(DEFAULT_ROOT), help='scratch folder for the runs')
    ap.add_argument('--jobs', type=int, default=2, help='runs at once (default 2)')
    ap.add_argument('--no-run', action='store_true', help='only tabulate the runs already finished')
    ap.add_argument('--nice', type=int, default=10, help='niceness of the runs (default 10; 0: normal priority)')
    a = ap.parse_args()
    if a.seeds < 1: ap.error(f'--seeds must be >= 1, got {a.seeds}')
    try:
        res = experiment_margins(a.names or None, range(a.seeds), a.root, a.jobs, run=not a.no_run, nice=a.nice)
        print(table(res))
        mutants = mutant_margins(list(res), range(a.seeds), a.root)
        if mutants: print('\n' + mutant_table(mutants))
    except (ValueError, RuntimeError) as e:
        sys.exit(f'experiment_margins: {e}')
