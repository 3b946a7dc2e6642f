"""The convert pipeline: source -> spec -> export -> precision -> files -> manifest -> parity gate.

The spec (`specs.match`) knows the family; the pipeline knows the order of the stages and that the
artifact appears atomically, only after its parity was measured on the artifact as a user loads it.
"""
from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.artifact import Artifact, hash_files, open_artifact, staging
from edgekit.contract import check_graphs
from edgekit.converters.export import GraphExport, describe_onnx, export_graph
from edgekit.converters.precision import INT8_METHODS, apply_precision, precision_candidates
from edgekit.converters.sources import resolve_source
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec, gate_shortfall
from edgekit.converters.specs import match
from edgekit.converters.stand_ins import StandIns
from edgekit.converters.weights_file import share_weights
from edgekit.errors import ConfigError, ExportError, ParityError, SourceError, UnsupportedError
from edgekit.manifest import PRECISIONS, Manifest, Precision, SourceInfo
from edgekit.parity_report import ParityReport
from edgekit.runtimes.onnxruntime import import_onnxruntime

log = logging.getLogger("edgekit")

TARGETS = ("cpu", "cuda", "tensorrt", "jetson")


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
    int4_block_size: int | None = None,
    scores: str | None = None,
) -> Artifact:
    """Convert `source` into the artifact folder `out`; returns the verified artifact.

    `source`: an nn.Module, a Hugging Face model folder, a .pt2 file, or "package.module:factory".
    `task`: inferred from Hugging Face configs (and from `labels` for a plain classifier).
    `calibration`: int8 samples, and the held-out inputs parity runs on (images, texts, audio).
    `target`: "cpu" | "cuda" | "tensorrt" (engine built here) | "jetson" (engine built on the device).
    `strict=False` keeps an artifact outside its parity tolerance (the report says so).
    `scores`: classify only, what the model outputs: "softmax" (logits) | "sigmoid" (multi-label
    logits) | "probabilities" | "log_probabilities" | "none"; detected when not given.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'", found=f"precisions {list(PRECISIONS)}")
    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}'", found=f"targets {list(TARGETS)}")
    # Quantization and the parity gate run through onnxruntime, which is an extra ([cpu] or [gpu]):
    # say so now, not after minutes of export.
    import_onnxruntime()
    opts = ConvertOptions(precision, calibration, target, int8_method, strict, int4_block_size, scores)
    spec = match(resolve_source(source, task, example_inputs, tokenizer, labels, preprocess), opts)
    return _make(Path(out), overwrite, spec, opts, lambda tmp: _export(tmp, spec, target))


@dataclass
class Exported:
    """A source's float graphs as exported into `folder` (portable: file -> what it was exported from;
    the onnxruntime stand-ins alive after their graph passes): what the precision stage starts from."""

    folder: Path
    graphs: dict[Path, GraphExport]
    stand_ins: StandIns

    def copy_to(self, folder: Path) -> Exported:
        """The same graphs copied under `folder`, which they now describe (each precision rewrites its own)."""
        _copy_graphs([*self.graphs, *self.stand_ins.live], self.folder, folder)
        graphs = {}
        for path, g in self.graphs.items():
            g.path = folder / path.relative_to(self.folder)  # specs read the graph being built back (classify)
            graphs[g.path] = g
        return Exported(folder, graphs, self.stand_ins.copy_to(folder))


class ExportedSource:
    """One source exported once, then converted at any number of precisions (`convert`), each into its
    own artifact. No spec's export reads the precision (graphs, stand-ins and their passes depend on
    the source and the target alone), so each convert is the one `convert` makes, less the export; the
    spec, and with it the PyTorch side of parity, is shared. Made by `exported`."""

    def __init__(self, spec: ExportSpec, export: Exported) -> None:
        self.spec = spec
        self.export = export

    def convert(self, out: str | Path, precision: str = "fp32", calibration: Any = None,
                int8_method: str | None = None, strict: bool = True, int4_block_size: int | None = None,
                overwrite: bool = False) -> Artifact:
        """As `convert`, for the source and target given to `exported`; returns the verified artifact."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{precision}'", found=f"precisions {list(PRECISIONS)}")
        base = self.spec.options
        opts = ConvertOptions(precision, calibration, base.target, int8_method, strict, int4_block_size, base.scores)
        self.spec.options = opts  # what this convert reads of them (seq2seq's calibration: the precision)
        return _make(Path(out), overwrite, self.spec, opts, self.export.copy_to)


@contextmanager
def exported(source: Any, task: str | None = None, target: str = "cpu", example_inputs: Any = None,
             tokenizer: Any = None, labels: list[str] | None = None, preprocess: dict[str, Any] | None = None,
             scores: str | None = None) -> Iterator[ExportedSource]:
    """`source` exported once (arguments as `convert`'s), for converts at several precisions; the float
    graphs live in a temporary folder until the block ends:
    `with exported(folder) as ex: arts = [ex.convert(out / p, precision=p) for p in ("fp32", "int4")]`."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}'", found=f"targets {list(TARGETS)}")
    import_onnxruntime()
    opts = ConvertOptions(target=target, scores=scores)
    spec = match(resolve_source(source, task, example_inputs, tokenizer, labels, preprocess), opts)
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as folder:
        yield ExportedSource(spec, _export(Path(folder), spec, target))


def _make(out: Path, overwrite: bool, spec: ExportSpec, opts: ConvertOptions,
          graphs: Callable[[Path], Exported]) -> Artifact:
    """The artifact `out` at `opts`, built in a staging folder from the float graphs `graphs` puts there."""
    method = _int8_method(spec, opts)
    with staging(out, overwrite) as tmp:
        calibration = spec.calibrate(opts.calibration)  # read first: bad data fails before minutes of export
        manifest = _build(tmp, spec, opts, method, calibration, graphs(tmp))
        if opts.target in ("tensorrt", "jetson") and not manifest.precision.tensorrt_compatible:
            raise UnsupportedError(
                f"the {manifest.precision.method} {opts.precision} graph cannot be built by TensorRT",
                found=f"target '{opts.target}'",
                fix="use int8_method='static' (Q/DQ) for TensorRT, or target='cpu'/'cuda' for onnxruntime",
            )
        if opts.target == "tensorrt":
            from edgekit.runtimes.tensorrt.build import build_engines

            build_engines(tmp, manifest)
        elif opts.target == "jetson":
            # Engines are not portable across GPUs: a Jetson's engine is built on the Jetson itself.
            log.warning("edgekit: target jetson: copy %s to the device and run `edgekit build %s --device tensorrt`"
                        " there", out.name, out.name)
    return open_artifact(out)


def _int8_method(spec: ExportSpec, opts: ConvertOptions) -> str:
    """The int8 method this convert uses; refuses what the family cannot do before any export."""
    if opts.precision not in spec.precisions:
        raise ConfigError(f"precision '{opts.precision}' is not supported for {spec.task} ({spec.family})",
                          found=f"supported {list(spec.precisions)}", fix="pick one of those")
    method = opts.int8_method or spec.default_int8
    if method not in INT8_METHODS:
        raise ConfigError(f"unknown int8 method '{method}'", found=f"methods {list(INT8_METHODS)}")
    if opts.precision == "int8" and method == "static" and not spec.static_int8:
        raise UnsupportedError(f"static Q/DQ int8 is not offered for {spec.task} ({spec.family})",
                               fix="use the default int8 (int8_method='dynamic')"
                                   + (" or int4 weight-only" if "int4" in spec.precisions else ""))
    return method


def _export(folder: Path, spec: ExportSpec, target: str) -> Exported:
    """Export the spec's graphs, and make its stand-ins for `target`, into `folder`."""
    exports = {folder / f"{g.name}.onnx": g for g in spec.graphs()}
    for path, g in exports.items():
        log.info("edgekit: exporting graph '%s'", g.name)
        export_graph(g, path)
    stand_ins = StandIns(folder)  # an optimisation: each failure keeps the portable graph, recorded
    stand_ins.make(spec.runtime_graphs(target))
    return Exported(folder, exports, stand_ins)


def _build(tmp: Path, spec: ExportSpec, opts: ConvertOptions, int8_method: str, calibration: Calibration,
           graphs: Exported) -> Manifest:
    exports, stand_ins = graphs.graphs, graphs.stand_ins
    for rel, data in spec.files(calibration).items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    candidates = precision_candidates(opts)
    tried: list[dict[str, Any]] = []
    best: tuple[float, Manifest] | None = None  # the candidate closest to its gate; its graphs under keep/best
    with tempfile.TemporaryDirectory(prefix="edgekit-fp32-") as keep:
        if len(candidates) > 1:  # each try starts from the exported float graphs
            _copy_graphs([*exports, *stand_ins.live], tmp, Path(keep))
        for i, candidate in enumerate(candidates):
            last = i == len(candidates) - 1
            if i:
                _copy_graphs([Path(keep) / p.relative_to(tmp) for p in [*exports, *stand_ins.live]], Path(keep), tmp)
            precision = apply_precision(exports, opts, int8_method, calibration, candidate)
            stand_ins.apply_precision(opts, int8_method, calibration, candidate)
            manifest = _manifest(tmp, spec, precision, exports, stand_ins)
            # The portable graphs alone pick the setting: a stand-in never changes what the artifact is.
            manifest.parity = _parity(tmp, spec, precision.produced, calibration, opts.strict and last)
            passed = manifest.parity.passed
            short = gate_shortfall(manifest.parity.measures, spec.gates[precision.produced])
            if candidate is not None:
                tried.append({**asdict(candidate), "passed": passed, "shortfall": round(short, 6),
                              "summary": manifest.parity.summary})
            if passed or len(candidates) == 1:
                break
            if best is None or short < best[0]:
                best = (short, manifest)
                _copy_graphs([*exports, *stand_ins.live], tmp, Path(keep) / "best")
            if last:  # nothing passed (strict=False): keep the candidate closest to its gate, not the last
                # Stand-ins are only ever dropped between candidates, so every live one is in keep/best.
                _copy_graphs([Path(keep) / "best" / p.relative_to(tmp) for p in [*exports, *stand_ins.live]],
                             Path(keep) / "best", tmp)
                manifest = _manifest(tmp, spec, best[1].precision, exports, stand_ins)
                manifest.parity = best[1].parity
                log.warning("edgekit: no %s setting passed its parity gate; keeping the closest (%s)",
                            opts.precision, manifest.parity.summary)
                break
            log.info("edgekit: %s %s is outside its parity gate (%s); trying the next setting", opts.precision,
                     candidate, manifest.parity.summary)
    stand_ins.prove(manifest, lambda: _proof(tmp, spec, manifest.precision.produced, calibration))
    if tried:
        manifest.precision = replace(manifest.precision, details={**manifest.precision.details, "tried": tried})
    shared = share_weights(tmp, manifest.graph_files())
    log.info("edgekit: %d external tensors of %d graphs stored as %d (%.1f MB -> %.1f MB)", shared.tensors,
             len(manifest.graph_files()), shared.stored, shared.bytes_in / 1e6, shared.bytes_out / 1e6)
    manifest.files = hash_files(tmp)  # a stand-in dropped by its proof took its files with it
    manifest.save(tmp)
    return manifest


def _manifest(tmp: Path, spec: ExportSpec, precision: Precision, exports: dict[Path, Any],
              stand_ins: StandIns) -> Manifest:
    """The manifest of what `tmp` holds now (graphs as rewritten by precision, every file hashed), saved."""
    graphs = {g.name: describe_onnx(path) for path, g in exports.items()}
    src = spec.src
    manifest = Manifest(task=spec.task, family=spec.family, graphs=graphs, contract=spec.contract(graphs),
                        precision=precision, source=SourceInfo(src.origin, src.description, src.sha256),
                        versions=_versions())
    problems = check_graphs(manifest.contract, graphs)
    if problems:  # the spec's contract and its own export disagree: a bug, said plainly
        raise ExportError(f"the exported graphs do not match the {spec.family} contract", found="; ".join(problems),
                          fix="report this as a bug in edgekit, with the model's config")
    version = ".".join(import_onnxruntime().__version__.split(".")[:2])
    manifest.runtime_graphs = stand_ins.records(manifest, version)
    manifest.runtime_graph_notes = dict(stand_ins.notes)
    manifest.files = hash_files(tmp)
    manifest.save(tmp)
    return manifest


def _copy_graphs(paths: list[Path], src_root: Path, dst_root: Path) -> None:
    """Copy ONNX files and their external data from under src_root to the same places under dst_root."""
    for path in paths:
        for f in path.parent.glob(path.name + "*"):  # model.onnx, model.onnx.data
            target = dst_root / f.relative_to(src_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


def _parity(folder: Path, spec: ExportSpec, precision: str, calibration: Calibration, strict: bool) -> ParityReport:
    """Parity measured on the artifact exactly as a user will load it (its portable graphs)."""
    from edgekit.api import load

    with load(folder, device="cpu", portable=True) as model:
        report = spec.parity(model, precision, calibration=calibration)
    if strict and not report.passed:
        raise ParityError(
            f"the {precision} model does not match PyTorch within tolerance",
            found=report.summary,
            fix="use a higher precision, give representative calibration data, or pass strict=False to keep it",
        )
    return report


def _proof(folder: Path, spec: ExportSpec, precision: str, calibration: Calibration) -> ParityReport:
    """The proof of the artifact's onnxruntime stand-ins (on the CPU, before they count as proven):
    the task's parity through them, and their agreement with the portable graphs."""
    from edgekit.api import load, open_model
    from edgekit.runtimes.onnxruntime import open_runners

    art = open_artifact(folder)
    with open_model(art, open_runners(art, "cpu", unproven=True)) as model, \
            load(folder, device="cpu", portable=True) as reference:
        return spec.runtime_proof(reference, model, precision, calibration)


def _versions() -> dict[str, str]:
    import onnx
    import torch

    import edgekit

    return {"edgekit": edgekit.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": import_onnxruntime().__version__, "python": platform.python_version()}


def reference_spec(source: Any, art: Artifact, **source_kwargs: Any) -> ExportSpec:
    """The spec of an artifact's PyTorch source again, for `edgekit parity` and `edgekit bench --against`."""
    m = art.manifest
    spec = match(resolve_source(source, m.task, **source_kwargs), ConvertOptions(precision=m.produced_precision))
    if spec.task != m.task:
        raise SourceError(f"'{spec.src.description}' is a {spec.task} model, the artifact a {m.task} one",
                          fix="pass the source this artifact was converted from")
    return spec
