"""One error hierarchy for everything edgekit refuses.

Every message says three things: what was asked, what was found, and how to fix it. The CLI maps
`EdgekitError` to exit code 2 (usage or input error) and `ParityError` to exit code 1 (a check
that ran and failed).
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class of every error edgekit raises for a user's input, source or artifact."""

    exit_code: int = 2

    def __init__(self, what: str, *, found: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.found = found
        self.fix = fix
        parts = [what.rstrip(".") + "."]
        if found:
            parts.append(f"Found: {found.rstrip('.')}.")
        if fix:
            parts.append(f"Fix: {fix.rstrip('.')}.")
        super().__init__(" ".join(parts))


class InputError(EdgekitError):
    """A call got input it cannot use: wrong shape, dtype, rank, empty batch, unreadable file."""


class ConfigError(EdgekitError):
    """An option of convert/load/run is unknown or out of range (task, precision, device...)."""


class SourceError(EdgekitError):
    """The model source cannot be found, imported or understood."""


class ExportError(EdgekitError):
    """PyTorch -> ONNX export failed; the message names the unsupported operator or layer."""


class UnsupportedError(EdgekitError):
    """The combination asked for (family, task, precision, target) is not supported."""


class ArtifactError(EdgekitError):
    """An artifact folder is missing, incomplete, altered, or of an unknown format."""


class ChecksumError(ArtifactError):
    """A file of the artifact does not match the sha256 recorded in its manifest."""


class ArtifactVersionError(ArtifactError):
    """The manifest was written by a newer edgekit than this one."""


class OutputExistsError(EdgekitError):
    """The output folder exists and overwrite was not asked for."""


class BackendUnavailableError(EdgekitError):
    """The requested device/backend is not usable on this machine."""


class MemoryFitError(EdgekitError):
    """The model would not fit in the memory the device has free at the context and batch asked for."""


class EngineError(EdgekitError):
    """A TensorRT engine cannot be built, or does not match this GPU/TensorRT."""


class ParityError(EdgekitError):
    """The converted model does not answer like the PyTorch source within tolerance."""

    exit_code = 1
