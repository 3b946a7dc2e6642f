"""onnxruntime: the CPU default everywhere, and CUDA where onnxruntime-gpu (and cuda-python) are installed.

`probe(device)` says whether a device is usable here, after a real smoke run for GPU providers;
`open_runners(art, device)` returns one `OrtRunner` per graph of the artifact.
"""
from __future__ import annotations

import base64
import functools
import logging
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgekit.errors import BackendUnavailableError
from edgekit.runtimes.options import RunOptions

if TYPE_CHECKING:
    from edgekit.artifact import Artifact
    from edgekit.manifest import RuntimeGraph
    from edgekit.runtimes.base import Runner

log = logging.getLogger("edgekit")

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# onnxruntime is not a base dependency: its CPU and GPU builds install the same package and clash
# (pyproject.toml), so the user picks one through an extra.
ORT_FIX = "pip install 'edgekit[cpu]' (CPU) or pip install 'edgekit[gpu]' (NVIDIA GPU)"
# ONNX (ir 7, opset 13) of y = Add(x, x), x/y float32 [1, 4]: made once with onnx.helper
# (tests/test_system.py rebuilds it and checks the bytes), so a device needs no onnx package.
SMOKE_ONNX = base64.b64decode(
    "CAcSB2VkZ2VraXQ6QQoOCgF4CgF4EgF5IgNBZGQSBXNtb2tlWhMKAXgSDgoMCAESCAoCCAEKAggEYhMKAXkSDgoMCAESCAoCCAEKAggEQgQKABAN"
)
# Providers that are not a local compute device: listed, not smoke-run.
NOT_LOCAL = {"AzureExecutionProvider": "remote endpoints only, not a local device"}


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


def smoke(provider: str) -> dict[str, Any]:
    """Run y = x + x on `provider` alone; ok only if it answered right *on that provider*.

    onnxruntime lists CUDAExecutionProvider and then falls back to the CPU when the CUDA
    libraries are missing, so the answer must be right and the provider still the session's first.
    """
    import numpy as np

    ort = import_onnxruntime()
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


def probe(device: str) -> tuple[bool, str]:
    """(usable, why not) for device "cpu" or "cuda"."""
    try:  # not a base dependency: the [cpu] or [gpu] extra installs one of its two builds
        ort = import_onnxruntime()
    except BackendUnavailableError as e:
        return False, f"{e.what} ({e.found})"
    provider = PROVIDERS[device]
    providers = list(ort.get_available_providers())
    if provider not in providers:
        return False, f"onnxruntime offers {providers}, not {provider}"
    if device != "cpu":  # a listed GPU provider can still fail at its first run (missing CUDA libraries)
        from edgekit.runtimes.cuda import import_cudart

        result = smoke_once(provider)
        if not result["ok"]:
            return False, f"{provider} is listed but failed a smoke run: {result['detail']}"
        try:  # decode loops keep their cache in GPU memory and write it through cuda-python
            import_cudart()
        except BackendUnavailableError as e:
            return False, f"{e.what} ({e.found})"
    return True, ""


def open_runners(art: Artifact, device: str, portable: bool = False, unproven: bool = False,
                 options: RunOptions | None = None) -> dict[str, Runner]:
    """One runner per graph: the artifact's onnxruntime stand-in for it where one fits this device and
    onnxruntime version (unless `portable`), else the portable graph. `unproven`: for the convert's
    own proof, a stand-in is taken before it has passed it. `options.threads`: each session's intra-op
    threads (None: onnxruntime's default, all cores)."""
    from edgekit.runtimes.onnxruntime.runner import OrtRunner

    threads = None if options is None else options.threads
    runners: dict[str, Runner] = {}
    for name, g in art.manifest.graphs.items():
        rg = None if portable else runtime_graph(art, name, device, unproven)
        runners[name] = (OrtRunner(art.file(rg.file), rg.graph, device=device, threads=threads, kv_layout=rg.kv_layout)
                         if rg else OrtRunner(art.file(g.file), g, device=device, threads=threads))
    return runners


def runtime_graph(art: Artifact, name: str, device: str, unproven: bool = False) -> RuntimeGraph | None:
    """The proven stand-in for graph `name` made for this device and onnxruntime version, if the artifact has one."""
    ours = [rg for rg in art.manifest.runtime_graphs.values() if rg.replaces == name and rg.backend == "onnxruntime"]
    if not ours:
        return None
    version = ".".join(import_onnxruntime().__version__.split(".")[:2])
    for rg in ours:
        if device in rg.devices and rg.version == version:
            if unproven or (rg.proof is not None and rg.proof.passed):
                return rg
            # A stand-in is an optimisation: one that did not pass its proof (kept by an older edgekit
            # with strict=False, or an edited manifest) never runs in place of the portable graph.
            log.warning("edgekit: %s: the onnxruntime graph for '%s' did not pass its proof at convert (%s); "
                        "running the portable graph", art.path.name, name, rg.proof.summary if rg.proof else "no proof")
            return None
    # Graphs with contrib ops are proven on the onnxruntime they were made with; another version (or
    # device) runs the portable graph, which is correct and slower: say so.
    log.warning("edgekit: %s: the onnxruntime graph for '%s' was made for onnxruntime %s on %s; this is %s on %s: "
                "running the portable graph (convert again here for the faster one)", art.path.name, name,
                ours[0].version, "/".join(ours[0].devices), version, device)
    return None
