"""The bench report, typed: what `edgekit bench` measured (edgekit/bench.py), read by `edgekit bench`'s
text and plot and by benchmarks/; printed as JSON (`--json`) through edgekit/contract/codec.py.

Times are in milliseconds, memory in MB. The task's own figures are one record per task (`work`);
`against` is the replay of the same graph calls on the PyTorch source. Pure Python: no torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of_seconds(cls, seconds: list[float]) -> Percentiles:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), float(ms.max()))


@dataclass(frozen=True)
class Throughput:
    value: float
    unit: str  # e.g. "items/s", "new tokens/s (end to end)", "audio seconds/s"


@dataclass(frozen=True)
class Memory:
    rss_before_load: float  # MB
    peak_rss: float  # MB, while loading and running the artifact


@dataclass(frozen=True)
class ParityAtConvert:
    """The artifact's own parity verdict (Manifest.parity), beside its speed."""

    passed: bool
    summary: str


@dataclass(frozen=True)
class ClassifyWork:
    tag: ClassVar[str] = "classify"
    batch: int
    inputs: str  # what one call classifies

    @property
    def items(self) -> float:
        return float(self.batch)


@dataclass(frozen=True)
class GenerateWork:
    tag: ClassVar[str] = "generate"
    prompt_tokens: int
    max_new_tokens: int
    num_beams: int
    decoding: str
    prompt_latency_ms: Percentiles  # the prompt (and encoder) and the first token
    decode_tokens_per_s: float | None  # None: every call stopped at one token
    new_tokens_per_call: float
    encoder_latency_ms: Percentiles | None = None  # encoder-decoders: the encoder alone

    @property
    def items(self) -> float:
        return float(self.max_new_tokens)


@dataclass(frozen=True)
class RecognizeWork:
    tag: ClassVar[str] = "recognize"
    audio_seconds: float
    sample_rate: int
    real_time_factor: float  # p50 latency / audio seconds

    @property
    def items(self) -> float:
        return self.audio_seconds


Work = ClassifyWork | GenerateWork | RecognizeWork


@dataclass(frozen=True)
class GraphTiming:
    """One graph's share of the replay (median per run): e.g. an encoder-decoder's encoder and decoder."""

    edgekit_ms: float
    pytorch_ms: float
    speedup_p50: float


@dataclass(frozen=True)
class Against:
    """The same graph calls on the same inputs through onnxruntime and the PyTorch source."""

    source: str
    pytorch: str  # torch version
    torch_threads: int
    graph_calls_per_run: int
    what: str
    edgekit_ms: Percentiles
    pytorch_ms: Percentiles
    speedup_p50: float
    speedup_mean: float
    pytorch_latencies_ms: tuple[float, ...]
    edgekit_latencies_ms: tuple[float, ...]
    per_graph: dict[str, GraphTiming] = field(default_factory=dict)  # only with more than one graph


@dataclass(frozen=True)
class BenchReport:
    artifact: str
    task: str
    family: str
    precision: str
    device: str
    threads: int
    warmup: int
    runs: int
    latency_ms: Percentiles  # one task call, end to end
    throughput: Throughput
    memory_mb: Memory
    parity_at_convert: ParityAtConvert | None
    latencies_ms: tuple[float, ...]
    work: Work
    against: Against | None = None
