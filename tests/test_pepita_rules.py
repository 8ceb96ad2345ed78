"""Interface checks for the forward-only rules of arXiv 2302.05440 (pepita, pepita_hebbian, pepita_timelocal, afa, drtp,
ff)."""
import copy, math, pytest, torch
from localrules.rules.base import MLP, get_rule, available_rules, grad_alignment

NAMES = ['pepita', 'pepita_hebbian', 'pepita_timelocal', 'afa', 'drtp', 'ff']


def test_registered():
    assert set(NAMES) <= set(available_rules())


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('bias,norm', [(False, 'none'), (True, 'batch'), (False, 'sample')])
def test_fills_every_grad(name, bias, norm):
    torch.manual_seed(0)
    m = MLP([64, 32, 10], bias=bias, dropout=0.1, norm=norm, act='tanh' if name == 'drtp' else 'relu')
    rule = get_rule(name, m)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    out = rule(x, y)
    assert type(out['loss']) is float and math.isfinite(out['loss'])      # statistics are plain floats (02_rules)
    assert out['out'].shape == (16, 10) and not out['out'].requires_grad
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.shape == p.shape, n


@pytest.mark.parametrize('name', ['pepita', 'pepita_hebbian', 'pepita_timelocal'])
def test_wm_state_roundtrip(name):
    "Mirrored factors live in the rule's state_dict, so checkpoints resume them."
    torch.manual_seed(0)
    m = MLP([64, 32, 10])
    rule = get_rule(name, m, wm=True)
    x, y = torch.rand(16, 64), torch.randint(0, 10, (16,))
    rule(x, y)
    rule.mirror()
    sd = copy.deepcopy(rule.state_dict())
    assert {'F0', 'F1', 'sigma0'} <= set(sd)
    rule2 = get_rule(name, MLP([64, 32, 10]), wm=True)
    rule2.load_state_dict(sd)
    assert torch.equal(rule2.feedback_matrix(), rule.feedback_matrix())


def test_regression_targets():
    "Float targets: linear output, e = h_L - y (teacher-student setting)."
    torch.manual_seed(0)
    m = MLP([20, 8, 1], act='erf')
    x, y = torch.randn(32, 20), torch.randn(32, 1)
    for name in ('pepita', 'afa'):
        m.zero_grad(set_to_none=True)
        get_rule(name, m)(x, y)
        e = m(x).detach() - y
        if name == 'afa':
            torch.testing.assert_close(m.layers[1].weight.grad, e.T @ torch.erf(x @ m.layers[0].weight.T / 2**.5) / 32)


def test_grad_alignment_all():
    torch.manual_seed(0)
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    for name in NAMES:
        rows = grad_alignment(get_rule(name, MLP([64, 32, 10], act='tanh' if name == 'drtp' else 'relu')), x, y)
        assert len(rows) == 2 and all(0 <= r['angle'] <= 180 for r in rows)


# --- the same rules on a user's feed-forward nn.Sequential (each rule's implementation for a stack) ---
import torch.nn as nn
from localrules.rules.base import RULES
from localrules.rules.pepita_stack import StackPepitaBase

SEQ = ['pepita', 'pepita_hebbian', 'pepita_timelocal', 'ff']
OLD_NAMES = {'pepita_seq': 'pepita', 'pepita_hebbian_seq': 'pepita_hebbian', 'pepita_timelocal_seq': 'pepita_timelocal',
             'ff_seq': 'ff', 'afa_seq': 'afa', 'fa_any': 'fa', 'drtp_any': 'drtp'}


def convnet():
    "A user's small convnet: conv–ReLU–dropout–avg pool, conv–tanh–max pool, flatten, linear (3×8×8 inputs)."
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.AvgPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(20, 10))


@pytest.mark.parametrize('name', SEQ)
def test_stack_implementation_fills_every_grad(name):
    torch.manual_seed(0)
    net = convnet()
    rule = get_rule(name, net)
    assert rule.name == name and isinstance(rule, StackPepitaBase) and isinstance(rule, RULES[name])
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    out = rule(x, y)
    assert out['out'].shape == (6, 10) and math.isfinite(out['loss'])
    assert rule.feedback.shape == ((3 * 8 * 8, 10) if name != 'ff' else (0,))      # FF's hybrid negatives need no F
    for n, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    rows = grad_alignment(rule, x, y)
    assert len(rows) == len(list(net.parameters())) and all(0 <= r['angle'] <= 180 for r in rows)


def test_seq_regression_targets():
    "Float targets: the output is linear and e = out − y, as for the MLP."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(8, 5), torch.randn(8, 2)
    get_rule('pepita', net, F_std=0.)(x, y)
    with torch.no_grad(): e = net(x) - y
    torch.testing.assert_close(net[2].weight.grad, e.T @ net[1](net[0](x)).detach() / 8)
    assert net[0].weight.grad.abs().max() == 0        # F = 0: the modulated pass is the clean one


def test_rules_refuse_other_models_by_their_own_name():
    "A refusal names the rule asked for and everything it takes (the MLP and the stack), nothing else."
    for name in [*SEQ, 'afa']:
        for bad in (nn.Module(), nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))):
            with pytest.raises(TypeError, match=f"^rule '{name}' needs localrules.MLP.*; or a feed-forward "
                                                f"nn.Sequential.*got {type(bad).__name__}") as e:
                RULES[name].check_model(bad)
            assert not any(old in str(e.value) for old in OLD_NAMES)


@pytest.mark.parametrize('old', list(OLD_NAMES))
def test_a_former_twin_name_names_the_rule_now(old):
    assert old not in available_rules()
    with pytest.raises(ValueError, match=f"rule='{old}' is now '{OLD_NAMES[old]}'"): get_rule(old, MLP([4, 3]))


def test_afa_on_a_two_layer_stack():
    "AFA takes a two-layer stack (dropout included: the same mask in its Jacobian) and writes every grad."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 10))
    rule = get_rule('afa', net)
    assert rule.name == 'afa' and isinstance(rule, StackPepitaBase)
    rule(torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,)))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(TypeError, match="3 nn.Linear / nn.Conv2d layers"): get_rule('afa', convnet())
