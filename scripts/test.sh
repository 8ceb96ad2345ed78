#!/usr/bin/env bash
# All tests: set up, check export/clean sync, run the notebooks' inline tests (nbdev-test), process the docs up to
# Quarto's render (nbdev-proc-nbs), then pytest (CLI, data, determinism, every experiment's smoke run, docs page).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg PYTHONHASHSEED=0
# two test workers share the CPU cores: one OpenMP thread each (oversubscribed threads spin-wait and stall each other)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
nbdev-test --n-workers 2 --timing
nbdev-proc-nbs >/dev/null
# one work unit at a time, longest first (tests/conftest.py orders the items; test_docs' site is built once)
pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=15 tests/ "$@"
