import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCALRULES = str(Path(sys.executable).parent/'localrules')   # the installed console command

def cli(*args, cwd=None, timeout=600, check=False):
    "Run the `localrules` console command; returns the CompletedProcess (stdout+stderr merged)."
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    p = subprocess.run([LOCALRULES, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                       env=env)
    p.output = p.stdout + p.stderr
    if check and p.returncode:
        raise AssertionError(f"localrules {' '.join(map(str, args))} failed:\n{p.output[-4000:]}")
    return p

@pytest.fixture
def root(): return ROOT

# 4 units (bp, fa) x (seed 0, 1) of bp_vs_fa, 2 epochs: the unsharded reference run of test_shard and the first of the
# two identical runs of test_reproducibility (both only read it; one work unit in GROUPS)
REF_ARGS = ['-p', 'epochs', '2', '-p', 'milestones', '[]', '-p', 'seeds', '[0, 1]']

@pytest.fixture(scope='session')
def bp_vs_fa_ref(tmp_path_factory):
    "One finished unsharded `localrules run bp_vs_fa` with REF_ARGS (its folder), shared by the tests that read it."
    out = tmp_path_factory.mktemp('bp_vs_fa_ref')/'ref'
    cli('run', 'bp_vs_fa', '--out', out, '--quiet', *REF_ARGS, check=True)
    return out

# Longest items first. scripts/test.sh runs `pytest -n 2 --dist loadgroup --no-loadscope-reorder`: xdist hands each
# worker one work unit at a time (at most 3 waiting), in collection order, so with the long items first the two workers
# end together (longest-first list scheduling) instead of one worker running a queue of smoke runs alone at the end.
# Items that share an expensive fixture are one work unit (GROUPS), so that the fixture is built on one worker only:
# test_docs' offline site (module scope; it goes first, being one long unit), the bp_vs_fa reference run and the small
# finished run (session scope). SLOW: rough
SLOW = {
    'test_docs.py::': 200, 'test_experiments.py::test_smoke[': 60, 'test_divergence.py::': 40, 'test_faults.py::': 40,
    'test_ddp.py::': 40, 'test_shard.py::test_submitit': 40, 'test_reproducibility.py::test_two_cli': 30,
    'test_cli.py::': 20, 'test_workflows.py::': 20, 'test_readme.py::': 15, 'test_project.py::': 15,
}
# Seconds of each experiment's smoke run (papermill wall of the seed-0 run in the 5-seed sweep of commit 2a95796, two
# runs at once on the loaded 2-core machine; a 5-seed run's time / 5 + 25 s of kernel start): only the order matters.
SMOKE = {'clapp_figA1_lowrank': 178, 'clapp_fig4c_alignment': 177, 'clapp_table2': 150, 'sm_pretraining': 157,
         'fig2b_ode_theory': 133, 'byom_resnet': 135, 'clapp_fig4b_linear_cnn': 111, 'clapp_figA2_alignment': 100,
         'sm_scalability': 93, 'sm_cifar_study': 82, 'clapp_fig2_theorem31': 80, 'supfig7_feedback_norm': 83,
         'clapp_fig3a_widths_dfb': 74, 'table2_mlp_deep': 71, 'table3_slowness': 64, 'table1_mlp_1hl': 62,
         'sm_supervision': 60, 'clapp_fig3b_mlp_mnist': 55, 'bp_vs_fa': 43, 'sm_kmeans_baseline': 36,
         'fig3_depth_init_wd_angle': 38, 'supfig5_goodness': 38, 'supfig4_time_local': 34, 'supfig9_10_angles': 34,
         'supfig8_depth_norm': 33, 'supfig6_pepita_afa_cifar': 32, 'fig2_pepita_afa_alignment': 31,
         'sm_depth_speed': 26}
# {node id prefix: work unit}: the items of one unit run on one worker, one after another
GROUPS = {'test_docs.py::': 'docs site', 'test_shard.py::test_submitit_local_shards_then_gather': 'bp_vs_fa_ref',
          'test_reproducibility.py::test_two_cli_runs_identical': 'bp_vs_fa_ref',
          'test_faults.py::test_bad_checkpoint_names_file_cause': 'finished_small_run'}

def work_unit(nodeid:str) -> str:
    "The work unit of test `nodeid` for `--dist loadgroup`: its GROUPS entry, else the test alone."
    name = nodeid.split('/')[-1]
    return next((g for prefix, g in GROUPS.items() if name.startswith(prefix)), nodeid)

def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with the work units of `work_unit`. xdist 3.8 groups by a suffix it writes into
    `item._nodeid`, which pytest 9.2 no longer reads (`nodeid` comes from `item._id`): its xdist_group marks group
    nothing, and each worker built the docs site again. This scheduler reads the groups from the node ids the workers
    report."""
    if config.getvalue('dist') != 'loadgroup': return None
    from xdist.scheduler import LoadScopeScheduling
    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid): return work_unit(nodeid)
    return WorkUnits(config, log)

def _expected_seconds(item) -> float:
    nodeid = item.nodeid.split('/')[-1]
    if nodeid.startswith('test_experiments.py::test_smoke['):
        return SMOKE.get(nodeid.split('[', 1)[1].split(']')[0], SLOW['test_experiments.py::test_smoke['])
    return max((s for k, s in SLOW.items() if nodeid.startswith(k)), default=0)

def pytest_collection_modifyitems(items):
    "Order the items longest first (a stable sort: the rest keep pytest's order; the same order on every xdist worker)."
    items.sort(key=_expected_seconds, reverse=True)
