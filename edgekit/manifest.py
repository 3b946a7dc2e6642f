"""The artifact manifest, `edgekit.json`: everything a runtime needs, as plain JSON.

The manifest is data only. Loading never imports or executes anything named in it.
Task-specific sections (`preprocess`, `postprocess`) are plain dicts whose keys each task
documents in its own module; the fields common to all tasks are typed here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ArtifactError, ArtifactVersionError

FORMAT_VERSION = 1
MANIFEST_NAME = "edgekit.json"
TASKS = ("classify", "generate", "recognize")
PRECISIONS = ("fp32", "fp16", "int8", "int4")

_DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
           "int64", "uint64", "bool")
Dim = int | str  # a fixed size, or the name of a dynamic dimension ("batch", "sequence", ...)


@dataclass
class TensorSpec:
    """One graph input or output: name, numpy dtype name, and shape with named dynamic dims."""

    name: str
    dtype: str
    shape: list[Dim]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        spec = cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=list(d["shape"]))
        # Checked here so that a damaged manifest fails at load, not as a numpy error mid-run.
        if spec.dtype not in _DTYPES and not spec.dtype.startswith("onnx-"):
            raise ValueError(f"tensor '{spec.name}' has unknown dtype '{spec.dtype:.40}'")
        if not all(isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool) and x >= 0) for x in spec.shape):
            raise ValueError(f"tensor '{spec.name}' has a malformed shape {spec.shape!r:.80}")
        return spec


@dataclass
class GraphSpec:
    """One ONNX graph of the artifact (most tasks have one, `model`; Whisper has two)."""

    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSpec:
        return cls(
            file=str(d["file"]),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
        )


@dataclass
class Manifest:
    task: str
    family: str
    graphs: dict[str, GraphSpec]
    precision: dict[str, Any]  # {"requested": "int8", "produced": "int8", "method": "static-qdq", ...}
    source: dict[str, Any] = field(default_factory=dict)  # {"kind", "description", "sha256"}
    preprocess: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, Any] = field(default_factory=dict)  # fingerprint -> engine record
    format_version: int = FORMAT_VERSION

    @property
    def produced_precision(self) -> str:
        return str(self.precision.get("produced", "fp32"))

    def graph(self, name: str = "model") -> GraphSpec:
        try:
            return self.graphs[name]
        except KeyError:
            raise ArtifactError(
                f"the artifact has no graph named '{name}'",
                found=f"graphs {sorted(self.graphs)}",
                fix="convert the model again with this version of edgekit",
            ) from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def save(self, folder: Path) -> None:
        (folder / MANIFEST_NAME).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "edgekit.json") -> Manifest:
        version = d.get("format_version")
        if not isinstance(version, int):
            raise ArtifactError(f"{where} has no integer format_version", fix="convert the model again")
        if version > FORMAT_VERSION:
            raise ArtifactVersionError(
                f"{where} is format version {version}",
                found=f"this edgekit reads format versions up to {FORMAT_VERSION}",
                fix="upgrade edgekit (pip install -U edgekit) or convert with this version",
            )
        try:
            m = cls(
                task=str(d["task"]),
                family=str(d["family"]),
                graphs={k: GraphSpec.from_dict(v) for k, v in d["graphs"].items()},
                precision=dict(d["precision"]),
                source=dict(d.get("source", {})),
                preprocess=dict(d.get("preprocess", {})),
                postprocess=dict(d.get("postprocess", {})),
                files={str(k): str(v) for k, v in d.get("files", {}).items()},
                versions=dict(d.get("versions", {})),
                parity=dict(d.get("parity", {})),
                engines=dict(d.get("engines", {})),
                format_version=version,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ArtifactError(
                f"{where} is malformed ({type(e).__name__}: {e})", fix="convert the model again"
            ) from None
        if not m.graphs:
            raise ArtifactError(f"{where} lists no graphs", fix="convert the model again")
        if m.task not in TASKS:
            raise ArtifactError(f"{where} names unknown task '{m.task}'", found=f"known tasks {TASKS}")
        return m

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(
                f"'{folder}' is not an edgekit artifact",
                found=f"no {MANIFEST_NAME} in it",
                fix="pass the folder written by `edgekit convert`",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path} is not valid JSON ({e})", fix="convert the model again") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is not a JSON object", fix="convert the model again")
        return cls.from_dict(data, where=str(path))
