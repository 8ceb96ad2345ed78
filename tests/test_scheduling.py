"""The suite's own scheduling (tests/conftest.py): under `--dist loadgroup` the items that share an expensive fixture
run on one worker, so the fixture is built once."""
import subprocess, sys
from conftest import ROOT, work_unit

def test_work_units():
    assert work_unit('tests/test_docs.py::test_every_notebook_has_a_page') == 'docs site'
    assert work_unit('tests/test_shard.py::test_submitit_local_shards_then_gather') == 'bp_vs_fa_ref'
    assert work_unit('tests/test_faults.py::test_bad_checkpoint_names_file_cause_and_a_working_next_step[x]') \
        == 'finished_small_run'
    alone = 'tests/test_experiments.py::test_smoke[bp_vs_fa]'
    assert work_unit(alone) == alone

def test_a_work_unit_runs_on_one_worker(tmp_path):
    "Eight items of test_docs.py and eight others under `-n 2 --dist loadgroup`: the eight run on one worker."
    (tmp_path/'conftest.py').write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_conftest', {str(ROOT/'tests'/'conftest.py')!r})\n"
        "suite = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(suite)\n"
        "pytest_xdist_make_scheduler = suite.pytest_xdist_make_scheduler\n")
    (tmp_path/'test_docs.py').write_text(''.join(f'def test_d{i}(): pass\n' for i in range(8)))
    (tmp_path/'test_other.py').write_text(''.join(f'def test_o{i}(): pass\n' for i in range(8)))
    args = ['-n', '2', '--dist', 'loadgroup', '-v', '-p', 'no:cacheprovider', str(tmp_path)]
    p = subprocess.run([sys.executable, '-m', 'pytest', *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    workers = {line.split()[0] for line in p.stdout.splitlines() if '::test_d' in line and 'PASSED' in line}
    others = {line.split()[0] for line in p.stdout.splitlines() if '::test_o' in line and 'PASSED' in line}
    assert len(workers) == 1 and len(others) == 2, p.stdout[-3000:]
