#!/usr/bin/env bash
# Prepare a run on a lent GPU (issue 26): the wheels the machine lacks, the data and a manifest into the ignored
# folder .gpu/, a check that what travels fits 64 MiB, and the exact `run` call to make. Options: see
# `python scripts/gpu_prepare.py --help` (--data DIR, --resume-from DIR, --no-wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_prepare.py "$@"
