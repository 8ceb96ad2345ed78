"""Speed of convolutional NSM: batched einops (localrules.rules.conv_nsm) vs the per-sample, per-patch conventional
implementation vs pynsm 1.0.1, on the same data, weights and fixed point, in one run.

Config (pynsm's MNIST demo): K=50 filters of 6x6, 28x28 one-channel images (sklearn digits upsampled, pynsm's
Normalize(0.5, 0.5)), batch 100. One training step = dynamics + local updates + SGD step. The comparison with pynsm
and the conventional code uses the PYNSM-EQUAL FIXED COUNT: 40 iterations of y <- ReLU(Wx - (M - I)y) (gamma = 1,
tol = 0, no convergence test; its residual is reported), which is not the library's default. The library's default,
converged dynamics (gamma='auto', tol 1e-4, at most 1000 iterations), is timed alongside with its iteration count.
Reported: time per image and ratios, agreement of the maps and of the updates.

    .venv/bin/python benchmarks/conv_nsm_speed.py [--device cpu|cuda|auto] [--threads 1] [--batch 100] [--ref-images 4]

On CPU it uses 1 torch thread by default: the NumPy reference is single-threaded, and on a shared machine OpenMP
threads of the torch implementations stall when another process takes their core, which makes multi-thread ratios
meaningless under load (`--threads 2` writes conv_nsm_speed-cpu-2threads.json).
"""
import argparse, json, time, statistics
from pathlib import Path
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from localrules.core import get_device, provenance, seed_everything
from localrules.data import load_tensors
from localrules.rules.base import get_rule
from localrules.rules.conv_nsm import ConvNSM, conv_nsm_reference


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def timed_rounds(fns, dev, rounds):
    """Seconds per image of each `fns[name] = (fn, n_images)`: the implementations run interleaved, round after round,
    so that load from other processes hits all of them alike; min and median over rounds."""
    for fn, _ in fns.values(): fn()                                   # warm-up
    sync(dev)
    ts = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, n) in fns.items():
            t = time.perf_counter()
            fn()
            sync(dev)
            ts[name].append((time.perf_counter() - t) / n)
    return {name: dict(min=min(v), median=statistics.median(v)) for name, v in ts.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--batch', type=int, default=100)
    ap.add_argument('--ref-images', type=int, default=4, help='images timed with the (slow) conventional code')
    ap.add_argument('--repeats', type=int, default=5, help='interleaved timing rounds')
    ap.add_argument('--K', type=int, default=50)
    ap.add_argument('--kernel', type=int, default=6)
    ap.add_argument('--iters', type=int, default=40)
    ap.add_argument('--tau', type=float, default=0.2,
                    help='ours; pynsm tau=0.1 with lr 0.05 equals lr 0.004, tau 0.2 here')
    ap.add_argument('--lr', type=float, default=0.004)
    ap.add_argument('--pynsm-lr', type=float, default=0.05)
    ap.add_argument('--pynsm-tau', type=float, default=0.1)
    ap.add_argument('--threads', type=int, default=1,
                    help='torch CPU threads (default 1: a per-core comparison with the single-threaded NumPy '
                         'reference, robust to other load; 0 = torch default)')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    dev = get_device(a.device)
    seed_everything(0)
    if a.threads and dev.type == 'cpu': torch.set_num_threads(a.threads)
    K, k, B, T = a.K, a.kernel, a.batch, a.iters

    # data: digits upsampled to MNIST size, normalised like pynsm's demo
    x, _ = load_tensors('digits', 'train')
    x = (F.interpolate(x, size=(28, 28), mode='bilinear', align_corners=False) - 0.5) / 0.5
    x = x[:B].contiguous()
    P = (28 - k + 1) ** 2

    # a non-trivial M: 20 warm-up training steps of the batched model (M = I converges in one step)
    m = ConvNSM(1, K, k, gamma=1., tol=0., max_iter=T).to(dev)     # pynsm-equal fixed count
    rule, opt = get_rule('conv_nsm', m, tau=a.tau), torch.optim.SGD(m.parameters(), lr=a.lr)
    xall, _ = load_tensors('digits', 'train', limit=1000)
    xall = ((F.interpolate(xall, size=(28, 28), mode='bilinear', align_corners=False) - 0.5) / 0.5).to(dev)
    for i in range(20):
        opt.zero_grad()
        rule(xall[(i * B) % 900:(i * B) % 900 + B])
        opt.step()
    W0, M0 = m.W.detach().clone(), m.M.detach().clone()
    eig_M = torch.linalg.eigvalsh(M0.double().cpu()).tolist()
    xb = x.to(dev)

    def reset(model_W, model_M):
        with torch.no_grad():
            model_W.copy_(W0.view_as(model_W))
            model_M.copy_(M0)

    # 1. batched einops (this library): one training step on B images
    def step_batched():
        reset(m.W, m.M)
        opt.zero_grad(set_to_none=True)
        rule(xb)
        opt.step()
    reset(m.W, m.M)
    opt.zero_grad(set_to_none=True)
    st = rule(xb)
    y_batched, gW, gM = st['features'], m.W.grad.clone(), m.M.grad.clone()
    conv_delta = m.last_delta

    # 1b. the library's default, converged dynamics (gamma='auto', a tolerance), same weights and batch
    mc = ConvNSM(1, K, k, gamma='auto', tol=1e-4, max_iter=1000).to(dev)
    rc = get_rule('conv_nsm', mc, tau=a.tau)
    oc = torch.optim.SGD(mc.parameters(), lr=a.lr)
    def step_converged():
        reset(mc.W, mc.M)
        oc.zero_grad(set_to_none=True)
        rc(xb)
        oc.step()
    reset(mc.W, mc.M)
    st_c = rc(xb)
    conv_iters, conv_resid, conv_gamma = mc.last_iters, mc.last_delta, mc.step_size()

    # 2. conventional: NumPy, loop over samples and patches (float32, same weights, same images)
    nref = min(a.ref_images, B)
    Wn, Mn, xn = W0.cpu().numpy(), M0.cpu().numpy(), x[:nref].numpy()
    Yr, Cyx, Cyy = conv_nsm_reference(xn, Wn, Mn, n_iter=T)
    def step_conventional(): conv_nsm_reference(xn, Wn, Mn, n_iter=T)
    reset(m.W, m.M)
    opt.zero_grad(set_to_none=True)
    st_small = rule(xb[:nref])
    y_small, gW_small, gM_small = st_small['features'].cpu().numpy(), m.W.grad.cpu().numpy(), m.M.grad.cpu().numpy()
    d_maps_ref = float(np.abs(y_small - Yr).max() / (np.abs(Yr).max() + 1e-12))
    d_upd_ref = max(float(np.abs(gW_small - (Wn - Cyx)).max() / np.abs(Wn - Cyx).max()),
                    float(np.abs(gM_small - (Mn - Cyy) / a.tau).max() / np.abs((Mn - Cyy) / a.tau).max()))

    # 2b. per-sample torch (loop over images, patches batched): separates the two loops' costs
    m1 = ConvNSM(1, K, k, gamma=1., tol=0., max_iter=T).to(dev)
    r1 = get_rule('conv_nsm', m1, tau=a.tau)
    o1 = torch.optim.SGD(m1.parameters(), lr=a.lr)
    def step_per_sample():
        reset(m1.W, m1.M)
        for i in range(len(xb)):
            o1.zero_grad(set_to_none=True)
            r1(xb[i:i+1])
            o1.step()

    # 3. pynsm 1.0.1 on the same weights and batch
    res_pynsm, fns = {}, dict(batched=(step_batched, B), converged=(step_converged, B),
                              conventional=(step_conventional, nref),
                              per_sample=(step_per_sample, B))
    try:
        import pynsm
        enc = nn.Conv2d(1, K, k, bias=False)
        pm = pynsm.SimilarityMatching(enc, K, tau=a.pynsm_tau, max_iterations=T,
                                      iteration_projection=torch.relu).to(dev)
        popt = torch.optim.SGD(pm.parameters(), lr=a.pynsm_lr)
        def step_pynsm():
            reset(pm.encoder.weight, pm.competitor.weight)
            popt.zero_grad(set_to_none=True)
            y = pm(xb)
            loss = pm.loss(xb, y)
            loss.backward()
            popt.step()
            return y
        fns['pynsm'] = (step_pynsm, B)
        reset(pm.encoder.weight, pm.competitor.weight)
        popt.zero_grad(set_to_none=True)
        yp = pm(xb)
        pm.loss(xb, yp).backward()
        # pynsm's loss has gradients (4/K)(W - <yx'>) and (2/K)(M - <yy'>)/tau: compare W - <yx'> and M - <yy'>
        d_maps_p = ((yp - y_batched).abs().max() / y_batched.abs().max()).item()
        dM_ours, dM_p = gM * a.tau, pm.competitor.weight.grad * K / 2 * a.pynsm_tau
        d_upd_p = max(((pm.encoder.weight.grad * K / 4 - gW).abs().max() / gW.abs().max()).item(),
                      ((dM_p - dM_ours).abs().max() / dM_ours.abs().max()).item())
        res_pynsm = dict(pynsm_version=getattr(pynsm, '__version__', '1.0.1'),
                         max_rel_diff_maps=d_maps_p, max_rel_diff_updates=d_upd_p)
    except ImportError as e:
        print(f'pynsm not available: {e}')

    tm = timed_rounds(fns, dev, a.repeats)
    t_batched, t_ref, t_per_sample = tm['batched']['min'], tm['conventional']['min'], tm['per_sample']['min']
    if res_pynsm: res_pynsm.update(s_per_image=tm['pynsm']['min'], s_per_image_median=tm['pynsm']['median'])

    # arithmetic floor: FLOPs per image of one training step, and the fastest this device multiplies the lateral
    # matrices (a bare (4096 x K) @ (K x K) matmul, no dynamics): no implementation of these FLOPs beats flop / peak
    flop = dict(lateral=2 * K * K * P * T, conv=2 * k * k * K * P, hebbian=2 * K * k * k * P + 2 * K * K * P)
    flop_total = sum(flop.values())
    ya, Aa = torch.randn(4096, K, device=dev), torch.randn(K, K, device=dev)
    ob = torch.empty_like(ya)
    def bare_mm():
        for _ in range(200): torch.mm(ya, Aa, out=ob)
    t_mm = timed_rounds(dict(mm=(bare_mm, 1)), dev, a.repeats)['mm']['min']
    peak = 200 * 2 * 4096 * K * K / t_mm
    res = dict(config=dict(K=K, kernel=k, image=28, iterations=T,
                           dynamics=f'pynsm-equal fixed count: {T} iterations at gamma=1, tol=0', batch=B, tau=a.tau,
                           lr=a.lr, ref_images=nref,
                           threads=torch.get_num_threads(), data='sklearn digits upsampled to 28x28, (x-0.5)/0.5'),
               timing='seconds per image, min over interleaved rounds (medians alongside)',
               batched=dict(s_per_image=t_batched, s_per_image_median=tm['batched']['median'],
                            gflops=flop_total / t_batched / 1e9),
               bare_matmul_gflops=peak / 1e9, s_per_image_floor=flop_total / peak,
               speedup_ceiling_vs_conventional=t_ref / (flop_total / peak),
               conventional=dict(s_per_image=t_ref, s_per_image_median=tm['conventional']['median'],
                                 max_rel_diff_maps=d_maps_ref, max_rel_diff_updates=d_upd_ref),
               converged_default=dict(s_per_image=tm['converged']['min'], s_per_image_median=tm['converged']['median'],
                                      iterations=conv_iters, residual=conv_resid, gamma=conv_gamma, tol=1e-4,
                                      note="library default: gamma='auto', tol 1e-4, max_iter 1000; not pynsm-equal"),
               per_sample_torch=dict(s_per_image=t_per_sample, s_per_image_median=tm['per_sample']['median']),
               pynsm=res_pynsm,
               speedup_vs_conventional=t_ref / t_batched,
               speedup_vs_conventional_median=tm['conventional']['median'] / tm['batched']['median'],
               speedup_vs_per_sample=t_per_sample / t_batched,
               speedup_vs_pynsm=(res_pynsm['s_per_image'] / t_batched) if res_pynsm else None,
               flop_per_image=flop, flop_per_image_total=flop_total,
               last_max_dy_after_40_iters=conv_delta, M_eigenvalue_range=[eig_M[0], eig_M[-1]],
               provenance=provenance(dev))

    print(
        f"conv NSM training step, K={K}, {k}x{k}, 28x28, pynsm-equal fixed count of {T} iterations (γ = 1), batch "
        f"{B}, {torch.get_num_threads()} threads, {dev}")
    print(f"{'implementation':38s} {'ms/image':>9s} {'vs batched':>11s}")
    rows = [('batched einops (localrules)', t_batched),
            (f'  same, converged ({conv_iters} it, γ={conv_gamma:.2f})', tm['converged']['min']),
            ('conventional (NumPy, per sample+patch)', t_ref),
            ('per-sample torch (patches batched)', t_per_sample)]
    if res_pynsm: rows.append((f"pynsm {res_pynsm['pynsm_version']}", res_pynsm['s_per_image']))
    for name, t in rows: print(f"{name:38s} {1e3 * t:9.3f} {t / t_batched:10.1f}x")
    print(f"batched throughput {res['batched']['gflops']:.1f} GFLOP/s of {flop_total / 1e6:.1f} MFLOP/image "
          f"(lateral {flop['lateral'] / 1e6:.1f} MFLOP)")
    print(
        f"floor: a bare {K}x{K} matmul runs at {peak / 1e9:.1f} GFLOP/s here, so no implementation of these FLOPs "
        f"takes less than "
          f"{1e3 * flop_total / peak:.3f} ms/image: at most {t_ref * peak / flop_total:.1f}x faster than the "
          f"conventional code")
    print(f"warm-up M eigenvalues in [{eig_M[0]:.2f}, {eig_M[-1]:.2f}]; max|dy| at iteration {T}: {conv_delta:.2e}")
    print(f"agreement (max rel diff): conventional maps {d_maps_ref:.1e}, updates {d_upd_ref:.1e}"
          + (f"; pynsm maps {res_pynsm['max_rel_diff_maps']:.1e}, updates {res_pynsm['max_rel_diff_updates']:.1e}"
             if res_pynsm else ''))
    suffix = f'-{torch.get_num_threads()}threads' if dev.type == 'cpu' and torch.get_num_threads() != 1 else ''
    out = Path(a.out or Path(__file__).parent / 'results' / f'conv_nsm_speed-{dev.type}{suffix}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
