"""The prepared GPU run (scripts/gpu_run.sh, gpu_prepare.sh, gpu_ingest.py; issue 26), without a GPU: the shell
scripts' syntax, argument checks, step time limits, packing within the limits of what comes back, Table 1's
population groups against the library, and the ingest of a fabricated output folder into a scratch ledger."""
import importlib.util, json, os, re, subprocess, sys, tarfile, time
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO/'scripts'


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS/f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))
    spec.loader.exec_module(mod)
    return mod


gpu_run = load('gpu_run')


def test_shell_syntax():
    for sh in ('gpu_run.sh', 'gpu_prepare.sh'):
        subprocess.run(['bash', '-n', str(SCRIPTS/sh)], check=True)


@pytest.mark.parametrize('args,env,says', [
    ([], {}, '--out'),
    (['--device', 'cpu'], {'OUT': '/tmp/x'}, '--dry-run'),
    (['--seed-chunks', '0,1/1'], {'OUT': '/tmp/x'}, 'at most once'),
    (['--seed-chunks', '0,a'], {'OUT': '/tmp/x'}, 'integers'),
    (['--steps', 'env,train'], {'OUT': '/tmp/x'}, '--steps'),
    (['--fp32-entry', 'bp/nope'], {'OUT': '/tmp/x'}, '--fp32-entry'),
    (['--budget', '-5'], {'OUT': '/tmp/x'}, 'seconds'),
    (['--budget', '100'], {'OUT': '/tmp/x'}, '--budget'),
])
def test_bad_arguments_fail_clearly(args, env, says):
    e = {k: v for k, v in os.environ.items() if k != 'OUT'}
    p = subprocess.run([sys.executable, str(SCRIPTS/'gpu_run.py'), *args], capture_output=True, text=True,
                       env=dict(e, **env))
    assert p.returncode == 2 and says in p.stderr and 'Traceback' not in p.stderr, p.stderr


def test_defaults_fit_the_call():
    "On the GPU: 9 minutes at most, inside the call's 600 s; every row, every seed; the paper's fp32 beside TF32."
    a = gpu_run.parse_args(['--out', '/tmp/x'])
    assert a.budget <= 540 and a.t_env + a.t_bench + a.t_check < a.budget
    assert sorted(s for c in a.seed_chunks for s in c) == list(range(10))
    assert a.compile == 'reduce-overhead' and a.t1_procs == len(gpu_run.GROUPS) + 1
    prep = load('gpu_prepare')
    call = json.loads(prep.run_call())
    assert call['carry'] == ['.gpu'] and a.budget + 30 <= call['timeout_s'] <= 600
    assert 'gpu_run.sh --device cuda' in call['command']
    d = gpu_run.parse_args(['--out', '/tmp/x', '--device', 'cpu', '--dry-run'])
    assert d.compile == 'none' and d.seed_chunks == [[0], [1]] and d.check_only == ['bp_vs_fa']


def test_out_files_come_back():
    "At most 8 files, each named in letters, digits, '.', '_' and '-' (the device's limits on what comes back)."
    assert len(gpu_run.OUT_FILES) <= 8
    assert all(re.fullmatch(r'[A-Za-z0-9._-]+', f) for f in gpu_run.OUT_FILES)


def test_carry_folder_is_ignored():
    assert subprocess.run(['git', 'check-ignore', '-q', '.gpu/wheels/x.whl'], cwd=REPO).returncode == 0


def test_step_timeout_ends_the_whole_group(tmp_path):
    t = time.time()
    r = gpu_run.run_timed(['bash', '-c', 'sleep 60 & echo $! > child; sleep 60'], tmp_path/'log', dict(os.environ),
                          timeout=1, cwd=tmp_path)
    assert r['rc'] is None and time.time() - t < 20
    child = Path(f"/proc/{(tmp_path/'child').read_text().strip()}/stat")
    time.sleep(0.5)
    assert not child.exists() or child.read_text().rsplit(')', 1)[1].split()[0] in 'ZX'   # gone, or a zombie
    ok = gpu_run.run_timed(['true'], tmp_path/'log2', dict(os.environ), timeout=10)
    assert ok['rc'] == 0


def test_pack_keeps_units_drops_checkpoints_and_fits(tmp_path):
    run = tmp_path/'runs'/gpu_run.EXPERIMENT/'paper-gpu-x-tf32-graphs-bp-s0-1'
    for f, data in {'run.json': b'{}', 'units/u1.json': b'[]', 'checkpoints/population=ab.pt': os.urandom(5000),
                    'claims/u2.json': b'{}', 'units/.u3.json.tmp-vm-1-x': b'x', 'notebook.ipynb': os.urandom(300000),
                    'DONE': b'd'}.items():
        (run/f).parent.mkdir(parents=True, exist_ok=True)
        (run/f).write_bytes(data)
    files = gpu_run.run_folder_files(tmp_path/'runs'/gpu_run.EXPERIMENT)
    names = sorted(a.split('/', 3)[3] for a in files)
    assert names == ['DONE', 'notebook.ipynb', 'run.json', 'units/u1.json']
    info = gpu_run.pack(files, tmp_path/'t.tar.gz', limit=100000, optional=(r'/notebook\.ipynb$',))
    assert info['dropped'] == [a for a in files if a.endswith('notebook.ipynb')] and info['bytes'] <= 100000
    with tarfile.open(tmp_path/'t.tar.gz') as t: assert len(t.getnames()) == 3
    with pytest.raises(RuntimeError, match='over'): gpu_run.pack(files, tmp_path/'u.tar.gz', limit=1000)
    assert not (tmp_path/'u.tar.gz').exists() and not (tmp_path/'u.tar.gz.part').exists()


def test_groups_are_the_notebooks_populations():
    "GROUPS (one process each on the GPU) = Table 1's rows grouped by mlp_protocol.structure, as train_units does."
    from localrules.protocols.mlp_protocol import settings, structure, parse_entry
    from localrules.params import read_experiment
    entries = read_experiment(REPO/'nbs'/'experiments'/f'{gpu_run.EXPERIMENT}.ipynb')['PRESETS']['paper']['entries']
    by = {}
    for e in entries:
        rule, variant = parse_entry(e)
        s = settings(rule, 'cifar10-jpeg', 1, variant, hidden=1024, epochs=100)
        by.setdefault(json.dumps(dict(structure(s), rule=rule), sort_keys=True, default=str), []).append(e)
    assert sorted(map(sorted, by.values())) == sorted(map(sorted, gpu_run.GROUPS.values()))


def test_wheels_are_what_the_machine_lacks():
    w = load('gpu_wheels')
    carry, left = w.needed()
    assert {'papermill', 'ipykernel', 'nbformat', 'fastcore', 'pyzmq'} <= set(carry)
    assert not set(carry) & w.PRESENT and 'torch' in left and 'debugpy' in left


def fabricated_out(tmp_path, device='NVIDIA H100 80GB HBM3'):
    "An output folder as the machine would send it: one finished Table 1 run (commit unknown there), env, bench."
    from localrules.runs import Run
    runs = tmp_path/'machine'/'runs'/gpu_run.EXPERIMENT
    params = dict(datasets=['cifar10-jpeg'], entries=['bp', 'bp/wd'], hidden=1024, epochs=100, milestones=[60, 90],
                  seeds=[0, 1], limit=0)
    run = Run(runs/'paper-gpu-20261207T1200-tf32-graphs-bp-s0-1', gpu_run.EXPERIMENT, 'paper', params, device='cpu')
    for seed in (0, 1):
        for variant in ('base', 'wd'):
            run.record(dict(rule='bp', variant=variant, dataset='cifar10-jpeg', depth=1, seed=seed),
                       {'test_acc': 50.0 + seed + (variant == 'wd'), 'best_test_acc': 51.0 + seed})
    run.finish()
    fp32 = Run(runs/'paper-gpu-20261207T1200-fp32-eager-bp-s0-1', gpu_run.EXPERIMENT, 'paper',
               dict(params, entries=['bp']), device='cpu')
    for seed in (0, 1):
        fp32.record(dict(rule='bp', variant='base', dataset='cifar10-jpeg', depth=1, seed=seed),
                    {'test_acc': 49.5 + seed, 'best_test_acc': 51.0 + seed})
    fp32.finish()
    for f in runs.rglob('*'):                         # as the machine writes them: its GPU, no git, TF32 in one run
        if f.is_file() and f.suffix in ('.json', '.jsonl'):
            text = re.sub(r'"device": "[^"]*"', f'"device": "{device}"', f.read_text())
            if 'tf32-graphs' in str(f): text = re.sub(r'"tf32": false', '"tf32": true', text)
            f.write_text(re.sub(r'"commit": "[^"]*"', '"commit": "unknown"', text))
    out = tmp_path/'out'
    out.mkdir()
    gpu_run.pack(gpu_run.run_folder_files(runs), out/'04_table1.tar.gz')
    (tmp_path/'b').mkdir()
    (tmp_path/'b'/'population-cuda.json').write_text(json.dumps(dict(provenance=dict(commit='unknown', device=device))))
    gpu_run.pack({'population-cuda.json': tmp_path/'b'/'population-cuda.json'}, out/'03_bench.tar.gz')
    (out/'01_env.json').write_text(json.dumps(dict(commit=dict(commit='abc1234+dirty', source='manifest'),
                                                   probe=dict(device_name=device))))
    (out/'summary.json').write_text(json.dumps(dict(steps={'table1': dict(status='partial')})))
    return out, run.meta['run_id']


def test_ingest_puts_rows_with_the_device_into_a_scratch_ledger(tmp_path):
    out, run_id = fabricated_out(tmp_path)
    scratch = tmp_path/'scratch'
    p = subprocess.run([sys.executable, str(SCRIPTS/'gpu_ingest.py'), str(out), '--scratch', str(scratch)],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(l) for l in (scratch/'results'/'ledger'/f'{gpu_run.EXPERIMENT}.jsonl').read_text().splitlines()]
    mine = [r for r in rows if r['run_id'] == run_id and r['kind'] == 'final']
    assert len(mine) == 8 and {r['device'] for r in mine} == {'NVIDIA H100 80GB HBM3'}
    assert {r['tf32'] for r in mine} == {True}
    effect = json.loads(p.stdout[p.stdout.index('{'):])['tf32_vs_fp32']
    assert [(e['seed'], e['tf32'], e['fp32']) for e in effect] == [(0, 50.0, 49.5), (1, 51.0, 50.5)]
    assert {r['commit'] for r in mine} == {'abc1234+dirty'}
    bench = json.loads((scratch/'bench'/'population-cuda.json').read_text())
    assert bench['provenance'] == dict(commit='abc1234+dirty', device='NVIDIA H100 80GB HBM3')
    assert (scratch/'bench'/'gpu_run-nvidia-h100-80gb-hbm3.json').exists()
    committed = REPO/'results'/'ledger'/f'{gpu_run.EXPERIMENT}.jsonl'
    assert run_id not in committed.read_text()          # the committed ledger is untouched


def test_ingest_refuses_a_wrong_folder(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPTS/'gpu_ingest.py'), str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and 'came back' in p.stderr and 'Traceback' not in p.stderr


def test_table1_jobs_continue_what_came_back(tmp_path):
    "Every group x seed chunk is one run; a folder of an earlier machine (same tag, seeds) is continued or skipped."
    from types import SimpleNamespace
    a = gpu_run.parse_args(['--out', str(tmp_path/'out')])
    runs = tmp_path/'runs'
    (runs/'paper-gpu-20260101T0000-tf32-graphs-bp-s0-1').mkdir(parents=True)
    (runs/'paper-gpu-20260101T0000-tf32-graphs-bp-s0-1'/'DONE').write_text('x')
    (runs/'paper-gpu-20260101T0000-tf32-graphs-fa-s2-3-4-5').mkdir()
    ctx = SimpleNamespace(a=a, runs=runs, stamp='20261207T1200', data=tmp_path/'data')
    pipes = gpu_run.t1_jobs(ctx)
    assert len(pipes) == len(gpu_run.GROUPS) + 1 and all(len(p) == len(a.seed_chunks) for p in pipes)
    jobs = {j['name']: j for p in pipes for j in p}
    assert jobs['paper-gpu-20260101T0000-tf32-graphs-bp-s0-1']['status'] == 'done before'
    assert jobs['paper-gpu-20260101T0000-tf32-graphs-fa-s2-3-4-5']['status'] == 'waiting'
    assert 'paper-gpu-20261207T1200-tf32-graphs-fa-s0-1' in jobs
    for j in jobs.values():
        cmd = ' '.join(map(str, j['cmd']))
        assert f"-p seeds {j['seeds']}" in cmd and '--preset paper' in cmd and "['cifar10-jpeg']" in cmd
        assert ('--tf32 --compile reduce-overhead' in cmd) == j['tag'].startswith('tf32-graphs')
    fp32 = [j for j in jobs.values() if j['tag'].startswith('fp32-eager')]
    assert len(fp32) == len(a.seed_chunks) and all("['pepita']" in ' '.join(map(str, j['cmd'])) for j in fp32)


def test_blob_hash_is_gits(tmp_path):
    "Without git on the machine, the tree is compared with the manifest by git's own blob hashes."
    f = tmp_path/'a.txt'
    f.write_bytes(b'some bytes\n\x00\xff')
    sha = subprocess.run(['git', 'hash-object', str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert gpu_run.git_blob(f) == sha


def test_ingest_keeps_dry_runs_out_of_the_ledger(tmp_path):
    (tmp_path/'summary.json').write_text(json.dumps(dict(dry_run=True, steps={})))
    p = subprocess.run([sys.executable, str(SCRIPTS/'gpu_ingest.py'), str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and '--scratch' in p.stderr and 'Traceback' not in p.stderr


def test_resume_pack_is_slim(tmp_path):
    "What travels to continue Table 1: run.json and DONE of each run, the finished units of unfinished ones only."
    runs = tmp_path/'runs'/gpu_run.EXPERIMENT
    for run, done in (('a-s0', True), ('b-s0', False)):
        for f in ['run.json', 'units/u.json', 'notebook.ipynb', 'results.jsonl'] + (['DONE'] if done else []):
            (runs/run/f).parent.mkdir(parents=True, exist_ok=True)
            (runs/run/f).write_text('{}')
    gpu_run.pack(gpu_run.run_folder_files(runs), tmp_path/'back.tar.gz')
    info = load('gpu_prepare').slim_resume(tmp_path/'back.tar.gz', tmp_path/'slim.tar.gz')
    with tarfile.open(tmp_path/'slim.tar.gz') as t: names = sorted(n.split('/', 2)[2] for n in t.getnames())
    assert names == ['a-s0/DONE', 'a-s0/run.json', 'b-s0/run.json', 'b-s0/units/u.json']
    assert info['runs'] == 2 and info['finished'] == 1
