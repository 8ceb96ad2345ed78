"""Put what came back from `scripts/gpu_run.sh` into the project: Table 1's finished run folders into the ledger (with
`localrules report --update-ledger`), the benchmarks' JSON into benchmarks/results/, and the run's record (summary,
environment, paper_check) into benchmarks/results/gpu_run-<device>.json.

    python scripts/gpu_ingest.py DIR                  # DIR: the folder the device tool's reply names (files_at)
    python scripts/gpu_ingest.py DIR --scratch /tmp/x # the same into a scratch copy of the ledger (dry runs, checks)

The lent machine has no git: its rows say commit 'unknown', and gpu_run.py recorded which commit the tree came from
(the manifest's, +dirty when a file differed from it, by git blob hashes); that commit replaces 'unknown' here, in the
run folders and the benchmark JSON, and nowhere else. Unfinished run folders are copied too (under --runs), but the
ledger takes finished runs only: continue them with `bash scripts/gpu_prepare.sh --resume-from DIR`.
"""
import argparse, json, re, shutil, subprocess, sys, tarfile, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = 'table1_mlp_1hl'
LR_MAIN = 'import sys; from localrules.cli import main; sys.exit(main())'


def fill_commit(obj, commit:str):
    "`obj` with every `commit: 'unknown'` (at any depth) replaced by `commit`; returns (obj, replacements)."
    if isinstance(obj, dict):
        n = 0
        for k, v in obj.items():
            if k == 'commit' and v == 'unknown':
                obj[k] = commit
                n += 1
            else:
                obj[k], m = fill_commit(v, commit)
                n += m
        return obj, n
    if isinstance(obj, list):
        n = 0
        for i, v in enumerate(obj):
            obj[i], m = fill_commit(v, commit)
            n += m
        return obj, n
    return obj, 0


def fill_file(path:Path, commit:str) -> int:
    "fill_commit in a JSON file or a JSON-lines file, rewritten only when something changed."
    text = path.read_text()
    if '"unknown"' not in text: return 0
    if path.suffix == '.jsonl':
        rows = [fill_commit(json.loads(l), commit) for l in text.splitlines() if l.strip()]
        n = sum(m for _, m in rows)
        if n: path.write_text(''.join(json.dumps(r, sort_keys=True) + '\n' for r, _ in rows))
        return n
    obj, n = fill_commit(json.loads(text), commit)
    if n: path.write_text(json.dumps(obj, indent=1))
    return n


def device_slug(name:str) -> str: return re.sub(r'[^A-Za-z0-9]+', '-', name or 'unknown').strip('-').lower()


def ingest(src:Path, runs:Path, results:Path, bench:Path, report:bool=True) -> dict:
    "Ingest the folder `src`; returns what was done (run folders, benchmark files, ledger rows per device)."
    env = json.loads((src/'01_env.json').read_text()) if (src/'01_env.json').exists() else {}
    commit = env.get('commit', {}).get('commit', 'unknown')
    device = (env.get('probe') or {}).get('device_name')
    done = dict(commit=commit, device=device, runs=[], bench=[], filled=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (src/'04_table1.tar.gz').exists():
            with tarfile.open(src/'04_table1.tar.gz') as t: t.extractall(tmp/'t1', filter='data')
            for run in sorted((tmp/'t1'/'runs'/EXPERIMENT).glob('*')):
                dest = runs/EXPERIMENT/run.name
                new = len(list((run/'units').glob('*.json')))
                if dest.exists() and (dest/'DONE').exists() and not (run/'DONE').exists():
                    print(f"kept {dest}: finished there, not in what came back")
                    continue
                if dest.exists() and len(list((dest/'units').glob('*.json'))) > new:
                    print(f"kept {dest}: it has more finished units than what came back")
                    continue
                if commit != 'unknown':
                    files = [f for f in run.rglob('*') if f.suffix in ('.json', '.jsonl')]
                    done['filled'] += sum(fill_file(f, commit) for f in files)
                shutil.rmtree(dest, ignore_errors=True)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(run, dest)
                done['runs'].append(dict(run=run.name, units=new, finished=(run/'DONE').exists()))
        if (src/'03_bench.tar.gz').exists():
            with tarfile.open(src/'03_bench.tar.gz') as t: t.extractall(tmp/'bench', filter='data')
            bench.mkdir(parents=True, exist_ok=True)
            for f in sorted((tmp/'bench').glob('*.json')):
                if commit != 'unknown': done['filled'] += fill_file(f, commit)
                shutil.copyfile(f, bench/f.name)
                done['bench'].append(f.name)
    record = dict(env={k: v for k, v in env.items() if k != 'pip_log'})
    done['tf32_vs_fp32'] = record['tf32_vs_fp32'] = tf32_effect(runs, [r['run'] for r in done['runs']])
    for name, key in (('summary.json', 'summary'), ('02_paper_check.json', 'paper_check')):
        if (src/name).exists(): record[key] = json.loads((src/name).read_text())
    bench.mkdir(parents=True, exist_ok=True)
    out = bench/f'gpu_run-{device_slug(device)}.json'
    out.write_text(json.dumps(record, indent=1, default=str))
    done['record'] = str(out)
    if report:
        cmd = [sys.executable, '-c', LR_MAIN, 'report', '--runs', str(runs), '--results', str(results),
               '--experiment', EXPERIMENT, '--update-ledger']
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        ids = {r['run'] for r in done['runs'] if r['finished']}
        ledger = results/'ledger'/f'{EXPERIMENT}.jsonl'
        rows = [json.loads(l) for l in ledger.read_text().splitlines() if l.strip()] if ledger.exists() else []
        mine = [r for r in rows if r.get('run_id') in ids]
        by_dev = {}
        for r in mine: by_dev[(r['device'], r['commit'], r.get('tf32'))] = by_dev.get((r['device'], r['commit'],
                                                                                         r.get('tf32')), 0) + 1
        done['ledger_rows'] = [dict(device=d, commit=c, tf32=t, rows=n) for (d, c, t), n in sorted(by_dev.items())]
        missing = sorted(ids - {r['run_id'] for r in mine})
        if missing: raise SystemExit(f"error: finished runs {missing} are not in {ledger}")
    return done


def tf32_effect(runs:Path, names:list, metric:str='test_acc') -> list:
    """Per setting and seed trained both ways: the final `metric` with TF32 products (compiled) and in fp32 eager, and
    their difference; what TF32 changes (the paper's protocol is fp32)."""
    got = {}
    for name in names:
        for f in (runs/EXPERIMENT/name/'units').glob('*.json'):
            for r in json.loads(f.read_text()):
                if r.get('kind') == 'final' and r.get('metric') == metric and r.get('value') is not None:
                    key = (r['rule'], r['variant'], r['dataset'], r['seed'])
                    got.setdefault(key, {})['tf32' if r.get('tf32') else 'fp32'] = r['value']
    return [dict(rule=k[0], variant=k[1], dataset=k[2], seed=k[3], tf32=v['tf32'], fp32=v['fp32'],
                 diff=v['tf32'] - v['fp32']) for k, v in sorted(got.items()) if len(v) == 2]


def scratch_copy(scratch:Path) -> tuple:
    "(runs, results, bench) in `scratch`, with a copy of the committed Table 1 ledger and the paper's numbers."
    results = scratch/'results'
    (results/'ledger').mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO/'results'/'paper_reference.csv', results/'paper_reference.csv')
    led = REPO/'results'/'ledger'/f'{EXPERIMENT}.jsonl'
    if led.exists(): shutil.copyfile(led, results/'ledger'/led.name)
    return scratch/'runs', results, scratch/'bench'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', help="the folder that came back (gpu_run.sh's $OUT)")
    ap.add_argument('--runs', default=str(REPO/'runs'), help='root of the run folders (localrules report --runs)')
    ap.add_argument('--results', default=str(REPO/'results'), help='results folder with ledger/ (--results)')
    ap.add_argument('--bench-dir', default=str(REPO/'benchmarks'/'results'), help='where the benchmark JSON go')
    ap.add_argument('--scratch', default=None, help='ingest into this folder, with a copy of the ledger, instead')
    ap.add_argument('--no-report', action='store_true', help='copy only; do not run localrules report')
    a = ap.parse_args()
    src = Path(a.src)
    if not src.is_dir() or not any((src/f).exists() for f in ('summary.json', '01_env.json', '04_table1.tar.gz')):
        sys.exit(f"error: {src} holds none of summary.json, 01_env.json, 04_table1.tar.gz: give the folder that came "
                 "back from gpu_run.sh")
    summary = json.loads((src/'summary.json').read_text()) if (src/'summary.json').exists() else {}
    if summary.get('dry_run') and not a.scratch:
        sys.exit(f"error: {src} is a dry run (tiny sizes under the paper preset's name): ingest it with --scratch DIR, "
                 "never into the committed ledger")
    runs, results, bench = scratch_copy(Path(a.scratch)) if a.scratch else (Path(a.runs), Path(a.results),
                                                                            Path(a.bench_dir))
    done = ingest(src, runs, results, bench, report=not a.no_report)
    print(json.dumps(done, indent=1))


if __name__ == '__main__': main()
