"""Resolve what the user passed as a model source into one `Source` description.

Accepted: a `torch.nn.Module`; a Hugging Face model folder (config.json); a torch.export `.pt2`
file; or a "package.module:factory" string whose factory returns a module or a dict with the
keys `model` and optionally `example_inputs`, `labels`, `preprocess`, `tokenizer`, `task`.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, SourceError
from edgekit.manifest import TASKS

# Hugging Face architecture name suffix -> task. Generic on purpose: any new family whose class
# follows the naming convention needs no new code here.
_ARCH_TASKS = (
    ("ForSequenceClassification", "classify"),
    ("ForImageClassification", "classify"),
    ("ForCausalLM", "generate"),
    ("LMHeadModel", "generate"),
    ("ForCTC", "recognize"),
    ("WhisperForConditionalGeneration", "recognize"),
)


@dataclass
class Source:
    kind: str  # "module" | "hf" | "pt2" | "factory"
    description: str
    task: str
    module: Any = None  # torch.nn.Module (module/factory) or ExportedProgram (pt2)
    hf_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the HF config.json, as data
    example_inputs: tuple[Any, ...] | None = None
    tokenizer: Any = None
    labels: list[str] | None = None
    preprocess: dict[str, Any] | None = None
    sha256: str = ""

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [""]
        return str(archs[0])


def resolve_source(
    source: Any,
    task: str | None = None,
    example_inputs: Any = None,
    tokenizer: Any = None,
    labels: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> Source:
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task '{task}'", found=f"tasks {list(TASKS)}")
    if labels is not None:
        labels = [str(x) for x in labels]
    common = dict(example_inputs=_as_tuple(example_inputs), tokenizer=tokenizer, labels=labels, preprocess=preprocess)

    import torch

    if isinstance(source, torch.nn.Module):
        return Source(kind="module", description=type(source).__name__, task=_task_for_module(task, labels),
                      module=source.eval(), sha256=_state_hash(source), **common)
    if not isinstance(source, (str, Path)):
        raise SourceError(
            f"cannot use a {type(source).__name__} as a model source",
            fix="pass a torch.nn.Module, a Hugging Face model folder, a .pt2 file or 'package.module:factory'",
        )
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return _hf_source(path, task, common)
    if path.suffix == ".pt2":
        if not path.is_file():
            raise SourceError(f"no .pt2 file at '{path}'", fix="check the path")
        try:
            program = torch.export.load(str(path))
        except Exception as e:
            raise SourceError(f"cannot load '{path}' with torch.export.load: {e}") from None
        if common["example_inputs"] is None:
            common["example_inputs"] = tuple(program.example_inputs[0]) if program.example_inputs else None
        return Source(kind="pt2", description=path.name, task=_task_for_module(task, labels), module=program,
                      sha256=_file_hash(path), **common)
    if ":" in text and not path.exists():
        return _factory_source(text, task, common)
    raise SourceError(
        f"cannot find the model source '{text}'",
        found="no such folder or .pt2 file" if not path.exists() else "a file that is not .pt2",
        fix="pass a Hugging Face model folder (with config.json), a .pt2 file, or 'package.module:factory'",
    )


def _task_for_module(task: str | None, labels: list[str] | None) -> str:
    if task:
        return task
    if labels:
        return "classify"
    raise ConfigError(
        "the task of a plain PyTorch model cannot be inferred",
        fix="pass task='classify' | 'generate' | 'recognize' (CLI: --task), or labels for a classifier",
    )


def _hf_source(path: Path, task: str | None, common: dict[str, Any]) -> Source:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise SourceError(
            f"'{path}' is a folder without config.json",
            fix="pass a Hugging Face model folder saved with save_pretrained(), or a .pt2 file",
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SourceError(f"{cfg_path} is not valid JSON: {e}") from None
    archs = config.get("architectures") or []
    inferred = next((t for suffix, t in _ARCH_TASKS for a in archs if a.endswith(suffix)), None)
    if task is None and inferred is None:
        raise ConfigError(
            f"cannot infer the task of '{path}'",
            found=f"architectures {archs}",
            fix="pass task='classify' | 'generate' | 'recognize' (CLI: --task)",
        )
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file():
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return Source(kind="hf", description=str(path), task=task or inferred or "", hf_dir=path, config=config,
                  sha256=digest.hexdigest(), **common)


def _factory_source(spec: str, task: str | None, common: dict[str, Any]) -> Source:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SourceError(f"cannot import '{spec}': {e}", fix="check the module path and the factory name") from None
    try:
        made = factory()
    except Exception as e:
        raise SourceError(f"the factory '{spec}' raised {type(e).__name__}: {e}") from e
    if isinstance(made, dict):
        if "model" not in made:
            raise SourceError(f"the factory '{spec}' returned a dict without 'model'", found=f"keys {sorted(made)}")
        for key in ("tokenizer", "labels", "preprocess"):
            if common[key] is None and made.get(key) is not None:
                common[key] = made[key]
        if common["example_inputs"] is None:
            common["example_inputs"] = _as_tuple(made.get("example_inputs"))
        task = task or made.get("task")
        made = made["model"]
    import torch

    if not isinstance(made, torch.nn.Module):
        raise SourceError(f"the factory '{spec}' returned a {type(made).__name__}, not a torch.nn.Module")
    return Source(kind="factory", description=spec, task=_task_for_module(task, common["labels"]),
                  module=made.eval(), sha256=_state_hash(made), **common)


def _as_tuple(x: Any) -> tuple[Any, ...] | None:
    if x is None:
        return None
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _state_hash(module: Any) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _file_hash(path: Path) -> str:
    from edgekit.artifact import sha256_file

    return sha256_file(path)
