"""Paper scale on a lent GPU in one prepared run of at most 9 minutes (issue 26). Called by `scripts/gpu_run.sh`.

    bash scripts/gpu_run.sh --device cuda                      # there, after `bash scripts/gpu_prepare.sh` here
    OUT=/tmp/gpu-dry bash scripts/gpu_run.sh --device cpu --dry-run     # here: the same steps at tiny sizes

Steps, each under its own time limit, each writing its results into $OUT as soon as it ends (at most 8 files of at
most 16 MiB come back, no folders needed):
  1 env          GPU, driver, torch, CUDA; the carried wheels installed with pip --no-index --no-deps into a folder
                 of their own (the machine's torch untouched), the project itself with pip --no-index --no-deps -e;
                 every module the runs import, with its version; the data unpacked and checked    -> 01_env.json
  3 bench        benchmarks/{forward_rules,population,conv_nsm_speed,clapp_memory}.py on the device, one after
                 another (timings want the GPU to themselves)                                    -> 03_bench.tar.gz
  2 paper_check  scripts/paper_check.py on every experiment, in parallel groups      -> 02_paper_check.{json,tar.gz}
  4 table1       Table 1's CIFAR-10 column (cifar10-jpeg) at the paper preset: its 12 rows as their 7 populations,
                 all at once, TF32 + torch.compile reduce-overhead, seeds in chunks (0-1, then 2-5, then 6-9), and
                 one row in fp32 eager beside them; it starts with step 2 and runs to the end of the budget
                                                                                                -> 04_table1.tar.gz
  summary.json (each step's status and wall time, rewritten after each) and gpu_run.log (everything, as it happens).

Table 1 is resumable: 04_table1.tar.gz holds every run folder less its checkpoints and claims (finished units,
run.json, results.jsonl and DONE where finished). `bash scripts/gpu_prepare.sh --resume-from DIR` carries it to the
next machine, where this script continues those run folders (finished units are skipped) before starting new ones.
Here, `python scripts/gpu_ingest.py DIR` puts what came back into the ledger.
"""
import argparse, json, os, platform, re, shutil, signal, subprocess, sys, tarfile, tempfile, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = 'table1_mlp_1hl'
# Table 1's rows as its notebook trains them: the rows of one group differ only in scalars (lr, wd, ...) and train as
# one population (mlp_protocol.group_units); tests/test_gpu_script.py checks this against the library
GROUPS = {'bp': ['bp', 'bp/wd'], 'fa': ['fa', 'fa/wd'], 'drtp': ['drtp', 'drtp/wd'], 'pepita': ['pepita', 'pepita/wd'],
          'pepita-norm': ['pepita/norm'], 'pepita-wm': ['pepita/wm', 'pepita/wd_wm'],
          'pepita-norm-wm': ['pepita/norm_wm']}
OUT_FILES = ('summary.json', 'gpu_run.log', '01_env.json', '02_paper_check.json', '02_paper_check.tar.gz',
             '03_bench.tar.gz', '04_table1.tar.gz')
OUT_FILE_LIMIT = 16 * 2**20          # per file that comes back (device notes)
MODULES = ['torch', 'torchvision', 'numpy', 'scipy', 'sklearn', 'matplotlib', 'seaborn', 'einops', 'tqdm', 'fastcore',
           'nbformat', 'papermill', 'ipykernel', 'jupyter_client', 'IPython', 'zmq', 'submitit', 'pynsm', 'triton',
           'localrules']
# the benchmarks: (name, arguments on the device, arguments of a dry run, share of step 3's time)
BENCH = [('forward_rules', ['--rounds', '5'], ['--n', '128', '--rounds', '1', '--hidden', '32', '--rules', 'bp,pepita'],
          0.2),
         ('population', ['--rounds', '3'], ['--members', '1,2', '--n', '128', '--rounds', '1', '--hidden', '32',
                                            '--rules', 'bp'], 0.25),
         ('conv_nsm_speed', ['--ref-images', '2', '--repeats', '3'],
          ['--batch', '2', '--ref-images', '1', '--repeats', '1', '--iters', '3', '--K', '4'], 0.25),
         ('clapp_memory', ['--steps', '3'], ['--width', '0.0625', '--size', '32', '--steps', '1', '--batch-size', '2',
                                            '--methods', 'clapp++,bp_clapp++'], 0.3)]
DRY_T1 = ['-p', 'hidden', '16', '-p', 'epochs', '2', '-p', 'milestones', '[1]']
LR_MAIN = 'import sys; from localrules.cli import main; sys.exit(main())'
CHECK_LINE = re.compile(r'^(ok  |FAIL) (\S+)\s+([\d.]+) s  ?(.*)$')


# ---------------------------------------------------------------- arguments
def seed_chunks(s:str) -> list:
    "'0,1/2,3,4,5' -> [[0, 1], [2, 3, 4, 5]]: seeds trained together, chunk after chunk."
    try: chunks = [[int(v) for v in c.split(',')] for c in s.split('/')]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give chunks of seeds as '0,1/2,3,4,5' (integers >= 0)") from None
    flat = [v for c in chunks for v in c]
    if min(flat) < 0 or len(set(flat)) < len(flat):
        raise argparse.ArgumentTypeError(f"{s!r}: seeds must be >= 0 and each at most once")
    return chunks


def positive(s:str) -> float:
    try: v = float(s)
    except ValueError: v = -1
    if v <= 0: raise argparse.ArgumentTypeError(f"{s!r}: needs a number of seconds > 0")
    return v


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog='gpu_run.sh', description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='where to run (cpu: with --dry-run)')
    ap.add_argument('--dry-run', action='store_true', help='tiny sizes: benchmarks, one paper check, Table 1 on '
                    'digits, 2 epochs, no compile (CPU, minutes)')
    ap.add_argument('--out', default=os.environ.get('OUT'), help='the folder that comes back (default: $OUT)')
    ap.add_argument('--carry', default=str(REPO/'.gpu'), help="what gpu_prepare.sh made (wheels, data, manifest)")
    ap.add_argument('--work', default=None, help='scratch folder (default: under /dev/shm, else the temp folder)')
    ap.add_argument('--budget', type=positive, default=None,
                    help='seconds for the whole run (default 540: the call allows 600; dry run 1200)')
    ap.add_argument('--t-env', type=positive, default=None, help='seconds for step 1 (default 60; dry run 240)')
    ap.add_argument('--t-check', type=positive, default=None, help='seconds for step 2 (default 120; dry run 400)')
    ap.add_argument('--t-bench', type=positive, default=None, help='seconds for step 3 (default 120; dry run 400)')
    ap.add_argument('--steps', default='env,bench,paper_check,table1',
                    help='steps to run, of env, bench, paper_check, table1 (env is needed by the others)')
    ap.add_argument('--seed-chunks', type=seed_chunks, default=None,
                    help="Table 1's seeds, chunk after chunk (default 0,1/2,3,4,5/6,7,8,9; dry run 0/1)")
    ap.add_argument('--fp32-entry', default='pepita', help='the row also trained in fp32 eager (TF32 comparison)')
    ap.add_argument('--compile', default=None, choices=['default', 'reduce-overhead', 'max-autotune', 'none'],
                    help='torch.compile mode of the TF32 runs (default reduce-overhead; dry run none)')
    ap.add_argument('--t1-procs', type=int, default=None, help='Table 1 runs at once (default: every group, 8; dry 2)')
    ap.add_argument('--check-procs', type=int, default=None, help='paper_check processes at once (default 6; dry 1)')
    ap.add_argument('--check-only', nargs='*', default=None, help='experiments to check (default: all; dry: bp_vs_fa)')
    ap.add_argument('--pack-every', type=positive, default=30, help="seconds between Table 1's interim packs")
    a = ap.parse_args(argv)
    if not a.out: ap.error('--out: no folder given and $OUT is unset (on the lent machine the tool sets it)')
    if a.device == 'cpu' and not a.dry_run: ap.error('--device cpu runs only with --dry-run (paper sizes need a GPU)')
    steps = [s.strip() for s in a.steps.split(',') if s.strip()]
    bad = [s for s in steps if s not in ('env', 'bench', 'paper_check', 'table1')]
    if bad or not steps: ap.error(f"--steps {a.steps!r}: allowed are env, bench, paper_check, table1")
    a.steps = steps
    for k, gpu, dry in (('budget', 540, 1200), ('t_env', 60, 240), ('t_check', 120, 400), ('t_bench', 120, 400)):
        if getattr(a, k) is None: setattr(a, k, dry if a.dry_run else gpu)     # a shared 2-core CPU is slow
    a.seed_chunks = a.seed_chunks or seed_chunks('0/1' if a.dry_run else '0,1/2,3,4,5/6,7,8,9')
    a.compile = a.compile or ('none' if a.dry_run else 'reduce-overhead')
    a.t1_procs = a.t1_procs or (2 if a.dry_run else len(GROUPS) + 1)
    a.check_procs = a.check_procs or (1 if a.dry_run else 6)
    if a.t1_procs < 1 or a.check_procs < 1: ap.error('--t1-procs and --check-procs need at least 1')
    if a.check_only is None and a.dry_run: a.check_only = ['bp_vs_fa']
    entries = [e for g in GROUPS.values() for e in g]
    if a.fp32_entry not in entries: ap.error(f"--fp32-entry {a.fp32_entry!r}: choose one of {entries}")
    if a.t_env * ('env' in steps) + a.t_bench * ('bench' in steps) + 30 > a.budget:
        ap.error(f"--budget {a.budget:g} s leaves Table 1 nothing after --t-env and --t-bench")
    return a


# ---------------------------------------------------------------- output
class Ctx:
    "What the steps share: folders, the environment of the subprocesses, the log, the summary."
    def __init__(self, a):
        self.a, self.t0 = a, time.time()
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        shm = Path('/dev/shm')               # memory: checkpoints every epoch cost little there, if it is large
        roomy = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 8 * 2**30
        base = a.work or (str(shm) if roomy else tempfile.gettempdir())
        self.work = Path(tempfile.mkdtemp(prefix='localrules-gpu-', dir=base)) if not a.work else Path(a.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.carry, self.data = Path(a.carry), self.work/'data'
        self.runs = self.work/'runs'/EXPERIMENT
        self.stamp = time.strftime('%Y%m%dT%H%M', time.gmtime())
        self.summary = dict(started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), device=a.device,
                            dry_run=a.dry_run, budget_s=a.budget, steps={})
        self.lock = threading.Lock()
        site, bins = self.work/'site', self.work/'bin'
        paths = [str(site), str(REPO)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])
        self.env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg', PYTHONHASHSEED='0',
                        PYTHONPATH=os.pathsep.join(paths),
                        PATH=os.pathsep.join([str(bins), str(site/'bin'), str(Path(sys.executable).parent),
                                              os.environ.get('PATH', '')]))
        self.env.pop('LOCALRULES_TF32', None)
        self.env.pop('LOCALRULES_COMPILE', None)

    def elapsed(self) -> float: return time.time() - self.t0
    def left(self) -> float: return self.a.budget - self.elapsed()

    def log(self, msg:str):
        line = f"[{self.elapsed():6.1f} s] {msg}"
        with self.lock:
            print(line, flush=True)
            with open(self.out/'gpu_run.log', 'a') as f: f.write(line + '\n')

    def put(self, name:str, data):
        "Write $OUT/name at once (str, bytes or a JSON-able object), replacing it whole."
        assert name in OUT_FILES, name
        tmp = self.out/f'{name}.part'
        if isinstance(data, (dict, list)): data = json.dumps(data, indent=1, default=str)
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.replace(tmp, self.out/name)

    def step_done(self, step:str, status:str, t_start:float, **info):
        with self.lock:
            self.summary['steps'][step] = dict(status=status, wall_s=round(time.time() - t_start, 1), **info)
            self.summary['elapsed_s'] = round(self.elapsed(), 1)
            self.put('summary.json', self.summary)
        self.log(f"step {step}: {status} in {time.time() - t_start:.1f} s")


# ---------------------------------------------------------------- processes
def spawn(cmd:list, log_path:Path, env:dict, cwd=REPO) -> subprocess.Popen:
    "Start `cmd` in a process group of its own (so that a timeout ends all its children), output into `log_path`."
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'ab') as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n".encode())
        return subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)


def stop(p:subprocess.Popen, grace:float=5.):
    """End process `p` and its whole group: SIGTERM, then SIGKILL after `grace` seconds; then its other descendants
    (a papermill kernel runs in a session of its own)."""
    if p.poll() is not None: return
    try:
        import psutil
        kids = psutil.Process(p.pid).children(recursive=True)
    except Exception: kids = []                       # no psutil, or already gone: the kernel ends with its parent
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.)):
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: break
        try:
            p.wait(wait)
            break
        except subprocess.TimeoutExpired: pass
    for k in kids:
        try: k.kill()
        except Exception: pass


def run_timed(cmd:list, log_path:Path, env:dict, timeout:float, cwd=REPO) -> dict:
    "Run `cmd` under `timeout` seconds: {rc (None: timed out), seconds}."
    t = time.time()
    p = spawn(cmd, log_path, env, cwd)
    try: rc = p.wait(max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        stop(p)
        rc = None
    return dict(rc=rc, seconds=round(time.time() - t, 1))


def tail(path:Path, n:int=2000) -> str:
    return path.read_text(errors='replace')[-n:] if path.exists() else ''


def pack(files:dict, out_path:Path, limit:int=OUT_FILE_LIMIT, optional=()) -> dict:
    """tar.gz of `files` {arcname: path} at `out_path`, written whole; over `limit` bytes it is packed again without
    the arcnames matching a pattern of `optional` (e.g. notebooks). Returns {bytes, files, dropped}."""
    dropped = []
    for attempt in range(len(optional) + 1):
        tmp = out_path.with_name(out_path.name + '.part')
        with tarfile.open(tmp, 'w:gz') as t:
            for arc, path in sorted(files.items()):
                if Path(path).is_file(): t.add(path, arcname=arc, recursive=False)
        if tmp.stat().st_size <= limit or attempt == len(optional): break
        pat = optional[attempt]
        dropped += [arc for arc in files if re.search(pat, arc)]
        files = {arc: p for arc, p in files.items() if not re.search(pat, arc)}
    size = tmp.stat().st_size
    if size > limit:
        tmp.unlink()
        raise RuntimeError(f"{out_path.name}: {size} bytes even without {list(optional)}, over {limit}")
    os.replace(tmp, out_path)
    return dict(bytes=size, files=len(files), dropped=dropped)


def run_folder_files(runs:Path) -> dict:
    "{arcname: path} of every run folder under `runs`, less checkpoints, claims and temporary files."
    files = {}
    if not runs.is_dir(): return files
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        for f in sorted(run.rglob('*')):
            rel = f.relative_to(run)
            if f.is_dir() or rel.parts[0] in ('checkpoints', 'claims') or any(s.startswith('.') for s in rel.parts):
                continue
            files[f'runs/{EXPERIMENT}/{run.name}/{rel.as_posix()}'] = f
    return files


# ---------------------------------------------------------------- step 1: environment
PROBE = r"""
import json, importlib, importlib.metadata as md, sys
out = dict(python=sys.version.split()[0], modules={})
for m in sys.argv[1].split(','):
    try:
        mod = importlib.import_module(m)
        out['modules'][m] = dict(version=getattr(mod, '__version__', None), file=getattr(mod, '__file__', None))
    except Exception as e: out['modules'][m] = dict(error=f'{type(e).__name__}: {e}')
import torch
out.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
           cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           tf32_matmul_default=torch.backends.cuda.matmul.allow_tf32)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, capability=f'{p.major}.{p.minor}', gpu_memory_gib=round(p.total_memory / 2**30, 1),
               multiprocessors=p.multi_processor_count)
from localrules.core import device_name
out['device_name'] = device_name(sys.argv[2])
print('PROBE ' + json.dumps(out))
"""


def git_blob(path:Path) -> str:
    "git's blob hash of a file (sha1 of 'blob <size>\\0' + content), computed without git."
    import hashlib
    data = path.read_bytes()
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def commit_info(ctx) -> dict:
    "The commit the tree came from: git where it works, else the manifest's, +dirty if a tracked file differs."
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=20).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True,
                               text=True, timeout=30).stdout.strip()
        return dict(commit=sha + ('+dirty' if dirty else ''), source='git')
    except (OSError, subprocess.SubprocessError): pass
    mf = ctx.carry/'manifest.json'
    if not mf.exists(): return dict(commit='unknown', source='no git and no manifest')
    blobs = json.loads(mf.read_text())['blobs']
    differ = [p for p, h in blobs.items() if not (REPO/p).is_file() or git_blob(REPO/p) != h]
    sha = json.loads(mf.read_text())['commit']
    return dict(commit=sha + ('+dirty' if differ else ''), source='manifest (no git here): blob hashes compared',
                differ=differ[:50], n_differ=len(differ))


def unpack_data(ctx) -> dict:
    "The carried data into work/data: cifar10-jpeg/ from its archive, MNIST/raw/ from .gz or .tar.xz, MD5s checked."
    import gzip, hashlib
    src, dest, info = ctx.carry/'data', ctx.data, {}
    dest.mkdir(parents=True, exist_ok=True)
    raw = dest/'MNIST'/'raw'
    raw.mkdir(parents=True, exist_ok=True)
    if (src/'mnist-raw.tar.xz').exists():
        subprocess.run(['tar', '-xJf', str(src/'mnist-raw.tar.xz'), '-C', str(dest)], check=True, timeout=120)
    for gz in sorted((src/'MNIST'/'raw').glob('*.gz')):
        with gzip.open(gz, 'rb') as f: (raw/gz.stem).write_bytes(f.read())
    if (src/'cifar10-jpeg.tar.gz').exists() and not (dest/'cifar10-jpeg').is_dir():
        part = dest/'cifar10-jpeg.partial'                 # renamed when whole: a killed extraction is no data set
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir()
        try:
            subprocess.run(['tar', '-xzf', str(src/'cifar10-jpeg.tar.gz'), '-C', str(part)], check=True, timeout=150)
            os.rename(part, dest/'cifar10-jpeg')
        except (OSError, subprocess.SubprocessError) as e: info['cifar10-jpeg_error'] = f'{type(e).__name__}: {e}'
    info['cifar10-jpeg'] = sum(1 for _ in (dest/'cifar10-jpeg').rglob('*.jpg')) if (dest/'cifar10-jpeg').is_dir() else 0
    mf = ctx.carry/'manifest.json'
    want = json.loads(mf.read_text()).get('mnist_md5', {}) if mf.exists() else {}
    got = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(raw.iterdir()) if p.is_file()}
    info['mnist_files'] = sorted(got)
    info['mnist_md5_ok'] = bool(want) and all(got.get(n) == h for n, h in want.items())
    return info


def install(ctx) -> dict:
    "The carried wheels into work/site (--no-deps: the machine's torch stays), the project with -e; a shim always."
    a, py, res = ctx.a, sys.executable, {}
    wheels = sorted((ctx.carry/'wheels').glob('*.whl'))
    res['wheels'] = [w.name for w in wheels]
    if a.dry_run:
        res['install'] = 'skipped (dry run: the environment here has every package)'
    elif wheels:
        cmd = [py, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile', '--no-cache-dir',
               '--target', ctx.work/'site', *wheels]
        res['wheels_install'] = run_timed(cmd, ctx.work/'logs'/'pip.log', ctx.env, 90)
        cmd = [py, '-m', 'pip', 'install', '-q', '--no-index', '--find-links', ctx.carry/'wheels', '--no-deps',
               '--no-build-isolation', '-e', REPO]
        res['project_install'] = run_timed(cmd, ctx.work/'logs'/'pip.log', ctx.env, 90)
        res['pip_log'] = tail(ctx.work/'logs'/'pip.log', 3000)
    bins = ctx.work/'bin'
    bins.mkdir(exist_ok=True)
    shim = bins/'localrules'            # the traveled tree's CLI whatever pip did (PYTHONPATH has the tree first)
    shim.write_text(f'#!{py}\n{LR_MAIN}\n'.replace('; ', '\n'))
    shim.chmod(0o755)
    return res


def step_env(ctx) -> str:
    a, t, info = ctx.a, time.time(), {}
    deadline = t + a.t_env
    try:
        smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,clocks.max.sm',
                              '--format=csv,noheader'], capture_output=True, text=True, timeout=20)
        info['nvidia_smi'] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e: info['nvidia_smi'] = f'not available: {e}'
    info.update(host=platform.node(), cpus=os.cpu_count(), python_executable=sys.executable, work=str(ctx.work))
    info.update(install(ctx))
    info['commit'] = commit_info(ctx)
    try: info['data'] = unpack_data(ctx)
    except (OSError, subprocess.SubprocessError) as e: info['data'] = dict(error=f'{type(e).__name__}: {e}')
    log = ctx.work/'logs'/'probe.log'
    r = run_timed([sys.executable, '-c', PROBE, ','.join(MODULES), a.device], log, ctx.env,
                  max(deadline - time.time(), 20))
    probe = next((json.loads(l[6:]) for l in tail(log, 20000).splitlines() if l.startswith('PROBE ')), None)
    info['probe'] = probe or dict(error=tail(log, 3000), **r)
    ctx.env_info = info
    ok = bool(probe) and not any('error' in m for m in probe['modules'].values()) and \
        (a.device == 'cpu' or probe.get('cuda_available'))
    ok = ok and info['data'].get('mnist_md5_ok') and info['data'].get('cifar10-jpeg', 0) == 60000
    ctx.put('01_env.json', info)
    status = 'ok' if ok else 'failed'
    ctx.step_done('env', status, t, device=(probe or {}).get('device_name'), commit=info['commit']['commit'])
    return status


# ---------------------------------------------------------------- step 3: benchmarks
def step_bench(ctx) -> str:
    a, t = ctx.a, time.time()
    d = ctx.work/'bench'
    copy = ctx.work/'bench_copy'                 # clapp_memory.py writes beside itself: run a copy, not the tree's
    (copy/'results').mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO/'benchmarks'/'clapp_memory.py', copy/'clapp_memory.py')
    env = dict(ctx.env, OMP_NUM_THREADS='1' if a.dry_run else '8')
    res, files = {}, {}
    for name, gpu_args, dry_args, share in BENCH:
        args = ['--device', a.device] + (dry_args if a.dry_run else gpu_args)
        if name == 'clapp_memory': cmd = [sys.executable, copy/'clapp_memory.py', *args]
        else: cmd = [sys.executable, REPO/'benchmarks'/f'{name}.py', *args, '--out', d/f'{name}-{a.device}.json']
        limit = min(a.t_bench * share, a.t_bench - (time.time() - t))
        res[name] = run_timed(cmd, d/f'{name}.log', env, limit)
        ctx.log(f"bench {name}: rc {res[name]['rc']} in {res[name]['seconds']} s")
        files[f'{name}.log'] = d/f'{name}.log'
    for f in list(d.glob('*.json')) + list((copy/'results').glob('*.json')): files[f.name] = f
    info = pack(files, ctx.out/'03_bench.tar.gz')
    ok = all(r['rc'] == 0 for r in res.values())
    ctx.step_done('bench', 'ok' if ok else 'failed', t, runs=res, pack=info)
    return 'ok' if ok else 'failed'


# ---------------------------------------------------------------- step 2: paper_check (runs beside step 4)
class PaperCheck:
    "scripts/paper_check.py over every experiment in `check_procs` parallel groups, under step 2's time limit."
    def __init__(self, ctx):
        self.ctx, a = ctx, ctx.a
        names = a.check_only or sorted(p.stem for p in (REPO/'nbs'/'experiments').glob('*.ipynb')
                                       if not p.name.startswith('_'))
        self.names = names
        self.groups = [names[i::a.check_procs] for i in range(min(a.check_procs, len(names)))]
        self.t = time.time()
        self.deadline = self.t + a.t_check
        env = dict(ctx.env, OMP_NUM_THREADS='2' if not a.dry_run else '1')
        self.dir = ctx.work/'paper_check'
        per = max(a.t_check - 10, 10)
        self.procs = [spawn([sys.executable, REPO/'scripts'/'paper_check.py', '--data-root', ctx.data, '--device',
                             a.device, '--out', self.dir/f'g{i}', '--timeout', int(per), '--only', *g],
                            self.dir/f'g{i}.log', env) for i, g in enumerate(self.groups)]
        self.finished = False

    def poll(self, force:bool=False):
        "Finish the step when every group ended, or at its deadline (or `force`): write its two files."
        if self.finished: return
        if not force and time.time() < self.deadline and any(p.poll() is None for p in self.procs): return
        for p in self.procs: stop(p)
        seen = {}
        for i in range(len(self.groups)):
            for line in tail(self.dir/f'g{i}.log', 10**6).splitlines():
                m = CHECK_LINE.match(line)
                if m: seen[m[2]] = dict(ok=m[1] == 'ok  ', seconds=float(m[3]), error=m[4].strip())
        rows = [dict(experiment=n, **seen.get(n, dict(ok=False, seconds=None, error='not reached: step time limit')))
                for n in self.names]
        self.ctx.put('02_paper_check.json', dict(device=self.ctx.a.device, experiments=rows))
        files = {f'g{i}.log': self.dir/f'g{i}.log' for i in range(len(self.groups))}
        files.update({f'{f.parent.name}.failed.ipynb': f for f in self.dir.glob('g*/*/notebook.failed.ipynb')})
        info = pack(files, self.ctx.out/'02_paper_check.tar.gz', optional=(r'\.ipynb$',))
        n_ok = sum(r['ok'] for r in rows)
        status = 'ok' if n_ok == len(rows) else ('timeout' if time.time() >= self.deadline else 'failed')
        self.ctx.step_done('paper_check', status, self.t, ok=n_ok, checked=len(rows),
                           failed=[r['experiment'] for r in rows if not r['ok']], pack=info)
        self.finished = True


# ---------------------------------------------------------------- step 4: Table 1
def t1_jobs(ctx) -> list:
    """Pipelines of `localrules run` jobs: one per population group (TF32, compiled) and the fp32-eager row; in each,
    one job per seed chunk. A run folder of an earlier machine with the same tag and seeds is continued."""
    a = ctx.a
    dataset = 'digits' if a.dry_run else 'cifar10-jpeg'
    fast = ['--tf32'] + (['--compile', a.compile] if a.compile != 'none' else [])
    mode = 'graphs' if a.compile == 'reduce-overhead' else ('eager' if a.compile == 'none' else a.compile)
    groups = [(f'tf32-{mode}-{g}', entries, fast) for g, entries in GROUPS.items()]
    # first the group holding the fp32 row and the fp32 row: a run cut short (fewer workers) still compares them
    first = next(i for i, (_, entries, _) in enumerate(groups) if a.fp32_entry in entries)
    groups = [groups[first], (f"fp32-eager-{a.fp32_entry.replace('/', '-')}", [a.fp32_entry], [])] + \
        groups[:first] + groups[first + 1:]
    # a paper run from a tree git calls dirty needs --allow-dirty where the CLI has it (there is no git on the machine)
    dirty = ['--allow-dirty'] if '--allow-dirty' in (REPO/'localrules'/'cli.py').read_text() else []
    existing = {p.name: p for p in ctx.runs.iterdir()} if ctx.runs.is_dir() else {}
    pipelines = []
    for tag, entries, flags in groups:
        jobs = []
        for seeds in a.seed_chunks:
            suffix = f"-{tag}-s{'-'.join(map(str, seeds))}"
            old = [p for n, p in sorted(existing.items()) if n.endswith(suffix)]
            out = old[-1] if old else ctx.runs/f'paper-gpu-{ctx.stamp}{suffix}'
            cmd = [sys.executable, '-c', LR_MAIN, 'run', EXPERIMENT, '--preset', 'paper', '--device', a.device,
                   '--out', out, '--quiet', '-p', 'datasets', repr([dataset]), '-p', 'entries', repr(entries),
                   '-p', 'seeds', repr(seeds), '-p', 'data_root', ctx.data, '-p', 'download', 'False', *flags, *dirty]
            jobs.append(dict(name=out.name, tag=tag, seeds=seeds, out=out, cmd=cmd + (DRY_T1 if a.dry_run else []),
                             status='done before' if (out/'DONE').exists() else 'waiting'))
        pipelines.append(jobs)
    return pipelines


class Table1:
    "The pipelines of `t1_jobs` on `t1_procs` worker threads; stopped at the budget's end; packed as it goes."
    def __init__(self, ctx):
        self.ctx, self.t = ctx, time.time()
        resume = ctx.carry/'resume'/'04_table1.tar.gz'
        self.resumed = []
        if resume.exists():
            with tarfile.open(resume) as tf: tf.extractall(ctx.work, filter='data')
            self.resumed = sorted(p.name for p in ctx.runs.iterdir())
            ctx.log(f"table1: continuing {len(self.resumed)} run folder(s) that came back earlier")
        ctx.runs.mkdir(parents=True, exist_ok=True)
        self.pipelines = t1_jobs(ctx)
        self.jobs = [j for p in self.pipelines for j in p]
        self.queue, self.procs = list(self.pipelines), {}
        # 8 runs share 16 cores: 2 threads each for torch and for inductor's compile workers (16 each by default)
        self.env = dict(ctx.env, OMP_NUM_THREADS='1' if ctx.a.dry_run else '2', TORCHINDUCTOR_COMPILE_THREADS='2')
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(ctx.a.t1_procs)]
        for th in self.threads: th.start()
        self.last_pack = 0.

    def worker(self):
        while not self.stopping.is_set():
            with self.ctx.lock:
                if not self.queue: return
                pipeline = self.queue.pop(0)
            for job in pipeline:
                if self.stopping.is_set(): return
                if job['status'] == 'done before': continue
                job['status'], job['t'] = 'running', time.time()
                p = spawn(job['cmd'], self.ctx.work/'logs'/f"t1-{job['name']}.log", self.env)
                self.procs[job['name']] = p
                rc = p.wait()
                job['seconds'] = round(time.time() - job['t'], 1)
                job['rc'] = rc
                job['status'] = 'done' if (job['out']/'DONE').exists() else ('stopped' if self.stopping.is_set()
                                                                             else 'failed')
                self.ctx.log(f"table1 {job['name']}: {job['status']} (rc {rc}) in {job['seconds']} s")

    def running(self) -> bool: return any(th.is_alive() for th in self.threads)

    def status(self) -> list:
        rows = []
        for j in self.jobs:
            units = len(list((j['out']/'units').glob('*.json'))) if (j['out']/'units').is_dir() else 0
            rows.append(dict(run=j['name'], tag=j['tag'], seeds=j['seeds'], status=j['status'], rc=j.get('rc'),
                             seconds=j.get('seconds'), units=units, done=(j['out']/'DONE').exists(),
                             cmd=' '.join(map(str, j['cmd'][3:]))))
        return rows

    def pack(self) -> dict:
        files = run_folder_files(self.ctx.runs)
        files.update({f'logs/{p.name}': p for p in (self.ctx.work/'logs').glob('t1-*.log')})
        st = self.ctx.work/'table1_status.json'
        st.write_text(json.dumps(dict(resumed=self.resumed, runs=self.status()), indent=1))
        files['table1_status.json'] = st
        self.last_pack = time.time()
        return pack(files, self.ctx.out/'04_table1.tar.gz', optional=(r'/notebook\.ipynb$', r'/figures/', r'^logs/'))

    def finish(self):
        self.stopping.set()
        for p in list(self.procs.values()): stop(p, grace=10.)
        for th in self.threads: th.join(30)
        for p in list(self.procs.values()): stop(p, grace=2.)      # one started while the others were stopped
        info = self.pack()
        rows = self.status()
        done = sum(r['done'] for r in rows)
        status = 'ok' if done == len(rows) else ('partial' if done else 'failed')
        self.ctx.step_done('table1', status, self.t, runs_done=done, runs=len(rows),
                           units=sum(r['units'] for r in rows), pack=info)


# ---------------------------------------------------------------- main
class Stopped(Exception):
    "SIGTERM or SIGINT: stop the runs, pack what finished."


def _stopped(signum, frame): raise Stopped(signal.Signals(signum).name)


def guarded(ctx, step:str, fn, *args):
    "fn(*args); an exception is recorded as the step's error (with its traceback in the log) and the run goes on."
    t = time.time()
    try: return fn(*args)
    except Stopped: raise
    except Exception as e:
        import traceback
        ctx.log(traceback.format_exc())
        ctx.step_done(step, 'error', t, error=f'{type(e).__name__}: {e}')
        return None


def main(argv=None):
    a = parse_args(argv)
    ctx = Ctx(a)
    ctx.log(f"gpu_run: device {a.device}{' (dry run)' if a.dry_run else ''}, budget {a.budget:g} s, work {ctx.work}, "
            f"steps {a.steps}")
    for sig in (signal.SIGTERM, signal.SIGINT): signal.signal(sig, _stopped)
    check = table1 = None
    try:
        if 'env' in a.steps: guarded(ctx, 'env', step_env, ctx)
        else:                                             # the other steps need the CLI shim and the data
            install(ctx)
            guarded(ctx, 'env', unpack_data, ctx)
        if 'bench' in a.steps: guarded(ctx, 'bench', step_bench, ctx)
        if 'paper_check' in a.steps: check = guarded(ctx, 'paper_check', PaperCheck, ctx)
        if 'table1' in a.steps: table1 = guarded(ctx, 'table1', Table1, ctx)
        end = a.budget - 20                               # time to stop the runs and pack them
        while ctx.elapsed() < end:
            if check: guarded(ctx, 'paper_check', check.poll)
            if table1 and time.time() - table1.last_pack > a.pack_every: guarded(ctx, 'table1', table1.pack)
            if (not check or check.finished) and (not table1 or not table1.running()): break
            time.sleep(1)
    except Stopped as e: ctx.log(f"stopped by {e}: packing what finished")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if check: guarded(ctx, 'paper_check', check.poll, True)
        if table1: guarded(ctx, 'table1', table1.finish)
    ctx.summary['elapsed_s'] = round(ctx.elapsed(), 1)
    ctx.put('summary.json', ctx.summary)
    ctx.log('done: ' + ', '.join(f"{k} {v['status']}" for k, v in ctx.summary['steps'].items()))
    left = sorted(p.name for p in ctx.out.iterdir())
    ctx.log(f"$OUT holds {left}")
    if not a.work: shutil.rmtree(ctx.work, ignore_errors=True)
    return 0 if all(v['status'] == 'ok' for v in ctx.summary['steps'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
