"The same seed gives identical metrics on CPU: in-process and through two separate `localrules run`s."
import json
import pytest
from conftest import cli, REF_ARGS
from localrules.core import seed_everything
from localrules.data import load_tensors
from localrules.rules.base import MLP, get_rule
from localrules.train import make_optimizer, fit

def _train(seed, rule='fa'):
    seed_everything(seed)
    tr, te = load_tensors('digits', 'train', flatten=True), load_tensors('digits', 'test', flatten=True)
    r = get_rule(rule, MLP([64, 32, 10], dropout=0.1))
    return fit(r, make_optimizer(r.parameters(), lr=0.05, momentum=0.9), tr, te, epochs=3, seed=seed, progress=False)

def test_same_seed_same_metrics():
    a, b, c = _train(0), _train(0), _train(1)
    assert a.series('test_acc') == b.series('test_acc') and a.series('train_loss') == b.series('train_loss')
    assert a.series('train_loss') != c.series('train_loss')

def test_two_cli_runs_identical(tmp_path, bp_vs_fa_ref):
    "Two separate processes, the same arguments: every row (curves and finals of 2 rules x 2 seeds) identical."
    out = tmp_path/'again'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', *REF_ARGS, check=True)
    vals = []
    for d in (bp_vs_fa_ref, out):
        rows = [json.loads(l) for l in (d/'results.jsonl').read_text().splitlines()]
        vals.append(sorted((r['rule'], r['seed'], r['metric'], r['step'] or 0, r['value']) for r in rows))
    assert len(vals[0]) > 8 and vals[0] == vals[1]
