"""Resolve what the user passed as a model source into one `Source` description.

Accepted: a `torch.nn.Module`; a Hugging Face model folder (config.json); a torch.export `.pt2`
file; or a "package.module:factory" string whose factory returns a module or a dict with the
keys `model` and optionally `example_inputs`, `labels`, `preprocess`, `tokenizer`, `task`.
Which spec converts it, and so the task when none is given, is `specs.match`'s answer.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.artifact import sha256_file
from edgekit.errors import ConfigError, SourceError
from edgekit.tasks import TASKS

@functools.cache
def auto_architectures(mapping: str) -> frozenset[str]:
    """The model classes of one of transformers' auto mappings (e.g. MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
    the architectures `AutoModelFor...` loads, whatever their names end with (BertGenerationDecoder...)."""
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for v in getattr(modeling_auto, mapping).values():
        names.update(v if isinstance(v, (tuple, list)) else [v])
    return frozenset(names)


@dataclass
class Source:
    origin: str  # "module" | "hf-folder" | "pt2" | "factory"
    description: str
    task: str | None  # as the user gave it (or a factory's dict); None: the matching spec's
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

    @property
    def is_plain(self) -> bool:
        """A module, .pt2 or factory: no config says what the model is."""
        return self.origin != "hf-folder"


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

    if isinstance(source, torch.nn.Module):
        return Source(origin="module", description=type(source).__name__, task=task, module=source.eval(),
                      sha256=_state_hash(source), **common)
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
        return Source(origin="pt2", description=path.name, task=task, module=program, sha256=sha256_file(path),
                      **common)
    if ":" in text and not path.exists():
        return _factory_source(text, task, common)
    raise SourceError(
        f"cannot find the model source '{text}'",
        found="no such folder or .pt2 file" if not path.exists() else "a file that is not .pt2",
        fix="pass a Hugging Face model folder (with config.json), a .pt2 file, or 'package.module:factory'",
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
    if not isinstance(config, dict):
        raise SourceError(f"{cfg_path} is not a JSON object")
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file():
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return Source(origin="hf-folder", description=str(path), task=task, hf_dir=path, config=config,
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
        if task is not None and task not in TASKS:
            raise SourceError(f"the factory '{spec}' names unknown task '{task}'", found=f"tasks {list(TASKS)}")
        made = made["model"]
    if not isinstance(made, torch.nn.Module):
        raise SourceError(f"the factory '{spec}' returned a {type(made).__name__}, not a torch.nn.Module")
    return Source(origin="factory", description=spec, task=task, module=made.eval(), sha256=_state_hash(made),
                  **common)


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
