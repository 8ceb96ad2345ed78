"""The rule–model contract, checked for every registered rule (`available_rules()`, no hand-typed list).

Each rule declares a tiny supported model, its keyword arguments and one batch through `cls.example(seed)`; from
it the rule must write a finite `.grad` into every trainable parameter, lower its own objective (`metrics['loss']`)
over a few SGD steps on that batch, be deterministic under the seed, and refuse an unsupported model with a
TypeError naming the rule."""
import copy, math
import pytest, torch, torch.nn as nn
from localrules.rules import available_rules, get_rule, RULES
from localrules.margins import assert_margins, register_check

NAMES = available_rules()
STEPS, LR = 5, 0.05          # the test's SGD; a rule picks its example's kwargs so that this lowers its loss
# Rules whose loss, in 5 steps of lr 0.05, falls at seed 0 only by luck or by a hair: (steps, lr) of their own, each
# with its worst margin over seeds 0-4 (`python scripts/margin_check.py -k contract. --seeds 0 1 2 3 4`; the same with
# ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=default). With every update's sign flipped the loss rises on all 5
# seeds for each of them but dfa_ssl (4 of 5) and ff_seq (3 of 5; at seed 0 it still falls by 0.011 < 0.34)
SGD = {
    'clapp++': (5, 0.02),       # 0.44 (was -0.14 at lr 0.05: the 5th step overshoots and the loss jumps back up)
    'clapp++both': (5, 0.02),   # 0.45 (was -0.17)
    'ff_seq': (30, 0.03),       # 0.34 (was -0.25): its loss is the readout's, the FF layers move its features first
    'drtp_any': (30, 0.05),     # 0.12 (was -0.05): DRTP's random targets raise the loss for up to 5 steps
    # the hinge loss of the CLAPP family starts at 2 (scores u ≈ 0 on the tiny encoder) and moves slowly there
    'dfa_ssl': (10, 0.2),       # 2.6e-4, falls at every step on every seed (was 1.9e-5); lr ≥ 0.3 diverges
    'bp_clapp++': (10, 0.5),    # 3.0e-3 (was 1.5e-4)
    'clapp++_no2d': (10, 0.5),  # 4.0e-3 (was 2.4e-4)
}


def _example(name:str, seed:int=0):
    "The rule's declared example, or a failure saying that it must declare one."
    try: return RULES[name].example(seed)
    except NotImplementedError as e:
        pytest.fail(f"rule {name!r} must declare example(seed) -> (model, kwargs, x, y) (a tiny supported model): {e}")


def _build(name:str, seed:int=0):
    "(rule, x, y) from the example of `seed`; torch's global RNG seeded too (rules that draw from it)."
    model, kw, x, y = _example(name, seed)
    torch.manual_seed(seed)
    return get_rule(name, model, **kw), x, y


def _call(rule, x, y, seed:int=0) -> dict:
    "One call of the rule from zeroed grads, with the global RNG at `seed` (the same augmentations, masks, draws)."
    rule.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    return rule(x, y)


def _loss(metrics:dict) -> float:
    "The rule's objective as one number (summed over members in a population)."
    return float(torch.as_tensor(metrics['loss'], dtype=torch.float64).sum())


def _trainable(rule) -> list: return [(n, p) for n, p in rule.named_parameters() if p.requires_grad]


def test_every_rule_is_listed():
    assert {'bp', 'fa', 'nsm'} <= set(NAMES)
    details = available_rules(details=True)
    assert list(details) == NAMES and all(isinstance(s, str) and s for s in details.values())


@pytest.mark.parametrize('name', NAMES)
def test_example_is_supported(name):
    model, kw, x, y = _example(name)
    assert RULES[name].check_model(model) is None or RULES[name].any_model     # 'fa'-like rules may hand it on
    assert isinstance(kw, dict) and torch.is_tensor(x) and (y is None or torch.is_tensor(y))


@pytest.mark.parametrize('name', NAMES)
def test_finite_grad_everywhere(name):
    rule, x, y = _build(name)
    _call(rule, x, y)
    params = _trainable(rule)
    assert params, f"rule {name!r}: its example has no trainable parameters"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"rule {name!r} wrote no .grad into {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"rule {name!r} wrote non-finite .grad into {bad}"


@register_check('contract.lowers_objective', 'tests/test_rules_contract.py::test_lowers_its_objective',
                f'every rule, {STEPS} SGD steps (lr {LR}; SGD[name] for some) on its example batch: its own loss falls',
                margins=lambda losses: {'loss[-1] < loss[0]': losses[0] - losses[-1]}, cases=lambda: NAMES)
def objective_losses(seed:int, name:str) -> list:
    "The rule's loss before each of its SGD steps (`SGD[name]` or `STEPS`, `LR`) on the example of `seed`, and after."
    steps, lr = SGD.get(name, (STEPS, LR))
    rule, x, y = _build(name, seed)
    opt = torch.optim.SGD([p for _, p in _trainable(rule)], lr=lr)
    losses = []
    for _ in range(steps):
        losses.append(_loss(_call(rule, x, y, seed)))
        opt.step()
    return losses + [_loss(_call(rule, x, y, seed))]


@pytest.mark.parametrize('name', NAMES)
def test_lowers_its_objective(name):
    losses = objective_losses(0, name)
    assert all(math.isfinite(v) for v in losses), f"rule {name!r}: losses {losses}"
    # worst margin over seeds 0-4 (scripts/margin_check.py -k contract.): >= 2.6e-4 (dfa_ssl), see SGD; the others as
    # printed there, the smallest 0.0069 (drtp) and 0.0077 (pepita_timelocal_seq)
    assert_margins('contract.lowers_objective', losses, case=name)


@pytest.mark.parametrize('name', NAMES)
def test_deterministic_under_seed(name):
    grads = []
    for seed in (0, 0, 1):
        rule, x, y = _build(name, seed)
        _call(rule, x, y, seed)
        grads.append({n: p.grad.clone() for n, p in _trainable(rule) if p.grad is not None})
    a, b, c = grads
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), \
        f"rule {name!r}: two builds from seed 0 gave different grads"
    assert any(n not in c or c[n].shape != a[n].shape or not torch.equal(a[n], c[n]) for n in a), \
        f"rule {name!r}: seeds 0 and 1 gave identical grads: example(seed) ignores its seed"


@pytest.mark.parametrize('name', NAMES)
def test_refuses_unsupported(name):
    names = {name, getattr(RULES[name], 'any_model', None)} - {None}
    for bad in (nn.Module(), 'not a model'):
        with pytest.raises(TypeError) as e: get_rule(name, bad)
        msg = str(e.value)
        assert any(f"rule {n!r} needs " in msg for n in names), f"rule {name!r}: unclear refusal {msg!r}"
        assert f"got {type(bad).__name__}" in msg, f"rule {name!r}: the refusal does not say what it got: {msg!r}"

def test_a_twin_refusal_names_the_rule_asked_for():
    "get_rule('fa', model) hands non-MLP models to 'fa_any'; refused there, the message names both."
    with pytest.raises(TypeError, match=r"get_rule\('fa', \.\.\.\) hands models other than an MLP to 'fa_any'"):
        get_rule('fa', 'not a model')


def _grads(rule, x, y, seed:int=0) -> dict:
    "The update the rule writes for one call from zeroed grads (global RNG at `seed`)."
    _call(rule, x, y, seed)
    return {n: p.grad.clone() for n, p in rule.model.named_parameters() if p.grad is not None}


def _same(a:dict, b:dict) -> bool: return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _taken_by(name:str, model):
    "get_rule(name, model) with its defaults, or None when the rule does not take this model (its own refusal)."
    try:
        torch.manual_seed(0)
        return get_rule(name, model)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize('name', NAMES)
def test_a_model_stays_usable_by_every_other_rule(name):
    """The contract of `get_rule` (nbs/02_rules.ipynb): it works on the model as given and leaves it usable by every
    rule. For each other rule `a` that takes rule `name`'s example model, after get_rule(a, model) the rule `name` on
    that same model writes exactly the update it writes on an untouched copy; and `a`, called again after it, writes
    what it writes on a model nobody else touched (a feedback rule takes its layers back with its own feedback)."""
    model, kw, x, y = _example(name)
    torch.manual_seed(0)
    want = _grads(get_rule(name, copy.deepcopy(model), **kw), x, y)
    for a in NAMES:
        m = copy.deepcopy(model)
        ra = _taken_by(a, m) if a != name else None
        if ra is None: continue
        try: want_a = _grads(_taken_by(a, copy.deepcopy(model)), x, y)
        except Exception: want_a = None                  # `a` cannot run on this batch: only `name`'s side is checked
        torch.manual_seed(0)
        rb = get_rule(name, m, **kw)
        assert rb.model is m, f"get_rule({name!r}, model) must train the model it was given"
        assert _same(_grads(rb, x, y), want), f"rule {name!r} after get_rule({a!r}, same model) writes another update"
        if want_a is not None:
            assert _same(_grads(ra, x, y), want_a), f"rule {a!r} after get_rule({name!r}, same model) changed"


def test_rules_take_turns_on_one_model():
    "The README's sequence: DFA, then FA, PEPITA and uSF on one nn.Sequential, then DFA again, each training it."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(6, 4, 4), torch.randint(0, 3, (6,))
    params = list(net.parameters())
    rules = [get_rule(n, net) for n in ('dfa', 'fa', 'pepita', 'usf')]
    for rule in rules + rules[:1]:
        assert list(rule.parameters()) == params, f"{rule.name}: not the model's own parameters"
        stats = _call(rule, x, y)
        assert math.isfinite(stats['loss']) and all(p.grad is not None for p in params), rule.name
    assert type(net[1]).__name__ == 'FeedbackLinear' and net.fb_state.mode == 'dfa'   # DFA took its layers back


@pytest.mark.parametrize('name', NAMES)
def test_stats_are_plain_floats(name):
    "Every rule's statistics are plain Python numbers (a float loss), its output a detached tensor."
    rule, x, y = _build(name)
    stats = _call(rule, x, y)
    assert type(stats['loss']) is float, f"rule {name!r}: stats['loss'] is {type(stats['loss']).__name__}"
    tensors = [k for k, v in stats.items() if torch.is_tensor(v) and k not in ('out', 'features')]
    assert not tensors, f"rule {name!r}: statistics {tensors} are tensors, not plain Python numbers"
    assert stats.get('out') is None or not stats['out'].requires_grad
