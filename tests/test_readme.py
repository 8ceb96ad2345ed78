"""Every Python block of README.md and every code cell of the home page (nbs/index.ipynb) runs as written, on its own,
in a fresh interpreter of the project's environment (each imports what it uses and makes its own small data)."""
import json, os, re, subprocess, sys
import pytest
from conftest import ROOT

TIMEOUT = 300          # seconds per block (the slowest, the population fit on sklearn's digits, takes ~20 s here)


def readme_blocks() -> list:
    "The ```python blocks of README.md, in order."
    return re.findall(r'^```python\n(.*?)^```', (ROOT/'README.md').read_text(), re.S | re.M)


def home_blocks() -> list:
    "The code cells of the home page (hidden ones too: a reader's copy of a visible cell must not rely on them)."
    cells = json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells']
    return [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and ''.join(c['source']).strip()]


BLOCKS = [(f'README-{i}', b) for i, b in enumerate(readme_blocks())] + \
         [(f'index-{i}', b) for i, b in enumerate(home_blocks())]


def test_there_are_blocks():
    assert len(readme_blocks()) >= 3 and home_blocks(), 'the README / home page code blocks were not found'


@pytest.mark.parametrize('name,code', BLOCKS, ids=[n for n, _ in BLOCKS])
def test_block_runs_on_its_own(name, code, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg', PYTHONHASHSEED='0')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"{name} fails as written:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert ' object at 0x' not in r.stdout, f"{name} prints an object without a meaningful repr:\n{r.stdout}"
    if 'print(log)' in code:
        assert 'MetricsLogger(' in r.stdout and 'test_acc' in r.stdout, f"{name}: `log` says nothing:\n{r.stdout}"


def test_first_hour_tutorial_keeps_its_outputs():
    """nbs/tutorials/first_hour.ipynb is read on the site with its outputs (committed, kept by nbdev-clean): every code
    cell after the imports shows something, and none an error."""
    cells = json.loads((ROOT/'nbs'/'tutorials'/'first_hour.ipynb').read_text())['cells']
    code = [c for c in cells if c['cell_type'] == 'code']
    assert len(code) >= 6
    errors = [c['source'] for c in code if any(o['output_type'] == 'error' for o in c['outputs'])]
    assert not errors, f'cells with an error output: {errors}'
    silent = [''.join(c['source'])[:60] for c in code[1:] if not c['outputs']]
    assert not silent, f'cells without their outputs (run the notebook and commit it): {silent}'
    text = json.dumps([c['outputs'] for c in code])
    assert 'test accuracy' in text and 'cosine to BP' in text and 'image/png' in text
