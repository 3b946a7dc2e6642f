"""The one small interface every backend implements.

`Runner.run` validates the feeds against the graph's declared inputs (names, dtype, rank, fixed
dims) and raises an `edgekit.InputError` naming the problem; `_run_impl` does the work and may
assume valid feeds. A runner is safe to call from several threads at once unless its class says
otherwise.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import numpy as np

from edgekit.errors import InputError
from edgekit.manifest import GraphSpec, TensorSpec


class Runner(abc.ABC):
    """Runs one graph. `name` is what `model.device` reports, e.g. "onnxruntime-cpu"."""

    name: str = "abstract"

    def __init__(self, graph: GraphSpec) -> None:
        self.graph = graph
        self.inputs: list[TensorSpec] = graph.inputs
        self.outputs: list[TensorSpec] = graph.outputs

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        checked = validate_feeds(self.inputs, feeds)
        names = list(outputs) if outputs is not None else [o.name for o in self.outputs]
        known = {o.name for o in self.outputs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown output names {unknown}", found=f"outputs {sorted(known)}")
        return self._run_impl(checked, names)

    @abc.abstractmethod
    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run the graph on already-validated feeds."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free backend resources (device buffers, sessions). Safe to call twice."""


def validate_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Check names, dtype, rank and fixed dims; return contiguous numpy arrays."""
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        raise InputError(
            "the inputs do not match the model's graph",
            found=f"missing {missing}, unexpected {extra}; the graph takes {list(expected)}",
            fix="pass exactly the graph's input names (see `edgekit info`)",
        )
    out: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[str, int]] = {}
    for name, spec in expected.items():
        value = feeds[name]
        if not isinstance(value, np.ndarray):
            raise InputError(
                f"input '{name}' must be a numpy array",
                found=type(value).__name__,
                fix=f"pass np.asarray(x, dtype=np.{spec.dtype})",
            )
        if value.dtype != np.dtype(spec.dtype):
            raise InputError(
                f"input '{name}' must be {spec.dtype}",
                found=str(value.dtype),
                fix=f"convert it with .astype(np.{spec.dtype})",
            )
        if value.ndim != len(spec.shape):
            raise InputError(
                f"input '{name}' must have rank {len(spec.shape)} (shape {spec.shape})",
                found=f"rank {value.ndim}, shape {list(value.shape)}",
            )
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"input '{name}' must have size {want} on axis {axis} (shape {spec.shape})",
                    found=f"shape {list(value.shape)}",
                )
            if want == "batch" and got == 0:
                raise InputError(f"input '{name}' is an empty batch", found=f"shape {list(value.shape)}")
            if isinstance(want, str):
                # The same named dim must agree across inputs (e.g. batch of ids and mask).
                if want in sizes and sizes[want][1] != got:
                    other, size = sizes[want]
                    raise InputError(
                        f"dimension '{want}' must agree across inputs",
                        found=f"{size} in '{other}' but {got} in '{name}'",
                    )
                sizes.setdefault(want, (name, got))
        out[name] = np.ascontiguousarray(value)
    return out
