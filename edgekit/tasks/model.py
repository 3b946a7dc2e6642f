"""The base of every loaded model: the artifact, its typed contract, its runners, the raw forward call."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.contract import Section
from edgekit.errors import UnsupportedError
from edgekit.manifest import Manifest
from edgekit.runtimes.base import Runner


class Model:
    """A loaded artifact. Subclasses add the task call (`classify`, `generate`, `recognize`)."""

    def __init__(self, artifact: Artifact, runners: dict[str, Runner]) -> None:
        self.artifact = artifact
        self.runners = runners

    @property
    def manifest(self) -> Manifest:
        return self.artifact.manifest

    @property
    def contract(self) -> Section:
        """The artifact's typed contract section (edgekit/contract/<task>.py)."""
        return self.artifact.manifest.contract

    @property
    def device(self) -> str:
        """The backend actually used, e.g. "onnxruntime-cpu"."""
        return next(iter(self.runners.values())).name

    def __call__(self, graph: str = "model", **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw forward of one graph: numpy arrays in and out, names as in the ONNX graph."""
        if graph not in self.runners:
            raise UnsupportedError(f"this artifact has no graph '{graph}'", found=f"graphs {sorted(self.runners)}")
        return self.runners[graph].run(inputs)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the class does not have: a task method of another task gets an
        # edgekit error naming this artifact's task, not a bare AttributeError.
        from edgekit.tasks import TASKS

        art = self.__dict__.get("artifact")
        if name in TASKS and art is not None:
            task = art.manifest.task
            raise UnsupportedError(f"this artifact is a {task} model: it has no .{name}()",
                                   found=f"task '{task}' in '{art.path}'",
                                   fix=f"call .{task}(...), or convert a model for {name}")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

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
