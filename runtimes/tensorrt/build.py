"""Build TensorRT engines from an artifact's ONNX graphs (TensorRT 10.x and 11.x, names-based API).

- Strongly typed networks only: precision comes from the ONNX itself (fp16 casts, int8 Q/DQ made
  by the precision stage). TensorRT 11 removed the weakly typed builder flags, and a strongly
  typed plan is what parity was measured on.
- `OnnxParser.parse_from_file` (external data resolved beside the file); every parser error is
  reported with its node, not only the first.
- Optimization profiles come from the contract's call shapes (profiles.py): one per phase, so a
  cached decoder gets "prompt" (GEMM tactics) and "decode" (one token, GEMV tactics) profiles, and
  one that speculative decoding drives a "verify" profile (2 to 32 tokens) between them.
- A timing cache is kept beside the engines (`engines/timing.cache`), loaded before and written
  after every build, so rebuilds (new profile, new precision) take seconds, not minutes.
- Plans are written as plain TensorRT plans (readable by trtexec), `engines/<fingerprint>.plan`,
  with the record (fingerprint fields, sha256, options, build time) in `manifest.engines`; plans of
  the graph that can no longer load (another ONNX, other phases) are removed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifact import sha256_file
from edgekit.contract import GraphSpec
from edgekit.engines import ENGINE_DIR, EngineOptions, EngineRecord, Fingerprint, Machine
from edgekit.errors import ConfigError, EngineError
from edgekit.manifest import Manifest
from edgekit.runtimes.tensorrt import import_trt
from edgekit.runtimes.tensorrt.fingerprint import make_fingerprint
from edgekit.runtimes.tensorrt.logger import logged_errors, make_logger
from edgekit.runtimes.tensorrt.profiles import Profile, Range, choose_profiles, input_shapes

log = logging.getLogger("edgekit")

TIMING_CACHE = "timing.cache"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildOptions:
    workspace_mb: int = 4096
    dla_core: int | None = None  # Jetson: run on this DLA core, layers DLA cannot run fall back to the GPU
    rebuild: bool = False  # build even when a plan with the same fingerprint exists
    hardware_compatible: bool = False  # AMPERE_PLUS: one plan for every GPU of compute capability >= 8.0
    version_compatible: bool = False  # runs on later TensorRT releases of the same major version
    optimization_level: int | None = None  # TensorRT builder_optimization_level (0..5); None: its default
    # With dynamic shapes, TensorRT lets each execution context in concurrent use hold its own
    # optimization profile, so the plan carries `contexts` copies of the profile set: that many
    # callers (threads, generate loops) run at once; more wait for a free one.
    contexts: int = 2
    max_batch: int | None = None
    shapes: dict[str, Range] = field(default_factory=dict)  # overrides: dim name -> (min, opt, max)
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if self.contexts < 1:
            raise ConfigError("contexts must be at least 1", found=str(self.contexts))


# ---------------------------------------------------------------- progress with ETA (pure Python)

class Eta:
    """Progress of the builder's phases, with an ETA for the top-level phase from its step rate."""

    def __init__(self, report: Progress | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.report = report
        self.clock = clock
        self.phases: dict[str, tuple[float, int, str | None]] = {}  # name -> (start, steps, parent)

    def start(self, phase: str, parent: str | None, steps: int) -> None:
        self.phases[phase] = (self.clock(), steps, parent)

    def step(self, phase: str, step: int) -> float | None:
        """Record that `step` (0-based) finished; returns the ETA in seconds, if it can be told."""
        now = self.clock()
        start, steps, parent = self.phases.get(phase, (now, 0, None))
        done = step + 1
        eta = (now - start) / done * (steps - done) if steps else None
        if self.report is not None:
            self.report(phase, done, steps)
        if parent is None and eta is not None:
            log.info("edgekit: TensorRT %s %d/%d, about %.0f s left", phase, done, steps, eta)
        return eta

    def finish(self, phase: str) -> None:
        self.phases.pop(phase, None)


def _progress_monitor(trt: Any, eta: Eta) -> Any:
    """An IProgressMonitor feeding `eta` (TensorRT calls it from the build thread)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            eta.start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            eta.step(phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            eta.finish(phase_name)

    return _Monitor()


# ---------------------------------------------------------------- the build

def build_engines(folder: Path, manifest: Manifest, options: BuildOptions | None = None) -> dict[str, EngineRecord]:
    """Build (or reuse) one plan per graph of the artifact in `folder`; update and save the manifest."""
    from edgekit.runtimes.tensorrt.runner import current_machine

    opts = options or BuildOptions()
    p = manifest.precision
    if not p.tensorrt_compatible:
        raise EngineError(f"this {p.produced} artifact ({p.method}) cannot be built by TensorRT",
                          found="onnxruntime-only quantization (asymmetric Q/DQ, dynamic int8 or MatMulNBits)",
                          fix="convert it again with --target tensorrt (or jetson) for symmetric Q/DQ, or run it "
                              "with device='cuda'/'cpu'")
    dims = {d for g in manifest.graphs.values() for d in g.dims()}
    if set(opts.shapes) - dims:
        raise ConfigError(f"--shape names {sorted(set(opts.shapes) - dims)}, not dims of this model",
                          found=f"dynamic dims {sorted(dims)}", fix="use one of those names")
    trt = import_trt()
    machine = current_machine(trt)
    records = {name: build_engine(folder, manifest, name, machine, opts, trt) for name in manifest.graphs}
    manifest.save(folder)
    return records


def build_engine(folder: Path, manifest: Manifest, name: str, machine: Machine, opts: BuildOptions,
                 trt: Any) -> EngineRecord:
    graph = manifest.graph(name)
    onnx_path = folder / graph.file
    profiles = choose_profiles(manifest.contract, name, graph, opts.max_batch, opts.shapes)
    fp = make_fingerprint(name, sha256_file(onnx_path), machine, manifest.produced_precision, profiles,
                          opts.dla_core, opts.hardware_compatible, opts.version_compatible, opts.contexts)
    plan_path = folder / ENGINE_DIR / f"{fp.id}.plan"
    _prune_stale(folder, manifest, name, fp)
    old = manifest.engines.get(fp.id)
    if not opts.rebuild and old is not None and plan_path.is_file() and sha256_file(plan_path) == old.sha256:
        log.info("edgekit: reusing TensorRT engine %s", plan_path.name)
        return old
    plan_path.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    data = _build_plan(onnx_path, graph, profiles * opts.contexts, opts, trt, folder / ENGINE_DIR / TIMING_CACHE)
    _write_atomic(plan_path, data)
    options = EngineOptions(opts.workspace_mb, opts.dla_core, opts.hardware_compatible, opts.version_compatible,
                            opts.optimization_level, True, opts.contexts)
    record = EngineRecord(name, f"{ENGINE_DIR}/{plan_path.name}", hashlib.sha256(data).hexdigest(), fp, machine, options,
                          round(time.monotonic() - t0, 2))
    manifest.engines[fp.id] = record
    log.info("edgekit: built TensorRT engine %s in %.1f s", plan_path.name, record.build_seconds)
    return record


def _prune_stale(folder: Path, manifest: Manifest, graph: str, fp: Fingerprint) -> None:
    """Drop plans of this graph built from another ONNX, or for other call phases (before speculative
    decoding's "verify" profile): no machine can ever load them again (runner.select_engine)."""
    phases = [p.name for p in fp.profiles]
    for key, record in list(manifest.engines.items()):  # checked at load: its file stays inside engines/
        old = record.fingerprint
        why = ("built from an older ONNX graph" if old.onnx_sha256 != fp.onnx_sha256 else
               f"built with profiles {[p.name for p in old.profiles]}, not {phases}"
               if [p.name for p in old.profiles] != phases else None)
        if record.graph == graph and why is not None:
            (folder / record.file).unlink(missing_ok=True)
            del manifest.engines[key]
            log.info("edgekit: removed %s (%s)", record.file, why)


def _build_plan(onnx_path: Path, graph: GraphSpec, profiles: list[Profile], opts: BuildOptions, trt: Any,
                cache_path: Path) -> bytes:
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(
            f"TensorRT cannot parse '{onnx_path.name}' ({len(errors)} errors)",
            found="; ".join(errors) or "no parser errors reported",
            fix="check the listed operators against TensorRT's ONNX support, or use device='cuda'/'cpu' for this model",
        )
    _check_inputs(network, graph, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    for phase, dims in profiles:
        profile = builder.create_optimization_profile()
        for tensor, (lo, opt, hi) in input_shapes(graph, dims).items():
            profile.set_shape(tensor, lo, opt, hi)
        config.add_optimization_profile(profile)
    _apply_options(builder, config, opts, trt)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, Eta(opts.progress))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            f"TensorRT could not build an engine for '{onnx_path.name}'",
            found=logged_errors(logger) or "the builder returned no plan",
            fix="raise --workspace, or run with -vv for TensorRT's full log",
        )
    _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _apply_options(builder: Any, config: Any, opts: BuildOptions, trt: Any) -> None:
    if opts.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.optimization_level is not None:
        config.builder_optimization_level = opts.optimization_level
    if opts.dla_core is not None:
        cores = builder.num_DLA_cores
        if not 0 <= opts.dla_core < cores:
            raise EngineError(
                f"DLA core {opts.dla_core} was asked for",
                found=f"this device has {cores} DLA cores",
                fix="pick a core below that (Jetson AGX Orin has 2), or leave --dla-core out to use the GPU",
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU


def _check_inputs(network: Any, graph: GraphSpec, onnx_path: Path) -> None:
    found = [network.get_input(i).name for i in range(network.num_inputs)]
    wanted = [t.name for t in graph.inputs]
    if sorted(found) != sorted(wanted):
        raise EngineError(
            f"'{onnx_path.name}' does not match the manifest",
            found=f"ONNX inputs {found}, manifest inputs {wanted}",
            fix="convert the model again",
        )


def _parser_error(err: Any) -> str:
    where = err.node_name() or (f"node {err.node()}" if err.node() >= 0 else "")
    op = err.node_operator()
    return f"{where} ({op}): {err.desc()}" if where or op else str(err.desc())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
