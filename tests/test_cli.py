"The `localrules` command: list, run, parameter errors, overrides, resume after a kill, report."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import cli, LOCALRULES, ROOT
from localrules.cli import experiments

def test_list_names_every_experiment():
    out = cli('list', check=True).output
    for name, e in experiments().items():
        assert name in out and e['EXPERIMENT']['paper'] in out

def test_run_writes_notebook_figures_results(tmp_path):
    out = tmp_path/'run'
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', check=True)
    assert str(out) in p.output
    assert (out/'notebook.ipynb').exists() and (out/'DONE').exists() and list((out/'figures').glob('*.png'))
    rows = [json.loads(l) for l in (out/'results.jsonl').read_text().splitlines()]
    finals = {r['rule']: r['value'] for r in rows if r['kind'] == 'final' and r['metric'] == 'test_acc'}
    assert set(finals) == {'bp', 'fa'} and all(v > 50 for v in finals.values())   # chance is 10%
    for key in ('commit', 'device', 'date', 'preset', 'params', 'seed'): assert key in rows[0]

def test_parameter_override_takes_effect(tmp_path):
    out = tmp_path/'run'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '2', '-p', 'milestones', '[]', '-p', 'rules', "['fa']", check=True)
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
    t = time.time(); p = cli('run', 'bp_vs_fa', '--out', tmp_path/'r', *args)
    assert p.returncode != 0 and msg in p.output, p.output
    assert time.time() - t < 30 and not (tmp_path/'r'/'notebook.ipynb').exists()   # before any kernel starts

def test_unknown_experiment():
    p = cli('run', 'no_such_experiment')
    assert p.returncode != 0 and "unknown experiment 'no_such_experiment'" in p.output

def test_killed_run_keeps_finished_units_and_resumes(tmp_path):
    out = tmp_path/'run'
    args = ['run', 'bp_vs_fa', '--out', str(out), '--quiet', '-p', 'epochs', '60', '-p', 'seeds', '[0, 1]']
    proc = subprocess.Popen([LOCALRULES, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list((out/'units').glob('*.json'))) < 2: time.sleep(0.2)
        assert len(list((out/'units').glob('*.json'))) >= 2, 'no unit finished in time'
    finally:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    assert not (out/'DONE').exists()
    first = {p.name: p.stat().st_mtime_ns for p in (out/'units').glob('*.json')}
    cli(*args, check=True)                                                   # same folder: resume
    after = {p.name: p.stat().st_mtime_ns for p in (out/'units').glob('*.json')}
    assert len(after) == 4 and all(after[n] == t for n, t in first.items())  # finished work untouched
    meta = json.loads((out/'run.json').read_text()); assert meta['resumed'] >= 1
    assert (out/'DONE').exists()

def test_resume_refuses_other_parameters(tmp_path):
    out = tmp_path/'run'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]', check=True)
    p = cli('run', 'bp_vs_fa', '--out', out, '--quiet', '-p', 'epochs', '2', '-p', 'milestones', '[]')
    assert p.returncode != 0 and 'other parameters' in p.output

def test_report_gathers_runs_into_ledger(tmp_path):
    runs, results = tmp_path/'runs', tmp_path/'results'
    cli('run', 'bp_vs_fa', '--runs', runs, '--quiet', '-p', 'epochs', '1', '-p', 'milestones', '[]', check=True)
    (results).mkdir(); (results/'paper_reference.csv').write_text((ROOT/'results'/'paper_reference.csv').read_text())
    out = cli('report', '--runs', runs, '--results', results, check=True).output
    assert not (results/'ledger').exists() and not (results/'report.md').exists()      # without --update-ledger it only reads
    out = cli('report', '--runs', runs, '--results', results, '--update-ledger', check=True).output
    assert 'bp_vs_fa' in out and '**test_acc**' in out and 'smoke preset' in out
    assert cli('report', '--results', results, '--experiment', 'bp_vs_fa', check=True).output.startswith('## bp_vs_fa')
    ledger = [json.loads(l) for l in (results/'ledger'/'bp_vs_fa.jsonl').read_text().splitlines()]
    assert {r['rule'] for r in ledger if r['kind'] == 'final'} == {'bp', 'fa'}
    assert (results/'report.md').exists() and list((results/'figures'/'bp_vs_fa').glob('*.png'))
