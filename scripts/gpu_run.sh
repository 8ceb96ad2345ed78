#!/usr/bin/env bash
# One prepared run on a lent GPU (issue 26), at most 9 minutes: environment, benchmarks, paper_check, Table 1's
# CIFAR-10 column; every step's results into $OUT as it ends. Prepare here first: bash scripts/gpu_prepare.sh (it
# prints the device call). Dry run here: OUT=/tmp/gpu-dry bash scripts/gpu_run.sh --device cpu --dry-run
# Options: python3 scripts/gpu_run.py --help.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for a in "$@"; do [ "$a" = --dry-run ] && [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}; done
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_run.py "$@"
