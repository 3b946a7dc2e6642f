"""Recording fakes of `tensorrt` and `cuda.bindings.runtime` for CPU tests of the TensorRT code.

Every public name here exists in the real TensorRT 10.3 and 11.x bindings
(test_trt_bindings_contract checks that), so the code under test cannot lean on an invented API.

The fake "plan" is JSON holding the ONNX bytes; the fake engine runs it with onnxruntime on the
CPU, reading and writing the fake device memory (host numpy buffers handed out by cudaMalloc).
That exercises the runner's real data path: shapes, addresses, copies, profiles, streams.
"""
from __future__ import annotations

import base64
import ctypes
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Calls:
    """What the code under test asked TensorRT and CUDA for."""

    builds: int = 0
    profiles: list[dict[str, tuple]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    timing_cache_loaded: list[bytes] = field(default_factory=list)
    progress: list[tuple] = field(default_factory=list)
    deserialized: int = 0
    contexts: int = 0
    mallocs: int = 0
    profile_switches: list[int] = field(default_factory=list)
    executes: int = 0  # engine runs that really ran (a plain launch or a graph replay)
    capturing: set[int] = field(default_factory=set)  # streams being captured into a CUDA graph
    captured: list[Any] = field(default_factory=list)  # launches recorded while capturing
    graph_launches: int = 0
    copies_2d: list[tuple[int, int, int]] = field(default_factory=list)  # (dpitch, width, height)
    copies: list[tuple[str, int]] = field(default_factory=list)  # cudaMemcpyAsync: (kind, bytes)
    capture_fails: bool = False
    profile_clashes: int = 0  # profile requests TensorRT would refuse (held by another context)
    shape_refusals: int = 0  # set_input_shape outside the context's profile (TensorRT returns False)
    runs: list[tuple[int, tuple, bool]] = field(default_factory=list)  # per engine run: (profile, input_ids shape, replayed)
    stale_replays: int = 0  # graph launches while the context's profile, shapes or addresses differ from the capture's


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


def _enum(*names: str) -> type:
    return type("E", (), {n: _Enum(n, i) for i, n in enumerate(names)})


def make_trt(calls: Calls, version: str = "10.3.0", parse_errors: list[tuple] | None = None,
             dla_cores: int = 0, build_fails: bool = False) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch.export inspects sys.modules
    trt.__version__ = version

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Enum(n, i) for i, n in enumerate(
            ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"]))

        def __init__(self) -> None:
            pass

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data

    class _Input:
        def __init__(self, name: str) -> None:
            self.name = name

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[str] = []
            self.onnx: str | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> _Input:
            return _Input(self.inputs[i])

    class IParserError:
        def __init__(self, node: int, name: str, op: str, desc: str) -> None:
            self._v = (node, name, op, desc)

        def node(self) -> int:
            return self._v[0]

        def node_name(self) -> str:
            return self._v[1]

        def node_operator(self) -> str:
            return self._v[2]

        def desc(self) -> str:
            return self._v[3]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self.network = network
            self.errors = [IParserError(*e) for e in (parse_errors or [])]

        def parse_from_file(self, path: str) -> bool:
            import onnx

            model = onnx.load(path, load_external_data=False)
            self.network.inputs = [i.name for i in model.graph.input]
            self.network.onnx = path
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> IParserError:
            return self.errors[i]

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, lo: list[int], opt: list[int], hi: list[int]) -> None:
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class IBuilderConfig:
        def __init__(self) -> None:
            self.profiles: list[IOptimizationProfile] = []
            self.cache: TimingCache | None = None
            self.progress_monitor = None

        def __setattr__(self, key: str, value: Any) -> None:
            object.__setattr__(self, key, value)
            if key not in ("profiles", "cache"):
                calls.config[key] = value

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.config[f"pool:{pool}"] = size

        def add_optimization_profile(self, p: IOptimizationProfile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def set_flag(self, flag: Any) -> None:
            calls.flags.append(repr(flag))

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.timing_cache_loaded.append(bytes(data))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        @property
        def num_DLA_cores(self) -> int:
            return dla_cores

        def create_network(self, flags: int) -> INetworkDefinition:
            calls.config["network_flags"] = flags
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
            calls.builds += 1
            calls.profiles.extend(p.shapes for p in config.profiles)
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 3)
                for step in range(3):
                    calls.progress.append(("step", step, mon.step_complete("Building engine", step)))
                mon.phase_finish("Building engine")
            if build_fails:
                self.logger.log(ILogger.ERROR, "out of workspace for tactic X")
                return None
            config.cache.data += b"tactic;"  # a build adds timing entries
            import onnx

            # A plan is self-contained: the weights (external data too) go into it.
            onnx_bytes = base64.b64encode(onnx.load(network.onnx).SerializeToString()).decode()
            return json.dumps({"onnx": onnx_bytes, "profiles": [p.shapes for p in config.profiles]}).encode()

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.profile = -1
            if 0 not in engine.owners:  # the first context takes profile 0 implicitly
                engine.owners[0], self.profile = self, 0
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.out_shapes: dict[str, tuple] = {}

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            # TensorRT: with dynamic shapes, contexts in concurrent use must hold different profiles.
            owners = self.engine.owners
            if not 0 <= index < len(self.engine.profiles) or owners.get(index, self) is not self:
                calls.profile_clashes += 1
                return False
            calls.profile_switches.append(index)
            if owners.get(self.profile) is self:
                del owners[self.profile]
            owners[index], self.profile = self, index
            return True

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            # TensorRT refuses a shape outside the ranges of the profile the context holds (a static plan has none).
            held = self.engine.profiles[self.profile] if 0 <= self.profile < len(self.engine.profiles) else {}
            ranges = held.get(name)
            if ranges is not None and not all(lo <= d <= hi for lo, d, hi in zip(ranges[0], shape, ranges[2])):
                calls.shape_refusals += 1
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            if name in self.shapes:
                return self.shapes[name]
            key = tuple(sorted(self.shapes.items()))
            if key != getattr(self, "_key", None):  # output shapes follow the input shapes
                self.out_shapes, self._key = self.engine.infer(self._zeros()), key
            return self.out_shapes[name]

        def _feeds_meta(self) -> dict[str, str]:
            return {i.name: i.type for i in self.engine.session.get_inputs()}

        def _zeros(self) -> dict[str, np.ndarray]:
            types_ = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}
            return {n: np.zeros(self.shapes[n], types_[t]) for n, t in self._feeds_meta().items()}

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            addresses, zeros = dict(self.addresses), self._zeros()  # a graph keeps the addresses it saw
            if int(stream) in calls.capturing:  # capture records the launch; nothing runs
                if calls.capture_fails:
                    return False
                bound = (self.profile, dict(self.shapes), addresses)
                calls.captured.append(lambda: self._replay(bound, zeros))
                return True
            self._run(addresses, zeros, self.profile, False)
            return True

        def _replay(self, bound: tuple[int, dict[str, tuple], dict[str, int]], zeros: dict[str, np.ndarray]) -> None:
            # What a replay runs is fixed at capture; it is only valid while the context is bound as it was.
            if (self.profile, self.shapes, self.addresses) != bound:
                calls.stale_replays += 1
            self._run(bound[2], zeros, bound[0], True)

        def _run(self, addresses: dict[str, int], zeros: dict[str, np.ndarray], profile: int, replayed: bool) -> None:
            calls.executes += 1
            calls.runs.append((profile, zeros["input_ids"].shape if "input_ids" in zeros else (), replayed))
            feeds = {}
            for name, zero in zeros.items():
                buf = (ctypes.c_char * zero.nbytes).from_address(addresses[name])
                feeds[name] = np.frombuffer(bytes(buf), dtype=zero.dtype).reshape(zero.shape)
            outs = self.engine.session.run(None, feeds)
            for meta, value in zip(self.engine.session.get_outputs(), outs):
                value = np.ascontiguousarray(value)
                ctypes.memmove(addresses[meta.name], value.ctypes.data, value.nbytes)

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(base64.b64decode(plan["onnx"]), providers=["CPUExecutionProvider"])
            self.profiles = plan["profiles"]
            self.owners: dict[int, Any] = {}  # profile index -> the context holding it
            self.names = [i.name for i in self.session.get_inputs()] + [o.name for o in self.session.get_outputs()]

        def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, tuple]:
            outs = self.session.run(None, feeds)
            return {m.name: tuple(v.shape) for m, v in zip(self.session.get_outputs(), outs)}

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> Any:
            ins = {i.name for i in self.session.get_inputs()}
            return trt.TensorIOMode.INPUT if name in ins else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            metas = {m.name: m.type for m in self.session.get_inputs() + self.session.get_outputs()}
            return metas[name]

        def create_execution_context(self) -> IExecutionContext:
            calls.contexts += 1
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            calls.deserialized += 1
            try:
                return ICudaEngine(json.loads(data))
            except (ValueError, KeyError):
                self.logger.log(ILogger.ERROR, "Serialization assertion failed: magic tag mismatch")
                return None

    trt.ILogger, trt.IProgressMonitor, trt.OnnxParser, trt.Builder, trt.Runtime = (
        ILogger, IProgressMonitor, OnnxParser, Builder, Runtime)
    class Logger(ILogger):
        def __init__(self, min_severity: Any = None) -> None:
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            pass

    trt.Logger = Logger
    # The real nptype maps trt.DataType to numpy; the fake engine's dtypes are onnxruntime's names.
    trt.nptype = lambda t: {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16,
                            "tensor(int32)": np.int32, "tensor(bool)": np.bool_}[t]
    trt.NetworkDefinitionCreationFlag = _enum("STRONGLY_TYPED")
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = _Enum("STRONGLY_TYPED", 1)
    trt.MemoryPoolType = _enum("WORKSPACE")
    trt.HardwareCompatibilityLevel = _enum("NONE", "AMPERE_PLUS")
    trt.BuilderFlag = _enum("FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE")
    trt.DeviceType = _enum("GPU", "DLA")
    trt.TensorIOMode = _enum("NONE", "INPUT", "OUTPUT")
    return trt


def make_cudart(calls: Calls, gpu: bytes = b"NVIDIA H100 80GB HBM3", cc: tuple[int, int] = (9, 0),
                count: int = 1) -> types.ModuleType:
    cu = types.ModuleType("cuda.bindings.runtime")
    cu.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings.runtime", None)
    memory: dict[int, np.ndarray] = {}
    ok = _Enum("cudaSuccess", 0)
    cu.cudaError_t = type("cudaError_t", (), {"cudaSuccess": ok, "cudaErrorInvalidValue": _Enum("cudaErrorInvalidValue", 1)})
    cu.cudaMemcpyKind = _enum("cudaMemcpyHostToHost", "cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost",
                              "cudaMemcpyDeviceToDevice")
    cu.cudaStreamCaptureMode = _enum("cudaStreamCaptureModeGlobal", "cudaStreamCaptureModeThreadLocal")
    invalidated = _Enum("cudaErrorStreamCaptureInvalidated", 901)
    streams = iter(range(7, 10**6))

    def malloc(n: int) -> tuple:
        calls.mallocs += 1
        buf = np.zeros(n, np.uint8)
        memory[buf.ctypes.data] = buf
        return ok, buf.ctypes.data

    def free(ptr: int) -> tuple:
        return (ok,) if memory.pop(ptr, None) is not None else (cu.cudaError_t.cudaErrorInvalidValue,)

    def memcpy(dst: int, src: int, n: int, kind: Any, stream: Any) -> tuple:
        calls.copies.append((repr(kind), n))
        ctypes.memmove(dst, src, n)
        return (ok,)

    def memcpy_2d(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: Any,
                  stream: Any) -> tuple:
        calls.copies_2d.append((dpitch, width, height))
        for row in range(height):
            ctypes.memmove(dst + row * dpitch, src + row * spitch, width)
        return (ok,)

    def begin_capture(stream: int, mode: Any) -> tuple:
        calls.capturing.add(int(stream))
        calls.captured.clear()
        return (ok,)

    def end_capture(stream: int) -> tuple:
        calls.capturing.discard(int(stream))
        if calls.capture_fails:
            return invalidated, None
        return ok, list(calls.captured)

    def launch(graph_exec: list[Any], stream: int) -> tuple:
        calls.graph_launches += 1
        for run in graph_exec:
            run()
        return (ok,)

    props = types.SimpleNamespace(name=gpu, major=cc[0], minor=cc[1])
    cu.cudaMalloc, cu.cudaFree, cu.cudaMemcpyAsync, cu.cudaMemcpy2DAsync = malloc, free, memcpy, memcpy_2d
    cu.cudaStreamBeginCapture, cu.cudaStreamEndCapture, cu.cudaGraphLaunch = begin_capture, end_capture, launch
    cu.cudaGraphInstantiate = lambda graph, flags: (ok, list(graph))
    cu.cudaGraphExecDestroy = lambda g: (ok,)
    cu.cudaGraphDestroy = lambda g: (ok,)
    cu.cudaGetDeviceCount = lambda: (ok, count)
    cu.cudaRuntimeGetVersion = lambda: (ok, 12060)
    cu.cudaDriverGetVersion = lambda: (ok, 13000)
    cu.cudaGetDeviceProperties = lambda dev: (ok, props)
    cu.cudaStreamCreate = lambda: (ok, next(streams))
    cu.cudaStreamSynchronize = lambda s: (ok,)
    cu.cudaStreamDestroy = lambda s: (ok,)
    cu.cudaGetErrorString = lambda e: (ok, b"invalid argument")
    total = 80 << 30  # the fake device's memory; what is allocated is not free
    cu.cudaMemGetInfo = lambda: (ok, total - sum(a.nbytes for a in memory.values()), total)
    cu.live = memory  # for leak checks in tests
    return cu


def install(monkeypatch: Any, trt: types.ModuleType | None, cudart: types.ModuleType | None) -> None:
    """Put the fakes where `import tensorrt` / `from cuda.bindings import runtime` find them."""
    if trt is None:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if cudart is None:
        monkeypatch.setitem(sys.modules, "cuda", None)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    else:
        cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None)
        bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None)
        bindings.runtime = cudart
        cuda.bindings = bindings
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)


def plan_file(folder: Path, record: dict[str, Any]) -> Path:
    return folder / record["file"]
