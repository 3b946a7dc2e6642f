"""The export spec: everything the pipeline needs to know about one model family, in one class.

In the spirit of Optimum's `OnnxConfig`: a spec declares its graphs (modules, example inputs,
named dims), the artifact's contract section, the files shipped beside the graphs, how the user's
calibration data becomes graph feeds, the parity check against the PyTorch source, and the gates
that check must pass per precision. `specs/__init__.py`'s `match` picks the spec for a source.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgekit.contract import GraphSpec, Section
from edgekit.errors import UnsupportedError
from edgekit.parity_report import ParityReport

if TYPE_CHECKING:
    from edgekit.converters.export import GraphExport
    from edgekit.converters.sources import Source
    from edgekit.tasks.model import Model

Feeds = dict[str, np.ndarray]  # graph input name -> array


@dataclass
class ConvertOptions:
    precision: str = "fp32"
    calibration: Any = None
    target: str = "cpu"
    int8_method: str | None = None  # "static" (Q/DQ, TensorRT-ready) | "dynamic" | "blockwise" (CPU)
    strict: bool = True  # parity outside tolerance fails the convert
    int4_block_size: int | None = None  # None: chosen by the parity gate (precision.INT4_CANDIDATES)
    scores: str | None = None  # classify: how outputs become scores (ClassifySection.scores); None: detected


@dataclass
class Calibration:
    """The user's calibration data, read once: batches of graph feeds for int8 static quantization
    (graph name -> feeds) and the raw samples the parity check runs on (the real distribution)."""

    feeds: list[dict[str, Feeds]] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)  # the raw inputs among them (images, texts): end-to-end parity


@dataclass(frozen=True)
class Limit:
    """A gate on one measure of a parity report: at least `min`, or at most `max`."""

    min: float | None = None
    max: float | None = None

    def fails(self, value: float) -> bool:
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def __str__(self) -> str:
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


Gate = dict[str, Limit]  # measure -> limit, for one precision
# What a spec's parity measured, before `ExportSpec.report` sorts it into a ParityReport's sections.
Measure = float | int | str | list[float] | dict[str, float]


class NoRuntimeGraph(Exception):
    """A stand-in cannot express this model (a constraint known before export): the message says why."""


@dataclass
class RuntimeGraphExport:
    """A backend's stand-in for a portable graph (Manifest.runtime_graphs): how to make it, what it replaces.

    An optimisation only: the pipeline builds, exports, finishes and proves it, and keeps the portable
    graph alone (the reason in Manifest.runtime_graph_notes) when any of those fails. `build` raises
    NoRuntimeGraph where the model is known not to fit.
    """

    build: Callable[[], GraphExport]
    replaces: str
    devices: tuple[str, ...]  # onnxruntime devices it is for
    kv_layout: str  # how the task feeds its caches ("shared": written in place by the graph)
    finish: Callable[[Path], dict[str, int]] | None = None  # graph passes after export: path -> counts


def gate_failures(measures: dict[str, float], gate: Gate, prefix: str = "") -> list[str]:
    """"name=value (limit ...)" for every gated measure outside its limit."""
    return [f"{prefix}{k}={measures[k]:.4g} (limit {lim})" for k, lim in gate.items()
            if k in measures and lim.fails(measures[k])]


def gate_shortfall(measures: dict[str, Any], gate: Gate) -> float:
    """How far a report is from its gate: the sum over gated measures of each one's distance outside
    its limit, relative to the limit (0 when within). Ranks candidates that all miss their gate."""
    total = 0.0
    for k, lim in gate.items():
        if k not in measures:
            continue
        v, bound = float(measures[k]), lim.min if lim.min is not None else lim.max
        assert bound is not None
        over = (bound - v) if lim.min is not None else (v - bound)
        total += max(over, 0.0) / max(abs(bound), 1e-6)
    return total


class ExportSpec(abc.ABC):
    """One model family: subclasses set the class variables and implement the four methods."""

    task: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    default_int8: ClassVar[str] = "static"  # "static" (Q/DQ) | "dynamic" | "blockwise"
    static_int8: ClassVar[bool] = True  # whether static Q/DQ int8 is offered at all
    gates: ClassVar[dict[str, Gate]]  # precision -> what parity must reach
    # True: serves every source of its task that no specific spec claims (HFCausalLM: any HF decoder
    # with a key/value cache). `specs.match` asks the specific specs first, so where a spec sits
    # in the package never decides which one converts a source.
    generic: ClassVar[bool] = False

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        self.src = src
        self.options = options
        self.family = "unknown"  # set by subclasses: the HF model_type, or a name for plain modules

    @classmethod
    @abc.abstractmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        """Whether this spec converts `src` (for `task`, or inferring it when None)."""

    @abc.abstractmethod
    def graphs(self) -> list[GraphExport]:
        """The graphs to export, with their example inputs and named dims."""

    @abc.abstractmethod
    def contract(self, graphs: dict[str, GraphSpec]) -> Section:
        """The artifact's contract section, given the graphs as exported (and rewritten by precision)."""

    @abc.abstractmethod
    def parity(self, model: Model, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        """Compare the loaded artifact with the PyTorch source: the report, passed or not, with its summary."""

    def files(self, calibration: Calibration | None) -> dict[str, bytes]:
        """Files shipped beside the graphs (tokenizer.json, stored parity inputs...)."""
        return {}

    def runtime_graphs(self, target: str) -> list[RuntimeGraphExport]:
        """Backend-specific stand-ins to make for `target` (onnxruntime's fused attention...); none by default."""
        return []

    def runtime_proof(self, portable: Model, runtime: Model, precision: str,
                      calibration: Calibration | None) -> ParityReport:
        """How the artifact answers through its stand-in graphs: the parity report against PyTorch."""
        return self.parity(runtime, precision, calibration=calibration)

    def calibrate(self, data: Any) -> Calibration:
        """Read the user's calibration data (None: no data)."""
        if data is None:
            return Calibration()
        raise UnsupportedError(f"calibration data is not used for {self.task} ({self.family})",
                               fix="leave calibration out, or use int8_method='dynamic'")

    def report(self, values: dict[str, Measure], precision: str, what: str) -> ParityReport:
        """A parity report from a spec's values: the gate applied to the numbers, a one-line summary.

        Values are sorted by kind into the report's sections (so a new measure needs no schema change):
        `samples` -> samples, numbers -> measures, text -> notes, lists -> rows, dicts -> outputs."""
        gate = self.gates[precision]
        samples = values.get("samples", 0)
        measures = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and k != "samples"}
        failures = gate_failures(measures, gate)
        return ParityReport(
            passed=not failures, summary="; ".join([*failures, what]), precision=precision,
            tolerances={k: str(v) for k, v in gate.items()}, samples=int(samples) if isinstance(samples, int) else 0,
            measures=measures, notes={k: v for k, v in values.items() if isinstance(v, str)},
            rows={k: tuple(float(x) for x in v) for k, v in values.items() if isinstance(v, list)},
            outputs={k: {n: float(x) for n, x in v.items()} for k, v in values.items() if isinstance(v, dict)})
