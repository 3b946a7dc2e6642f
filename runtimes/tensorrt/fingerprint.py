"""Engine fingerprints: what a TensorRT plan was built for, and whether this machine can run it.

A plan is only valid for the GPU (compute capability), the TensorRT version, the ONNX graph,
the precision and the shape profiles it was built with. The fingerprint records all of them;
its id (`engines/<id>.plan`) is readable and ends in a hash of the full record. The runtime
compares the fields one by one *before* deserializing, so a plan built elsewhere is refused with
the differing fields named, never handed to TensorRT to crash on.

`EngineRecord` is a built plan as the manifest stores it (`manifest.engines[id]`, written by
build.py) and as the runner reads it back, checked. Pure Python: no tensorrt here.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

# Hardware-compatible plans (AMPERE_PLUS) run on any GPU of compute capability 8.0 or newer.
HW_COMPAT_GPU = "ampere+"
HW_COMPAT_MIN_CC = (8, 0)


@dataclass(frozen=True)
class Machine:
    """The GPU and TensorRT a plan is built on or run on."""

    gpu: str  # e.g. "NVIDIA H100 80GB HBM3", "Orin"
    cc: str  # compute capability "9.0"
    trt: str  # TensorRT version "10.3.0"


@dataclass(frozen=True)
class Fingerprint:
    graph: str
    onnx_sha256: str
    gpu: str  # GPU name, or "ampere+" for a hardware-compatible plan
    cc: str  # compute capability, or "8.0+" for a hardware-compatible plan
    trt: str  # full TensorRT version, or "10" (major) for a version-compatible plan
    precision: str
    dla_core: int | None
    profiles: tuple[tuple[str, tuple[tuple[str, tuple[int, int, int]], ...]], ...]
    contexts: int = 1  # copies of the profile set: how many execution contexts may run at once

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        dla = f"-dla{self.dla_core}" if self.dla_core is not None else ""
        return f"{self.graph}-{_slug(self.gpu)}-sm{self.cc.replace('.', '')}-trt{self.trt}-{self.precision}{dla}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [{"name": n, "dims": {k: list(v) for k, v in dims}} for n, dims in self.profiles]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        profiles = tuple(
            (str(p["name"]), tuple((str(k), tuple(int(x) for x in v)) for k, v in p["dims"].items()))
            for p in d["profiles"]
        )
        dla = d.get("dla_core")
        return cls(str(d["graph"]), str(d["onnx_sha256"]), str(d["gpu"]), str(d["cc"]), str(d["trt"]),
                   str(d["precision"]), None if dla is None else int(dla), profiles,  # type: ignore[arg-type]
                   int(d.get("contexts", 1)))


@dataclass(frozen=True)
class EngineRecord:
    """What the runner needs of a manifest's engine record; the rest of it is for people."""

    graph: str
    file: str  # relative to the artifact folder, "engines/<id>.plan"
    sha256: str
    fingerprint: Fingerprint
    version_compatible: bool

    @classmethod
    def from_dict(cls, d: Any) -> EngineRecord:
        from edgekit.errors import EngineError

        try:
            fp = Fingerprint.from_dict(d["fingerprint"])
            record = cls(str(d["graph"]), str(d["file"]), str(d["sha256"]), fp,
                         bool(d.get("options", {}).get("version_compatible", False)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EngineError(f"a TensorRT engine record of the manifest is malformed ({type(e).__name__}: {e})",
                              fix="run `edgekit build --rebuild`") from None
        if not record.file.startswith("engines/") or ".." in record.file.split("/"):
            raise EngineError(f"the engine record names '{record.file}', outside the artifact's engines/",
                              fix="the artifact was tampered with; run `edgekit build --rebuild`")
        return record

    def profile_dims(self) -> list[dict[str, tuple[int, int, int]]]:
        """Per optimization profile (one copy), each named dim's (min, opt, max)."""
        return [dict(dims) for _, dims in self.fingerprint.profiles]  # type: ignore[misc]


def make_fingerprint(
    graph: str, onnx_sha256: str, machine: Machine, precision: str, profiles: list[Any],
    dla_core: int | None = None, hardware_compatible: bool = False, version_compatible: bool = False,
    contexts: int = 1,
) -> Fingerprint:
    """The fingerprint of a plan built on `machine` with these options.

    `profiles`: [(name, {dim: (min, opt, max)})], as chosen by `profiles.choose_profiles`.
    """
    gpu, cc = (HW_COMPAT_GPU, "{}.{}+".format(*HW_COMPAT_MIN_CC)) if hardware_compatible else (machine.gpu, machine.cc)
    trt = machine.trt.split(".")[0] if version_compatible else machine.trt
    frozen = tuple((name, tuple(sorted((k, tuple(v)) for k, v in dims.items()))) for name, dims in profiles)
    return Fingerprint(graph, onnx_sha256, gpu, cc, trt, precision, dla_core, frozen, contexts)  # type: ignore[arg-type]


def mismatches(fp: Fingerprint, machine: Machine, onnx_sha256: str, precision: str) -> list[str]:
    """Why a plan with fingerprint `fp` cannot run here; empty when it can.

    Profiles are not compared: any profile set is valid on the machine it was built for; shapes
    outside them are reported at run time with the profile's range.
    """
    out = []
    if fp.onnx_sha256 != onnx_sha256:
        out.append(f"ONNX graph {fp.onnx_sha256[:12]} (built) vs {onnx_sha256[:12]} (artifact now)")
    if fp.precision != precision:
        out.append(f"precision {fp.precision} (built) vs {precision} (artifact)")
    if fp.gpu == HW_COMPAT_GPU:
        if _cc_tuple(machine.cc) < HW_COMPAT_MIN_CC:
            out.append(f"hardware-compatible plan needs compute capability 8.0+, this GPU is {machine.cc}")
    elif (fp.gpu, fp.cc) != (machine.gpu, machine.cc):
        out.append(f"GPU {fp.gpu} sm{fp.cc} (built) vs {machine.gpu} sm{machine.cc} (here)")
    if "." not in fp.trt:  # version-compatible: same major, same or newer runtime
        if machine.trt.split(".")[0] != fp.trt:
            out.append(f"TensorRT {fp.trt}.x (built, version-compatible) vs {machine.trt} (here)")
    elif fp.trt != machine.trt:
        out.append(f"TensorRT {fp.trt} (built) vs {machine.trt} (here)")
    return out


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.rstrip("+").partition(".")
    return int(major), int(minor or 0)


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s.removeprefix("nvidia-")[:32] or "gpu"
