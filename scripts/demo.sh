#!/usr/bin/env bash
# The main job on the CPU default: set up, then convert example models and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/python examples/quickstart.py "$@"
