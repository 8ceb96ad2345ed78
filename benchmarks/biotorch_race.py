"""localrules' converted models against biotorch (jsalbert/biotorch, the library of arXiv 2108.13446) side by side.

Same model (the CIFAR ResNet-20 of `localrules.rules.feedback.resnet20`, batch norm, option-A shortcuts), same batch
(`--batch` random 3x32x32 images and labels), same weights: one deep copy is converted by biotorch's
`BioModule(model, mode)`, another by `localrules.rules.feedback.convert(model, mode)`, and biotorch's feedback
tensors are copied into ours (DFA with `dfa_positions='sum'`, biotorch's convention). Measured per mode:
  * equal updates: the largest relative difference ||g_ours - g_bio|| / ||g_bio|| over all parameter tensors after one
    cross-entropy backward on the batch (brSF draws fresh magnitudes in each library: timed only);
  * time per step (zero_grad + forward + loss + backward; no optimizer step, so the weights stay identical), median of
    `--rounds` interleaved rounds after warm-up, next to torch's own backprop on the same model.

biotorch 0.0.16 installs from PyPI without its dependencies (`pip install --no-deps --target DIR biotorch`; it pins
no torch version, but pulls jupyter, tensorboard, torchattacks, ... that the layers do not need):

    PYTHONPATH=.:/tmp/biotorch_pkg .venv/bin/python benchmarks/biotorch_race.py [--device cpu|cuda|auto] [--batch 32]
"""
import argparse
import contextlib
import copy
import io
import json
import random
import statistics
import time
from pathlib import Path
import torch
import torch.nn as nn
import torch.nn.functional as F
from localrules.core import get_device, provenance, seed_everything, device_name
from localrules.rules.feedback import convert, resnet20

MODES = ['fa', 'dfa', 'usf', 'frsf', 'brsf']

def bio_convert(model:nn.Module, mode:str) -> nn.Module:
    "biotorch's BioModule around `model` (its conversion report silenced)."
    from biotorch.module.biomodule import BioModule
    with contextlib.redirect_stdout(io.StringIO()):
        return BioModule(model, mode=mode, output_dim=10 if mode == 'dfa' else None)

def layers(model:nn.Module) -> list:
    "The Linear/Conv2d modules in module order."
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

def ours_convert(model:nn.Module, mode:str, bio:nn.Module) -> nn.Module:
    "`convert(model, mode)` with biotorch's feedback tensors copied in (fa, dfa, frsf: those it keeps fixed)."
    convert(model, mode, init='xavier_uniform', usf_scale='xavier', dfa_positions='sum')      # biotorch's conventions
    with torch.no_grad():
        for ours, theirs in zip(layers(model), layers(bio)):
            if 'feedback_weight' in ours._buffers: ours.feedback_weight.copy_(theirs.weight_backward)
    return model

def step_fn(model:nn.Module, x, y, bio_dfa:bool=False):
    "One zero_grad + forward + cross-entropy + backward of `model` (biotorch's DFA needs targets and the loss)."
    def step():
        model.zero_grad(set_to_none=True)
        out = model(x, targets=y, loss_function=F.cross_entropy) if bio_dfa else model(x)
        F.cross_entropy(out, y).backward()
    return step

def grads(model:nn.Module) -> dict:
    "{name: gradient} of the trainable parameters, names without BioModule's 'module.' prefix."
    return {n.removeprefix('module.'): p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

def max_rel_diff(a:dict, b:dict) -> float:
    "max over tensors of ||a - b|| / ||b|| (both must hold the same parameter names)."
    assert set(a) == set(b), set(a) ^ set(b)
    return max(((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)).item() for n in b)

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def race(steps:dict, rounds:int, warmup:int, dev) -> dict:
    "Median seconds per step of each named step function, timed in interleaved rounds (shuffled order each round)."
    for f in steps.values():
        for _ in range(warmup): f()
    times = {k: [] for k in steps}
    order = list(steps)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            sync(dev)
            t = time.perf_counter()
            steps[k]()
            sync(dev)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='auto')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--rounds', type=int, default=9)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave as is)')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    res = dict(provenance(dev), batch=a.batch, rounds=a.rounds, threads=torch.get_num_threads(),
               model='localrules.rules.feedback.resnet20 (ResNet-20, width 16)')
    try:
        import biotorch
        res['biotorch'] = getattr(biotorch, '__version__', '0.0.16 (no __version__)')
    except ImportError as e:
        res['biotorch'] = None
        res['not_run'] = f'biotorch does not import: {e}; install it with pip install --no-deps --target DIR biotorch'
        print(res['not_run'])
        return write(res, a, dev)
    seed_everything(0)
    base = resnet20().to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(dev)
    bp = copy.deepcopy(base)
    res['modes'] = {}
    for mode in MODES:
        bio = bio_convert(copy.deepcopy(base), mode).to(dev)
        ours = ours_convert(copy.deepcopy(base), mode, bio.module).to(dev)
        s_bio, s_ours = step_fn(bio, x, y, bio_dfa=mode == 'dfa'), step_fn(ours, x, y)
        row = {}
        if mode != 'brsf':
            s_bio()
            gb = grads(bio)
            s_ours()
            row['max_rel_update_diff'] = max_rel_diff(grads(ours), gb)
            step_fn(bp, x, y)()
            row['max_rel_diff_to_bp'] = max_rel_diff(gb, grads(bp))        # shows the feedback acts in both
        t = race({'torch_bp': step_fn(bp, x, y), 'localrules': s_ours, 'biotorch': s_bio}, a.rounds, a.warmup, dev)
        row.update({f's_per_step_{k}': v for k, v in t.items()})
        row['biotorch_over_localrules'] = t['biotorch'] / t['localrules']
        res['modes'][mode] = row
        print(mode, {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    write(res, a, dev)

def write(res:dict, a, dev):
    out = Path(a.out or Path(__file__).parent/'results'/f'biotorch_race-{dev.type}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__':
    main()
