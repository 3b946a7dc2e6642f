"""onnxruntime runners: the CPU default everywhere, and CUDA where onnxruntime-gpu is installed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekit.errors import ArtifactError, BackendUnavailableError, InputError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.base import Runner

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OrtRunner(Runner):
    """One `InferenceSession`; onnxruntime's `run` is thread-safe, so one runner serves all threads.

    >>> # runner = OrtRunner(path, graph, device="cpu"); runner.run({"pixel_values": x})
    """

    def __init__(self, path: Path, graph: GraphSpec, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(graph)
        import onnxruntime as ort

        if device not in _PROVIDERS:
            raise BackendUnavailableError(f"onnxruntime has no device '{device}'", found=f"devices {list(_PROVIDERS)}")
        provider = _PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime's {provider} is not available",
                found=f"providers {ort.get_available_providers()}",
                fix="install onnxruntime-gpu (pip install 'edgekit[tensorrt]') on a machine with an NVIDIA GPU",
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("EDGEKIT_THREADS", "0"))
        opts.log_severity_level = 3  # warnings from the optimizer are ours to explain, not to print
        try:
            # Only the CPU provider, never a silent second choice: the user asked for this device.
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=[provider])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"onnxruntime cannot load '{path.name}': {e}", fix="convert the model again") from None
        self.name = f"onnxruntime-{device}"

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(outputs, feeds)
        except Exception as e:
            # Shapes the graph cannot take (e.g. an image far smaller than the network's receptive field).
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise InputError(f"the model cannot run on these inputs: {e}", found=f"shapes {shapes}") from None
        return dict(zip(outputs, values))

    def binding(self) -> OrtBinding:
        """Inputs and outputs bound once to caller-owned numpy buffers, then run many times.

        For loops that call one graph with the same shapes over and over (a decode step): the
        caller updates the bound arrays in place and calls `run()`; nothing is copied in or out
        and no array is allocated per call. Feeds are not validated here: validate them once with
        `validate_feeds` (or a first `run`) before binding.
        """
        return OrtBinding(self._session)


class OrtBinding:
    """An onnxruntime IOBinding over numpy arrays (CPU memory), which it keeps alive."""

    def __init__(self, session: object) -> None:
        self._session = session
        self._binding = session.io_binding()  # type: ignore[attr-defined]
        self._keep: dict[str, object] = {}

    def input(self, name: str, array: np.ndarray) -> None:
        import onnxruntime as ort

        # ortvalue_from_numpy shares the array's memory: later in-place writes are what runs.
        value = ort.OrtValue.ortvalue_from_numpy(array)
        self._binding.bind_ortvalue_input(name, value)
        self._keep[name] = (array, value)

    def output(self, name: str, array: np.ndarray) -> None:
        self._binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        self._keep["->" + name] = array

    def run(self) -> None:
        try:
            self._session.run_with_iobinding(self._binding)  # type: ignore[attr-defined]
        except Exception as e:
            raise InputError(f"the model cannot run on these inputs: {e}") from None
