#!/usr/bin/env bash
# Set up, then run the whole test suite on the CPU (GPU tests skip with their reason).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
