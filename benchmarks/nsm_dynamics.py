"""NSM fixed-point solvers: plain projected gradient ('pgd', the neural dynamics) vs accelerated projected gradient
('apgd', Nesterov's constant momentum), to the same tolerance on the same drives, in one run.

Lateral matrices M = Q diag(λ) Qᵀ (Q random orthogonal) with λ spread geometrically over the range measured at the end
of training in `sm_cifar_study` (cifar10-jpeg, whitened 6x6 patches, 5,000 images, lr 0.05, τ 0.5; the M_lam_min /
M_lam_max metrics of runs paper-cpu5k-K and paper-cpu5k-acc): K = 200: [0.0418, 1.7617]; K = 400: [0.0247, 1.8522].
Drives c: one CPU block of 4,096 positions, Gaussian with unit variance. Step γ = 'auto' = 1/λ_max, tolerance 1e-3 on
the fixed-point residual max|Δy|/γ (the study's). Reported per K: steps, seconds per block (median and min of
interleaved rounds) beside the floor of their matrix products, the time ratio apgd / pgd, and the largest difference
between the two fixed points (on the scale tol/λ_min that a residual of tol allows on a strongly convex problem).

    .venv/bin/python benchmarks/nsm_dynamics.py [--rounds 5] [--threads 1]
"""
import argparse, json, time, statistics
from pathlib import Path
import torch
from localrules.core import provenance
from localrules.rules.nsm import sm_dynamics

SPECTRA = {200: (0.0418, 1.7617), 400: (0.0247, 1.8522)}


def lateral(K:int, lo:float, hi:float, seed:int=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(K, K, generator=g, dtype=torch.float64))[0]
    lam = torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi)), K, dtype=torch.float64)
    return (Q @ torch.diag(lam) @ Q.T).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--rows', type=int, default=4096)
    ap.add_argument('--tol', type=float, default=1e-3)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = dict(config=dict(rows=a.rows, tol=a.tol, gamma='auto', threads=a.threads, rounds=a.rounds, spectra=SPECTRA),
               timing='seconds per block of rows: median and min over interleaved rounds', results={})
    for K, (lo, hi) in SPECTRA.items():
        M = lateral(K, lo, hi)
        c = torch.randn(a.rows, K, generator=torch.Generator().manual_seed(1))
        run = {d: (lambda d=d: sm_dynamics(c, M, dynamics=d, tol=a.tol, max_iter=20000, block=0))
               for d in ('pgd', 'apgd')}
        out = {d: f() for d, f in run.items()}                 # warm-up, and the fixed points compared
        ts = {d: [] for d in run}
        for _ in range(a.rounds):
            for d, f in run.items():
                t = time.perf_counter()
                f()
                ts[d].append(time.perf_counter() - t)
        r = {d: dict(steps=out[d][1], residual=out[d][2], s_median=statistics.median(ts[d]), s_min=min(ts[d]))
             for d in run}
        r['time_ratio_apgd_over_pgd'] = r['apgd']['s_median'] / r['pgd']['s_median']
        # floor: each step is at least one (rows x K) @ (K x K) product (apgd: +1 every 10 steps for its test)
        A, buf = torch.randn(K, K), torch.empty_like(c)
        t_mm = []
        for _ in range(a.rounds):
            t = time.perf_counter()
            for _ in range(20): torch.addmm(c, c, A, out=buf)
            t_mm.append((time.perf_counter() - t) / 20)
        for d in run:
            n_mm = r[d]['steps'] * (1.1 if d == 'apgd' else 1.)
            r[d]['s_floor'] = n_mm * min(t_mm)
            r[d]['time_over_floor'] = r[d]['s_median'] / r[d]['s_floor']
        r['max_abs_diff_fixed_points'] = (out['apgd'][0] - out['pgd'][0]).abs().max().item()
        r['max_abs_fixed_point'] = out['pgd'][0].abs().max().item()
        # the distance scale of a residual of tol on a μ-strongly convex problem (an order of magnitude, not a bound)
        r['scale_tol_over_mu'] = a.tol / lo
        res['results'][K] = r
        print(f"K = {K}: pgd {r['pgd']['steps']} steps {r['pgd']['s_median']:.3f} s, apgd {r['apgd']['steps']} steps "
              f"{r['apgd']['s_median']:.3f} s: ratio {r['time_ratio_apgd_over_pgd']:.3f}; fixed points differ by "
              f"{r['max_abs_diff_fixed_points']:.2e} (scale tol/μ = {r['scale_tol_over_mu']:.2e}; max |y| "
              f"{r['max_abs_fixed_point']:.2f}); time over the products' floor: pgd "
              f"{r['pgd']['time_over_floor']:.2f}, apgd {r['apgd']['time_over_floor']:.2f}")
    res['provenance'] = provenance('cpu')
    out = Path(a.out or Path(__file__).parent / 'results' / 'nsm_dynamics-cpu.json')
    out.write_text(json.dumps(res, indent=1))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
