"""The convert pipeline: source -> plan (per task) -> export -> precision -> files -> parity gate.

Each task lives in its own module (`classify`, `generate`, `recognize`) exposing
`plan(source, options) -> Plan`. The pipeline knows nothing about tasks beyond that.
"""
from __future__ import annotations

import importlib
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifact import Artifact, hash_files, open_artifact, staging
from edgekit.errors import ConfigError, ParityError, UnsupportedError
from edgekit.manifest import PRECISIONS, Manifest
from edgekit.system import import_onnxruntime
from edgekit.converters.export import GraphExport, export_graph
from edgekit.converters.sources import Source, resolve_source

log = logging.getLogger("edgekit")

TARGETS = ("cpu", "cuda", "tensorrt", "jetson")
TASK_MODULES = {
    "classify": "edgekit.converters.classify",
    "generate": "edgekit.converters.generate",
    "recognize": "edgekit.converters.recognize",
}

Feeds = dict[str, Any]  # input name -> np.ndarray


@dataclass
class ConvertOptions:
    precision: str = "fp32"
    calibration: Any = None
    target: str = "cpu"
    int8_method: str | None = None  # "static" (Q/DQ, TensorRT-ready) | "dynamic" (CPU) | "weight-only"
    strict: bool = True  # parity outside tolerance fails the convert
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific options (e.g. max_context)


@dataclass
class Plan:
    """What a task module hands the pipeline.

    calibration_feeds(calibration) -> list of {graph name: feeds}; used by int8 static.
    check_parity(plan, model, precision, samples=None) -> report dict with at least {"passed": bool,
    "summary": str}; `samples` overrides the task's default number of parity inputs.
    """

    family: str
    graphs: list[GraphExport]
    preprocess: dict[str, Any]
    postprocess: dict[str, Any]
    files: dict[str, bytes]
    calibration_feeds: Callable[[Any], list[dict[str, Feeds]]]
    check_parity: Callable[..., dict[str, Any]]
    default_int8: str = "static"
    supported_precisions: tuple[str, ...] = ("fp32", "fp16", "int8")


def convert(
    source: Any,
    out: str | Path,
    task: str | None = None,
    precision: str = "fp32",
    calibration: Any = None,
    target: str = "cpu",
    example_inputs: Any = None,
    tokenizer: Any = None,
    labels: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
    overwrite: bool = False,
    int8_method: str | None = None,
    strict: bool = True,
    **extra: Any,
) -> Artifact:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'", found=f"precisions {list(PRECISIONS)}")
    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}'", found=f"targets {list(TARGETS)}")
    # Quantization and the parity gate run through onnxruntime, which is an extra ([cpu] or [gpu]):
    # say so now, not after minutes of export.
    import_onnxruntime()
    opts = ConvertOptions(precision, calibration, target, int8_method, strict, extra)
    src = resolve_source(source, task, example_inputs, tokenizer, labels, preprocess)
    plan: Plan = importlib.import_module(TASK_MODULES[src.task]).plan(src, opts)
    if precision not in plan.supported_precisions:
        raise ConfigError(
            f"precision '{precision}' is not supported for {src.task} ({plan.family})",
            found=f"supported {list(plan.supported_precisions)}",
            fix="pick one of those",
        )
    with staging(out, overwrite) as tmp:
        manifest = _build(tmp, src, plan, opts)
        if target in ("tensorrt", "jetson") and manifest.precision.get("tensorrt_compatible") is False:
            raise UnsupportedError(
                f"the {manifest.precision.get('method')} {precision} graph cannot be built by TensorRT",
                found=f"target '{target}'",
                fix="use int8_method='static' (Q/DQ) for TensorRT, or target='cpu'/'cuda' for onnxruntime",
            )
        if target == "tensorrt":
            from edgekit.converters.tensorrt import build_engines

            build_engines(tmp, manifest)
        elif target == "jetson":
            # Engines are not portable across GPUs: a Jetson's engine is built on the Jetson itself.
            log.warning("edgekit: target jetson: copy %s to the device and run `edgekit build %s --device tensorrt`"
                        " there", Path(out).name, Path(out).name)
    return open_artifact(out)


def _build(tmp: Path, src: Source, plan: Plan, opts: ConvertOptions) -> Manifest:
    from edgekit.converters.precision import apply_precision

    graphs = {}
    for g in plan.graphs:
        log.info("edgekit: exporting graph '%s'", g.name)
        graphs[g.name] = export_graph(g, tmp / f"{g.name}.onnx")
    precision_info = apply_precision(tmp, plan, opts)
    for name, spec in list(graphs.items()):
        graphs[name] = _reread(tmp / spec.file)
    for rel, data in plan.files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    manifest = Manifest(
        task=src.task,
        family=plan.family,
        graphs=graphs,
        precision=precision_info,
        source={"kind": src.kind, "description": src.description, "sha256": src.sha256},
        preprocess=plan.preprocess,
        postprocess=plan.postprocess,
        versions=_versions(),
    )
    manifest.files = hash_files(tmp)
    manifest.save(tmp)

    # Parity is measured on the artifact exactly as a user will load it.
    from edgekit.api import load

    model = load(tmp, device="cpu")
    report = plan.check_parity(plan, model, precision_info["produced"])
    manifest.parity = report
    manifest.save(tmp)
    if opts.strict and not report.get("passed", False):
        raise ParityError(
            f"the {precision_info['produced']} model does not match PyTorch within tolerance",
            found=report.get("summary", str(report)),
            fix="use a higher precision, give representative calibration data, or pass strict=False to keep it",
        )
    return manifest


def _reread(path: Path) -> Any:
    from edgekit.converters.export import describe_onnx

    return describe_onnx(path)


def _versions() -> dict[str, str]:
    import onnx
    import torch

    import edgekit

    return {
        "edgekit": edgekit.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": import_onnxruntime().__version__,
        "python": platform.python_version(),
    }


def reference_source(source: Any, art: Artifact, **kwargs: Any) -> tuple[Source, Plan]:
    """Re-resolve the PyTorch source of an artifact for `edgekit parity` and `edgekit bench`."""
    m = art.manifest
    src = resolve_source(source, m.task, **kwargs)
    opts = ConvertOptions(precision=m.produced_precision)
    plan: Plan = importlib.import_module(TASK_MODULES[src.task]).plan(src, opts)
    return src, plan
