"""Fault injection: a run killed (SIGKILL) at random moments and at fault points, resumed with `--resume`, ends exactly
as an uninterrupted one (scripts/fault_check.py does it for every experiment; here two small ones, for CI)."""
import random, sys
from conftest import ROOT

sys.path.insert(0, str(ROOT/'scripts'))
import fault_check as fc                                         # noqa: E402

def check(tmp_path, name:str, args:list, at:list) -> dict:
    "Kill `name` (with `args`) at the moments `at`, resume until done; no mismatch, no problem. Returns the summary."
    r = fc.check_experiment(name, len(at), random.Random(0), tmp_path, args=args, at=at, timeout=300)
    for k in r['kills']:
        print(f"{name}: {k}")
    assert r['kills'] and all(k['killed'] for k in r['kills']), f"a kill did not land: {r['kills']}"
    assert not r['problems'], r['problems']
    assert r['results_compared'] > 0 and not r['mismatches'], r['mismatches'][:5]
    return r

def test_population_killed_inside_a_unit(tmp_path):
    # Table 1's two PEPITA rows train as one population of two, with dropout (a random draw per step): killed at a
    # random moment after an epoch's checkpoint, resumed from it, they must end with the same numbers, bit for bit.
    # (A kill between the two members' records, the other trained again alone: scripts/fault_check.py, `recorded`.)
    args = ['-p', 'entries', "['pepita', 'pepita/wd']", '-p', 'epochs', '6', '-p', 'milestones', '[]',
            '-p', 'hidden', '32', '-p', 'limit', '1000']
    moment = ('in-unit', round(random.Random(0).uniform(0, 0.01), 3))               # a random moment inside the unit
    r = check(tmp_path, 'table1_mlp_1hl', args, [moment])
    assert r['units'] == 2 and r['kills'][0]['units_done'] == 0 and r['kills'][0]['checkpoints'] == 1, \
        'the kill should land inside the population, its checkpoint on disk'

def test_clapp_killed_while_writing_its_checkpoint(tmp_path):
    "CLAPP++ pre-training killed while its second epoch's checkpoint is written: resumed from the first epoch's."
    args = ['-p', 'methods', "['clapp++']", '-p', 'epochs', '2', '-p', 'steps_per_epoch', '3', '-p', 'limit', '256',
            '-p', 'align_batches', '1']
    r = check(tmp_path, 'clapp_figA2_alignment', args, [('event', 'checkpoint:2')])
    assert r['kills'][0]['checkpoints'] == 1 and r['kills'][0]['temporaries'] >= 1

# --- OS errors, signals and damaged checkpoints through `localrules run` (issue 22): one line, work kept, resume works

import os, shlex, shutil, signal, subprocess, time               # noqa: E402
import pytest                                                    # noqa: E402
from conftest import cli, LOCALRULES                             # noqa: E402

SMALL = ['-p', 'epochs', '2', '-p', 'milestones', '[]', '-p', 'hidden', '16', '-p', 'seeds', '[0]']
# Fails the N-th rename/link onto a path containing PATTERN with OS error ERRNO ($LOCALRULES_TEST_OSERROR =
# 'ERRNO:PATTERN:N'), in the command and in the kernel it starts (both read sitecustomize from $PYTHONPATH).
SITECUSTOMIZE = '''
import os
_spec = os.environ.get('LOCALRULES_TEST_OSERROR')
if _spec:
    _no, _pattern, _n = _spec.split(':')
    _count = [0]
    def _wrap(f):
        def g(src, dst, *a, **k):
            if _pattern in str(dst):
                _count[0] += 1
                if _count[0] >= int(_n): raise OSError(int(_no), os.strerror(int(_no)), str(dst))
            return f(src, dst, *a, **k)
        return g
    os.replace, os.link = _wrap(os.replace), _wrap(os.link)
'''

def _env(tmp_path, spec=None) -> dict:
    (tmp_path/'site').mkdir(exist_ok=True)
    (tmp_path/'site'/'sitecustomize.py').write_text(SITECUSTOMIZE)
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(tmp_path/'site'), env.get('PYTHONPATH')) if p)
    if spec: env['LOCALRULES_TEST_OSERROR'] = spec
    return env

def _run(out, env, *extra, timeout=300):
    p = subprocess.run([LOCALRULES, 'run', 'bp_vs_fa', '--preset', 'smoke', *SMALL, *extra, '--out', str(out),
                        '--quiet'], capture_output=True, text=True, timeout=timeout, env=env)
    p.output = p.stdout + p.stderr
    return p

def _error_lines(output:str) -> list:
    return [line for line in output.splitlines() if line.startswith(('error:', 'stopped by'))]

OS_ERRORS = [(28, 'No space left on device (ENOSPC)', 'free space on that disk'),
             (13, 'Permission denied (EACCES)', 'give this user write access to it'),
             (30, 'Read-only file system (EROFS)', 'make that file system writable')]

def test_os_error_while_writing_is_one_line_and_resumes(tmp_path):
    """The second unit's file cannot be written (ENOSPC, raised inside the kernel): one line naming it and the reason,
    the first unit kept, resume works. The other errors take the same path (`parse_os_error`, `os_error_message`):
    their lines are checked below without a run."""
    out = tmp_path/'run'
    p = _run(out, _env(tmp_path, '28:/units/:2'), '-p', 'rules', "['bp', 'fa']")
    assert p.returncode != 0 and 'Traceback' not in p.output, p.output[-3000:]
    lines = _error_lines(p.output)
    _, reason, fix = OS_ERRORS[0]
    assert len(lines) == 1 and f': {reason}; 1 finished unit(s) are kept in {out}' in lines[0], p.output[-3000:]
    assert f'cannot write {out}/units/' in lines[0] and f'--out {out}' in lines[0] and fix in lines[0], lines
    assert len(list((out/'units').glob('*.json'))) == 1
    r = _run(out, _env(tmp_path), '-p', 'rules', "['bp', 'fa']")
    assert r.returncode == 0 and (out/'DONE').exists(), r.output[-3000:]
    assert len(list((out/'units').glob('*.json'))) == 2

@pytest.mark.parametrize('errno_, reason, fix', OS_ERRORS)
def test_each_os_error_has_its_reason_and_fix(tmp_path, errno_, reason, fix):
    "The line `localrules run` prints for an OSError a notebook raised while writing unit 2 (as the kernel reports it)."
    import argparse
    from localrules.cli import parse_os_error, os_error_message
    (tmp_path/'units').mkdir()
    (tmp_path/'units'/'a.json').write_text('[]')
    target = tmp_path/'units'/'b.json'
    err = OSError(errno_, os.strerror(errno_), str(target))
    parsed = parse_os_error(type(err).__name__, str(err))
    args = argparse.Namespace(name='bp_vs_fa', preset='smoke', param=[], device='auto', out=str(tmp_path), runs='runs')
    line = os_error_message(*parsed, tmp_path, args)
    assert line.startswith(f'error: cannot write {target}: {reason}; 1 finished unit(s) are kept in {tmp_path}; {fix}')
    assert line.endswith(f'--out {tmp_path}') and '\n' not in line, line

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_is_one_line_and_resumes(tmp_path, sig):
    """SIGINT (Ctrl-C: the whole process group) or SIGTERM while the kernel trains: one line, no traceback, no kernel
    left; the command that line gives finishes the run from its checkpoint."""
    out = tmp_path/'run'
    args = [LOCALRULES, 'run', 'bp_vs_fa', '--preset', 'smoke', '-p', 'epochs', '300', '-p', 'milestones', '[]',
            '-p', 'hidden', '16', '-p', 'seeds', '[0]', '-p', 'rules', "['bp']", '--out', str(out), '--quiet']
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path),
                            start_new_session=True)
    t0 = time.time()
    while not list(out.glob('checkpoints/*.pt')) and time.time() - t0 < 240 and proc.poll() is None:
        time.sleep(0.2)                                          # a checkpoint: the kernel is training
    assert list(out.glob('checkpoints/*.pt')), 'the kernel never started training'
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + sig and 'Traceback' not in output, output[-3000:]
    lines = _error_lines(output)
    assert len(lines) == 1 and lines[0].startswith(f'stopped by {signal.Signals(sig).name}: finished units are kept; '
                                                  f'continue with: localrules run bp_vs_fa'), output[-3000:]
    assert f'--out {out}' in lines[0]
    time.sleep(1)
    kernels = subprocess.run(['pgrep', '-f', 'ipykernel'], capture_output=True, text=True).stdout.split()
    alive = [k for k in kernels if str(tmp_path/'site') in _environ(k)]
    assert not alive, f'kernels left running: {alive}'
    again = shlex.split(lines[0].split('continue with: ')[1])
    r = subprocess.run([LOCALRULES, *again[1:], '--quiet'], capture_output=True, text=True, env=_env(tmp_path),
                       timeout=600)
    assert r.returncode == 0 and (out/'DONE').exists(), (r.stdout + r.stderr)[-3000:]

def _environ(pid:str) -> str:
    try: return open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')
    except OSError: return ''

@pytest.fixture(scope='session')
def finished_small_run(tmp_path_factory):
    """A finished 1-epoch BP run folder (its run.json and notebook), made once and copied by each damaged-checkpoint
    case (the three cases start from the same folder; one work unit in conftest's GROUPS, so made on one worker)."""
    out = tmp_path_factory.mktemp('finished')/'run'
    cli('run', 'bp_vs_fa', '--preset', 'smoke', *SMALL, '-p', 'rules', "['bp']", '-p', 'epochs', '1', '--out', out,
        '--quiet', check=True)
    return out

def _checkpoint_case(tmp_path, content:bytes, finished):
    "A run killed with a unit's checkpoint on disk, the checkpoint replaced by `content`, resumed: (output, path)."
    out = tmp_path/'run'
    shutil.copytree(finished, out)                                # the folder and its run.json
    ck = out/'checkpoints'/'dataset=digits-rule=bp-seed=0.pt'
    (out/'checkpoints').mkdir(exist_ok=True)
    (out/'DONE').unlink()
    for u in (out/'units').glob('*.json'): u.unlink()
    ck.write_bytes(content)
    p = cli('run', 'bp_vs_fa', '--preset', 'smoke', *SMALL, '-p', 'rules', "['bp']", '-p', 'epochs', '1', '--out', out,
            '--quiet')
    return p, ck, out

@pytest.mark.parametrize('content, cause', [(b'', 'is empty (0 bytes'),
                                            (bytes(range(256)) * 8, 'is damaged'),
                                            (None, "is not a checkpoint of this unit (no 'rule'")])
def test_bad_checkpoint_names_file_cause_and_a_working_next_step(tmp_path, content, cause, finished_small_run):
    if content is None:
        import io, torch
        buf = io.BytesIO()
        torch.save({'weights': torch.ones(2)}, buf)
        content = buf.getvalue()
    p, ck, out = _checkpoint_case(tmp_path, content, finished_small_run)
    assert p.returncode != 0 and 'IndexError' not in p.output and 'KeyError' not in p.output, p.output[-3000:]
    assert f'checkpoint {ck} {cause}' in p.output and f'rm {ck}' in p.output, p.output[-3000:]
    assert 'could run code' not in p.output
    ck.unlink()                                                  # the next step it gives
    r = cli('run', 'bp_vs_fa', '--preset', 'smoke', *SMALL, '-p', 'rules', "['bp']", '-p', 'epochs', '1', '--out', out,
            '--quiet')
    assert r.returncode == 0 and (out/'DONE').exists(), r.output[-3000:]

def test_sigterm_at_a_random_moment_resumes_exactly(tmp_path):
    "scripts/fault_check.py --signals: a SIGTERM at a random moment stops the run cleanly; the resume ends exactly."
    args = ['-p', 'rules', "['bp', 'fa']", '-p', 'epochs', '4', '-p', 'milestones', '[]', '-p', 'hidden', '32']
    moment = ('sigterm', round(random.Random(1).uniform(0.3, 1.5), 2))
    r = check(tmp_path, 'bp_vs_fa', args, [moment])
    assert r['kills'][0]['moment'].startswith('sigterm SIGTERM'), r['kills']
