"""edgekit: PyTorch models to NVIDIA GPUs, Jetson and the CPU, with parity you can check.

    edgekit.convert(model, "models/cnn", example_inputs=x, labels=names, precision="int8", calibration=images)
    edgekit.load("models/cnn").classify("cat.png", top_k=3)

`import edgekit` loads the error types only; torch is imported by `convert` alone, and
onnxruntime/TensorRT when a model is loaded. The runnable examples are in `edgekit.api`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.errors import (
    ArtifactError,
    ArtifactVersionError,
    BackendUnavailableError,
    ChecksumError,
    ConfigError,
    EdgekitError,
    EngineError,
    ExportError,
    InputError,
    MemoryFitError,
    OutputExistsError,
    ParityError,
    SourceError,
    UnsupportedError,
)

__version__ = "0.1.0"

__all__ = [
    "convert", "load", "parity", "serve", "Prediction", "Transcript", "Segment", "Word", "VadOptions",
    "LongForm", "TensorRTOptions",
    "__version__",
    "EdgekitError", "InputError", "ConfigError", "SourceError", "ExportError", "UnsupportedError",
    "ArtifactError", "ChecksumError", "ArtifactVersionError", "OutputExistsError",
    "BackendUnavailableError", "EngineError", "ParityError", "MemoryFitError",
]

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.api import convert, load, parity
    from edgekit.preprocess.vad import VadOptions
    from edgekit.tasks.whisper_longform import LongForm
    from edgekit.results import Prediction, Segment, Transcript, Word
    from edgekit.serving import serve
    from edgekit.runtimes.options import TensorRTOptions

_LAZY = {
    "convert": "edgekit.api", "load": "edgekit.api", "parity": "edgekit.api",
    "Prediction": "edgekit.results", "Transcript": "edgekit.results",
    "Segment": "edgekit.results", "Word": "edgekit.results",
    "VadOptions": "edgekit.preprocess.vad",
    "LongForm": "edgekit.tasks.whisper_longform",
    "TensorRTOptions": "edgekit.runtimes.options",
    "serve": "edgekit.serving",  # Triton: needs the [serve] extra, imported only when called
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import edgekit` stays light on a device (no numpy/onnxruntime until used).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")
