"""A member of a population equals the same configuration trained alone: every fully connected rule, 3 epochs with
dropout."""
import pytest, torch
from localrules.data import load_tensors
from localrules.protocols.mlp_protocol import settings, train_unit, train_population

SEEDS, LRS = [0, 1, 2], [0.05, 0.1, 0.02]
CASES = [('bp', 'base', {}), ('fa', 'base', {}), ('drtp', 'base', {}), ('pepita', 'base', {}),
         ('pepita_hebbian', 'base', {}), ('pepita_timelocal', 'base', {}), ('afa', 'base', {}),
         ('pepita', 'wm_prem', dict(premirror_epochs=1)), ('pepita', 'norm', dict(lr=1.)),
         ('ff', 'base', dict(lr=0.05))]

@pytest.fixture(scope='module')
def data():
    tr, te = load_tensors('digits', 'train', flatten=True), load_tensors('digits', 'test', flatten=True)
    return (tr[0][:600], tr[1][:600]), te

def _weights(rule, member=None):
    ws = [l.weight.detach() for l in rule.model.layers]
    return [w if member is None else w[member] for w in ws]

@pytest.mark.parametrize('rule,variant,extra', CASES, ids=[f'{r}/{v}' for r, v, _ in CASES])
def test_member_equals_alone(data, rule, variant, extra):
    base = dict(hidden=32, epochs=3, milestones=[2], dropout=0.2, **extra)
    lr0 = base.pop('lr', None)
    lrs = [lr0 * f for f in (1, 0.5, 2)] if lr0 else LRS
    ss = [settings(rule, 'digits', 1, variant, **dict(base, lr=lr, F_scale=5. + i)) for i, lr in enumerate(lrs)]
    pop, plog = train_population(ss, data, SEEDS)
    curves = []
    for i, (s, seed) in enumerate(zip(ss, SEEDS)):
        one, log = train_unit(s, data, seed)
        member = plog.member(i)
        for metric in ('test_acc', 'train_loss'):
            assert member.series(metric) == pytest.approx(log.series(metric), abs=0.15 if metric == 'test_acc'
                                                          else 1e-3), (metric, i)
        for a, b in zip(_weights(pop, i), _weights(one)): torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)
        curves.append(member.series('train_loss'))
    assert len({tuple(c) for c in curves}) == 3, 'the members must differ from each other'


def test_killed_population_resumes_exactly(data):
    """A population stopped after its first epoch and resumed from the checkpoint ends with exactly the uninterrupted
    numbers."""
    import copy
    ss = [settings('pepita', 'digits', 1, v, hidden=32, epochs=3, milestones=[2], dropout=0.3)
          for v in ('base', 'wd', 'wm')[:2]]
    store = {}
    ck = (lambda state: store.update(ck=copy.deepcopy(state)), lambda: store.get('ck'))
    train_population([dict(s, epochs=1) for s in ss], data, [3, 4], checkpoint=ck)
    _, resumed = train_population(ss, data, [3, 4], checkpoint=ck)
    _, whole = train_population(ss, data, [3, 4])
    assert resumed.rows == whole.rows
    assert resumed.series('test_acc', member=0) != resumed.series('test_acc', member=1)


def test_compiled_population_equals_eager(data):
    """fit(compile=True) runs the rule's step through torch.compile (one graph: the draw counter is a device tensor)
    with the eager numbers."""
    pytest.importorskip('torch._inductor')
    import shutil
    if not (shutil.which('g++') or shutil.which('c++') or shutil.which('clang++')):
        pytest.skip('torch.compile on CPU needs a C++ compiler')
    from localrules.rules.base import MLP, get_rule
    from localrules.train import make_optimizer, fit
    (xtr, ytr), te = data
    logs = []
    for compiled in (False, True):
        rule = get_rule('pepita', MLP([64, 32, 10], dropout=0.2, seed=[0, 1]), F_scale=[3., 5.])
        opt = make_optimizer(rule.parameters(), lr=[0.05, 0.1], momentum=0.9)
        logs.append(fit(rule, opt, (xtr[:256], ytr[:256]), te, epochs=2, batch_size=64, progress=False,
                        compile=compiled))
    for metric in ('train_loss', 'test_acc'):
        assert logs[1].series(metric) == pytest.approx(logs[0].series(metric), abs=1e-3 if metric == 'train_loss'
                                                       else 0.3)
