"""Epoch time per member of a population of N networks trained as one stacked computation, against the same members
trained one after another, in one run.

Network and protocol of Table 1 (arXiv 2302.05440, Sup. Table 4): MLP 784-1024-10, ReLU, dropout 0.1, no biases,
batch 64, SGD with momentum 0.9, the library's training loop (`fit`'s `train_epoch`). Data: sklearn's digits
upsampled to 28x28 = 784 and tiled to `--n` samples. For each rule (BP, PEPITA) and each N, a population of N members
(seeds 0..N-1, each with its own learning rate) and one network alone are timed in interleaved rounds (shuffled order,
one epoch each) after a warm-up epoch. Reported per (rule, N): the median epoch time per member, and the median over
rounds of  population epoch / (N x one network's epoch in the same round)  — the cost of a population relative to
running its members one after another.

The arithmetic floor: the big products (B x D x H) that every member must do are the same in both; what a population
saves is the per-step overhead (Python, dispatch, launches, per-parameter optimizer work) and what batching gains
in the products themselves. `floor` times the bare products of one step of the population (batched, `torch.bmm`) and
divides by N x one network's step; `update_floor_ratio` adds the least memory traffic of the members' momentum-SGD
update (5 streams over all weights at this machine's measured bandwidth). Their sum, `total_floor_ratio`, is what no
training loop can beat on this machine: where it is above a target ratio, the arithmetic and the memory set the floor.
`flops_per_member_step` is the arithmetic cost (multiply-adds x 2) used by `localrules list` for its estimates.

    .venv/bin/python benchmarks/population.py [--device cpu|cuda] [--members 1,10,40,120] [--n 1920] [--rounds 5]
"""
import argparse, json, random, statistics, time
from pathlib import Path
import torch, torch.nn.functional as F
from localrules.core import get_device, provenance, device_name
from localrules.data import load_tensors, TensorLoader
from localrules.rules.base import get_rule, MLP
from localrules.train import make_optimizer, train_epoch
from localrules.protocols.mlp_protocol import step_flops

RULES = {'bp': {}, 'pepita': {}}


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def data(n, dev):
    "Digits upsampled to 784 pixels, tiled to n samples."
    x, y = load_tensors('digits', 'train')
    x = F.interpolate(x, size=(28, 28), mode='bilinear', align_corners=False).flatten(1)
    reps = -(-n // len(x))
    return x.repeat(reps, 1)[:n].to(dev), y.repeat(reps)[:n].to(dev)


def setup(rule, seeds, sizes, x, y, batch, dev):
    "(rule, optimizer, loader) of one network (an int seed) or a population (a list)."
    model = MLP(sizes, dropout=0.1, seed=seeds).to(dev)
    r = get_rule(rule, model, **RULES[rule]).to(dev)
    lr = [0.01 * (1 + i % 3) for i in range(len(seeds))] if isinstance(seeds, list) else 0.01
    opt = make_optimizer(r.parameters(), lr=lr, momentum=0.9)
    return r, opt, TensorLoader(x, y, batch_size=batch, seed=seeds)


def timed(fn, dev):
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def product_floor(N, sizes, B, dev, reps=20):
    "Seconds of the big products of one training step of N members, batched: forward, weight gradient, backward."
    D, H, C = sizes
    x, W1, W2 = torch.randn(N, B, D, device=dev), torch.randn(N, H, D, device=dev), torch.randn(N, C, H, device=dev)
    h, e = torch.randn(N, B, H, device=dev), torch.randn(N, B, C, device=dev)
    def step():
        torch.bmm(x, W1.mT)
        torch.bmm(h, W2.mT)
        torch.bmm(e.mT, h)
        torch.bmm(e, W2)
        torch.bmm(h.mT, x)
    step()
    return statistics.median(timed(step, dev) for _ in range(reps))


def update_floor(N, sizes, dev, reps=20):
    """Seconds of the least memory traffic of one momentum-SGD update of N members' weights: read the weight, its
    gradient and its momentum buffer, write the weight and the buffer (5 streams), at the bandwidth this machine
    reaches on a 3-stream `add` over tensors of that size. Products and this update are what no loop can avoid."""
    D, H, C = sizes
    n = N * (H * D + C * H)
    a, b, c = (torch.randn(n, device=dev) for _ in range(3))
    torch.add(a, b, out=c)
    three = statistics.median(timed(lambda: torch.add(a, b, out=c), dev) for _ in range(reps))
    return three * 5 / 3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--members', default='1,10,40,120')
    ap.add_argument('--rules', default='bp,pepita')
    ap.add_argument('--n', type=int, default=1920, help='samples per epoch (batches of --batch)')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--hidden', type=int, default=1024)
    ap.add_argument('--threads', type=int, default=1, help="torch CPU threads (0: torch's choice)")
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)          # as the protocol's training does (subnormal softmax tails)
    dev = get_device(a.device)
    x, y = data(a.n, dev)
    sizes, B, Ns = [x.shape[1], a.hidden, 10], a.batch, [int(v) for v in a.members.split(',')]
    steps = -(-a.n // B)
    results = []
    for rule in a.rules.split(','):
        runs = {'alone': setup(rule, 0, sizes, x, y, B, dev)}
        runs.update({N: setup(rule, list(range(N)), sizes, x, y, B, dev) for N in Ns})
        def epoch(k):
            r, opt, loader = runs[k]
            return timed(lambda: train_epoch(r, opt, loader), dev)
        for k in runs: epoch(k)                                  # warm-up
        times = {k: [] for k in runs}
        order = list(runs)
        rng = random.Random(0)
        for _ in range(a.rounds):
            rng.shuffle(order)
            for k in order: times[k].append(epoch(k))
        alone = statistics.median(times['alone'])
        for N in Ns:
            ratio = statistics.median(t / (N * s) for t, s in zip(times[N], times['alone']))
            floor = product_floor(N, sizes, B, dev) * steps / (N * alone)
            floor_update = update_floor(N, sizes, dev) * steps / (N * alone)
            results.append(dict(rule=rule, members=N, epoch_s_per_member=statistics.median(times[N]) / N,
                                epoch_s_alone=alone, ratio_vs_one_after_another=ratio, floor_ratio=floor,
                                update_floor_ratio=floor_update, total_floor_ratio=floor + floor_update,
                                step_s_per_member=statistics.median(times[N]) / N / steps,
                                flops_per_member_step=step_flops(rule, sizes, B)))
            print(f"{rule:7s} N={N:4d}: {results[-1]['epoch_s_per_member'] * 1e3:8.2f} ms/epoch per member "
                  f"(alone {alone * 1e3:.2f}); population / one-after-another {ratio:.3f}  "
                  f"(floor: products {floor:.3f} + update {floor_update:.3f})",
                  flush=True)
    out = Path(a.out or f"benchmarks/results/population-{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = dict(sizes=sizes, batch=B, samples=a.n, steps_per_epoch=steps, rounds=a.rounds,
                  threads=torch.get_num_threads(),
                  dropout=0.1, momentum=0.9, dtype='float32', tf32=torch.backends.cuda.matmul.allow_tf32)
    out.write_text(json.dumps(dict(benchmark='population', config=config, results=results,
                                   provenance=dict(provenance(dev), device=device_name(dev))), indent=1))
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
