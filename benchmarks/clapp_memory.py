"""Peak memory and time per step of layer-local CLAPP++ vs end-to-end BP-CLAPP++ on the same encoder and batch.

The local rule back-propagates each layer's loss before the next block's graph is built
(localrules.rules.clapp.CLAPPpp), so its activation memory is one block's graph; BP keeps every block's graph.
Reported per method:
  autograd_MB   peak size of the tensors saved for backward (activations; parameters excluded), any device
  step_MB       (GPU) peak allocated during one step minus what was allocated before it (params, grads, Adam state)
  total_MB      (GPU) peak allocated during the step, everything included (the local rules' W_pred are large)
  state_MB      parameters + gradients + AdamW state (exact tensor sizes), any device
  est_total_MB  state_MB + autograd_MB: what a step holds at its peak, up to the input and temporaries (CPU's stand-in
                for total_MB). At small batch the predictors' state dominates, so the local rules' total is larger
                than BP's; the activation term is the one that grows with depth, batch and image size.
  ms_per_step   median wall time of one rule call + AdamW step
Ratios are local / BP-CLAPP++. Writes benchmarks/results/clapp_memory-<device>.json.

    python benchmarks/clapp_memory.py                      # GPU if available: full width, batch 32, 96 px (STL-10)
    python benchmarks/clapp_memory.py --device cpu --width 0.25 --size 32
"""
import argparse, json, statistics, time
from pathlib import Path
import torch
from localrules.core import get_device, provenance, seed_everything
from localrules.rules.base import get_rule
from localrules.rules.clapp import VGGEncoder, autograd_peak_bytes

p = argparse.ArgumentParser()
p.add_argument('--device', default='auto')
p.add_argument('--width', type=float, default=None)
p.add_argument('--size', type=int, default=None)
p.add_argument('--batch-size', type=int, default=32)
p.add_argument('--steps', type=int, default=5)
p.add_argument('--methods', default='clapp++,clapp++_no2d,clapp++dfb,clapp++both,bp_clapp++,bp_infonce,dfa_ssl')
a = p.parse_args()
dev = get_device(a.device)
gpu = dev.type == 'cuda'
width = a.width or (1. if gpu else 0.25)
size = a.size or (96 if gpu else 32)
dataset = {96: 'stl10', 64: 'tiny_imagenet'}.get(size, 'cifar10')
sync = torch.cuda.synchronize if gpu else (lambda: None)
rows = []
for name in a.methods.split(','):
    seed_everything(0, deterministic=False)
    rule = get_rule(name, VGGEncoder(width=width), dataset=dataset, image_size=size).to(dev)
    opt = torch.optim.AdamW(rule.parameters(), lr=2e-4)
    pairs = torch.randn(a.batch_size, 2, 3, size, size, device=dev)        # ready-made views: augmentation not timed
    def step():
        opt.zero_grad(set_to_none=False)
        rule(pairs, None)
        opt.step()
    step()
    step()
    sync()                                                 # grads and Adam state exist from here on
    r = dict(method=name, params_M=sum(q.numel() for q in rule.parameters()) / 1e6)
    if gpu:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        sync()
        peak = torch.cuda.max_memory_allocated(dev)
        r.update(step_MB=(peak - base) / 2**20, total_MB=peak / 2**20)
    r['autograd_MB'] = autograd_peak_bytes(lambda: rule(pairs, None)) / 2**20
    opt.zero_grad()
    nbytes = lambda t: t.numel() * t.element_size()
    state = sum(nbytes(q) + (nbytes(q.grad) if q.grad is not None else 0) for q in rule.parameters())
    state += sum(nbytes(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    r['state_MB'] = state / 2**20
    r['est_total_MB'] = r['state_MB'] + r['autograd_MB']
    ts = []
    for _ in range(a.steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        ts.append(time.perf_counter() - t)
    r['ms_per_step'] = 1000 * statistics.median(ts)
    rows.append(r)
    del rule, opt, pairs
    if gpu: torch.cuda.empty_cache()
ref = next(r for r in rows if r['method'] == 'bp_clapp++')
for r in rows:
    for k in ('autograd_MB', 'step_MB', 'total_MB', 'state_MB', 'est_total_MB', 'ms_per_step'):
        if k in r: r[k.removesuffix('_MB').removesuffix('_per_step') + '_ratio'] = r[k] / ref[k]
cols = [c for c in ('method', 'params_M', 'autograd_MB', 'autograd_ratio', 'step_MB', 'step_ratio', 'total_MB',
                    'total_ratio',
                     'state_MB', 'est_total_MB', 'est_total_ratio', 'ms_per_step', 'ms_ratio') if c in rows[0]]
print(f"{dataset} {size}px, width {width}, batch {a.batch_size}, {dev}")
print(' | '.join(cols))
for r in rows: print(' | '.join(f'{r[c]:.3g}' if isinstance(r[c], float) else str(r[c]) for c in cols))
out = Path(__file__).parent/'results'/f"clapp_memory-{'gpu' if gpu else 'cpu'}.json"
out.write_text(json.dumps(dict(config=dict(dataset=dataset, size=size, width=width, batch_size=a.batch_size,
                                           steps=a.steps),
                               rows=rows, **provenance(dev)), indent=1))
print('wrote', out)
