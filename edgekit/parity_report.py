"""The parity report, typed: what `convert` measured against PyTorch (`Manifest.parity`), what a
stand-in graph's proof measured (`RuntimeGraph.proof`), and what `edgekit.parity` returns.

Written by converters/ (each spec's `parity()`), read by `edgekit info` / `parity`, the runtimes and
the benchmarks; stored in `edgekit.json` through edgekit/contract/codec.py. A spec adds a measure
without a schema change: numbers go in `measures`, words in `notes`, per-row shares in `rows`, per
graph output statistics in `outputs`. Pure Python: no torch here. (Not `edgekit/parity.py`: that
submodule would shadow the `edgekit.parity` function.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreprocessCheck:
    """edgekit's pre-processing against the source's on the same raw inputs."""

    passed: bool
    summary: str
    max_abs: float = 0.0  # largest difference of float feeds (pixels)
    tokens_differ: int = 0  # integer feeds (token ids) that differ


@dataclass(frozen=True)
class EndToEnd:
    """Raw inputs through both whole pipelines (classify): the scores a user reads, and the pre-processing."""

    samples: int
    scores_max_abs: float | None = None  # None: the source's pipeline failed (`error`)
    top1: float | None = None
    preprocess: PreprocessCheck | None = None
    reference: str = ""  # how the source's side was computed
    error: str = ""  # the source's pipeline raised: its type and message


@dataclass(frozen=True)
class ParityReport:
    """One parity check: pass/fail against the precision's gate, a one-line summary, and the measures."""

    passed: bool
    summary: str
    precision: str
    tolerances: dict[str, str] = field(default_factory=dict)  # gated measure -> its limit, as text
    samples: int = 0  # inputs compared
    measures: dict[str, float] = field(default_factory=dict)  # e.g. greedy_agreement, logits_max_abs
    notes: dict[str, str] = field(default_factory=dict)  # e.g. held_out: "texts", inputs: "calibration"
    rows: dict[str, tuple[float, ...]] = field(default_factory=dict)  # e.g. greedy_rows: per-row agreement
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)  # graph output -> max_abs, cosine...
    end_to_end: EndToEnd | None = None

    def failed(self, reason: str) -> ParityReport:
        """This report, failed for `reason` (put first in the summary)."""
        return dataclasses.replace(self, passed=False, summary=f"{reason}; {self.summary}")

    def with_measures(self, **measures: float) -> ParityReport:
        return dataclasses.replace(self, measures={**self.measures, **measures})
