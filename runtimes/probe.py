"""What this machine can run edgekit on, for `edgekit doctor`: GPU, driver, CUDA, TensorRT, DLA, providers.

Every onnxruntime provider is smoke-run (runtimes/onnxruntime: listed is not usable), and each
backend is probed as device selection probes it. No torch, no network.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

SMI_FIELDS = ("name", "driver_version", "memory.total", "compute_cap")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


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
    from edgekit.runtimes.select import probe

    ok, reason = probe("tensorrt")
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


def onnxruntime() -> dict[str, Any]:
    """Version and smoke-run providers, or (no build installed) why not and the fix."""
    from edgekit.errors import BackendUnavailableError
    from edgekit.runtimes.onnxruntime import import_onnxruntime, smoke

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
    from edgekit.runtimes.select import AUTO_ORDER, probe

    probes = {d: probe(d) for d in AUTO_ORDER}
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
