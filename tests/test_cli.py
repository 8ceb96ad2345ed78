"The `localrules` command: list, run, parameter errors, overrides, resume after a kill, report."
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from conftest import cli, LOCALRULES, ROOT
from localrules.catalog import experiments
from localrules.margins import assert_margins, register_check

def test_list_names_every_experiment():
    from localrules.report.ledger import PAPER_IDS
    out = cli('list', check=True).output
    for name, e in experiments().items():                  # papers by arXiv id ('clapp++' is listed as 2601.21683)
        paper = e['EXPERIMENT']['paper']
        assert name in out and PAPER_IDS.get(paper.lower(), paper) in out, (name, paper)

def test_list_name_shows_the_declared_parameters_and_run_options():
    "`localrules list NAME`: each parameter with what it allows, its smoke and paper values and help; the run options."
    out = cli('list', 'bp_vs_fa', check=True).output
    row = next(line for line in out.splitlines() if line.startswith('epochs '))
    assert 'an integer >= 1' in row and ' 15 ' in row and ' 100 ' in row and 'training epochs' in row
    assert all(any(line.startswith(k + ' ') for line in out.splitlines()) for k in ('device', 'data_root', 'download'))
    bad = cli('list', 'bp_vs_faa')
    assert bad.returncode != 0 and "did you mean 'bp_vs_fa'" in bad.output and 'Traceback' not in bad.output

def _finals(rows): return {r['rule']: r['value'] for r in rows if r['kind'] == 'final' and r['metric'] == 'test_acc'}

@register_check('cli.bp_vs_fa_smoke', 'tests/test_cli.py::test_run_writes_notebook_figures_results',
                "`localrules run bp_vs_fa` (smoke preset; seed 0 is the preset's): BP and FA test acc > 50 %",
                margins=lambda r: {f'{k} test_acc > 50': v - 50 for k, v in _finals(r[1]).items()}, slow=True)
def run_bp_vs_fa(seed:int=0, out=None) -> tuple:
    "(cli output, result rows) of `localrules run bp_vs_fa` at the smoke preset into `out` (None: a scratch folder)."
    with tempfile.TemporaryDirectory() as d:
        out = Path(out or Path(d)/'run')
        p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', *(['-p', 'seeds', f'[{seed}]'] if seed else []), check=True)
        return p, [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]

def test_run_writes_notebook_figures_results(tmp_path):
    out = tmp_path/'run'
    p, rows = run_bp_vs_fa(0, out)
    assert str(out) in p.output
    assert (out/'notebook.ipynb').exists() and (out/'DONE').exists() and list((out/'figures').glob('*.png'))
    assert set(_finals(rows)) == {'bp', 'fa'}
    # BP, FA > 50 % (chance is 10 %); worst margin over seeds 0-4: 46.9 points (margin_check.py --slow -k cli.)
    assert_margins('cli.bp_vs_fa_smoke', (p, rows))
    for key in ('commit', 'device', 'date', 'preset', 'params', 'seed'): assert key in rows[0]

def test_parameter_override_takes_effect(tmp_path):
    out = tmp_path/'run'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '2', '-p', 'milestones', '[]', '-p', 'rules',
        "['fa']", check=True)
    meta = json.loads((out/'run.json').read_text())
    assert meta['params']['epochs'] == 2 and meta['params']['rules'] == ['fa']
    rows = [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]
    assert {r['rule'] for r in rows} == {'fa'}
    assert max(r['step'] for r in rows if r['kind'] == 'curve') == 2

@pytest.mark.parametrize('args,msg', [
    (['-p', 'lrr', '0.1'], "unknown parameter(s) ['lrr']"),
    (['-p', 'rules', "['sgd']"], "rules='sgd' is not allowed"),
    (['-p', 'epochs', 'ten'], "epochs='ten' must be of type int"),
    (['--device', 'tpu'], "device='tpu'"),
])
def test_bad_parameters_fail_at_once(tmp_path, args, msg):
    t = time.time()
    p = cli('run', 'bp_vs_fa', '--out', tmp_path/'r', *args)
    assert p.returncode != 0 and msg in p.output, p.output
    assert time.time() - t < 30 and not (tmp_path/'r'/'notebook.ipynb').exists()   # before any kernel starts

def test_unknown_experiment():
    p = cli('run', 'no_such_experiment')
    assert p.returncode != 0 and "unknown experiment 'no_such_experiment'" in p.output

def test_killed_run_keeps_finished_units_and_resumes(tmp_path):
    out = tmp_path/'run'
    args = ['run', 'bp_vs_fa', '--out', str(out), '--quiet', '-p', 'epochs', '60', '-p', 'seeds', '[0, 1]']
    proc = subprocess.Popen([LOCALRULES, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list((out/'units').glob('*.json'))) < 2: time.sleep(0.2)
        assert len(list((out/'units').glob('*.json'))) >= 2, 'no unit finished in time'
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out/'DONE').exists()
    first = {p.name: p.stat().st_mtime_ns for p in (out/'units').glob('*.json')}
    cli(*args, check=True)                                                   # same folder: resume
    after = {p.name: p.stat().st_mtime_ns for p in (out/'units').glob('*.json')}
    assert len(after) == 4 and all(after[n] == t for n, t in first.items())  # finished work untouched
    meta = json.loads((out/'run.json').read_text())
    assert meta['resumed'] >= 1
    assert (out/'DONE').exists()

def test_resume_refuses_other_parameters(tmp_path):
    out = tmp_path/'run'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]', check=True)
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '2', '-p', 'milestones', '[]')
    assert p.returncode != 0 and 'other parameters' in p.output

def test_report_gathers_runs_into_ledger(tmp_path):
    runs, results = tmp_path/'runs', tmp_path/'results'
    cli('run', 'bp_vs_fa', '--runs', runs, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]', check=True)
    (results).mkdir()
    (results/'paper_reference.csv').write_text((ROOT/'results'/'paper_reference.csv').read_text())
    out = cli('report', '--runs', runs, '--results', results, check=True).output
    # without --update-ledger it only reads
    assert not (results/'ledger').exists() and not (results/'report.md').exists()
    out = cli('report', '--runs', runs, '--results', results, '--update-ledger', check=True).output
    assert 'bp_vs_fa' in out and '**test_acc**' in out and 'smoke preset' in out
    assert cli('report', '--results', results, '--experiment', 'bp_vs_fa', check=True).output.startswith('## bp_vs_fa')
    ledger = [json.loads(l) for l in (results/'ledger'/'bp_vs_fa.jsonl').read_text().splitlines()]
    assert {r['rule'] for r in ledger if r['kind'] == 'final'} == {'bp', 'fa'}
    assert (results/'report.md').exists() and list((results/'figures'/'bp_vs_fa').glob('*.png'))

def test_refused_or_failed_rerun_keeps_the_finished_run(tmp_path):
    out = tmp_path/'run'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]', check=True)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob('*') if p.is_file()}
    t = time.time()
    # other parameters
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '2', '-p', 'milestones', '[]')
    assert p.returncode != 0 and 'other parameters (epochs: 1 there, 2 here)' in p.output, p.output
    assert time.time() - t < 30 and '--resume' not in p.output                   # refused before any kernel starts
    unit = sorted((out/'units').glob('*.json'))[0]
    unit.write_text(unit.read_text()[:50])                                        # a damaged (truncated) unit file
    files[unit] = (unit.stat().st_mtime_ns, unit.read_bytes())
    # same parameters: it fails reading it
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]')
    assert p.returncode != 0 and f'{unit}: the unit result is damaged' in p.output, p.output[-2000:]
    assert 'delete it and run again into the same folder' in p.output and 'Traceback' not in p.output
    assert (out/'notebook.failed.ipynb').exists()
    assert {q: (q.stat().st_mtime_ns, q.read_bytes()) for q in files} == files   # notebook.ipynb, results.jsonl...

def test_crafted_pickle_checkpoint_is_refused(tmp_path):
    from localrules.catalog import get_experiment
    from localrules.checks import check_params
    from localrules.runs import Run
    out, flag = tmp_path/'run', tmp_path/'pwned'
    run = Run(out, 'bp_vs_fa', 'smoke', check_params(get_experiment('bp_vs_fa'), 'smoke',
                                                     {'epochs': 1, 'milestones': []}))
    ck = run.checkpoint(rule='bp', dataset='digits', seed=0)
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {flag}',))
    ck[0]({'rule': Evil()})                                     # written where the unit's checkpoint goes
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]')
    path = out/'checkpoints'/'dataset=digits-rule=bp-seed=0.pt'
    assert p.returncode != 0 and f'refused to load checkpoint {path}' in p.output, p.output[-2000:]
    assert f'rm {path}' in p.output and 'that unit restarts from scratch' in p.output and not flag.exists()

def test_resume_refuses_a_latest_run_with_other_parameters(tmp_path):
    from localrules.catalog import get_experiment
    from localrules.checks import check_params
    from localrules.runs import Run
    runs = tmp_path/'runs'
    cfg = check_params(get_experiment('bp_vs_fa'), 'smoke', {'epochs': 1, 'milestones': []})
    Run(runs/'bp_vs_fa'/'smoke-20990101-000000', 'bp_vs_fa', 'smoke', cfg)
    p = cli('run', 'bp_vs_fa', '--runs', runs, '--resume', '-p', 'epochs', '2', '-p', 'milestones', '[]')
    assert p.returncode != 0 and '--resume: the latest unfinished run' in p.output
    assert 'epochs: 1 there, 2 here' in p.output

def test_report_skips_bad_lines_and_lists_diverged_units(tmp_path):
    from localrules.runs import Run
    runs, results = tmp_path/'runs', tmp_path/'results'
    run = Run(runs/'demo'/'smoke-1', 'demo', 'smoke', {'lr': 0.1})
    run.record(dict(rule='bp', seed=0), {'test_acc': 90.})
    run.record(dict(rule='bp', seed=1), {'test_acc': 12.}, diverged='loss became nan at epoch 3')
    run.finish()                                                  # the ledger gathers finished runs only
    (results/'ledger').mkdir(parents=True)
    (results/'ledger'/'other.jsonl').write_text('{"experiment": "other", "kind": "fin\n')
    p = cli('report', '--update-ledger', '--runs', runs, '--results', results, check=True)
    assert f"{results/'ledger'/'other.jsonl'}:1: not valid JSON" in p.output and 'Traceback' not in p.output
    assert 'demo smoke-1 (rule=bp, seed=1): diverged: loss became nan at epoch 3' in p.output
    assert '| 90 (n=1); not counted: diverged ×1 |' in p.output, p.output    # out of the mean, shown as diverged

def test_compile_mode_is_checked_before_anything_runs(tmp_path):
    "`--compile` takes torch.compile's modes only; a bad one is refused by the parser, no run folder made."
    r = cli('run', 'bp_vs_fa', '--compile', 'fast', '--out', tmp_path/'r')
    assert r.returncode == 2 and "invalid choice: 'fast'" in r.output and 'reduce-overhead' in r.output, r.output
    assert not (tmp_path/'r').exists()

def test_run_says_what_it_measured_and_nothing_else(tmp_path):
    "A plain `localrules run`: a line per unit and the headline numbers on stdout, no library warnings on stderr."
    out = tmp_path/'run'
    p = cli('run', 'bp_vs_fa', '--out', out, '-p', 'epochs', '2', '-p', 'milestones', '[]', '-p', 'seeds', '[0, 1]',
            check=True)
    assert p.stderr == '', p.stderr                        # the kernel's transport warning, tqdm: into logs/
    assert len(list((out/'logs').glob('kernel-*.log'))) == 1
    units = [l for l in p.stdout.splitlines() if l.startswith('unit ')]
    assert len(units) == 4 and all('test_acc' in l for l in units), p.stdout
    head = p.stdout.split('done: ')[1].splitlines()[1:]
    assert any('rule=bp' in l and 'test_acc' in l and '(n=2)' in l for l in head), p.stdout
    assert any('rule=fa' in l and 'test_acc' in l and '(n=2)' in l for l in head), p.stdout
    # the same numbers from the run folder, and a short index without arguments
    assert cli('report', out, check=True).stdout.splitlines() == head
    index = cli('report', check=True).stdout.splitlines()
    assert 20 < len(index) < 40 and index[0].startswith('experiment') and any('bp_vs_fa' in l for l in index)
    assert 'no finished run folder' in cli('report', tmp_path).output
