"""TensorRT engine records as the manifest keeps them (`Manifest.engines`), typed and read with the codec.

A plan is only valid for the GPU (compute capability), the TensorRT version, the ONNX graph, the
precision and the shape profiles it was built with: its `Fingerprint` records all of them, and its
id (`engines/<id>.plan`) is readable and ends in a hash of the full fingerprint. `EngineRecord` is a
built plan: written by runtimes/tensorrt/build.py, read by its runner, `edgekit info` and
`edgekit serve --plain`. Pure Python: no tensorrt here.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from edgekit.contract.codec import encode

ENGINE_DIR = "engines"


@dataclass(frozen=True)
class Machine:
    """The GPU and TensorRT a plan is built on or run on."""

    gpu: str  # e.g. "NVIDIA H100 80GB HBM3", "Orin"
    cc: str  # compute capability "9.0"
    trt: str  # TensorRT version "10.3.0"


@dataclass(frozen=True)
class Profile:
    """One optimization profile: each named dynamic dim's (min, opt, max)."""

    name: str
    dims: dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class Fingerprint:
    graph: str
    onnx_sha256: str
    gpu: str  # GPU name, or "ampere+" for a hardware-compatible plan
    cc: str  # compute capability, or "8.0+" for a hardware-compatible plan
    trt: str  # full TensorRT version, or "10" (major) for a version-compatible plan
    precision: str
    dla_core: int | None
    profiles: tuple[Profile, ...]
    contexts: int = 1  # copies of the profile set: how many execution contexts may run at once

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(encode(self), sort_keys=True).encode()).hexdigest()[:12]
        dla = f"-dla{self.dla_core}" if self.dla_core is not None else ""
        return f"{self.graph}-{_slug(self.gpu)}-sm{self.cc.replace('.', '')}-trt{self.trt}-{self.precision}{dla}-{digest}"


@dataclass(frozen=True)
class EngineOptions:
    """The builder options a plan was made with (for people, and `version_compatible` for the runner)."""

    workspace_mb: int
    dla_core: int | None
    hardware_compatible: bool
    version_compatible: bool
    optimization_level: int | None
    strongly_typed: bool
    contexts: int = 1


@dataclass(frozen=True)
class EngineRecord:
    graph: str
    file: str  # relative to the artifact folder, "engines/<id>.plan"
    sha256: str
    fingerprint: Fingerprint
    built_for: Machine
    options: EngineOptions
    build_seconds: float

    def __post_init__(self) -> None:
        # The runner opens this path: a manifest must not point it outside the artifact's engines/.
        parts = self.file.split("/")
        if parts[0] != ENGINE_DIR or ".." in parts or len(parts) != 2:
            raise ValueError(f"engine file '{self.file[:80]}' is not inside the artifact's {ENGINE_DIR}/")

    @property
    def version_compatible(self) -> bool:
        return self.options.version_compatible

    def profile_dims(self) -> list[dict[str, tuple[int, int, int]]]:
        """Per optimization profile (one copy), each named dim's (min, opt, max)."""
        return [dict(p.dims) for p in self.fingerprint.profiles]


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s.removeprefix("nvidia-")[:32] or "gpu"
