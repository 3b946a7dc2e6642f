#!/usr/bin/env bash
# The whole GPU check in one command, on a GPU machine with no network (docs: /work/shared/docs/gpu.md):
# onnxruntime-gpu from carried wheel pieces, edgekit from this source tree, the gpu-marked tests, then
# benchmarks/gpu_check.py (parity + speed of every task at fp32 and fp16, onnxruntime CUDA vs PyTorch CUDA).
#
#   bash scripts/gpu_check.sh [extra benchmarks/gpu_check.py arguments, e.g. --tasks classify]
#
# Needs, in the repository root (both folders are git-ignored):
#   .ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl.part-a?  the onnxruntime-gpu 1.31.1
#       wheel (CUDA 13, 244 MiB) in pieces that each fit a 64 MiB transfer beside the working tree (3.2 MiB
#       now; 50 MiB pieces leave room for it to grow, 60 MiB ones would leave 0.8 MiB), made with
#           python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#               --platform manylinux_2_28_x86_64 -d /tmp/ortdl onnxruntime-gpu==1.31.1
#           split -b 50M /tmp/ortdl/onnxruntime_gpu-1.31.1-*.whl .ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl.part-
#       and checked against scripts/ortgpu.sha256 once joined.
#   .whl/*.whl (optional): edgekit dependencies the GPU image lacks. That image has torch 2.11 (CUDA 13),
#       cuda-bindings (the cuda-python that device="cuda" uses), onnx, onnxscript, onnxruntime (CPU),
#       transformers, tokenizers, numpy, click, pillow, psutil, pytest, setuptools and wheel (KINDS.md of the
#       device tool, 2026-11-17), but not soundfile (+ cffi, pycparser) or soxr. Neither gpu_check.py nor the
#       gpu-marked tests import those (edgekit imports them only to read audio files and resample), so
#       they are carried for completeness: soundfile 0.14.0, cffi 2.1.1, pycparser 3.12, soxr 1.1.0.
#
# With the device tool, the pieces travel one per call (each call moves at most 64 MiB) and stay in the
# device's copy of the repository while the machine is warm (30 s after a call: make the calls back to back):
#   run(carry=[".ortgpu/<wheel>.part-aa"], command="ls -l .ortgpu")   ... the same for -ab, -ac, -ad, then
#   run(carry=[".ortgpu/<wheel>.part-ae", ".whl"], command="bash scripts/gpu_check.sh", timeout_s=600)
# (a cold machine between two calls loses the pieces already sent: the join then fails its checksum and
# the message lists the pieces that are there). Not yet timed on that machine: if the 570 s budget ends
# before every row is done, gpu_check.json keeps the finished rows; pass --tasks to run the rest next.
#
# Writes to $OUT (default /tmp/edgekit-gpu-check): setup.log, doctor.txt, pytest_gpu.log, gpu_check.json,
# gpu_check.md, gpu_check.log. Exit status: 0 only if the setup, the gpu tests and gpu_check all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-/tmp/edgekit-gpu-check}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-570}  # the device tool stops a command at 600 s; gpu_check writes its JSON after every row
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
log() { echo "[gpu_check.sh] $*" | tee -a "$OUT/setup.log"; }
die() { log "FAILED: $*"; exit 3; }

# 1. onnxruntime-gpu: join the pieces, check the checksum, install beside (not over) the CPU build.
WHEEL=$(awk '{print $2}' scripts/ortgpu.sha256)
pieces=(.ortgpu/"$WHEEL".part-*)
[ -e "${pieces[0]}" ] || die "no .ortgpu/$WHEEL.part-* here (see this script's header)"
cat "${pieces[@]}" > "/tmp/$WHEEL"
(cd /tmp && sha256sum -c "$ROOT/scripts/ortgpu.sha256" >> "$OUT/setup.log" 2>&1) \
  || die "the joined wheel does not match scripts/ortgpu.sha256: pieces here: ${pieces[*]} ($(du -cb "${pieces[@]}" | tail -1 | cut -f1) bytes)"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortgpu "/tmp/$WHEEL" >> "$OUT/setup.log" 2>&1 \
  || die "pip install --target /tmp/ortgpu $WHEEL"
rm -f "/tmp/$WHEEL"
DEPS=""
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/ekdeps .whl/*.whl >> "$OUT/setup.log" 2>&1 \
    || die "pip install --target /tmp/ekdeps .whl/*.whl"
  DEPS=/tmp/ekdeps
fi
# /tmp/ortgpu first: its `onnxruntime` package shadows the CPU build installed in site-packages.
export PYTHONPATH="/tmp/ortgpu${DEPS:+:$DEPS}:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# onnxruntime's CUDA provider dlopens libcudart/cublas/cudnn/cufft/curand by name: the copies that came
# with torch (site-packages/nvidia/*/lib) are the CUDA 13 ones it was built for.
NVLIBS=$("$PY" - <<'EOF'
import glob, os, site
dirs = {os.path.dirname(p) for sp in site.getsitepackages()
        for p in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# 2. edgekit from this tree (the package-dir mapping needs an editable install; see that script).
PYTHON="$PY" bash scripts/edgekit_from_source.sh 2>&1 | tee -a "$OUT/setup.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || die "scripts/edgekit_from_source.sh"
(cd /tmp && "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/setup.log"
import sys, onnxruntime, torch, transformers, edgekit, edgekit.converters, edgekit.runtimes
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("onnxruntime", onnxruntime.__version__, onnxruntime.__file__, onnxruntime.get_available_providers())
print("transformers", transformers.__version__, "| edgekit", edgekit.__file__, edgekit.converters.__file__)
assert onnxruntime.__file__.startswith("/tmp/ortgpu/"), "the CPU onnxruntime shadows the GPU build"
try:  # device="cuda" keeps decode caches in device memory through cuda-python (cuda-bindings on the image)
    from edgekit.runtimes.cuda import import_cudart
    print("cuda-python:", import_cudart().__name__)
except Exception as e:  # reported, not fatal here: the rows that need it will fail with the same error
    print("cuda-python: NOT usable:", type(e).__name__, e)
EOF
) || die "imports (see setup.log)"
"$PY" -m edgekit.cli doctor > "$OUT/doctor.txt" 2>&1 || log "edgekit doctor exited $? (see doctor.txt)"

# 3. The gpu-marked tests. Only the files that hold them are collected: collecting every test module
# imports what the CPU tests need (soundfile, ...), and one import error would stop the whole run.
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/test_*.py)
log "gpu tests in: ${GPU_TESTS[*]}"
"$PY" -m pytest -m gpu -q -rs -p no:cacheprovider "${GPU_TESTS[@]}" 2>&1 | tee "$OUT/pytest_gpu.log"
PYTEST_RC=${PIPESTATUS[0]}

# 4. Parity and speed, onnxruntime CUDA vs PyTorch CUDA, within what is left of the budget.
LEFT=$((BUDGET_S - SECONDS))
[ "$LEFT" -gt 30 ] || LEFT=30  # `timeout 0` would mean no limit at all
log "gpu_check.py with ${LEFT} s left"
timeout --signal=INT "$LEFT" "$PY" benchmarks/gpu_check.py --device cuda --torch-device cuda \
  --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
CHECK_RC=${PIPESTATUS[0]}
log "pytest -m gpu exit $PYTEST_RC, gpu_check.py exit $CHECK_RC ($SECONDS s in all)"
[ "$PYTEST_RC" -eq 0 ] && [ "$CHECK_RC" -eq 0 ]
