"""Run every experiment's `paper` preset end to end, shrunk to minutes: the paper-only code paths (real datasets,
DataLoader workers, exact augmentations, probe augmentation, learning-rate milestones, ...) that the `smoke` runs in CI
never take. Run it before spending GPU hours, e.g. first thing on a lent GPU:

    python scripts/paper_check.py --data-root ../shared/data [--device cuda] [--only table1_mlp_1hl ...]

Only the sizes below change (epochs, seeds, subsets, iterations); datasets with no local copy are swapped for one that
has (CIFAR-10 -> its JPEG copy, STL-10 -> CIFAR-10 JPEG, CIFAR-100 left out). The results are NOT paper results:
the run folders go to a scratch root (default /tmp/localrules-paper-check), never to runs/ or the ledger.
"""
import argparse, json, shutil, subprocess, sys, time
from pathlib import Path

C10 = 'cifar10-jpeg'
TINY_MLP = dict(epochs=1, milestones=[], seeds=[0], limit=2000)      # a milestone must lie before the last epoch
TINY_THEORY = dict(n_images=64, max_iter=20, rounds=1)
TINY_SSL = dict(dataset=C10, width=0.0625, epochs=1, steps_per_epoch=4, limit=256, num_workers=2)
SHRINK = {
    'bp_vs_fa': dict(epochs=1, milestones=[], seeds=[0]),
    'byom_resnet': dict(epochs=1, milestones=[], seeds=[0], limit=5000, n_val=500),
    'clapp_fig2_theorem31': TINY_THEORY,
    'clapp_fig3a_widths_dfb': TINY_THEORY,
    'clapp_fig3b_mlp_mnist': dict(n_train=2000, n_test=500, epochs=1, eval_batches=4),
    'clapp_fig4b_linear_cnn': TINY_THEORY,
    'clapp_fig4c_alignment': dict(TINY_SSL, align_batches=2),
    'clapp_figA1_lowrank': TINY_THEORY,
    'clapp_figA2_alignment': dict(TINY_SSL, align_batches=2),
    'clapp_table2': dict(TINY_SSL, probe_epochs=1),
    'fig2_pepita_afa_alignment': TINY_MLP,
    'fig2b_ode_theory': dict(t_max=50.0, n_points=5, checkpoints=[10.0, 50.0], n_mc=2000, seeds=[0]),
    'fig3_depth_init_wd_angle': dict(TINY_MLP, dataset=C10, epochs=2, premirror_epochs=1),   # mirroring before the last
    'sm_cifar_study': dict(n_train=300, n_test=200, filters=[20], rates=[[0.05, 0.5]], dynamics=['converged'], extra=[],
                           nsm_patches=5000, epochs=1, zca_patches=5000, kmeans_patches=5000, readout_iter=100,
                           batch_size=100),                                 # a batch no larger than the 300 images
    'sm_depth_speed': dict(dataset=C10, depths=[1, 2], n_images=40, ref_n_images=2, repeats=1),
    'sm_kmeans_baseline': dict(dataset=C10, n_train=500, n_test=200, filters=[50], kmeans_extra=[], n_patches=10000,
                               nsm_patches=10000,
                               epochs=1, readout_iter=100),
    'sm_pretraining': dict(dataset=C10, n_train=500, n_test=200, pre_epochs=1, ft_epochs=1, seeds=[0]),
    'sm_scalability': dict(dataset=C10, n_train=500, n_test=200, ref_n_train=4, epochs=1, readout_iter=100),
    'sm_supervision': dict(dataset=C10, n_train=500, n_test=200, alphas=[0.0, 1.0], epochs=1, mlp_epochs=1,
                           readout_iter=100),
    'supfig4_time_local': dict(TINY_MLP, dataset=C10),
    'supfig5_goodness': dict(dataset=C10, epochs=2, milestones=[1], snapshots=[0, 1, 2], limit=2000),
    'supfig6_pepita_afa_cifar': dict(TINY_MLP, datasets=[C10]),
    'supfig7_feedback_norm': dict(t_max=50.0, n_points=5, init_seeds=[0], seeds=[0]),
    'supfig8_depth_norm': dict(TINY_MLP, datasets=['mnist', C10], depths=[1, 5]),
    'supfig9_10_angles': dict(TINY_MLP, fig9_datasets=['mnist'], fig10_dataset=C10, fig10_depths=[1, 2], epochs=2,
                              premirror_epochs=1),
    'table1_mlp_1hl': dict(TINY_MLP, datasets=['mnist', C10]),
    'table2_mlp_deep': dict(TINY_MLP, datasets=['mnist', C10]),
    'table3_slowness': dict(TINY_MLP, datasets=['mnist', C10], epochs=3, milestones=[2], window=3, premirror_epochs=1),
}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data-root', required=True, help='folder with MNIST/ and cifar10-jpeg(.tar.gz)')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--out', default='/tmp/localrules-paper-check')
    ap.add_argument('--only', nargs='*', help='experiment names (default: all)')
    ap.add_argument('--timeout', type=int, default=900, help='seconds per experiment')
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from localrules.catalog import experiments
    exps = experiments()
    missing = sorted(set(exps) - set(SHRINK))
    if missing: sys.exit(f'no shrink settings for {missing}: add them to SHRINK in {__file__}')
    names = a.only or sorted(exps)
    failed = []
    for name in names:
        if name not in exps: sys.exit(f'unknown experiment {name!r}; available: {", ".join(sorted(exps))}')
        over = dict(SHRINK[name])
        if 'data_root' in exps[name]['params']: over.update(data_root=a.data_root, download=False)
        out = Path(a.out)/name
        shutil.rmtree(out, ignore_errors=True)
        # scratch runs, never the ledger: on a tree with uncommitted code too (the diff's sha256 is recorded)
        cmd = ['localrules', 'run', name, '--preset', 'paper', '--device', a.device, '--out', str(out), '--quiet',
               '--allow-dirty']
        for k, v in over.items(): cmd += ['-p', k, repr(v) if not isinstance(v, str) else v]
        t = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            rc, log = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired: rc, log = 'timeout', ''
        ok = rc == 0 and (out/'DONE').exists()
        err = '' if ok else next((l for l in reversed(log.splitlines()) if 'Error' in l or 'error' in l), log[-300:])
        print(f"{'ok  ' if ok else 'FAIL'} {name:28s} {time.time() - t:6.1f} s  {err}", flush=True)
        if not ok: failed.append(name)
    print(json.dumps(dict(checked=len(names), failed=failed)))
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
