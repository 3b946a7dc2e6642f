"""The base of every loaded model: the artifact, its runners, and the raw forward call."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.manifest import Manifest
from edgekit.runtimes.base import Runner


class Model:
    """A loaded artifact. Subclasses add the task call (`classify`, `generate`, `recognize`)."""

    task: str = ""

    def __init__(self, artifact: Artifact, runners: dict[str, Runner]) -> None:
        self.artifact = artifact
        self.runners = runners

    @property
    def manifest(self) -> Manifest:
        return self.artifact.manifest

    @property
    def device(self) -> str:
        """The backend actually used, e.g. "onnxruntime-cpu"."""
        return next(iter(self.runners.values())).name

    def __call__(self, graph: str = "model", **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw forward of one graph: numpy arrays in and out, names as in the ONNX graph."""
        return self.runners[graph].run(inputs)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"<{type(self).__name__} {m.family} {m.produced_precision} on {self.device} from '{self.artifact.path}'>"
