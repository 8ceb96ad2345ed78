"""Data-parallel pre-training (scripts/train_ssl.py) with 2 CPU processes (gloo): processes stay in sync, a rerun
resumes."""
import json, os, subprocess, sys, tempfile
from pathlib import Path
import torch
from localrules.margins import assert_margins, register_check

ROOT = Path(__file__).resolve().parents[1]
ARGS = ['--method', 'clapp++', '--dataset', 'digits', '--width', '0.0625', '--batch-size', '8', '--steps-per-epoch',
        '2',
        '--limit', '128', '--fast-aug', '--lr', '1e-3', '--device', 'cpu', '--probe-epochs', '2']

def torchrun(out, epochs, *extra):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT/'scripts'/'train_ssl.py'), *ARGS, '--epochs', str(epochs), '--out', str(out), *extra]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def weights(out, rank): return torch.load(out/f'final_rank{rank}.pt')

@register_check('ddp.probe', 'tests/test_ddp.py::test_ddp_sync_and_resume',
                'CLAPP++ pre-trained 1 + 1 (resumed) epochs by 2 processes on 128 digits, linear probe: '
                'test acc > 20 %',
                margins=lambda r: {'probe_acc > 20': r['probe']['probe_acc'] - 20}, slow=True)
def ddp_resumed(seed:int=2, out=None) -> dict:
    """{first, stdout, probe}: one epoch by 2 processes (weights of ranks 0, 1), then a resumed second epoch and the
    probe (its stdout and probe.json), with train_ssl.py's --seed `seed` (2 is its default) into `out` (None: a
    scratch folder)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(out or Path(d)/'run')
        torchrun(out, 1, '--no-probe', '--seed', str(seed))
        first = weights(out, 0), weights(out, 1)
        s = torchrun(out, 2, '--seed', str(seed))                           # resume: one more epoch, then the probe
        return dict(first=first, stdout=s, probe=json.loads((out/'probe.json').read_text()))

def test_ddp_sync_and_resume(tmp_path):
    out = tmp_path/'run'
    res = ddp_resumed(2, out)
    a, b = res['first']
    for k in a: assert torch.equal(a[k], b[k]), k                           # identical weights on both processes
    w1 = a['model.blocks.0.0.weight'].clone()
    s = res['stdout']
    assert 'resuming' in s and 'after epoch 1' in s, s
    log = json.loads((out/'pretrain.json').read_text())['log']
    assert [r['step'] for r in log if r['metric'] == 'ssl_loss'] == [1, 2]
    a, b = weights(out, 0), weights(out, 1)
    for k in a: assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a['model.blocks.0.0.weight'], w1)                # it kept training
    assert res['probe']['pretrain_epochs'] == 2
    assert_margins('ddp.probe', res)     # probe acc > 20 %; margins over seeds: margin_check.py --slow -k ddp.


def test_diverged_pretraining_is_recorded_and_stops(tmp_path):
    "A huge lr (one process): the run stops with a message naming the unit and step, pretrain.json records it."
    out = tmp_path/'run'
    args = [a if a != '1e-3' else '1e30' for a in ARGS]
    cmd = [sys.executable, str(ROOT/'scripts'/'train_ssl.py'), *args, '--epochs', '3', '--out', str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and 'pre-training diverged: clapp++ on digits (rank 0): non-finite' in r.stderr, r.stderr
    info = json.loads((out/'pretrain.json').read_text())
    assert 'step' in info['diverged'] and not (out/'probe.json').exists()
    assert len([row for row in info['log'] if row['metric'] == 'ssl_loss']) < 3
