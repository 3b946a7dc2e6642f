"""The artifact manifest, `edgekit.json`: the typed contract plus what every artifact records.

Format 3: `task`, `family`, `graphs` (each ONNX file's inputs and outputs with named dims), the
task's `contract` section (edgekit/contract/<task>.py), `precision`, `source`, the sha256 of every
file, versions, the parity report (edgekit/parity_report.py), TensorRT engine records, and
onnxruntime's proven stand-in graphs (with why a graph has none: `runtime_graph_notes`). Reading
checks every value's type and that the graphs are what the contract says (`check_graphs`); nothing
named in the manifest is imported or executed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from edgekit.contract import GraphSpec, Section, check_graphs
from edgekit.contract.base import check_graph
from edgekit.contract.codec import ContractError, decode, encode
from edgekit.engines import EngineRecord
from edgekit.errors import ArtifactError, ArtifactVersionError
from edgekit.parity_report import ParityReport

FORMAT_VERSION = 3  # 3: typed parity reports; 2: typed contract sections (1: free preprocess/postprocess dicts)
MANIFEST_NAME = "edgekit.json"
PRECISIONS = ("fp32", "fp16", "int8", "int4")
CONVERT_AGAIN = "convert the model again with this version of edgekit (`edgekit convert`)"


@dataclass(frozen=True)
class Precision:
    """What the precision stage produced. `details` is for people (`edgekit info`), never read back."""

    requested: str
    produced: str
    method: str = "exported"  # "exported" | "casts" | "static-qdq" | "dynamic" | "weight-only-matmulnbits"
    # | "blockwise-matmulnbits" (int8 weights and per-block int8 activations)
    tensorrt_compatible: bool = True  # False: contrib ops (dynamic int8, MatMulNBits) only onnxruntime runs
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in (self.requested, self.produced):
            if p not in PRECISIONS:
                raise ValueError(f"unknown precision '{p:.20}'")


@dataclass(frozen=True)
class SourceInfo:
    origin: str  # "module" | "hf-folder" | "pt2" | "factory"
    description: str
    sha256: str


@dataclass(frozen=True)
class RuntimeGraph:
    """A graph rewritten for one backend that stands in for a portable graph there.

    Made and proven at convert time (`proof`: its agreement with the portable graph); used when the
    backend, device and version match. The portable graph stays what every other backend runs.
    """

    replaces: str  # the portable graph's name
    file: str  # e.g. "model.ort.onnx" (older artifacts: "ort/model.onnx")
    backend: Literal["onnxruntime"]
    devices: tuple[str, ...]  # the backend's devices it was made for, e.g. ("cpu", "cuda")
    version: str  # the backend's major.minor it was made and proven with
    kv_layout: Literal["shared"]  # how the task feeds its caches (contract: Section.runtime_needs)
    graph: GraphSpec
    passes: dict[str, int] = field(default_factory=dict)  # graph passes applied, and how often
    proof: ParityReport | None = None


@dataclass
class Manifest:
    task: str
    family: str
    graphs: dict[str, GraphSpec]
    contract: Section
    precision: Precision
    source: SourceInfo
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    versions: dict[str, str] = field(default_factory=dict)
    parity: ParityReport | None = None  # the report measured at convert time
    engines: dict[str, EngineRecord] = field(default_factory=dict)  # plans built by runtimes/tensorrt, by id
    runtime_graphs: dict[str, RuntimeGraph] = field(default_factory=dict)  # proven stand-ins only
    # Portable graph name -> why no stand-in replaces it (not expressible, or failed to build/export/prove).
    runtime_graph_notes: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def produced_precision(self) -> str:
        return self.precision.produced

    def graph(self, name: str = "model") -> GraphSpec:
        try:
            return self.graphs[name]
        except KeyError:
            raise ArtifactError(f"the artifact has no graph named '{name}'", found=f"graphs {sorted(self.graphs)}",
                                fix=CONVERT_AGAIN) from None

    def to_json(self) -> str:
        doc = {"format_version": self.format_version, "task": self.task, "family": self.family,
               "graphs": encode(self.graphs), "contract": encode(self.contract), "precision": encode(self.precision),
               "source": encode(self.source), "files": self.files, "versions": self.versions,
               "parity": encode(self.parity), "engines": encode(self.engines),
               "runtime_graphs": encode(self.runtime_graphs),
               "runtime_graph_notes": self.runtime_graph_notes}
        return json.dumps(doc, indent=2) + "\n"

    def save(self, folder: Path) -> None:
        (folder / MANIFEST_NAME).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST_NAME) -> Manifest:
        from edgekit.tasks import TASKS

        if not isinstance(d, dict):
            raise ArtifactError(f"{where} is not a JSON object", fix=CONVERT_AGAIN)
        version = d.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ArtifactError(f"{where} has no integer format_version", fix=CONVERT_AGAIN)
        if version > FORMAT_VERSION:
            raise ArtifactVersionError(f"{where} is format version {version}",
                                       found=f"this edgekit reads format version {FORMAT_VERSION}",
                                       fix="upgrade edgekit (pip install -U edgekit) or convert with this version")
        if version < FORMAT_VERSION:
            raise ArtifactVersionError(f"{where} was converted by an older edgekit; convert it again",
                                       found=f"format version {version}; this edgekit reads {FORMAT_VERSION}",
                                       fix=CONVERT_AGAIN)
        name = d.get("task")
        task = TASKS.get(name) if isinstance(name, str) else None
        if task is None:
            raise ArtifactError(f"{where} names unknown task {str(d.get('task'))[:40]!r}", found=f"tasks {sorted(TASKS)}",
                                fix=CONVERT_AGAIN)
        sections = Union[task.sections] if len(task.sections) > 1 else task.sections[0]  # noqa: UP007
        try:
            m = cls(task=task.name, family=decode(str, d.get("family"), "family"),
                    graphs=decode(dict[str, GraphSpec], d.get("graphs"), "graphs"),
                    contract=decode(sections, d.get("contract"), "contract"),
                    precision=decode(Precision, d.get("precision"), "precision"),
                    source=decode(SourceInfo, d.get("source"), "source"),
                    files=decode(dict[str, str], d.get("files", {}), "files"),
                    versions=decode(dict[str, str], d.get("versions", {}), "versions"),
                    parity=decode(ParityReport | None, d.get("parity"), "parity"),
                    engines=decode(dict[str, EngineRecord], d.get("engines", {}), "engines"),
                    runtime_graphs=decode(dict[str, RuntimeGraph], d.get("runtime_graphs", {}), "runtime_graphs"),
                    runtime_graph_notes=decode(dict[str, str], d.get("runtime_graph_notes", {}),
                                               "runtime_graph_notes"),
                    format_version=version)
        except ContractError as e:
            raise ArtifactError(f"{where} is malformed at {e.path}", found=e.problem,
                                fix=f"the edgekit.json was edited or damaged; {CONVERT_AGAIN}") from None
        problems = check_graphs(m.contract, m.graphs) + m.runtime_graph_problems()
        if problems:
            raise ArtifactError(f"the graphs of {where} do not match its {m.task} contract ({m.contract.tag})",
                                found="; ".join(problems[:4]),
                                fix=f"the edgekit.json was edited or its files mixed up; {CONVERT_AGAIN}")
        return m

    def runtime_graph_problems(self) -> list[str]:
        return [p for key, rg in self.runtime_graphs.items() for p in self.stand_in_problems(key, rg)]

    def stand_in_problems(self, key: str, rg: RuntimeGraph) -> list[str]:
        """How runtime graph `rg` (recorded as `key`) disagrees with what this contract needs of it."""
        needs = self.contract.runtime_needs(rg.replaces, rg.kv_layout) if rg.replaces in self.graphs else None
        if needs is None:
            return [f"runtime graph '{key}' stands in for '{rg.replaces}' with a {rg.kv_layout} cache, "
                    f"which a {self.contract.tag} artifact does not have"]
        return check_graph(key, rg.graph, needs)

    def graph_files(self) -> list[str]:
        """Every ONNX file of the artifact: the portable graphs and their backend stand-ins."""
        return [g.file for g in self.graphs.values()] + [rg.file for rg in self.runtime_graphs.values()]

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(f"'{folder}' is not an edgekit artifact", found=f"no {MANIFEST_NAME} in it",
                                fix="pass the folder written by `edgekit convert`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ArtifactError(f"{path} is not valid JSON ({e})", fix=CONVERT_AGAIN) from None
        return cls.from_dict(data, where=str(path))
