"""What running an artifact takes in memory at a context length, and whether this machine has it.

`estimate(art, device, context, batch)` is read from the artifact alone (no torch, no session):
- weights: the tensors of each graph `load` runs on that device (the onnxruntime stand-in where one
  is proven for this device and version, else the portable graph; TensorRT builds its engine from the
  portable graph), summed per tensor by the graph's own protobuf (edgekit/external_data.py);
- cache: what the generator allocates for a call whose prompt plus new tokens reach `context`. It
  does not grow per step and is not made at load: each `generate` call allocates
  (rows, kv heads, prompt + new - 1, head dim) per layer for keys and values (tasks/generator.py);
  compact caches (tasks/compactkv.py) grow by concatenation, so at their longest the old and the new
  copy are both alive; an encoder-decoder also keeps its encoder's keys/values for `max_source`;
- prompt logits: the prompt run returns (rows, prompt, vocab) float32 for a prompt of up to
  context - 1 tokens, and the generator keeps them for the whole call (twice with onnxruntime's
  shared-buffer stand-in, which lays them out again: kvcache.py `SharedKVCache.prefill`);
- overhead: onnxruntime's own memory and its prepacked copy of the weights, measured
  (benchmarks/memory_peak.py; RUNTIME_BYTES, PREPACK_FACTOR below), not derived.
`check_fits(...)` compares it with what `MemoryProbe` says is free and raises `MemoryFitError`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgekit.artifact import Artifact
from edgekit.contract import GraphSpec
from edgekit.contract.base import PAST
from edgekit.contract.generate import GenerateSection
from edgekit.contract.state import DecoderState
from edgekit.errors import ConfigError, MemoryFitError
from edgekit.external_data import tensor_bytes

log = logging.getLogger("edgekit")

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
MIB = 1 << 20
# The overhead, measured with benchmarks/memory_peak.py (a fresh process on the CPU, onnxruntime 1.32:
# load, then 32 new tokens after a 16-token prompt; peak RSS less the RSS after `import edgekit`, less
# weights, cache and prompt logits):
# - RUNTIME_BYTES: a 2-layer GPT-2 of 0.2 MiB weights took 36.0 MiB beyond them: onnxruntime's
#   library and session, whatever the model;
# - PREPACK_FACTOR: SmolLM2-135M int4 (186.1 MiB weights) took 134.3 MiB more than that, 0.72 of its
#   weights: onnxruntime repacks the weights of MatMul/MatMulNBits into its kernels' layout at session
#   start (with session.disable_prepacking the session took 67 MiB, with it 393 MiB) while the
#   weights file stays mapped and is read by the other nodes.
# Not in the estimate: the prompt run's activations beyond its logits, 75-85 KiB per prompt token on
# SmolLM2 (167 MiB at a 2016-token prompt, 592 and 682 MiB in two runs at 8160): README "Memory".
RUNTIME_BYTES = 36 * MIB
PREPACK_FACTOR = 0.72


@dataclass(frozen=True)
class GraphWeights:
    """The weights one graph's session loads."""

    graph: str  # the manifest's graph name
    file: str  # the ONNX file load runs for it
    bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes an artifact takes running on `device` with calls up to `context` tokens of `batch` rows."""

    device: str
    context: int
    batch: int  # rows per call: inputs times beams (or sequences returned)
    weights: tuple[GraphWeights, ...]
    cache_bytes: int
    cache_note: str  # what the cache term counts
    logits_bytes: int
    overhead_bytes: int

    @property
    def weights_bytes(self) -> int:
        return sum(w.bytes for w in self.weights)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.cache_bytes + self.logits_bytes + self.overhead_bytes


@dataclass(frozen=True)
class Availability:
    """Bytes free for a new model on a device, and where the number was read."""

    bytes: int
    source: str


class MemoryProbe(Protocol):
    """Says how much memory is free on a device ("cpu", "cuda", "tensorrt"); `load(memory=...)` takes one."""

    def available(self, device: str) -> Availability: ...


@dataclass(frozen=True)
class RunGraph:
    """The ONNX file `load` runs for one graph on a device, its tensors, and how it takes its cache."""

    file: str
    spec: GraphSpec
    kv_layout: str  # "slots" (portable graphs) | "shared" (onnxruntime's fused-attention stand-ins)


def run_graphs(art: Artifact, device: str, portable: bool = False) -> dict[str, RunGraph]:
    """Graph name -> what `load` runs for it on `device` ("cpu" | "cuda" | "tensorrt")."""
    out = {name: RunGraph(g.file, g, "slots") for name, g in art.manifest.graphs.items()}
    if portable or device == "tensorrt":
        return out
    from edgekit.runtimes.onnxruntime import runtime_graph

    for name in out:
        rg = runtime_graph(art, name, device)
        if rg is not None:
            out[name] = RunGraph(rg.file, rg.graph, rg.kv_layout)
    return out


def call_size(art: Artifact, max_context: int | None, batch: int) -> tuple[int | None, int]:
    """`max_context` and `batch` checked against the model (max_context None: the model's own)."""
    own = getattr(art.manifest.contract, "max_context", None)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be an integer >= 1, found {batch!r}")
    if max_context is None:
        return own, batch
    if own is None:
        raise ConfigError("max_context is for generate artifacts", found=f"a {art.manifest.task} artifact",
                          fix="leave max_context out")
    if isinstance(max_context, bool) or not isinstance(max_context, int) or not 2 <= max_context <= own:
        raise ConfigError(f"max_context must be an integer from 2 to the model's context length, found "
                          f"{max_context!r}", found=f"the model's context length {own}")
    return max_context, batch


def estimate(art: Artifact, device: str = "cpu", context: int | None = None, batch: int = 1,
             portable: bool = False) -> MemoryEstimate:
    """The memory `art` takes on `device` for calls of up to `context` tokens (default: the model's
    own context length) of `batch` rows."""
    graphs = run_graphs(art, device, portable)
    weights = tuple(GraphWeights(name, g.file, tensor_bytes(art.file(g.file))) for name, g in graphs.items())
    c = art.manifest.contract
    n = context if context is not None else getattr(c, "max_context", 0)
    if not isinstance(c, GenerateSection):
        note = f"no generate cache counted (a {c.task} artifact)"
        return MemoryEstimate(device, n, batch, weights, 0, note, 0, _overhead(weights))
    if n < 2 or batch < 1:
        raise ValueError(f"a context of at least 2 tokens and a batch of at least 1 row are needed, found {n}, {batch}")
    step = graphs["decoder" if c.encoder is not None else "model"]
    cache, note = _cache_bytes(c, step.spec, n, batch)
    logits = _logits_bytes(c, step, n, batch)
    return MemoryEstimate(device, n, batch, weights, cache, note, logits, _overhead(weights))


def _overhead(weights: tuple[GraphWeights, ...]) -> int:
    return RUNTIME_BYTES + round(PREPACK_FACTOR * sum(w.bytes for w in weights))


def _past_itemsize(spec: GraphSpec, name: str) -> int:
    return ITEMSIZE[{t.name: t for t in spec.inputs}[name].dtype]


def _cache_bytes(c: GenerateSection, step: GraphSpec, context: int, batch: int) -> tuple[int, str]:
    """What the generator allocates for one call whose prompt + new tokens are `context`: every state
    tensor at its size for that many slots (a fixed size for replaced states)."""
    cfg = c.cache
    if not isinstance(cfg, DecoderState) or not cfg.tensors():
        return 0, "no cache: every step runs the whole sequence"
    slots = context - 1  # the last new token is never fed back
    sizes = {t.input: math.prod(t.shape(batch, slots)) * _past_itemsize(step, t.input) for t in cfg.tensors()}
    slotted = sum(sizes[t.input] for t in cfg.tensors() if PAST in t.dims)
    total = sum(sizes.values())
    kinds = sorted({type(e).__name__ for e in cfg.entries})
    dtype = next(t.dtype for t in step.inputs if t.name == cfg.tensors()[0].input)
    note = f"{dtype} state ({', '.join(kinds)}) of {len(cfg.entries)} entries, {slots} slots x {batch} rows, " \
           "allocated per generate call"
    if cfg.compact:  # grown by concatenation: the old and the new past are alive together
        total, note = total + slotted, note + ", grown per step (two copies at the longest)"
    if c.encoder is not None and slots:  # the encoder's keys/values, resident for the whole call
        total += slotted // slots * c.encoder.max_source
        note += f", plus the encoder's for {c.encoder.max_source} source tokens"
    return total, note


def _logits_bytes(c: GenerateSection, step: RunGraph, context: int, batch: int) -> int:
    """The prompt run's logits (rows, prompt, vocab) float32. The slot cache keeps the runner's output
    (numpy over onnxruntime's buffer); the shared-buffer cache lays them out again beside it
    (kvcache.py `SharedKVCache.prefill`): two copies alive at once."""
    if c.encoder is not None:  # the decoder's prompt is its start token
        return 0
    vocab = {t.name: t for t in step.spec.outputs}["logits"].shape[-1]
    copies = 2 if step.kv_layout == "shared" else 1
    return copies * batch * (context - 1) * vocab * 4 if isinstance(vocab, int) else 0


@dataclass(frozen=True)
class SystemMemory:
    """This machine's free memory: MemAvailable (/proc/meminfo) bounded by the cgroup's limit, or the
    GPU's free memory (cudaMemGetInfo) for "cuda" and "tensorrt"."""

    meminfo: Path = Path("/proc/meminfo")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    self_cgroup: Path = Path("/proc/self/cgroup")

    def available(self, device: str) -> Availability:
        if device != "cpu":
            from edgekit.runtimes.cuda import free_device_memory

            return Availability(free_device_memory(), "free GPU memory (cudaMemGetInfo)")
        host = _meminfo_available(self.meminfo)
        limit = self._cgroup_free()
        if limit is not None and limit[0] < host:
            return Availability(limit[0], f"the cgroup's memory.max less memory.current ({limit[1]})")
        return Availability(host, f"MemAvailable in {self.meminfo}")

    def _cgroup_free(self) -> tuple[int, str] | None:
        """memory.max - memory.current of this process's cgroup (v2), None where no limit applies."""
        try:
            rel = next(line[3:].strip() for line in self.self_cgroup.read_text().splitlines() if line.startswith("0::"))
        except (OSError, StopIteration):
            rel = "/"
        for folder in dict.fromkeys([self.cgroup_root / rel.lstrip("/"), self.cgroup_root]):
            try:
                limit = (folder / "memory.max").read_text().strip()
                used = int((folder / "memory.current").read_text().strip())
            except (OSError, ValueError):
                continue
            return None if limit == "max" else (max(int(limit) - used, 0), str(folder))
        return None


def _meminfo_available(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                break
            return int(value) * 1024
    raise MemoryFitError(f"cannot read the free memory from '{path}'", found="no 'MemAvailable: N kB' line",
                         fix="pass load(..., memory=...) a MemoryProbe for this system")


def check_fits(est: MemoryEstimate, memory: MemoryProbe) -> Availability:
    """Raise MemoryFitError when `est` is more than `memory` has free on its device; else what is free."""
    free = memory.available(est.device)
    log.info("edgekit: %s needs %s at context %d x %d rows; %s free (%s)", est.device, mib(est.total_bytes),
             est.context, est.batch, mib(free.bytes), free.source)
    if est.total_bytes <= free.bytes:
        return free
    raise MemoryFitError(
        f"running this model on {est.device} at context {est.context} with {est.batch} row(s) needs "
        f"{mib(est.total_bytes)} (weights {mib(est.weights_bytes)}, cache {mib(est.cache_bytes)}, "
        f"prompt logits {mib(est.logits_bytes)}, onnxruntime {mib(est.overhead_bytes)})",
        found=f"{mib(free.bytes)} free ({free.source})",
        fix="load with a smaller max_context= (the cache and prompt logits scale with it) or batch=, "
            "convert at a lower precision (int8, int4) for smaller weights, or free memory")


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"
