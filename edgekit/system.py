"""What this machine can run edgekit on: GPU, driver, CUDA, TensorRT, onnxruntime providers, DLA.

A backend is reported available only after a real smoke run: onnxruntime happily lists
CUDAExecutionProvider and then falls back to the CPU when the CUDA libraries are missing, so
each provider runs a tiny in-memory graph (y = x + x) and must both answer correctly and still
be the session's first provider afterwards. Used by `edgekit doctor`. No torch, no network.
"""
from __future__ import annotations

import base64
import functools
import shutil
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekit.errors import BackendUnavailableError

# ONNX (ir 7, opset 13) of y = Add(x, x), x/y float32 [1, 4]: made once with onnx.helper
# (tests/test_system.py rebuilds it and checks the bytes), so a device needs no onnx package.
SMOKE_ONNX = base64.b64decode(
    "CAcSB2VkZ2VraXQ6QQoOCgF4CgF4EgF5IgNBZGQSBXNtb2tlWhMKAXgSDgoMCAESCAoCCAEKAggEYhMKAXkSDgoMCAESCAoCCAEKAggEQgQKABAN"
)
# Providers that are not a local compute device: listed, not smoke-run.
NOT_LOCAL = {"AzureExecutionProvider": "remote endpoints only, not a local device"}
SMI_FIELDS = ("name", "driver_version", "memory.total", "compute_cap")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# onnxruntime is not a base dependency: its CPU and GPU builds install the same package and clash
# (pyproject.toml), so the user picks one through an extra.
ORT_FIX = "pip install 'edgekit[cpu]' (CPU) or pip install 'edgekit[gpu]' (NVIDIA GPU)"


def import_onnxruntime() -> ModuleType:
    """onnxruntime, or a BackendUnavailableError that names the extra to install.

    The one place that turns a missing (or clobbered) onnxruntime into an edgekit error: device
    selection, `edgekit doctor` and `convert` all come through here before they touch it.
    """
    try:
        import onnxruntime
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == "onnxruntime":
            raise BackendUnavailableError("onnxruntime is not installed", found=str(e), fix=ORT_FIX) from None
        # Installed but broken: typically both builds were installed and one was uninstalled.
        raise BackendUnavailableError(
            "onnxruntime is installed but cannot be imported", found=f"{type(e).__name__}: {e}",
            fix=f"pip uninstall -y onnxruntime onnxruntime-gpu, then {ORT_FIX}",
        ) from None
    return onnxruntime


def gpus(smi: str | None = None) -> dict[str, Any]:
    """GPUs as nvidia-smi sees them, or why none are listed."""
    smi = smi or shutil.which("nvidia-smi")
    if smi is None:
        return {"gpus": [], "reason": "nvidia-smi not found (no NVIDIA driver, or a Jetson: see tegra)"}
    try:
        out = subprocess.run([smi, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"gpus": [], "reason": f"nvidia-smi failed ({e})"}
    if out.returncode != 0:
        return {"gpus": [], "reason": f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:200]}"}
    rows = [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(",")))) for line in out.stdout.splitlines() if line.strip()]
    return {"gpus": rows, "reason": "" if rows else "nvidia-smi lists no GPU"}


def cuda() -> dict[str, Any]:
    """CUDA runtime/driver versions and device count through cuda-python, if installed."""
    try:
        from edgekit.runtimes.cuda import cuda_call, import_cudart

        cudart = import_cudart()
        info = {"runtime": _cuda_version(cuda_call(cudart, cudart.cudaRuntimeGetVersion())),
                "driver": _cuda_version(cuda_call(cudart, cudart.cudaDriverGetVersion()))}
        info["devices"] = cuda_call(cudart, cudart.cudaGetDeviceCount())
        return info
    except Exception as e:  # noqa: BLE001 - a report: every failure is a line, not a crash
        return {"error": str(e)}


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def tensorrt() -> dict[str, Any]:
    """TensorRT version and DLA cores, or why it is not usable."""
    from edgekit.runtimes.trt import probe

    ok, reason = probe()
    info: dict[str, Any] = {"available": ok, "detail": reason}
    if not ok:
        return info
    import tensorrt as trt

    info["version"] = str(trt.__version__)
    try:
        info["dla_cores"] = int(trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)
    except Exception as e:  # noqa: BLE001
        info["dla_cores_error"] = str(e)
    return info


def smoke(provider: str) -> dict[str, Any]:
    """Run y = x + x on `provider` alone; ok only if it answered right *on that provider*."""
    import numpy as np
    import onnxruntime as ort

    if provider in NOT_LOCAL:
        return {"provider": provider, "ok": None, "detail": NOT_LOCAL[provider]}
    x = np.arange(4, dtype=np.float32)[None]
    t0 = time.perf_counter()
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(SMOKE_ONNX, sess_options=opts, providers=[provider])
        used = session.get_providers()
        (y,) = session.run(None, {"x": x})
    except Exception as e:  # noqa: BLE001 - the failure is the finding
        return {"provider": provider, "ok": False, "detail": f"{type(e).__name__}: {str(e).strip()[:300]}"}
    ms = round((time.perf_counter() - t0) * 1000, 1)
    if not used or used[0] != provider:
        return {"provider": provider, "ok": False, "detail": f"fell back to {used} (libraries missing?)", "ms": ms}
    if not np.array_equal(y, x + x):
        return {"provider": provider, "ok": False, "detail": f"wrong answer {y.tolist()}", "ms": ms}
    return {"provider": provider, "ok": True, "detail": "smoke run passed", "ms": ms}


@functools.cache
def smoke_once(provider: str) -> dict[str, Any]:
    """`smoke`, run once per process (device selection asks on every load)."""
    return smoke(provider)


def onnxruntime() -> dict[str, Any]:
    """Version and smoke-run providers, or (no build installed) why not and the fix."""
    try:
        ort = import_onnxruntime()
    except BackendUnavailableError as e:
        return {"version": None, "providers": [], "error": str(e)}
    return {"version": ort.__version__, "providers": [smoke(p) for p in ort.get_available_providers()]}


def tegra() -> str | None:
    """The L4T release line on a Jetson, None elsewhere."""
    try:
        return TEGRA_RELEASE.read_text(errors="replace").splitlines()[0].lstrip("# ").strip()
    except (OSError, IndexError):
        return None


def report() -> dict[str, Any]:
    """Everything `edgekit doctor` prints, plus which device `device="auto"` would pick here."""
    from edgekit.runtimes.select import AUTO_ORDER, _probe

    probes = {d: _probe(d) for d in AUTO_ORDER}
    auto = next((d for d in AUTO_ORDER if probes[d][0]), None)
    return {
        "gpu": gpus(), "cuda": cuda(), "tensorrt": tensorrt(), "onnxruntime": onnxruntime(), "tegra": tegra(),
        "backends": {d: {"available": ok, "detail": why} for d, (ok, why) in probes.items()}, "auto": auto,
    }


def format_report(r: dict[str, Any]) -> str:
    lines = []
    g = r["gpu"]
    lines += [f"GPU: {row.get('name')} (driver {row.get('driver_version')}, {row.get('memory.total')} MiB, "
              f"compute {row.get('compute_cap')})" for row in g["gpus"]] or [f"GPU: none ({g['reason']})"]
    c = r["cuda"]
    lines.append(f"CUDA: runtime {c['runtime']}, driver {c['driver']}, {c['devices']} device(s)" if "runtime" in c
                 else f"CUDA (cuda-python): {c['error']}")
    t = r["tensorrt"]
    lines.append(f"TensorRT: {t['version']}, DLA cores {t.get('dla_cores', '?')}" if t["available"]
                 else f"TensorRT: not usable ({t['detail']})")
    if r["tegra"]:
        lines.append(f"Jetson: {r['tegra']}")
    o = r["onnxruntime"]
    lines.append(f"onnxruntime {o['version']}:" if o["version"] else f"onnxruntime: {o['error']}")
    mark = {True: "ok  ", False: "FAIL", None: "--  "}
    lines += [f"  {mark[p['ok']]} {p['provider']}: {p['detail']}" for p in o["providers"]]
    lines.append("backends: " + ", ".join(f"{d} {'yes' if b['available'] else 'no'}" for d, b in r["backends"].items()))
    lines.append(f"device='auto' uses: {r['auto'] or 'nothing (no backend is usable)'}")
    return "\n".join(lines)
