"Project shape: the package is in sync with its notebooks, notebooks are clean, config files agree."
import json, re, shutil, subprocess, sys, tomllib
from pathlib import Path
import pytest
from conftest import ROOT

BIN = Path(sys.executable).parent

def _copy(tmp_path):
    "A copy of the tracked and new (not ignored) files of the checkout."
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    dst = tmp_path/'repo'
    for f in files:
        src = ROOT/f
        if src.is_file() and not src.is_symlink():
            (dst/f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst/f)
        elif src.is_symlink():
            (dst/f).parent.mkdir(parents=True, exist_ok=True)
            (dst/f).symlink_to(src.readlink())
    return dst

def _snapshot(d, pattern):
    return {p.relative_to(d).as_posix(): p.read_text() for p in sorted(d.glob(pattern)) if p.is_file()}

def test_every_module_in_sync_with_its_notebook(tmp_path):
    d = _copy(tmp_path)
    before = _snapshot(d, 'localrules/**/*.py')
    subprocess.run([BIN/'nbdev-export'], cwd=d, check=True, capture_output=True)
    after = _snapshot(d, 'localrules/**/*.py')
    stale = [f for f in set(before) | set(after) if before.get(f) != after.get(f)]
    assert not stale, f'out of sync with nbs/ (edit the notebook, run nbdev-export): {stale}'

def test_notebooks_are_clean_and_keep_parameters_tags(tmp_path):
    d = _copy(tmp_path)
    before = _snapshot(d, 'nbs/**/*.ipynb')
    subprocess.run([BIN/'nbdev-clean'], cwd=d, check=True, capture_output=True)
    after = _snapshot(d, 'nbs/**/*.ipynb')
    assert before == after, f'not clean (run nbdev-clean): {[f for f in before if before[f] != after.get(f)]}'
    for p in sorted((d/'nbs'/'experiments').glob('*.ipynb')):
        tags = [c.get('metadata', {}).get('tags', []) for c in json.loads(p.read_text())['cells']]
        assert sum('parameters' in t for t in tags) == 1, f'{p.name}: needs exactly one cell tagged parameters'

def test_environment_yml_matches_pyproject():
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    want = sorted(s.replace(' ', '') for s in proj['dependencies'] + proj['optional-dependencies']['dev'])
    yml = (ROOT/'environment.yml').read_text()
    pip = [l.strip()[2:] for l in yml.split('- pip:')[1].splitlines() if l.strip().startswith('- ')
           and not l.strip().startswith('- -e')]
    got = sorted(s.replace(' ', '') for s in pip)
    assert got == want, f'environment.yml and pyproject.toml disagree: {set(got) ^ set(want)}'
    assert re.search(r'- python=3\.11', yml) and '- -e .' in yml

def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    cmds = re.findall(r'```(?:bash|sh)\n(.*?)\n```', readme, re.S)
    test_cmd = next(c for c in cmds if 'test' in c and '\n' not in c.strip())
    assert test_cmd.strip() in ci

def test_no_settings_ini_beside_pyproject():
    assert not (ROOT/'settings.ini').exists()
    cfg = tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev']
    assert 'tags' in cfg['allowed_cell_metadata_keys']

def test_quarto_config_is_the_top_level_one():
    link = ROOT/'nbs'/'_quarto.yml'
    assert link.is_symlink() and link.resolve() == (ROOT/'_quarto.yml').resolve()

def test_title_cells_have_no_list_lines():
    """nbdev reads '- key: value' lines of a notebook's first markdown cell as YAML front matter: a bullet list there
    breaks the page."""
    import json
    bad = []
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts: continue
        cells = [c for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'markdown']
        if cells and any(l.lstrip().startswith('- ') for l in ''.join(cells[0]['source']).splitlines()):
            bad.append(p.name)
    assert not bad, f'bullet lines in the title cell of {bad}: move them to a later markdown cell'

def test_ruff_finds_nothing():
    """One statement a line, lines <= 120, in the notebooks, tests, scripts and benchmarks ([tool.ruff] in
    pyproject.toml)."""
    r = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--output-format', 'concise', '--no-cache'], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, 'ruff check (fix these, or run it yourself):\n' + r.stdout[-4000:] + r.stderr[-2000:]

def test_pre_commit_hooks_run_the_checks_the_tests_make():
    "The pre-commit hooks are local (nothing downloaded) and run ruff, nbdev-clean and the export check."
    import yaml
    cfg = yaml.safe_load((ROOT/'.pre-commit-config.yaml').read_text())
    hooks = [h for r in cfg['repos'] for h in r['hooks']]
    assert all(r['repo'] == 'local' for r in cfg['repos'])
    entries = ' | '.join(h['entry'] for h in hooks)
    assert 'ruff check' in entries and 'nbdev-clean' in entries and 'nbdev-export' in entries, entries

# lines that compare a loss/accuracy/error-like name but are no training outcome (maths, ranges, deterministic
# constructions); any other such assertion must go through localrules.margins (a registered check with its margins)
NOT_TRAINING = ("abs(rows[0]['cos']) < 0.9", "0 <= r['angle'] <= 180", "set(stats) >= {'loss', 'out'}",
                "(a1 > 0) * masks[0]", "errs[0] > errs[1] > errs[2]", "sim0['eg'][-1] - sim0['eg'][0]", "eg(s) < 1e-12")
TRAINING_LIKE = re.compile(r"^\s*(assert\b|test_close\()(?!.*assert_margins).*(\bacc\w*|\bloss\w*|\bl[01]\b|\be[01]\b|"
                           r"\berr\w*|\beg\b|\bangle\w*|\ba1\b)[^#\n]*[<>]")

def _test_sources():
    "(name, code) of the library notebooks' non-export code cells and of tests/*.py but test_experiments.py."
    for p in sorted((ROOT/'nbs').glob('*.ipynb')) + sorted((ROOT/'nbs'/'api').glob('*.ipynb')):
        if p.name == '08_margins.ipynb': continue                 # the registry's own example
        for c in json.loads(p.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and not src.lstrip().startswith('#| export'): yield p.name, src
    for p in sorted((ROOT/'tests').glob('test_*.py')):
        if p.name != 'test_experiments.py': yield p.name, p.read_text()

def test_margin_registry_covers_the_training_checks():
    """Every training-outcome assertion of nbs/*.ipynb and tests/ is a registered check of localrules.margins (so
    scripts/margin_check.py measures its margin over seeds): each asserted name is registered, each registered check
    is asserted in the file it names, and no other assertion compares an accuracy, loss or error with a bound."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('margin_check', ROOT/'scripts'/'margin_check.py')
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    checks = mc.all_checks()
    sources = list(_test_sources())
    asserted = {(f, n) for f, s in sources for n in re.findall(r"assert_margins\(\s*'([^']+)'", s)}
    unknown = sorted(n for _, n in asserted if n not in checks)
    assert not unknown, f'assert_margins of unregistered checks: {unknown}'
    for n, c in checks.items():
        f = Path(c.where.split(':')[0]).name
        assert (f, n) in asserted, f'check {n!r} is registered for {c.where} but not asserted there'
    loose = [(f, l.strip()) for f, s in sources for l in s.splitlines()
             if TRAINING_LIKE.search(l) and not any(k in l for k in NOT_TRAINING)]
    assert not loose, f'training-outcome assertions outside localrules.margins (register them): {loose}'

def test_runtimes_name_the_commits_of_their_runs_ledger_rows():
    "Each row of results/runtimes.csv names the commit(s) of its run's ledger rows ('; ' between two), never another."
    import csv
    ledger = {}
    for f in (ROOT/'results'/'ledger').glob('*.jsonl'):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            ledger.setdefault((r['experiment'], r['run_id']), set()).add(r['commit'])
    rows = list(csv.DictReader((ROOT/'results'/'runtimes.csv').open()))
    assert rows
    wrong = [(r['experiment'], r['run_id'], r['commit']) for r in rows
             if {c.strip() for c in r['commit'].split(';')} != ledger.get((r['experiment'], r['run_id']))]
    assert not wrong, f'runtimes.csv rows whose commit is not their ledger rows\' commit: {wrong}'
