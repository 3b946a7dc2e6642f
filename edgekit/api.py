"""The public functions: `convert`, `load`, `parity`."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from edgekit.artifact import Artifact, open_artifact
from edgekit.model import Model

# task -> the class that serves it. Data, not an if-chain; imported only when that task is loaded.
TASK_CLASSES = {
    "classify": ("edgekit.classifier", "Classifier"),
    "generate": ("edgekit.generator", "Generator"),
    "recognize": ("edgekit.recognizer", "Recognizer"),
}


def convert(source: Any, out: str | os.PathLike[str], **kwargs: Any) -> Artifact:
    """Convert a PyTorch model into an artifact folder; see `edgekit.converters.pipeline.convert`.

    >>> import edgekit, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    >>> art = edgekit.convert(net, "/tmp/edgekit-doc", example_inputs=torch.rand(1, 3, 2, 2),
    ...                       labels=["a", "b", "c"], overwrite=True)
    >>> art.manifest.task, art.manifest.parity["passed"]
    ('classify', True)
    """
    from edgekit.converters.pipeline import convert as _convert

    return _convert(source, Path(out), **kwargs)


def load(path: str | os.PathLike[str], device: str = "auto", verify: bool = True) -> Model:
    """Load an artifact folder for inference on `device` ("auto" | "cpu" | "cuda" | "tensorrt").

    >>> import edgekit
    >>> clf = edgekit.load("/tmp/edgekit-doc", device="cpu")
    >>> clf.device
    'onnxruntime-cpu'
    """
    from edgekit.runtimes.select import open_runners

    art = open_artifact(path, verify=verify)
    module, cls = TASK_CLASSES[art.manifest.task]
    task_class = getattr(importlib.import_module(module), cls)
    return task_class(art, open_runners(art, device))


def parity(
    artifact: str | os.PathLike[str], against: Any, device: str = "cpu", samples: int | None = None, **source_kwargs: Any
) -> dict[str, Any]:
    """Compare an artifact with its PyTorch source on the same inputs; returns the report.

    The report has per-output max/mean abs diff and cosine similarity, the task agreement
    (top-1, greedy tokens, transcript ids) and `passed` against the precision's tolerances.
    """
    from edgekit.converters.pipeline import reference_source

    model = load(artifact, device=device)
    _, plan = reference_source(against, model.artifact, **source_kwargs)
    return plan.check_parity(plan, model, model.manifest.produced_precision, samples)
