"""Engine fingerprints: what a TensorRT plan was built for, and whether this machine can run it.

A plan is only valid for the GPU (compute capability), the TensorRT version, the ONNX graph,
the precision and the shape profiles it was built with. The fingerprint records all of them;
its id (`engines/<id>.plan`) is readable and ends in a hash of the full record. The runtime
compares the fields one by one *before* deserializing, so a plan built elsewhere is refused with
the differing fields named, never handed to TensorRT to crash on.

The records themselves (`Fingerprint`, `EngineRecord`) are typed manifest records in
edgekit/engines.py. Pure Python: no tensorrt here.
"""
from __future__ import annotations

from typing import Any

from edgekit.engines import Fingerprint, Machine, Profile

# Hardware-compatible plans (AMPERE_PLUS) run on any GPU of compute capability 8.0 or newer.
HW_COMPAT_GPU = "ampere+"
HW_COMPAT_MIN_CC = (8, 0)


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
    frozen = tuple(Profile(name, {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in sorted(dims.items())})
                   for name, dims in profiles)
    return Fingerprint(graph, onnx_sha256, gpu, cc, trt, precision, dla_core, frozen, contexts)


def mismatches(fp: Fingerprint, machine: Machine, onnx_sha256: str, precision: str,
               phases: list[str] | None = None) -> list[str]:
    """Why a plan with fingerprint `fp` cannot run here; empty when it can.

    Profile ranges are not compared: any ranges are valid on the machine they were built for (the
    user's --max-batch and --shape choose them); shapes outside them are reported at run time. Their
    names are, when `phases` (the phases the contract calls the graph in) are given: a plan built
    before a phase existed (speculative decoding's "verify") would run its calls on another phase's
    tactics, or refuse them near the end of the context.
    """
    out = []
    built = [p.name for p in fp.profiles]
    if phases is not None and built != phases:
        out.append(f"profiles {built} (built) vs {phases} (the calls this edgekit makes)")
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
