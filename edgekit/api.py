"""The public functions: `convert`, `load`, `parity`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.artifact import Artifact, open_artifact
from edgekit.tasks import resolve
from edgekit.tasks.model import Model

if TYPE_CHECKING:
    from edgekit.memory import MemoryProbe
    from edgekit.parity_report import ParityReport
    from edgekit.runtimes.options import TensorRTOptions
    from edgekit.runtimes.base import Runner


def convert(source: Any, out: str | os.PathLike[str], **kwargs: Any) -> Artifact:
    """Convert a PyTorch model into an artifact folder; see `edgekit.converters.pipeline.convert`.

    >>> import tempfile, edgekit, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    >>> out = tempfile.mkdtemp() + "/tiny"
    >>> art = edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 2, 2), labels=["a", "b", "c"])
    >>> art.manifest.task, art.manifest.parity.passed
    ('classify', True)
    """
    import inspect

    from edgekit.converters.pipeline import convert as _convert
    from edgekit.errors import ConfigError

    known = list(inspect.signature(_convert).parameters)[2:]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"convert got unknown arguments {unknown}", found=f"arguments {known}")
    return _convert(source, Path(out), **kwargs)


def load(path: str | os.PathLike[str], device: str = "auto", verify: bool = True, portable: bool = False, *,
         max_context: int | None = None, batch: int = 1, memory: MemoryProbe | None = None,
         threads: int | None = None, tensorrt: TensorRTOptions | None = None) -> Model:
    """Load an artifact folder for inference on `device` ("auto" | "cpu" | "cuda" | "tensorrt").

    The manifest is checked (format, types, graphs against the contract) and every file's sha256
    before anything runs; the task object comes from the contract (`Classifier`, `Generator`, ...).
    onnxruntime runs the artifact's faster stand-in graphs where it has them (fused attention for
    decoders), unless `portable=True`: the standard ONNX graphs every backend reads.

    Before any session opens, the memory the model needs (edgekit/memory.py: weights, and for
    generate the cache and prompt logits of calls up to `max_context` tokens, default the model's
    own context length, of `batch` rows, beams included) is checked against what `memory` says is
    free (default: this machine's, `SystemMemory`); `MemoryFitError` when it does not fit. The check
    bounds nothing: generate still takes any length up to the model's context.

    `threads`: onnxruntime's CPU threads per session (default: all cores). `tensorrt`:
    `edgekit.TensorRTOptions(dla_core=, cuda_graphs=, context_wait_s=)` for the TensorRT runners.

    >>> import tempfile, edgekit, torch
    >>> out = tempfile.mkdtemp() + "/tiny"
    >>> _ = edgekit.convert(torch.nn.Linear(4, 2), out, example_inputs=torch.rand(1, 4), labels=["no", "yes"])
    >>> model = edgekit.load(out, device="cpu")
    >>> model.device, type(model).__name__
    ('onnxruntime-cpu', 'Classifier')
    """
    from edgekit.memory import SystemMemory, call_size, check_fits, estimate
    from edgekit.runtimes.select import open_runners, resolve_device

    from edgekit.runtimes.options import RunOptions, TensorRTOptions

    options = RunOptions(threads, tensorrt or TensorRTOptions())  # checked before any file is read
    art = open_artifact(path, verify=verify)
    context, rows = call_size(art, max_context, batch)
    check_fits(estimate(art, resolve_device(device), context, rows, portable), memory or SystemMemory())
    return open_model(art, open_runners(art, device, portable, options))


def open_model(art: Artifact, runners: dict[str, Runner]) -> Model:
    """The artifact's task object (`Classifier`, `Generator`, ...) over `runners`."""
    try:
        return resolve(art.manifest.contract.model)(art, runners)  # type: ignore[no-any-return]
    except BaseException:
        for r in runners.values():  # the runners may hold GPU memory: nothing will use them
            r.close()
        raise


def parity(
    artifact: str | os.PathLike[str], against: Any, device: str = "cpu", samples: int | None = None, **source_kwargs: Any
) -> ParityReport:
    """Compare an artifact with its PyTorch source on the same inputs; returns the report.

    The report (edgekit/parity_report.py) has the task's measures (top-1 and logit differences, greedy
    tokens, transcripts) and `passed` against the precision's tolerances; exit 1 from `edgekit parity` when not.
    """
    from edgekit.converters.pipeline import reference_spec

    model = load(artifact, device=device)
    spec = reference_spec(against, model.artifact, **source_kwargs)
    return spec.parity(model, model.manifest.produced_precision, samples=samples)
