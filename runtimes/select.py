"""Device selection: "auto" tries TensorRT, then onnxruntime CUDA, then CPU, and says which.

Each backend package has `probe(...)` answering (usable, reason) without side effects and
`open_runners(art, ...)` returning one Runner per graph. A backend the user names explicitly is
never replaced by another: if it is not usable, the error says why and how to install it.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from edgekit.artifact import Artifact
from edgekit.errors import BackendUnavailableError, ConfigError, EngineError
from edgekit.runtimes.base import Runner
from edgekit.runtimes.onnxruntime import ORT_FIX
from edgekit.runtimes.options import RunOptions

log = logging.getLogger("edgekit")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


@dataclass(frozen=True)
class Backend:
    """A device name, the backend package serving it (imported only when asked for), and its install hint."""

    device: str
    package: str  # has probe(*args) and open_runners(art, *args)
    args: tuple[str, ...]
    install_hint: str

    def probe(self) -> tuple[bool, str]:
        try:
            return importlib.import_module(self.package).probe(*self.args)  # type: ignore[no-any-return]
        except ImportError as e:
            return False, f"not importable ({e})"

    def open(self, art: Artifact, portable: bool, options: RunOptions) -> dict[str, Runner]:
        return importlib.import_module(self.package).open_runners(art, *self.args,  # type: ignore[no-any-return]
                                                                  portable=portable, options=options)


BACKENDS: dict[str, Backend] = {
    "cpu": Backend("cpu", "edgekit.runtimes.onnxruntime", ("cpu",), ORT_FIX),
    "cuda": Backend("cuda", "edgekit.runtimes.onnxruntime", ("cuda",),
                    "pip install 'edgekit[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU and driver, after "
                    "pip uninstall onnxruntime (the CPU build clashes with it)"),
    # TensorRT is imported only when asked for: `import edgekit` must not touch it.
    "tensorrt": Backend("tensorrt", "edgekit.runtimes.tensorrt", (),
                        "pip install 'edgekit[tensorrt]' on a machine with an NVIDIA GPU (JetPack ships TensorRT on "
                        "Jetson)"),
}


def probe(device: str) -> tuple[bool, str]:
    """(usable, why not) for a concrete device: "cpu", "cuda" or "tensorrt"."""
    return BACKENDS[device].probe()


def resolve_device(device: str) -> str:
    """Return the concrete device for `device` ("auto" resolved), or raise with the reason."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'", found=f"devices {list(DEVICES)}")
    if device != "auto":
        ok, reason = probe(device)
        if not ok:
            raise BackendUnavailableError(
                f"device '{device}' was asked for but is not available",
                found=reason,
                fix=BACKENDS[device].install_hint + ("" if device == "cpu" else ", or pass device='cpu'"),
            )
        return device
    for candidate in AUTO_ORDER:
        ok, reason = probe(candidate)
        if ok:
            return candidate
        log.debug("device auto: skipping %s (%s)", candidate, reason)
    raise BackendUnavailableError("no backend is usable", found=reason, fix=BACKENDS["cpu"].install_hint)


def open_runners(art: Artifact, device: str = "auto", portable: bool = False,
                 options: RunOptions | None = None) -> dict[str, Runner]:
    """One runner per graph on `device`; `portable` runs the portable graphs even where the artifact has
    faster backend-specific stand-ins (Manifest.runtime_graphs); `options`: what each backend runs with."""
    options = options or RunOptions()
    concrete = resolve_device(device)
    try:
        runners = BACKENDS[concrete].open(art, portable, options)
    except EngineError as e:
        if device != "auto" or concrete != "tensorrt":
            raise
        # auto: TensorRT works here but this artifact has no engine for this GPU; say so, take the next.
        log.warning("edgekit: device auto: not using TensorRT (%s); `edgekit build` makes an engine", e.found or e.what)
        concrete = next(d for d in AUTO_ORDER[1:] if probe(d)[0])
        runners = BACKENDS[concrete].open(art, portable, options)
    first = next(iter(runners.values()))
    log.info("edgekit: running %s on %s", art.path.name, first.name)
    return runners
