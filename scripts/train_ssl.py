"""Self-supervised pre-training of the CLAPP++ encoder, data-parallel under torchrun, then (optionally) its linear
probe.

    torchrun --nproc_per_node 4 scripts/train_ssl.py --method clapp++ --dataset stl10 --epochs 300 --batch-size 8 \
        --out runs/ssl/stl10
    python scripts/train_ssl.py --probe-only --dataset stl10 --out runs/ssl/stl10          # probe from the checkpoint

Without torchrun it runs in one process. Backend: nccl on GPU, gloo on CPU. Every process starts from rank 0's
weights (broadcast); after each rule call the gradients of every parameter (encoder and the rule's own W_pred/heads)
are averaged over processes with one all_reduce, which is what DistributedDataParallel does internally. DDP's own
reducer is not used because the layer-local rules run one backward per layer inside one call (DDP's reducer assumes
one backward per forward). `--batch-size` is per process. Rank 0 writes `ckpt.pt` atomically after every epoch; a
rerun with the same --out resumes after the last finished epoch. Each process also writes `final_rank<r>.pt` (its
weights) so that synchronisation can be checked.
"""
import argparse, json, os, sys, time
from pathlib import Path
import torch, torch.distributed as dist

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--method', default='clapp++')
    p.add_argument('--dataset', default='cifar10')
    p.add_argument('--width', type=float, default=1.)
    p.add_argument('--epochs', type=int, default=300)
    p.add_argument('--steps-per-epoch', type=int, default=0, help='0: the whole split')
    p.add_argument('--batch-size', type=int, default=32, help='per process')
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--weight-decay', type=float, default=None,
                   help='AdamW weight decay (default: 1e-5 for tiny_imagenet, else 0, as the reference code)')
    p.add_argument('--seed', type=int, default=2)
    p.add_argument('--limit', type=int, default=0, help='use only the first N images (0: all)')
    p.add_argument('--fast-aug', action='store_true',
                   help='tensors on the device, batched approximate views (small data)')
    p.add_argument('--num-workers', type=int, default=8)
    p.add_argument('--data-root', default='data')
    p.add_argument('--download', action='store_true')
    p.add_argument('--device', default='auto')
    p.add_argument('--out', required=True)
    p.add_argument('--no-probe', action='store_true')
    p.add_argument('--probe-only', action='store_true')
    p.add_argument('--probe-epochs', type=int, default=300)
    p.add_argument('--probe-batch-size', type=int, default=32)
    p.add_argument('--probe-augment', action='store_true')
    args = p.parse_args(argv)
    if args.weight_decay is None:
        from localrules.rules.clapp import ssl_weight_decay
        args.weight_decay = ssl_weight_decay(args.dataset)
    return args

def setup(device):
    "(rank, world, device) and the process group when launched by torchrun."
    from localrules.core import get_device
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    dev = get_device(device)
    if dev.type == 'cuda' and world > 1:
        dev = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(dev)
    if world > 1: dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return rank, world, dev

def broadcast_state(rule):
    "Every process takes rank 0's parameters and buffers."
    for t in list(rule.parameters()) + list(rule.buffers()): dist.broadcast(t.data, 0)

def average_grads(rule, world):
    "Average every parameter's .grad over processes with one flat all_reduce (what DDP's reducer does)."
    ps = [p for p in rule.parameters() if p.requires_grad]
    for p in ps:
        if p.grad is None: p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in ps])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p in ps:
        n = p.numel()
        p.grad.copy_(flat[i:i+n].view_as(p))
        i += n

def build(args, dev, size):
    from localrules.rules.base import get_rule
    from localrules.rules.clapp import VGGEncoder
    return get_rule(args.method, VGGEncoder(width=args.width), dataset=args.dataset, image_size=size,
                    fast=args.fast_aug).to(dev)

def main(argv=None):
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from localrules.core import seed_everything, provenance
    from localrules.data import get_dataset
    from localrules.store import atomic_torch_save, atomic_write, load_checkpoint, dump_json
    from localrules.train import make_optimizer
    from localrules.protocols.ssl_protocol import ssl_images, pretrain, TwoViews
    rank, world, dev = setup(args.device)
    ds, lim = args.dataset, args.limit or None
    ssl_split = 'unlabeled' if ds == 'stl10' else 'train'
    size = 32 if ds in ('digits', 'fashion_mnist', 'mnist') else None
    ckpath = out/'ckpt.pt'
    if not args.probe_only:
        seed_everything(args.seed, deterministic=False)
        if args.fast_aug:
            xssl = ssl_images(ds, ssl_split, args.data_root, args.download, limit=lim, device=dev)[0]
            size = xssl.shape[-1]
        rule = build(args, dev, size)
        if world > 1: broadcast_state(rule)
        opt = make_optimizer(rule.parameters(), 'adamw', args.lr, weight_decay=args.weight_decay)
        if args.fast_aug:
            def batches(ep):
                # augmentations differ per rank, resumable
                torch.manual_seed(args.seed * 1_000_003 + ep * 1009 + rank)
                g = torch.Generator().manual_seed(args.seed * 100_003 + ep)        # same permutation on every rank
                idx = torch.randperm(len(xssl), generator=g)[rank::world].to(dev)
                n = len(idx) // args.batch_size
                if args.steps_per_epoch: n = min(n, args.steps_per_epoch)
                for i in range(n): yield xssl[idx[i*args.batch_size:(i+1)*args.batch_size]]
        else:
            pairs = TwoViews(get_dataset(ds, args.data_root, ssl_split, args.download, transform=lambda im: im), ds,
                             size)
            sampler = torch.utils.data.DistributedSampler(pairs, world, rank, shuffle=True, seed=args.seed,
                                                          drop_last=True)
            def batches(ep):
                torch.manual_seed(args.seed * 1_000_003 + ep * 1009 + rank)
                sampler.set_epoch(ep)
                dl = torch.utils.data.DataLoader(pairs, args.batch_size, sampler=sampler, drop_last=True,
                                                 num_workers=args.num_workers, pin_memory=dev.type == 'cuda')
                for i, (x, _) in enumerate(dl):
                    if args.steps_per_epoch and i >= args.steps_per_epoch: break
                    yield x.to(dev, non_blocking=True)
        save = lambda ck: atomic_torch_save(dict(ck, args=vars(args), world=world), ckpath) if rank == 0 else None
        load = lambda: load_checkpoint(ckpath, map_location=dev) if ckpath.exists() else None
        if ckpath.exists() and rank == 0:
            print(f"resuming from {ckpath} after epoch {load_checkpoint(ckpath)['epoch'] + 1}", flush=True)
        t0 = time.time()
        log = pretrain(rule, opt, batches, args.epochs, checkpoint=(save, load),
                       sync=(lambda r: average_grads(r, world)) if world > 1 else None, progress=rank == 0,
                       unit=f'{args.method} on {ds} (rank {rank})')
        diverged = log.diverged.get(0)          # non-finite loss or weights: stopped, recorded, no probe
        if world > 1: dist.barrier()
        atomic_torch_save({k: v.cpu() for k, v in rule.state_dict().items()}, out/f'final_rank{rank}.pt')
        if rank == 0:
            info = dict(args=vars(args), world=world, log=log.rows, seconds=time.time() - t0, diverged=diverged)
            atomic_write(out/'pretrain.json', dump_json(dict(info, **provenance(dev)), indent=1))
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
        if diverged:
            sys.exit(f"pre-training diverged: {diverged}; no probe (see {out/'pretrain.json'})")
    if rank == 0 and not args.no_probe:
        from localrules.data import NUM_CLASSES
        from localrules.protocols.ssl_protocol import linear_probe
        ck = load_checkpoint(ckpath, map_location=dev)
        a = argparse.Namespace(**dict(ck['args'], fast_aug=ck['args']['fast_aug']))
        test_split = 'val' if ds == 'tiny_imagenet' else 'test'
        xtr, ytr = ssl_images(ds, 'train', args.data_root, args.download, limit=lim, device=dev)
        xte, yte = ssl_images(ds, test_split, args.data_root, args.download, limit=lim, device=dev)
        rule = build(a, dev, xtr.shape[-1])
        rule.load_state_dict(ck['rule'])
        res = linear_probe(rule, (xtr, ytr), (xte, yte), NUM_CLASSES.get(ds), args.probe_epochs,
                           batch_size=args.probe_batch_size, seed=args.seed, augment=args.probe_augment)
        res['pretrain_epochs'] = ck['epoch'] + 1
        atomic_write(out/'probe.json', dump_json(dict(res, args=vars(args), **provenance(dev)), indent=1))
        print(f"probe: test {res['probe_acc']:.2f}% (val {res['probe_val_acc']:.2f}%, epoch {res['probe_epoch']})",
              flush=True)

if __name__ == '__main__':
    main()
