"CLAPP++ Theorem 3.1 at the paper's size: 6 linear layers x 128 units, orthonormal weights, optimal predictors."
import torch
from localrules.theory.clapp_theory import TheoryNet, quadrant_views, theory_alignment

def test_theorem_3_1_at_paper_size():
    torch.manual_seed(0)
    net = TheoryNet([196] + [128] * 6, act='linear', init='orthogonal')
    xq = quadrant_views(torch.rand(8, 1, 28, 28, dtype=torch.float64))      # 32 views: 8 images x 4 quadrants
    r = theory_alignment(net, xq, f='softplus', lam=0.01)
    assert len(r) == 6
    # local-SSL update = BP-SSL update in every layer
    assert min(d['cos'] for d in r) > 1 - 1e-6, [d['cos'] for d in r]
    assert max(d['dist'] / d['norm_bp'] ** 2 for d in r) < 1e-6
    # the theorem needs the optimal predictors: fixed random ones break it below the last layer
    rr = theory_alignment(net, xq, f='softplus', lam=0.01, predictor='random')
    assert max(d['cos'] for d in rr[:-1]) < 0.9 and abs(rr[-1]['cos'] - 1) < 1e-9
