"""The Triton Inference Server that the `nvidia-pytriton` wheel ships, found without importing it.

The wheel carries a real `tritonserver` (Triton 2.51), its Python backend and one Python-backend
stub per CPython minor version (3.8 to 3.13). Only these files are used: PyTriton's own Python
API is not imported (it pins numpy < 2 at import and binds functions, not model repositories).
"""
from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import BackendUnavailableError

_INSTALL = 'pip install "edgekit[serve]" (or: pip install --no-deps nvidia-pytriton to keep numpy 2 beside it)'


@dataclass(frozen=True)
class TritonBundle:
    """Paths into the installed nvidia-pytriton wheel."""

    root: Path  # .../pytriton/tritonserver
    version: str  # nvidia-pytriton's version, e.g. "0.7.0"

    @property
    def server(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    @property
    def caches(self) -> Path:
        return self.root / "caches"

    @property
    def libs(self) -> Path:
        """The wheel's bundled shared libraries (auditwheel's `nvidia_pytriton.libs`)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, python: tuple[int, int] | None = None) -> Path:
        """The Python-backend stub built for this (or the given) CPython minor version."""
        major, minor = python or sys.version_info[:2]
        return self.root / "python_backend_stubs" / f"{major}.{minor}" / "triton_python_backend_stub"


def find_bundle() -> TritonBundle:
    """The bundled Triton, checked to be runnable on this platform; BackendUnavailableError if not."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        raise BackendUnavailableError(
            "the bundled Triton Inference Server runs on Linux x86-64 and arm64 only",
            found=f"{sys.platform} {platform.machine()}",
            fix="run `edgekit export triton` here and serve the repository in NVIDIA's Triton container")
    spec = importlib.util.find_spec("pytriton")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("serving needs the Triton server from nvidia-pytriton, which is not installed",
                                      fix=_INSTALL)
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("nvidia-pytriton")
    except PackageNotFoundError:
        ver = "unknown"
    bundle = TritonBundle(root, ver)
    if not bundle.server.is_file():
        raise BackendUnavailableError("the nvidia-pytriton install has no tritonserver binary",
                                      found=f"nothing at {bundle.server}", fix=f"reinstall it: {_INSTALL}")
    if not bundle.stub().is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").glob("*"))
        raise BackendUnavailableError(
            f"Triton's Python backend has no stub for Python {sys.version_info[0]}.{sys.version_info[1]}",
            found=f"stubs for {', '.join(have) or 'no version'}", fix="run edgekit in a Python of one of those versions")
    return bundle
