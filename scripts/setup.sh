#!/usr/bin/env bash
# Create .venv and install edgekit with its export and test dependencies (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the CPU build (2.13.0) by the [export] extra; an unpinned torch pulls CUDA wheels.
# setuptools warns on every editable install of a package-dir mapping that folders named like the
# package may shadow it; that is this layout by design (pyproject.toml), so the warning is not shown.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[dev]"
