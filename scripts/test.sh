#!/usr/bin/env bash
# The test suite, as README.md gives it. Needs the project installed in .venv (README, "Install and run").
set -euo pipefail
cd "$(dirname "$0")/.."
export CLTRAIN_DATA="${CLTRAIN_DATA:-$(cd .. && pwd)/shared/data}"
export WANDB_SILENT=true
exec .venv/bin/python -m pytest -q "$@"
