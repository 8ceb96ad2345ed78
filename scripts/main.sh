#!/usr/bin/env bash
# The main job: set up, then run the first experiment (BP vs FA) at the smoke preset and print where its results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/localrules run bp_vs_fa --preset smoke "$@"
