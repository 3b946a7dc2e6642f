"""TensorRT runner: plans from `engines/`, device buffers through cuda-python (no torch on the device).

- The engine record in the manifest is compared with this machine (GPU, compute capability,
  TensorRT version, ONNX hash, precision) and the plan's sha256 is checked *before*
  `deserialize_cuda_engine`; a mismatch is an `EngineError` naming what differs and the fix
  (`edgekit build`), never a plan handed to TensorRT to crash on.
- One execution context, CUDA stream and set of device buffers per thread (contexts are not
  thread-safe; the engine is shared). Buffers grow when a larger shape arrives and are reused.
- Jetson: an artifact can hold a GPU plan and DLA plans for the same graph; the GPU plan is
  used unless `EDGEKIT_DLA_CORE=N` names a core that a plan was built for.
- Per call: pick the optimization profile whose ranges hold the input shapes (generation
  engines have "prompt" and "decode"), `set_input_shape`, copy in, `set_tensor_address`,
  `execute_async_v3` on the thread's stream, copy out, synchronize.

Not done here: keeping a generator's KV cache on the device between decode steps, and CUDA
graphs for decode. The `Runner` contract is numpy in / numpy out, so each step copies its
inputs; both need a device-resident generator loop.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from edgekit.artifact import Artifact, sha256_file
from edgekit.converters.fingerprint import Fingerprint, Machine, mismatches
from edgekit.errors import BackendUnavailableError, EngineError, InputError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.base import Runner

log = logging.getLogger("edgekit")
BUILD_FIX = "run `edgekit build {path} --device tensorrt` on this machine (or load with device='cuda' or 'cpu')"


def import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+), or `cuda.cudart` before."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as e:
            raise BackendUnavailableError(
                "TensorRT needs cuda-python for device memory", found=f"import failed ({e})",
                fix="pip install 'edgekit[tensorrt]' (cuda-python)",
            ) from None
    return cudart


def cuda_call(cudart: Any, result: Any) -> Any:
    """Unpack cuda-python's (err, *values) and raise on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise EngineError("a CUDA call failed", found=f"{err}: {text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def current_machine(trt: Any, device: int = 0) -> Machine:
    cudart = import_cudart()
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Machine(gpu=name.rstrip("\x00").strip(), cc=f"{props.major}.{props.minor}", trt=str(trt.__version__))


def probe() -> tuple[bool, str]:
    """(usable, why): TensorRT importable, cuda-python importable, and a CUDA GPU present."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer is not
        return False, f"tensorrt is not installed ({e})"
    try:
        cudart = import_cudart()
        count = cuda_call(cudart, cudart.cudaGetDeviceCount())
    except (BackendUnavailableError, EngineError) as e:
        return False, str(e)
    if count < 1:
        return False, "no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__}, {count} GPU(s)"


def open_artifact_runners(art: Artifact) -> dict[str, Runner]:
    from edgekit.converters.tensorrt import import_trt

    trt = import_trt()
    machine = current_machine(trt)
    runners: dict[str, Runner] = {}
    try:
        for name, g in art.manifest.graphs.items():
            runners[name] = TrtRunner(art, name, g, select_engine(art, name, machine), trt)
    except BaseException:
        for r in runners.values():  # a later graph failed: free what the earlier ones hold
            r.close()
        raise
    return runners


def select_engine(art: Artifact, graph: str, machine: Machine) -> dict[str, Any]:
    """The engine record of `graph` that can run on `machine`, or an EngineError saying why none can."""
    m = art.manifest
    onnx_sha = m.files.get(m.graph(graph).file) or sha256_file(art.file(m.graph(graph).file))
    # Jetson: an artifact may hold a GPU plan and DLA plans; EDGEKIT_DLA_CORE=N picks core N, else the GPU.
    want_dla = os.environ.get("EDGEKIT_DLA_CORE")
    dla = int(want_dla) if want_dla and want_dla.isdigit() else None
    candidates = sorted((r for r in m.engines.values() if r.get("graph") == graph),
                        key=lambda r: r["fingerprint"].get("dla_core") != dla)
    reasons = []
    for record in candidates:
        fp = Fingerprint.from_dict(record["fingerprint"])
        why = mismatches(fp, machine, onnx_sha, m.produced_precision)
        if not why:
            return record
        reasons.append(f"{record['file']}: " + ", ".join(why))
    want = f"{machine.gpu} sm{machine.cc}, TensorRT {machine.trt}, {m.produced_precision}"
    raise EngineError(
        f"no TensorRT engine for graph '{graph}' matches this machine ({want})",
        found="; ".join(reasons) if reasons else "no engine was built for this artifact",
        fix=BUILD_FIX.format(path=art.path),
    )


def pick_profile(inputs: list[Any], profiles: list[dict[str, list[int]]], feeds: dict[str, np.ndarray]) -> int:
    """The last (most specialized) profile whose ranges hold every named dim of the feeds.

    Generation engines list "prompt" (any length) then "decode" (one new token): a decode step
    fits both and gets the decode profile's tactics.
    """
    sizes = {d: feeds[t.name].shape[i] for t in inputs for i, d in enumerate(t.shape) if isinstance(d, str)}
    if not profiles:
        return 0
    for index in reversed(range(len(profiles))):
        dims = profiles[index]
        if all(dims[d][0] <= s <= dims[d][2] for d, s in sizes.items() if d in dims):
            return index
    ranges = {d: [min(p[d][0] for p in profiles), max(p[d][2] for p in profiles)] for d in profiles[0]}
    raise InputError("the input shapes are outside the TensorRT engine's profiles",
                     found=f"sizes {sizes}, built for {ranges}",
                     fix="rebuild with a wider range: `edgekit build ... --shape DIM=MIN,OPT,MAX --rebuild`")


class _ThreadState:
    """What one thread needs: its execution context, stream, buffers and current profile."""

    def __init__(self, context: Any, stream: Any) -> None:
        self.context = context
        self.stream = stream
        self.buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self.profile = -1


class TrtRunner(Runner):
    """Runs one graph's TensorRT plan. Safe to call from several threads (one context each)."""

    name = "tensorrt"

    def __init__(self, art: Artifact, graph_name: str, graph: GraphSpec, record: dict[str, Any], trt: Any) -> None:
        super().__init__(graph)
        self.trt = trt
        self.cudart = import_cudart()
        self.record = record
        self.profiles = [p["dims"] for p in record["fingerprint"]["profiles"]]
        self._engine = self._deserialize(art, record, trt)
        self._check_io(graph)
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()
        log.debug("edgekit: TensorRT engine %s loaded for graph '%s'", record["file"], graph_name)

    def _deserialize(self, art: Artifact, record: dict[str, Any], trt: Any) -> Any:
        path = art.path / record["file"]
        fix = BUILD_FIX.format(path=art.path)
        if not path.is_file():
            raise EngineError(f"the engine {record['file']} is listed in the manifest but missing", fix=fix)
        data = path.read_bytes()
        import hashlib

        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise EngineError(f"the engine {record['file']} was altered (sha256 differs from the manifest)", fix=fix)
        from edgekit.converters.tensorrt import _logger, logged_errors

        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if record.get("options", {}).get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError(f"TensorRT refused the engine {record['file']}",
                              found=logged_errors(self._logger) or "deserialize_cuda_engine returned None", fix=fix)
        return engine

    def _check_io(self, graph: GraphSpec) -> None:
        e, trt = self._engine, self.trt
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        ins = sorted(n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outs = sorted(n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        if ins != sorted(t.name for t in graph.inputs) or not {t.name for t in graph.outputs} <= set(outs):
            raise EngineError("the engine's tensors do not match the manifest's graph",
                              found=f"engine inputs {ins}, outputs {outs}", fix="run `edgekit build --rebuild`")
        # Host buffers follow the manifest's dtypes; a strongly typed engine keeps the ONNX types.
        wrong = [f"{t.name}: engine {np.dtype(trt.nptype(e.get_tensor_dtype(t.name)))}, manifest {t.dtype}"
                 for t in graph.inputs + graph.outputs
                 if np.dtype(trt.nptype(e.get_tensor_dtype(t.name))) != np.dtype(t.dtype)]
        if wrong:
            raise EngineError("the engine's tensor types differ from the manifest", found="; ".join(wrong),
                              fix="run `edgekit build --rebuild` (the plan predates the current ONNX)")

    def _state(self) -> _ThreadState:
        st = getattr(self._local, "state", None)
        if st is None:
            ctx = self._engine.create_execution_context()
            if ctx is None:
                raise EngineError("TensorRT could not create an execution context", found="out of GPU memory?")
            st = _ThreadState(ctx, cuda_call(self.cudart, self.cudart.cudaStreamCreate()))
            self._local.state = st
            with self._lock:
                self._states.append(st)
        return st

    def pick_profile(self, feeds: dict[str, np.ndarray]) -> int:
        return pick_profile(self.inputs, self.profiles, feeds)

    def _buffer(self, st: _ThreadState, name: str, nbytes: int) -> int:
        ptr, size = st.buffers.get(name, (0, 0))
        if size < nbytes or ptr == 0:
            if ptr:
                cuda_call(self.cudart, self.cudart.cudaFree(ptr))
            ptr = int(cuda_call(self.cudart, self.cudart.cudaMalloc(max(nbytes, 1))))
            st.buffers[name] = (ptr, max(nbytes, 1))
        return ptr

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        st, cu = self._state(), self.cudart
        ctx, stream = st.context, st.stream
        profile = self.pick_profile(feeds)
        if profile != st.profile:
            ctx.set_optimization_profile_async(profile, int(stream))
            st.profile = profile
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, value in feeds.items():
            if not ctx.set_input_shape(name, value.shape):
                raise InputError(f"TensorRT rejected the shape of '{name}'", found=f"shape {list(value.shape)}")
            ptr = self._buffer(st, name, value.nbytes)
            cuda_call(cu, cu.cudaMemcpyAsync(ptr, value.ctypes.data, value.nbytes, h2d, stream))
            ctx.set_tensor_address(name, ptr)
        hosts = {}
        for spec in self.outputs:  # every output needs an address, even those not asked for
            shape = tuple(ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise EngineError(f"output '{spec.name}' has a data-dependent shape {shape}",
                                  fix="use device='cuda' for this model")
            hosts[spec.name] = np.empty(shape, dtype=np.dtype(spec.dtype))
            ctx.set_tensor_address(spec.name, self._buffer(st, spec.name, hosts[spec.name].nbytes))
        if not ctx.execute_async_v3(int(stream)):
            from edgekit.converters.tensorrt import logged_errors

            raise EngineError("TensorRT failed to run the engine", found=logged_errors(self._logger) or None)
        for name in outputs:
            host = hosts[name]
            cuda_call(cu, cu.cudaMemcpyAsync(host.ctypes.data, st.buffers[name][0], host.nbytes, d2h, stream))
        cuda_call(cu, cu.cudaStreamSynchronize(stream))
        return {name: hosts[name] for name in outputs}

    def close(self) -> None:
        with self._lock:
            states, self._states = self._states, []
        for st in states:
            for ptr, _ in st.buffers.values():
                cuda_call(self.cudart, self.cudart.cudaFree(ptr))
            st.buffers.clear()
            cuda_call(self.cudart, self.cudart.cudaStreamDestroy(st.stream))
        self._local = threading.local()
