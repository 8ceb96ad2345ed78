"""A benchmark's ratios at two commits, before and after a change, on the same machine in one run.

Each commit is checked out into a temporary git worktree; the benchmark script (`population.py` or `forward_rules.py`)
of each side then runs in alternating rounds (old, new, old, new, ...) so that a machine's slow minutes fall on both
sides alike. The benchmarks report ratios measured within one process (population / one after another, a rule's epoch
/ BP's epoch), so the compared numbers do not depend on the machine's absolute speed; this script prints, for each
ratio, the median over rounds of each side and the change in per cent. The spread of the rounds is printed beside the
medians: a change smaller than the spread is not resolved.

    .venv/bin/python benchmarks/compare_commits.py OLD NEW [--bench population] [--rounds 6] [-- BENCH ARGS ...]

Example (the 5 % bound of the one-class-per-algorithm change: population and forward rules, 1 thread):

    .venv/bin/python benchmarks/compare_commits.py cc6a50e HEAD --rounds 6 -- --threads 1 --members 1,10 \
        --rules bp,pepita
"""
import argparse, json, os, statistics, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {'population': ('members', 'ratio_vs_one_after_another'), 'forward_rules': (None, 'ratio_to_bp_median')}

def worktree(rev:str, where:Path) -> Path:
    "A detached worktree of `rev` under `where`."
    path = where/rev.replace('/', '_')
    subprocess.run(['git', 'worktree', 'add', '--detach', '--force', str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return path

def ratios(result:dict, bench:str) -> dict:
    "{label: ratio} of one benchmark result file."
    extra, key = KEYS[bench]
    return {r['rule'] + (f" N={r[extra]}" if extra else ''): r[key] for r in result['results']}

def run_side(tree:Path, bench:str, args:list, out:Path) -> dict:
    "One round of the benchmark at the worktree `tree` (its own package first on the path)."
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    cmd = [sys.executable, str(tree/'benchmarks'/f'{bench}.py'), *args, '--out', str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)
    return json.loads(out.read_text())

def summary(rounds:dict) -> list:
    "Lines: label, each side's median and rounds, the change of the medians in per cent."
    lines = []
    for label in rounds['old']:
        old, new = rounds['old'][label], rounds['new'].get(label)
        if not new: continue
        mo, mn = statistics.median(old), statistics.median(new)
        spread = max(max(old) / min(old), max(new) / min(new)) - 1
        lines.append(f"{label:24s} old {mo:.3f}  new {mn:.3f}  change {100 * (mn / mo - 1):+.1f} %  "
                     f"(rounds' spread up to {100 * spread:.0f} %)")
    return lines

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('old', help='the commit before the change')
    ap.add_argument('new', help='the commit after it')
    ap.add_argument('--bench', default='population', choices=list(KEYS))
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--out', default=None, help='a JSON file for the rounds (default: print only)')
    argv = sys.argv[1:]
    cut = argv.index('--') if '--' in argv else len(argv)
    a, args = ap.parse_args(argv[:cut]), argv[cut + 1:]        # after '--': the benchmark's own arguments
    if a.rounds < 1: ap.error(f'--rounds must be at least 1, got {a.rounds}')
    for rev in (a.old, a.new):
        if subprocess.run(['git', 'rev-parse', '--verify', '--quiet', rev + '^{commit}'], cwd=ROOT,
                          capture_output=True).returncode:
            ap.error(f'{rev!r} is not a commit of this repository (OLD and NEW: commits, e.g. cc6a50e HEAD)')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {side: worktree(rev, tmp) for side, rev in (('old', a.old), ('new', a.new))}
        rounds = {'old': {}, 'new': {}}
        try:
            for i in range(a.rounds):
                for side in ('old', 'new'):
                    res = run_side(trees[side], a.bench, args, tmp/f'{side}-{i}.json')
                    for label, v in ratios(res, a.bench).items(): rounds[side].setdefault(label, []).append(v)
                print(f'round {i + 1}/{a.rounds} done', file=sys.stderr)
        finally:
            for t in trees.values():
                subprocess.run(['git', 'worktree', 'remove', '--force', str(t)], cwd=ROOT, capture_output=True)
    print(f'{a.bench}: medians of {a.rounds} interleaved rounds, {a.old} (old) vs {a.new} (new)')
    print('\n'.join(summary(rounds)))
    if a.out: Path(a.out).write_text(json.dumps(dict(old=a.old, new=a.new, bench=a.bench, args=args, rounds=rounds),
                                                indent=1))

if __name__ == '__main__':
    main()
