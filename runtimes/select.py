"""Device selection: "auto" tries TensorRT, then onnxruntime CUDA, then CPU, and says which.

Each backend has a `probe()` that answers (usable, reason) without side effects, and an `open()`
that returns one Runner per graph. A backend the user names explicitly is never replaced by
another: if it is not usable, the error says why and how to install it.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgekit.artifact import Artifact
from edgekit.errors import BackendUnavailableError, ConfigError, EngineError
from edgekit.runtimes.base import Runner
from edgekit.system import ORT_FIX, import_onnxruntime

log = logging.getLogger("edgekit")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def _ort_probe(device: str) -> tuple[bool, str]:
    from edgekit.runtimes.ort import available_providers

    try:  # not a base dependency: the [cpu] or [gpu] extra installs one of its two builds
        import_onnxruntime()
    except BackendUnavailableError as e:
        return False, f"{e.what} ({e.found})"
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    providers = available_providers()
    if provider not in providers:
        return False, f"onnxruntime offers {providers}, not {provider}"
    if device != "cpu":  # a listed GPU provider can still fail at its first run (missing CUDA libraries)
        from edgekit.runtimes.cuda import import_cudart
        from edgekit.system import smoke_once

        result = smoke_once(provider)
        if not result["ok"]:
            return False, f"{provider} is listed but failed a smoke run: {result['detail']}"
        try:  # decode loops keep their cache in GPU memory and write it through cuda-python
            import_cudart()
        except BackendUnavailableError as e:
            return False, f"{e.what} ({e.found})"
    return True, ""


def _ort_open(device: str) -> Callable[[Artifact], dict[str, Runner]]:
    def open_(art: Artifact) -> dict[str, Runner]:
        from edgekit.runtimes.ort import OrtRunner

        return {name: OrtRunner(art.file(g.file), g, device=device) for name, g in art.manifest.graphs.items()}

    return open_


@dataclass(frozen=True)
class Backend:
    device: str
    probe: Callable[[], tuple[bool, str]]
    open: Callable[[Artifact], dict[str, Runner]]
    install_hint: str


def _lazy(module: str, attr: str) -> Callable[..., object]:
    # TensorRT code is imported only when asked for: `import edgekit` must not touch it.
    def call(*args: object) -> object:
        return getattr(importlib.import_module(module), attr)(*args)

    return call


BACKENDS: dict[str, Backend] = {
    "cpu": Backend("cpu", lambda: _ort_probe("cpu"), _ort_open("cpu"), ORT_FIX),
    "cuda": Backend(
        "cuda", lambda: _ort_probe("cuda"), _ort_open("cuda"),
        "pip install 'edgekit[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU and driver, after "
        "pip uninstall onnxruntime (the CPU build clashes with it)",
    ),
    "tensorrt": Backend(
        "tensorrt",
        _lazy("edgekit.runtimes.trt", "probe"),  # type: ignore[arg-type]
        _lazy("edgekit.runtimes.trt", "open_artifact_runners"),  # type: ignore[arg-type]
        "pip install 'edgekit[tensorrt]' on a machine with an NVIDIA GPU (JetPack ships TensorRT on Jetson)",
    ),
}


def resolve_device(device: str) -> str:
    """Return the concrete device for `device` ("auto" resolved), or raise with the reason."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'", found=f"devices {list(DEVICES)}")
    if device != "auto":
        ok, reason = _probe(device)
        if not ok:
            raise BackendUnavailableError(
                f"device '{device}' was asked for but is not available",
                found=reason,
                fix=BACKENDS[device].install_hint + ("" if device == "cpu" else ", or pass device='cpu'"),
            )
        return device
    for candidate in AUTO_ORDER:
        ok, reason = _probe(candidate)
        if ok:
            return candidate
        log.debug("device auto: skipping %s (%s)", candidate, reason)
    raise BackendUnavailableError("no backend is usable", found=reason, fix=BACKENDS["cpu"].install_hint)


def _probe(device: str) -> tuple[bool, str]:
    try:
        return BACKENDS[device].probe()
    except ImportError as e:
        return False, f"not importable ({e})"


def open_runners(art: Artifact, device: str = "auto") -> dict[str, Runner]:
    concrete = resolve_device(device)
    try:
        runners = BACKENDS[concrete].open(art)
    except EngineError as e:
        if device != "auto" or concrete != "tensorrt":
            raise
        # auto: TensorRT works here but this artifact has no engine for this GPU; say so, take the next.
        log.warning("edgekit: device auto: not using TensorRT (%s); `edgekit build` makes an engine", e.found or e.what)
        concrete = next(d for d in AUTO_ORDER[1:] if _probe(d)[0])
        runners = BACKENDS[concrete].open(art)
    first = next(iter(runners.values()))
    log.info("edgekit: running %s on %s", art.path.name, first.name)
    return runners
