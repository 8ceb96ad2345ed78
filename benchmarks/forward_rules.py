"""Wall time per training epoch of the forward-only rules of arXiv 2302.05440 relative to BP, in one run.

Same network (MLP 784-1024-10, ReLU, dropout 0.1, no biases), same data (sklearn digits upsampled to 28x28 = 784,
tiled to `--n` samples), batch 64, SGD with momentum 0.9, the library's training loop (`train_epoch`). Rules are
timed in interleaved rounds (a shuffled order each round, one epoch each) after one warm-up epoch; reported: the
median epoch time, and the median over rounds of each rule's epoch time divided by BP's in the same round.

The arithmetic floor (NOTES 1.10): per batch BP does 2 big B x D x H products (forward, weight gradient); PEPITA with
the fast modulated first layer W1(x - Fe) = W1x - (W1F)e does 2 + C/B (plus B*C*D for x - Fe); weight mirroring after
every batch adds two more (the noise pass r = xi W1^T and xi^T r) and the factor product: 4 + 3C/B. The ratio
floor (products / 2) is printed next to the measurements.

    .venv/bin/python benchmarks/forward_rules.py [--device cpu|cuda|auto] [--n 5760] [--rounds 7] [--out PATH]
"""
import argparse, json, random, statistics, time
from pathlib import Path
import torch, torch.nn.functional as F
from localrules.core import get_device, provenance, seed_everything, device_name
from localrules.data import load_tensors, TensorLoader
from localrules.rules.base import get_rule, MLP
from localrules.train import make_optimizer, train_epoch

RULES = {  # label: (rule name, kwargs)
    'bp': ('bp', {}),
    'fa': ('fa', {}),
    'drtp': ('drtp', {}),
    'pepita': ('pepita', {}),
    'pepita_plain2nd': ('pepita', {'fast': False}),   # second pass computed in full (no W1F trick)
    'pepita_hebbian': ('pepita_hebbian', {}),
    'pepita_wm': ('pepita', {'wm': True, 'wm_lr': 0.1}),  # mirroring after every batch, noise batch = 64
    'pepita_wm_noise8': ('pepita', {'wm': True, 'wm_lr': 0.1, 'wm_batch': 8}),  # mirroring with 8 noise vectors
    'pepita_timelocal': ('pepita_timelocal', {'lr': 0.01}),
    'afa': ('afa', {}),
    'ff_modulation': ('ff', {'negatives': 'modulation'}),
}
FLOOR = {  # big B x D x H products per batch divided by BP's 2 (C/B terms: D x H x C products)
    'drtp': lambda B, C: 2 / 2,
         'fa': lambda B, C: 3 / 2,     # FA's custom Function also computes the unused input gradient
    'pepita': lambda B, C: (2 + C / B) / 2, 'afa': lambda B, C: (2 + C / B) / 2,
    'pepita_hebbian': lambda B, C: (2 + 2 * C / B) / 2, 'pepita_timelocal': lambda B, C: (2 + 2 * C / B + B / 1024) / 2,
         'pepita_plain2nd': lambda B, C: 3 / 2,
    'pepita_wm': lambda B, C: (4 + 3 * C / B) / 2,             # + noise pass and xi^T r of layer 1, F1F2 twice
    'pepita_wm_noise8': lambda B, C: (2 + 2 * 8 / B + 3 * C / B) / 2,
    'ff_modulation': lambda B, C: (2 + 2 * C / B) / 2}


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--n', type=int, default=5760)
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--hidden', type=int, default=1024)
    ap.add_argument('--norm', default='none')
    ap.add_argument('--rules', default=','.join(RULES))
    ap.add_argument('--out', default=None)
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    seed_everything(0)
    x, y = load_tensors('digits', 'train')
    x = F.interpolate(x, size=(28, 28), mode='bilinear', align_corners=False).flatten(1)
    reps = -(-a.n // len(x))
    x, y = x.repeat(reps, 1)[:a.n].to(dev), y.repeat(reps)[:a.n].to(dev)
    D, C, B = x.shape[1], 10, a.batch
    labels = a.rules.split(',')
    setups = {}
    for lab in labels:
        name, kw = RULES[lab]
        torch.manual_seed(0)
        model = MLP([D, a.hidden, C], dropout=0.1, norm=a.norm).to(dev)
        rule = get_rule(name, model, **kw).to(dev)
        opt = make_optimizer(rule.parameters(), lr=0.01, momentum=0.9)
        setups[lab] = (rule, opt, TensorLoader(x, y, batch_size=B, seed=0))

    def epoch(lab):
        rule, opt, loader = setups[lab]
        sync(dev)
        t = time.perf_counter()
        train_epoch(rule, opt, loader)
        sync(dev)
        return time.perf_counter() - t

    for lab in labels: epoch(lab)                        # warm-up
    times = {lab: [] for lab in labels}
    rng = random.Random(0)
    for r in range(a.rounds):
        order = labels[:]
        rng.shuffle(order)
        for lab in order: times[lab].append(epoch(lab))
    ref = times.get('bp')
    rows = []
    print(f"{'rule':18s} {'epoch s':>9s} {'x BP':>7s} {'floor':>7s}")
    for lab in labels:
        med = statistics.median(times[lab])
        ratio = statistics.median(t / b for t, b in zip(times[lab], ref)) if ref else None
        floor = FLOOR[lab](B, C) if lab in FLOOR else None
        rows.append(dict(rule=lab, name=RULES[lab][0], kwargs=RULES[lab][1], epoch_s_median=med, epoch_s=times[lab],
                         ratio_to_bp_median=ratio, arithmetic_floor=floor))
        print(f"{lab:18s} {med:9.3f} {ratio:7.3f} {('%.3f' % floor) if floor else '':>7s}")
    res = dict(benchmark='forward_rules', config=dict(n=a.n, batch=B, sizes=[D, a.hidden, C], dropout=0.1, norm=a.norm,
               rounds=a.rounds, optimizer='sgd lr 0.01 momentum 0.9', threads=torch.get_num_threads(),
               data='sklearn digits upsampled to 28x28, tiled'), results=rows, provenance=provenance(a.device))
    out = Path(a.out) if a.out else Path(__file__).parent / 'results' / f"forward_rules-{dev.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print('wrote', out)


if __name__ == '__main__':
    main()
