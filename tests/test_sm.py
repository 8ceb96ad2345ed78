"Similarity matching (localrules.rules.nsm / conv_nsm / s2m): registry, read-out on learned features, device agreement."
import pytest, torch
from localrules.rules.base import available_rules, get_rule
from localrules.data import load_tensors
from localrules.rules.nsm import NSM
from localrules.rules.conv_nsm import ConvNSM
from localrules.rules.s2m import S2M, ConvS2M, stack_s2m
from localrules.margins import assert_margins, register_check


def test_rules_registered():
    assert {'nsm', 'conv_nsm', 's2m'} <= set(available_rules())


def _ridge_acc(ftr, ytr, fte, yte, lam=1e-2):
    "Accuracy (%) of a ridge-regression read-out on one-hot targets."
    A = torch.cat([ftr, torch.ones(len(ftr), 1)], 1)
    B = torch.cat([fte, torch.ones(len(fte), 1)], 1)
    T = torch.nn.functional.one_hot(ytr, 10).float()
    Wr = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1]), A.T @ T)
    return 100 * ((B @ Wr).argmax(1) == yte).float().mean().item()


@register_check('sm.s2m_readout', 'tests/test_sm.py::test_s2m_features_support_linear_readout',
                'conv S2M (16 filters 3x3) trained on 600 digits, max-pooled features, ridge read-out: test acc > 70 %',
                margins=lambda acc: {'acc > 70': acc - 70})
def s2m_readout_acc(seed:int=0) -> float:
    "Ridge read-out accuracy (%) on 300 test digits of conv S2M features trained (one pass) from `seed`."
    x, y = load_tensors('digits', 'train', limit=600)
    xt, yt = load_tensors('digits', 'test', limit=300)
    torch.manual_seed(seed)
    m = ConvS2M(1, 16, 3, alpha=1., gamma=0.5, tol=1e-3, max_iter=100)
    rule, opt = get_rule('s2m', m, tau=1.), torch.optim.SGD(m.parameters(), lr=0.05)
    for i in range(0, 600, 50):
        opt.zero_grad()
        st = rule(x[i:i+50], y[i:i+50])
        opt.step()
        assert st['out'] is None and st['features'].shape == (50, 16, 6, 6)
    pool = lambda f: torch.nn.functional.max_pool2d(f, 3).flatten(1)
    return _ridge_acc(pool(m.encode(x)), y, pool(m.encode(xt)), yt)


def test_s2m_features_support_linear_readout():
    # acc > 70 % (chance is 10 %); worst margin over seeds 0-4: 20.7 points (scripts/margin_check.py -k sm.s2m)
    assert_margins('sm.s2m_readout', s2m_readout_acc(0))


def test_stack_dense_layers():
    x, y = load_tensors('digits', 'train', flatten=True, limit=300)
    torch.manual_seed(0)
    st = stack_s2m([S2M(64, 32, alpha=1., gamma=0.5), NSM(32, 16, gamma=0.5)], x, y, epochs=1, lr=0.05, tau=1.,
                   batch_size=50)
    assert st.encode(x).shape == (300, 16) and len(st.history) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA')
def test_conv_nsm_cuda_matches_cpu():
    torch.manual_seed(0)
    m = ConvNSM(1, 8, 3, tol=0., max_iter=30)
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        m.M.add_(0.05 * torch.rand(8, 8))
        m.M.copy_((m.M + m.M.T) / 2)
    y = m.encode(x)
    yc = m.cuda().encode(x.cuda()).cpu()
    torch.testing.assert_close(yc, y, atol=1e-5, rtol=1e-4)

def test_sm_pretraining_paper_rates_are_pynsm_demo_rates_in_library_units():
    from localrules.catalog import experiments
    from localrules.rules.nsm import pynsm_rates
    paper = experiments()['sm_pretraining']['PRESETS']['paper']
    # pynsm's demo: SGD lr 0.05, tau 0.1; LeNet's 6 and 16 filters
    want = [pynsm_rates(0.05, 0.1, K) for K in (6, 16)]
    assert paper['pre_lr'] == pytest.approx([w['lr'] for w in want],
                                            rel=1e-3) and paper['tau'] == pytest.approx(want[0]['tau'])


def _trained_conv_nsm(lr=0.02, steps=30):
    "A conv NSM trained with the lateral weights learning fast, so that λ_max(M) > 2 (γ = 1 then diverges)."
    x, _ = load_tensors('digits', 'train', limit=300)
    torch.manual_seed(0)
    m = ConvNSM(1, 8, 3, gamma='auto', tol=1e-4, max_iter=2000)
    rule, opt = get_rule('conv_nsm', m, tau=0.2), torch.optim.SGD(m.parameters(), lr=lr)
    for i in range(steps):
        opt.zero_grad()
        rule(x[(10 * i) % 290:(10 * i) % 290 + 10] * 2)
        opt.step()
    return m, x * 2


def test_default_dynamics_converge_where_the_fixed_count_does_not():
    import warnings
    from localrules.rules.nsm import NotConvergedWarning, convergence_summary
    m, x = _trained_conv_nsm()
    lam = torch.linalg.eigvalsh(m.M.detach().double()).max().item()
    assert lam > 2, lam                                                   # γ = 1 is outside the convergent range
    m.pop_trace()
    y = m.encode(x[:20])
    assert m.last_converged and m.last_delta <= m.tol and m.trace[-1]['gamma'] == pytest.approx(1 / lam, rel=1e-4)
    # the fixed point: y = ReLU(y − γ(My − c)) up to the tolerance
    c = torch.nn.functional.conv2d(x[:20], m.W.detach()).permute(0, 2, 3, 1).reshape(-1, 8)
    yr = y.permute(0, 2, 3, 1).reshape(-1, 8)
    g = m.trace[-1]['gamma']
    assert ((yr - (yr - g * (yr @ m.M.detach().T - c)).relu()).abs().max() / g).item() <= 1.01 * m.tol
    m.set_dynamics(gamma=1.)
    m.encode(x[:20], tol=0., max_iter=40)                                # pynsm's fixed count
    assert m.trace[-1]['residual'] > 100 * m.tol
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        m.encode(x[:20], max_iter=40)
    assert any(issubclass(i.category, NotConvergedWarning) for i in w)
    s = convergence_summary(m.pop_trace(), 'enc_', tol=1e-4)
    assert s['enc_calls'] == 3 and s['enc_frac_converged'] == pytest.approx(1 / 3)


def test_patch_maps_with_1x1_nsm_equal_the_kxk_conv_nsm():
    "The study's encoders: a 1×1 ConvNSM on 'pm1' patch maps is the k×k ConvNSM on 2x − 1 (same weights)."
    from localrules.protocols.sm_eval import PatchPreprocess
    x, _ = load_tensors('digits', 'train', limit=20)
    m, _ = _trained_conv_nsm(steps=5)
    m1 = ConvNSM(9, 8, 1, gamma='auto', tol=1e-6, max_iter=2000)
    m.set_dynamics(tol=1e-6)
    with torch.no_grad():
        m1.W.copy_(m.W.detach().reshape(8, 9, 1, 1))
        m1.M.copy_(m.M.detach())
    torch.testing.assert_close(m1.encode(PatchPreprocess('pm1', 3)(x)), m.encode(x * 2 - 1), atol=1e-4, rtol=1e-4)
