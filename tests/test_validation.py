"""Every parameter of every experiment is checked before a kernel starts: bad values generated from each notebook's own
declaration (PRESETS, CHOICES, SPEC, RELATIONS) and hand-written ones fail with a message naming the parameter, and no
run folder is left behind."""
import importlib.util, json, math
from pathlib import Path
import pytest
from conftest import cli, ROOT
from localrules.cli import experiments, check_params, parse_value, main
from localrules.runs import param_spec, resolve_params

EXPS = experiments()

def _bad_scalars(kind:str, s:dict) -> list:
    "Values that break a scalar rule `s` of type `kind`: a wrong type, each bound crossed, an unknown choice, non-finite."
    out = list({'int': ['ten', 2.5, True], 'float': ['ten', True], 'str': [3], 'bool': ['yes', 1]}[kind])
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
    "(experiment, parameter, bad value) that break each simple `[a, '<' or '<=', b]` relation, the rest of the preset unchanged."
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
    assert any(w in msg for w in ('allowed', 'choose', 'must be')), f'{name}: -p {k} {v!r}: message says nothing allowed: {msg}'
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
    "A number's meaning needs a range: each numeric parameter (or list/dict of numbers) without CHOICES has a SPEC entry."
    missing = []
    for name, e in EXPS.items():
        for k in e['PRESETS']['smoke']:
            s = param_spec(k, e['PRESETS'], e['SPEC'], e['CHOICES'])
            kind = s['of'] if s['type'] in ('list', 'dict') else s['type']
            if kind in ('int', 'float') and 'choices' not in s and k not in e['SPEC']: missing.append(f'{name}.{k}')
    assert not missing, missing

def test_the_notebook_validates_with_its_whole_declaration():
    "The notebook's own `resolve_params` call (papermill directly) gets SPEC and RELATIONS, not only CHOICES."
    for name, e in EXPS.items():
        srcs = [''.join(c['source']) for c in json.loads(Path(e['path']).read_text())['cells'] if c['cell_type'] == 'code']
        calls = [l for s in srcs for l in s.splitlines() if 'resolve_params(' in l and not l.lstrip().startswith(('from', 'import'))]
        assert calls and all('SPEC, RELATIONS)' in l for l in calls), (name, calls)

HAND = [  # (experiment, -p arguments, text the error must contain)
    ('bp_vs_fa', ['milestones', '[10,'], "milestones='[10,' is not a valid Python literal"),
    ('bp_vs_fa', ['lr', '1e999'], 'lr=inf must be a finite number'),
    ('bp_vs_fa', ['lr', 'nan'], 'lr=nan must be a finite number'),
    ('bp_vs_fa', ['lr', '0'], 'lr=0.0 is out of range; allowed: > 0'),
    ('bp_vs_fa', ['lr', '0.1.2'], "lr='0.1.2' is not a valid Python literal"),
    ('bp_vs_fa', ['epochs', '0'], 'epochs=0 is out of range; allowed: >= 1'),
    ('bp_vs_fa', ['hidden', '0'], 'hidden=0 is out of range'),
    ('bp_vs_fa', ['batch_size', '0'], 'batch_size=0 is out of range'),
    ('bp_vs_fa', ['epochs', '5'], 'milestones=[10] must be < epochs=5'),
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

@pytest.mark.parametrize('args,msg', [
    (['bp_vs_fa', '-p', 'milestones', '[10,'], "milestones='[10,' is not a valid Python literal"),
    (['bp_vs_fa', '-p', 'hidden', '0'], 'hidden=0 is out of range'),
    (['table1_mlp_1hl', '-p', 'epochs', '1e999'], 'epochs=inf must be of type int'),
    (['bp_vs_fa', '-p', 'device', 'cpu'], 'use the option --device'),
])
def test_bad_input_fails_through_the_console_command(tmp_path, args, msg):
    runs = tmp_path/'runs'
    p = cli('run', *args, '--runs', runs, '--quiet')
    assert p.returncode != 0 and msg in p.output, p.output
    assert 'Traceback' not in p.output and not runs.exists()

def test_papermill_directly_validates_too(tmp_path):
    "Run without the CLI, the notebook refuses the same bad value before any work."
    import papermill as pm
    out = tmp_path/'run'
    with pytest.raises(Exception) as e:
        pm.execute_notebook(str(EXPS['bp_vs_fa']['path']), str(tmp_path/'nb.ipynb'), kernel_name='python3', progress_bar=False,
                            parameters=dict(hidden=0, out_dir=str(out)), cwd=str(ROOT))
    assert 'hidden=0 is out of range' in str(e.value)
    assert not out.exists()
