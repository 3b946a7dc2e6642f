"""TensorRT runner: plans from `engines/`, device buffers through cuda-python (no torch on the device).

- The engine record in the manifest is compared with this machine (GPU, compute capability,
  TensorRT version, ONNX hash, precision) and the plan's sha256 is checked *before*
  `deserialize_cuda_engine`; a mismatch is an `EngineError` naming what differs and the fix
  (`edgekit build`), never a plan handed to TensorRT to crash on.
- Lanes: an execution context, CUDA stream and device buffers, leased for one call (or one
  generate loop) and given back (contexts are not thread-safe; the engine is shared). With
  dynamic shapes TensorRT lets each context in concurrent use hold its own optimization profile,
  so a plan carries `contexts` copies of its profile set (`edgekit build --contexts N`) and lane
  k uses copy k: at most N callers run at once, the others wait for a lane. Buffers grow when a
  larger shape arrives and are reused.
- Jetson: an artifact can hold a GPU plan and DLA plans for the same graph; the GPU plan is
  used unless `TensorRTOptions(dla_core=N)` names a core that a plan was built for.
- Per call: pick the optimization profile whose ranges hold the input shapes (generation
  engines have "prompt", "verify" where speculative decoding runs, and "decode"),
  `set_input_shape`, copy in, `set_tensor_address`, `execute_async_v3` on the thread's stream,
  copy out, synchronize.

- Decode loops (`stepper`): a context of their own, the KV cache in device memory for the whole
  generate call (only the token, position and mask go up, only the logits come down), and after
  the first step the `execute_async_v3` call is captured into a CUDA graph and replayed: every
  decode step has the same shapes and addresses, which is what a graph needs. Calls of other
  shapes on the loop (the prompt, speculative decoding's verify) are plain launches.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import numpy as np

from edgekit.artifact import Artifact, sha256_file
from edgekit.contract import GraphSpec
from edgekit.contract.base import PAST, SEQUENCE, TOTAL
from edgekit.engines import EngineRecord, Machine
from edgekit.errors import EngineError, InputError
from edgekit.runtimes.base import Runner, StepSpec, Stepper
from edgekit.runtimes.options import TensorRTOptions
from edgekit.runtimes.cuda import DeviceBuffers, copy_slot, copy_whole, cuda_call, gather_rows, import_cudart
from edgekit.runtimes.tensorrt import import_trt
from edgekit.runtimes.tensorrt.fingerprint import mismatches
from edgekit.runtimes.tensorrt.logger import logged_errors, make_logger
from edgekit.runtimes.tensorrt.profiles import phase_names

log = logging.getLogger("edgekit")
BUILD_FIX = "run `edgekit build {path} --device tensorrt` on this machine (or load with device='cuda' or 'cpu')"


def current_machine(trt: Any, device: int = 0) -> Machine:
    cudart = import_cudart()
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Machine(gpu=name.rstrip("\x00").strip(), cc=f"{props.major}.{props.minor}", trt=str(trt.__version__))


def open_artifact_runners(art: Artifact, options: TensorRTOptions) -> dict[str, Runner]:
    trt = import_trt()
    machine = current_machine(trt)
    runners: dict[str, Runner] = {}
    try:
        for name, g in art.manifest.graphs.items():
            runners[name] = TrtRunner(art, name, g, select_engine(art, name, machine, options.dla_core), trt, options)
    except BaseException:
        for r in runners.values():  # a later graph failed: free what the earlier ones hold
            r.close()
        raise
    return runners


def select_engine(art: Artifact, graph: str, machine: Machine, dla: int | None = None) -> EngineRecord:
    """The engine record of `graph` that can run on `machine`, or an EngineError saying why none can.
    Jetson: an artifact may hold a GPU plan and DLA plans; `dla` picks core N's, else the GPU's."""
    m = art.manifest
    onnx_sha = m.files.get(m.graph(graph).file) or sha256_file(art.file(m.graph(graph).file))
    candidates = sorted((r for r in m.engines.values() if r.graph == graph), key=lambda r: r.fingerprint.dla_core != dla)
    phases = phase_names(m.contract, graph, m.graph(graph))
    reasons = []
    for record in candidates:
        why = mismatches(record.fingerprint, machine, onnx_sha, m.produced_precision, phases)
        if not why:
            return record
        reasons.append(f"{record.file}: " + ", ".join(why))
    want = f"{machine.gpu} sm{machine.cc}, TensorRT {machine.trt}, {m.produced_precision}"
    raise EngineError(
        f"no TensorRT engine for graph '{graph}' matches this machine ({want})",
        found="; ".join(reasons) if reasons else "no engine was built for this artifact",
        fix=BUILD_FIX.format(path=art.path),
    )


def pick_profile(inputs: list[Any], profiles: list[dict[str, Any]], feeds: dict[str, np.ndarray]) -> int:
    """The last (most specialized) profile whose ranges hold every named dim of the feeds.

    Generation engines list "prompt" (any length), "verify" (2 to 32 tokens after a past, where
    speculative decoding drives the decoder) then "decode" (one new token): a decode step fits the
    prompt's and the decode profile and gets the decode one's tactics, a verify call the verify one's.
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


class _Lane:
    """One user's execution context, stream and device buffers, and its copy of the profiles."""

    def __init__(self, context: Any, stream: Any, cu: Any, copy: int) -> None:
        self.context = context
        self.stream = stream
        self.buffers = DeviceBuffers(cu)
        self.copy = copy  # profiles copy * len(phases) .. + len(phases) - 1 are this lane's
        self.profile = -1


class TrtRunner(Runner):
    """Runs one graph's TensorRT plan. Safe to call from several threads (one context each)."""

    name = "tensorrt"

    def __init__(self, art: Artifact, graph_name: str, graph: GraphSpec, record: EngineRecord, trt: Any,
                 options: TensorRTOptions | None = None) -> None:
        super().__init__(graph)
        opts = options or TensorRTOptions()
        self.context_wait_s, self.cuda_graphs = opts.context_wait_s, opts.cuda_graphs
        self.trt = trt
        self.cudart = import_cudart()
        self.record = record
        self.profiles = record.profile_dims()
        self.contexts = record.fingerprint.contexts
        self._engine = self._deserialize(art, record, trt)
        self._check_io(graph)
        self._lanes: list[_Lane] = []  # every lane made, for close()
        self._idle: list[_Lane] = []  # lanes not leased now
        self._free = threading.Condition()
        log.debug("edgekit: TensorRT engine %s loaded for graph '%s'", record.file, graph_name)

    def _deserialize(self, art: Artifact, record: EngineRecord, trt: Any) -> Any:
        path = art.file(record.file)
        fix = BUILD_FIX.format(path=art.path)
        if not path.is_file():
            raise EngineError(f"the engine {record.file} is listed in the manifest but missing", fix=fix)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise EngineError(f"the engine {record.file} was altered (sha256 differs from the manifest)", fix=fix)
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if record.version_compatible:
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError(f"TensorRT refused the engine {record.file}",
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

    def tokens_per_call(self, past: int) -> int | None:
        """The longest sequence a profile takes after `past` cache slots: its own range's end, and the
        attention mask's (past + sequence: TOTAL) end less `past`."""
        if not self.profiles or not all(SEQUENCE in p for p in self.profiles):
            return None  # a static graph or one without a sequence dim: its shapes are its own
        fits = [min(p[SEQUENCE][2], p[TOTAL][2] - past if TOTAL in p else p[SEQUENCE][2]) for p in self.profiles
                if PAST not in p or p[PAST][0] <= past <= p[PAST][2]]
        return max([0, *fits])

    def lease(self) -> _Lane:
        """A lane no one else uses until `give_back`; waits while all `contexts` lanes are leased."""
        wait = self.context_wait_s
        with self._free:
            ready = self._free.wait_for(lambda: self._idle or len(self._lanes) < self.contexts, timeout=wait)
            if not ready:
                raise EngineError(f"all {self.contexts} TensorRT execution contexts stayed busy for {wait:.0f} s",
                                  found="more concurrent calls or open generate streams than the engine has contexts",
                                  fix="rebuild with more: `edgekit build ... --contexts N --rebuild`, or finish "
                                      "(close) streams before starting others in the same thread")
            if self._idle:
                return self._idle.pop()
            lane = self._new_lane(len(self._lanes))
            self._lanes.append(lane)
            return lane

    def give_back(self, lane: _Lane) -> None:
        with self._free:
            if lane in self._lanes and lane not in self._idle:
                self._idle.append(lane)
                self._free.notify()

    def _new_lane(self, copy: int) -> _Lane:
        ctx = self._engine.create_execution_context()
        if ctx is None:
            raise EngineError("TensorRT could not create an execution context", found="out of GPU memory?")
        return _Lane(ctx, cuda_call(self.cudart, self.cudart.cudaStreamCreate()), self.cudart, copy)

    def pick_profile(self, feeds: dict[str, np.ndarray]) -> int:
        return pick_profile(self.inputs, self.profiles, feeds)

    def use_profile(self, lane: _Lane, feeds: dict[str, np.ndarray]) -> None:
        profile = lane.copy * len(self.profiles) + self.pick_profile(feeds)
        # A static plan (no profiles built, e.g. a fixed-size vision graph) has TensorRT's one implicit
        # profile, which every context holds without asking (set_optimization_profile_async "need not be called").
        if self.profiles and profile != lane.profile:
            if not lane.context.set_optimization_profile_async(profile, int(lane.stream)):
                raise EngineError(f"TensorRT refused optimization profile {profile}",
                                  found=logged_errors(self._logger) or None, fix="run `edgekit build --rebuild`")
            lane.profile = profile
        for name, value in feeds.items():
            if not lane.context.set_input_shape(name, value.shape):
                raise InputError(f"TensorRT rejected the shape of '{name}'", found=f"shape {list(value.shape)}")

    def output_shape(self, lane: _Lane, name: str) -> tuple[int, ...]:
        shape = tuple(lane.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise EngineError(f"output '{name}' has a data-dependent shape {shape}",
                              fix="use device='cuda' for this model")
        return shape

    def execute(self, lane: _Lane) -> None:
        if not lane.context.execute_async_v3(int(lane.stream)):
            raise EngineError("TensorRT failed to run the engine", found=logged_errors(self._logger) or None)

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        lane = self.lease()
        try:
            return self._run_on(lane, feeds, outputs)
        finally:
            self.give_back(lane)

    def _run_on(self, lane: _Lane, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        ctx, stream, bufs = lane.context, lane.stream, lane.buffers
        self.use_profile(lane, feeds)
        for name, value in feeds.items():
            ctx.set_tensor_address(name, bufs.upload(name, value, stream))
        hosts = {}
        for spec in self.outputs:  # every output needs an address, even those not asked for
            hosts[spec.name] = np.empty(self.output_shape(lane, spec.name), dtype=np.dtype(spec.dtype))
            ctx.set_tensor_address(spec.name, bufs.get(spec.name, hosts[spec.name].nbytes))
        self.execute(lane)
        for name in outputs:
            bufs.download(name, hosts[name], stream)
        cuda_call(self.cudart, self.cudart.cudaStreamSynchronize(stream))
        return {name: hosts[name] for name in outputs}

    def _stepper_impl(self, spec: StepSpec) -> Stepper:
        return TrtStepper(self, spec)

    def close(self) -> None:
        with self._free:
            lanes, self._lanes, self._idle = self._lanes, [], []
        for lane in lanes:
            lane.buffers.free()
            cuda_call(self.cudart, self.cudart.cudaStreamDestroy(lane.stream))


class TrtStepper(Stepper):
    """A decode loop on the GPU: caches resident, the step replayed as a CUDA graph.

    Per step: token/position/mask up (a few hundred bytes), the engine (a graph launch from the
    second step on), each layer's new key/value written into its cache slot device-side, the
    logits down, one synchronize. TensorRTOptions(cuda_graphs=False) turns the graph off (for profiling).
    """

    def __init__(self, runner: TrtRunner, spec: StepSpec) -> None:
        super().__init__(spec)
        self.runner, self.cu = runner, runner.cudart
        self.lane = runner.lease()
        self.graph: Any = None
        self.graph_exec: Any = None
        self.capture_pending = runner.cuda_graphs
        try:
            self._bind()
        except BaseException:
            self.close()
            raise

    def _bind(self) -> None:
        """Upload the step's inputs and the caches (once), then point the context at them for steps."""
        lane, s = self.lane, self.spec
        if s.shared:
            raise EngineError("TensorRT engines are built from portable graphs, which take no shared caches",
                              found=f"shared outputs {sorted(s.shared)}", fix="load with device='cpu' or 'cuda'")
        for name, value in {**s.inputs, **s.caches}.items():  # the caches go up once, here
            lane.buffers.upload(name, value, lane.stream)
        self._point_at_step_buffers()
        cuda_call(self.cu, self.cu.cudaStreamSynchronize(lane.stream))

    def _point_at_step_buffers(self) -> None:
        r, lane, s = self.runner, self.lane, self.spec
        feeds = {**s.inputs, **s.caches}
        r.use_profile(lane, feeds)
        for name in feeds:
            lane.context.set_tensor_address(name, lane.buffers.held[name][0])
        for out in r.outputs:
            shape = r.output_shape(lane, out.name)
            want = _expected_shape(s, out.name)
            if want is not None and shape != want:
                raise EngineError(f"the engine's output '{out.name}' has shape {list(shape)} in a decode step",
                                  found=f"the cache needs {list(want)}", fix="run `edgekit build --rebuild`")
            nbytes = int(np.prod(shape)) * np.dtype(out.dtype).itemsize
            lane.context.set_tensor_address(out.name, lane.buffers.get(out.name, nbytes))

    def _run_impl(self, feeds: dict[str, np.ndarray], slot: int) -> dict[str, np.ndarray]:
        """The prompt, or speculative decoding's verify call between steps, on the lane: a plain
        launch on the profile that holds its shapes, its keys/values copied into the resident caches
        device-side, only the spec's outputs (the logits) come down, into buffers of their own; then
        the context is back on the step's profile, shapes and buffers. Those buffers keep their
        addresses, so the decode step's CUDA graph, which replays what it captured, stays valid:
        NVIDIA's TensorRT-Edge-LLM (EngineExecutor::execute) replays its captured graphs across
        profile switches in the same way, whenever the bindings equal those at capture."""
        r, lane, s, cu = self.runner, self.lane, self.spec, self.cu
        bound = {**s.caches, **feeds}
        r.use_profile(lane, bound)
        for name, value in bound.items():
            ptr = lane.buffers.held[name][0] if name not in feeds else lane.buffers.upload(f"run:{name}", value,
                                                                                           lane.stream)
            lane.context.set_tensor_address(name, ptr)
        shapes = {out.name: r.output_shape(lane, out.name) for out in r.outputs}
        for out in r.outputs:
            nbytes = int(np.prod(shapes[out.name])) * np.dtype(out.dtype).itemsize
            lane.context.set_tensor_address(out.name, lane.buffers.get(f"run:{out.name}", nbytes))
        r.execute(lane)
        held = lane.buffers.held
        for out, cache in s.writes.items():
            arr = s.caches[cache]
            copy_slot(cu, held[cache][0], held[f"run:{out}"][0], arr.shape, arr.itemsize, slot, lane.stream,
                      count=shapes[out][2])
        for out, cache in s.replaces.items():
            copy_whole(cu, held[cache][0], held[f"run:{out}"][0], s.caches[cache].nbytes, lane.stream)
        dtypes = {o.name: np.dtype(o.dtype) for o in r.outputs}
        result = {name: np.empty(shapes[name], dtypes[name]) for name in s.outputs}
        for name, host in result.items():
            lane.buffers.download(f"run:{name}", host, lane.stream)
        cuda_call(cu, cu.cudaStreamSynchronize(lane.stream))
        self._point_at_step_buffers()
        return result

    def _step_impl(self, slot: int) -> None:
        cu, lane, s = self.cu, self.lane, self.spec
        for name, value in s.inputs.items():
            lane.buffers.upload(name, value, lane.stream)
        if self.graph_exec is not None:
            cuda_call(cu, cu.cudaGraphLaunch(self.graph_exec, lane.stream))
        else:
            self.runner.execute(lane)
            if self.capture_pending:  # TensorRT wants one plain run before capture (deferred setup)
                self._capture()
        held = lane.buffers.held
        for out, cache in s.writes.items():
            arr = s.caches[cache]
            copy_slot(cu, held[cache][0], held[out][0], arr.shape, arr.itemsize, slot, lane.stream)
        for out, cache in s.replaces.items():  # after the launch: the engine read the state while writing this
            copy_whole(cu, held[cache][0], held[out][0], s.caches[cache].nbytes, lane.stream)
        for name, host in s.outputs.items():
            lane.buffers.download(name, host, lane.stream)
        cuda_call(cu, cu.cudaStreamSynchronize(lane.stream))

    def _reorder_impl(self, rows: np.ndarray, caches: list[str]) -> None:
        """Beam reorders: device-side row copies on the loop's stream, before the next launch.
        The buffers keep their addresses, so a captured CUDA graph stays valid."""
        lane, held = self.lane, self.lane.buffers.held
        scratch = lane.buffers.get("reorder scratch", max(self.spec.caches[c].nbytes for c in caches))
        for name in caches:
            arr = self.spec.caches[name]
            gather_rows(self.cu, held[name][0], scratch, rows, arr.nbytes // arr.shape[0], lane.stream)

    def _capture(self) -> None:
        """Record the engine's launch on the stream into a CUDA graph (nothing runs while capturing)."""
        cu, lane = self.cu, self.lane
        self.capture_pending = False
        mode = cu.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        cuda_call(cu, cu.cudaStreamBeginCapture(lane.stream, mode))
        ran = lane.context.execute_async_v3(int(lane.stream))
        err, graph = cu.cudaStreamEndCapture(lane.stream)  # always end: the stream is unusable mid-capture
        if not ran or err != cu.cudaError_t.cudaSuccess:
            # Some engines cannot be captured (e.g. layers that sync with the host). Steps still run,
            # each as a plain launch; say so, since the decode speed differs.
            log.warning("edgekit: TensorRT decode step could not be captured as a CUDA graph (%s); "
                        "running without one", err if ran else "execute_async_v3 failed during capture")
            if graph is not None and err == cu.cudaError_t.cudaSuccess:
                cuda_call(cu, cu.cudaGraphDestroy(graph))
            return
        self.graph = graph
        self.graph_exec = cuda_call(cu, cu.cudaGraphInstantiate(graph, 0))

    def close(self) -> None:
        cu = self.cu
        if self.graph_exec is not None:
            cuda_call(cu, cu.cudaGraphExecDestroy(self.graph_exec))
            self.graph_exec = None
        if self.graph is not None:
            cuda_call(cu, cu.cudaGraphDestroy(self.graph))
            self.graph = None
        if self.lane is not None:
            self.lane.buffers.free()  # cache-sized buffers: not kept for the lane's next user
            self.lane.profile = -1
            self.runner.give_back(self.lane)
            self.lane = None  # type: ignore[assignment]


def _expected_shape(spec: StepSpec, output: str) -> tuple[int, ...] | None:
    """What a step's output must be: one cache slot for a write, the host array for an output."""
    if output in spec.writes:
        b, h, _, d = spec.caches[spec.writes[output]].shape
        return (b, h, 1, d)
    if output in spec.replaces:
        return tuple(spec.caches[spec.replaces[output]].shape)
    if output in spec.outputs:
        return tuple(spec.outputs[output].shape)
    return None
