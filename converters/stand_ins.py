"""A convert's backend stand-in graphs (Manifest.runtime_graphs): made, rewritten, proven, or dropped.

A stand-in is an optimisation only: it must never cost a conversion or a right answer. Every stage
of it (build, export, graph passes, precision, the contract check, the proof) can fail for a model
whose portable graph converts fine (an operator no exporter translates, a kernel constraint met
only at run time). Then its files leave the staging folder, the reason goes to
Manifest.runtime_graph_notes (shown by `edgekit info`), a log line says so, and the convert goes
on with the portable graph, which is what every load then runs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgekit.converters.export import GraphExport, describe_onnx, export_graph
from edgekit.converters.precision import Int4Config, apply_precision
from edgekit.converters.spec import Calibration, ConvertOptions, NoRuntimeGraph, RuntimeGraphExport
from edgekit.manifest import Manifest, RuntimeGraph
from edgekit.parity_report import ParityReport

log = logging.getLogger("edgekit")

# onnxruntime's stand-in for graph NAME is NAME.ort.onnx beside it: the two share one weights file
# (converters/weights_file.py), and onnxruntime reads external data only from the graph's own folder.
RUNTIME_SUFFIX = ".ort.onnx"


@dataclass
class StandIn:
    plan: RuntimeGraphExport
    export: GraphExport
    passes: dict[str, int]  # graph passes applied, and how often


class StandIns:
    """The stand-ins alive in staging folder `tmp` (`live`, by file) and why the others are not (`notes`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.live: dict[Path, StandIn] = {}
        self.notes: dict[str, str] = {}  # portable graph name -> reason (Manifest.runtime_graph_notes)

    def make(self, plans: list[RuntimeGraphExport]) -> None:
        """Build, export and finish each planned stand-in."""
        for plan in plans:
            path = self.tmp / f"{plan.replaces}{RUNTIME_SUFFIX}"
            stage = "build"
            try:
                export = plan.build()
                stage = "export"
                log.info("edgekit: exporting graph '%s' (onnxruntime)", export.name)
                export_graph(export, path)
                stage = "graph passes"
                passes = plan.finish(path) if plan.finish else {}
            except Exception as e:  # noqa: BLE001 - any failure keeps the portable graph, recorded below
                self.fail(plan.replaces, path, stage, e)
                continue
            self.live[path] = StandIn(plan, export, passes)

    def copy_to(self, tmp: Path) -> StandIns:
        """The live stand-ins as copied under `tmp` (by the caller), which their exports now describe."""
        out = StandIns(tmp)
        out.notes = dict(self.notes)
        for path, s in self.live.items():
            s.export.path = tmp / path.relative_to(self.tmp)
            out.live[s.export.path] = StandIn(s.plan, s.export, dict(s.passes))
        return out

    def apply_precision(self, opts: ConvertOptions, int8_method: str, calibration: Calibration,
                        candidate: Int4Config | None) -> None:
        """The precision stage, on each stand-in alone (the portable graphs' record is the manifest's)."""
        for path, s in list(self.live.items()):
            try:
                apply_precision({path: s.export}, opts, int8_method, calibration, candidate)
            except Exception as e:  # noqa: BLE001 - any failure keeps the portable graph, recorded below
                self.fail(s.plan.replaces, path, f"{opts.precision} precision", e)

    def records(self, manifest: Manifest, version: str) -> dict[str, RuntimeGraph]:
        """The manifest records of the live stand-ins (not yet proven); one whose graph is not what the
        contract needs of it is dropped."""
        out: dict[str, RuntimeGraph] = {}
        for path, s in list(self.live.items()):
            key = f"{s.plan.replaces}-onnxruntime"
            try:
                graph = describe_onnx(path)
            except Exception as e:  # noqa: BLE001 - any failure keeps the portable graph, recorded below
                self.fail(s.plan.replaces, path, "reading its graph", e)
                continue
            rg = RuntimeGraph(s.plan.replaces, path.relative_to(self.tmp).as_posix(), "onnxruntime",
                              s.plan.devices, version, s.plan.kv_layout, graph, s.passes)  # type: ignore[arg-type]
            problems = manifest.stand_in_problems(key, rg)
            if problems:
                self.drop(s.plan.replaces, path, f"its graph does not match the contract: {'; '.join(problems[:3])}")
            else:
                out[key] = rg
        return out

    def prove(self, manifest: Manifest, proof: Callable[[], ParityReport]) -> None:
        """Run `proof` (the artifact through its stand-ins, all at once); keep them only if it passed."""
        if not manifest.runtime_graphs:
            return
        report: ParityReport | None = None
        try:
            report = proof()
        except Exception as e:  # noqa: BLE001 - any failure keeps the portable graph, recorded below
            for path, s in list(self.live.items()):
                self.fail(s.plan.replaces, path, "proof", e)
        if report is not None and not report.passed:
            for path, s in list(self.live.items()):
                self.drop(s.plan.replaces, path, f"failed its proof: {report.summary}")
        manifest.runtime_graphs = {k: replace(rg, proof=report) for k, rg in manifest.runtime_graphs.items()
                                   if self.tmp / rg.file in self.live}
        manifest.runtime_graph_notes = dict(self.notes)

    def fail(self, replaces: str, path: Path, stage: str, e: Exception) -> None:
        if isinstance(e, NoRuntimeGraph):  # a known constraint: expected, not a failure
            self.drop(replaces, path, f"not expressible: {e}", logging.INFO)
        else:
            detail = " ".join(str(e).split())[:400]
            self.drop(replaces, path, f"{stage} failed: {type(e).__name__}: {detail}")

    def drop(self, replaces: str, path: Path, reason: str, level: int = logging.WARNING) -> None:
        """Forget a stand-in: its files leave the staging folder, the reason is recorded and logged."""
        for f in path.parent.glob(path.name + "*"):  # model.ort.onnx, model.ort.onnx.data
            f.unlink()
        self.live.pop(path, None)
        self.notes[replaces] = reason
        log.log(level, "edgekit: no onnxruntime stand-in for graph '%s' (%s); the portable graph runs everywhere",
                replaces, reason)
