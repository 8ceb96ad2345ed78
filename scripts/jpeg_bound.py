"""Bound what the JPEG copy of CIFAR-10 (`cifar10-jpeg`, quality 75) costs BP and PEPITA in Table 1 of 2302.05440.

The original CIFAR-10 is not available offline, only its JPEG copy. This script re-encodes the copy once more (a
second JPEG pass: quality 95, 75, and optionally lower) and trains BP and PEPITA with the Table 1 protocol
(`protocols.mlp_protocol.settings`, 1×1024, the paper's learning rates) on each copy, with the epochs and milestones
shortened to what a CPU affords (milestones at the protocol's 60 % and 90 % of the epochs). Seeds train as one
population. The accuracy lost by each extra pass, beside the pixel change that pass makes, bounds (under an assumption
stated in the Table 1 page) what the first quality-75 pass cost against the original images.

    python scripts/jpeg_bound.py --data-root /path/with/cifar10-jpeg.tar.gz --work /tmp/h4data \\
        --epochs 8 --seeds 0 1 --copies orig q95 q75 q30 --out results/jpeg_bound.csv

Each finished (copy, rule) appends one row per seed to `--out` (CSV: copy, quality, rule, seed, epochs, milestones,
lr, train_limit, test_acc, best_test_acc, train_acc, pixel_rmse, commit, date, device, torch), so an interrupted run
keeps its finished rows; rows already in `--out` for the same parameters are skipped.
"""
import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from localrules.core import provenance
from localrules.data import load_tensors
from localrules.protocols.mlp_protocol import settings, train_population

COPY_QUALITY = {'orig': None, 'q95': 95, 'q90': 90, 'q75': 75, 'q50': 50, 'q30': 30}
FIELDS = ['copy', 'quality', 'inputs', 'rule', 'seed', 'epochs', 'milestones', 'lr', 'train_limit', 'test_acc',
          'best_test_acc', 'train_acc', 'pixel_rmse', 'commit', 'date', 'device', 'torch']


def reencode(x:torch.Tensor, # images (N, 3, 32, 32), floats in [0, 1] (the decoded JPEG copy)
             quality:int # JPEG quality of the extra pass (PIL, default 4:2:0 chroma subsampling as in the copy)
            ) -> torch.Tensor:
    "The images after one more JPEG pass at `quality`, decoded back to floats in [0, 1]."
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(u8)
    for i, im in enumerate(u8):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format='JPEG', quality=quality)
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255)


def copy_tensors(copy:str, data_root:Path, work:Path) -> tuple:
    "((x_train, y_train), (x_test, y_test), rmse) of one copy, flattened; cached as uint8 under `work`."
    cache = work/f'cifar10-jpeg-{copy}.pt'
    if not cache.exists():
        base = work/'cifar10-jpeg-orig.pt'
        if not base.exists():
            tr = load_tensors('cifar10-jpeg', 'train', data_root)
            te = load_tensors('cifar10-jpeg', 'test', data_root)
            torch.save({'train': ((tr[0] * 255).round().to(torch.uint8), tr[1]),
                        'test': ((te[0] * 255).round().to(torch.uint8), te[1])}, base)
        if copy != 'orig':
            b = torch.load(base)
            d = {k: ((reencode(v[0].float().div(255), COPY_QUALITY[copy]) * 255).round().to(torch.uint8), v[1])
                 for k, v in b.items()}
            torch.save(d, cache)
    d = torch.load(cache)
    b = torch.load(work/'cifar10-jpeg-orig.pt')
    rmse = (d['test'][0].float() - b['test'][0].float()).pow(2).mean().sqrt().item()   # in 0..255 grey levels
    def flat(t): return (t[0].float().div(255).flatten(1), t[1])
    return flat(d['train']), flat(d['test']), rmse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data-root', default='/work/shared/data', help='folder holding cifar10-jpeg(.tar.gz)')
    ap.add_argument('--work', default='/work/h4data', help='scratch folder for the re-encoded copies')
    ap.add_argument('--copies', nargs='+', default=['orig', 'q95', 'q75'], help=f'of {list(COPY_QUALITY)}')
    ap.add_argument('--rules', nargs='*', default=['bp', 'pepita'], help="'bp', 'pepita'; none: only build the copies")
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    ap.add_argument('--epochs', type=int, default=8, help='epochs (milestones at 60 %% and 90 %% of them)')
    ap.add_argument('--limit', type=int, default=0, help='train on a fixed random subset of this size; 0: all 50,000')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--standardise', action='store_true',
                    help='standardise each colour channel with the train set\'s mean and std (as the DRTP code of the '
                         'paper\'s baselines does for CIFAR-10); default: pixels in [0, 1] as in the PEPITA code')
    ap.add_argument('--out', default='results/jpeg_bound.csv')
    a = ap.parse_args(argv)
    bad = [c for c in a.copies if c not in COPY_QUALITY]
    if bad: sys.exit(f'--copies: unknown {bad}; allowed: {list(COPY_QUALITY)}')
    bad = [r for r in a.rules if r not in ('bp', 'pepita')]
    if bad: sys.exit(f"--rules: unknown {bad}; allowed: ['bp', 'pepita']")
    if a.epochs < 1: sys.exit('--epochs: must be >= 1')
    if not (Path(a.data_root)/'cifar10-jpeg.tar.gz').exists() and not (Path(a.data_root)/'cifar10-jpeg').exists():
        sys.exit(f'--data-root: no cifar10-jpeg(.tar.gz) under {a.data_root}')
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    milestones = [round(0.6 * a.epochs), round(0.9 * a.epochs)]
    out = Path(a.out)
    done = set()
    if out.exists():
        with out.open() as f:
            done = {(r['copy'], r['inputs'], r['rule'], int(r['seed']), int(r['epochs']), int(r['train_limit']))
                    for r in csv.DictReader(f)}
    inputs = 'standardised' if a.standardise else '[0,1]'
    for copy in a.copies:
        (xtr, ytr), te, rmse = copy_tensors(copy, Path(a.data_root), work)
        if a.standardise:                   # per colour channel (flattened C·H·W: channel-major), train statistics
            c = xtr.view(len(xtr), 3, -1)
            mean, std = c.mean((0, 2)), c.std((0, 2))
            def norm(x): return ((x.view(len(x), 3, -1) - mean[:, None]) / std[:, None]).flatten(1)
            xtr, te = norm(xtr), (norm(te[0]), te[1])
        if a.limit:
            idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:a.limit]
            xtr, ytr = xtr[idx], ytr[idx]
        for rule in a.rules:
            seeds = [s for s in a.seeds if (copy, inputs, rule, s, a.epochs, a.limit) not in done]
            if not seeds: continue
            s = settings(rule, 'cifar10-jpeg', epochs=a.epochs, milestones=milestones)
            t0 = time.time()
            _, log = train_population([s] * len(seeds), ((xtr, ytr), te), seeds, cpu_threads=a.threads)
            prov = provenance('cpu')
            new = not out.exists()
            with out.open('a', newline='') as f:
                w = csv.DictWriter(f, FIELDS)
                if new: w.writeheader()
                for i, seed in enumerate(seeds):
                    m = log.member(i)
                    row = dict(copy=copy, quality=COPY_QUALITY[copy] or '', inputs=inputs, rule=rule, seed=seed,
                               epochs=a.epochs, milestones=' '.join(map(str, milestones)), lr=s['lr'],
                               train_limit=a.limit,
                               test_acc=round(m.last('test_acc'), 2), best_test_acc=round(max(m.series('test_acc')), 2),
                               train_acc=round(m.last('train_acc'), 2), pixel_rmse=round(rmse, 3),
                               **{k: prov[k] for k in ('commit', 'date', 'device', 'torch')})
                    w.writerow(row)
                    print(row, flush=True)
            print(f'{copy} {rule}: {time.time() - t0:.0f} s', flush=True)


if __name__ == '__main__':
    main()
