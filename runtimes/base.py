"""The one small interface every backend implements.

`Runner.run` validates the feeds against the graph's declared inputs (names, dtype, rank, fixed
dims) and raises an `edgekit.InputError` naming the problem; `_run_impl` does the work and may
assume valid feeds. A runner is safe to call from several threads at once unless its class says
otherwise.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.contract import GraphSpec, TensorSpec


class Runner(abc.ABC):
    """Runs one graph. `name` is what `model.device` reports, e.g. "onnxruntime-cpu".

    `kv_layout` is how a decoder graph takes its cache: "slots" (the portable graphs: the cache is
    an input and the new keys/values an output, written into their slot by the step loop) or
    "shared" (a backend's stand-in that writes the new keys/values into the cache buffer itself).
    """

    name: str = "abstract"
    kv_layout: str = "slots"

    def __init__(self, graph: GraphSpec) -> None:
        self.graph = graph
        self.inputs: list[TensorSpec] = list(graph.inputs)
        self.outputs: list[TensorSpec] = list(graph.outputs)

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

    def tokens_per_call(self, past: int) -> int | None:
        """The most new tokens (a decoder graph's sequence dim) one call takes after a cache of `past`
        slots; None: any number (onnxruntime takes any shape). A TensorRT engine's profiles bound it."""
        return None

    def stepper(self, spec: StepSpec) -> Stepper:
        """A fixed-shape step loop over this graph whose caches stay where the backend computes.

        Validates the spec once (feeds against the graph, write targets against its outputs);
        the steps themselves are not validated again, which is the point: a decode step is a few
        hundred microseconds on a GPU and must not pay for checks or copies of the cache.
        """
        validate_feeds(self.inputs, {**spec.inputs, **spec.caches})
        outputs = {o.name for o in self.outputs}
        bad = [f"{o} -> {c}" for o, c in {**spec.writes, **spec.shared, **spec.replaces}.items()
               if o not in outputs or c not in spec.caches]
        bad += [n for n in spec.outputs if n not in outputs]
        if bad:
            raise InputError("the step spec names outputs or caches the graph does not have",
                             found=f"{bad}; outputs {sorted(outputs)}, caches {sorted(spec.caches)}")
        return self._stepper_impl(spec)

    def _stepper_impl(self, spec: StepSpec) -> Stepper:
        return HostStepper(self, spec)


@dataclass
class StepSpec:
    """What a step loop feeds, keeps and returns (a decoder's decode steps).

    - `inputs`: small host arrays the caller rewrites in place before each step (token, position,
      mask); sent to the backend every step.
    - `caches`: starting contents (the prompt's keys/values), (batch, heads, slots, dim); sent
      once, then kept by the backend: device memory on a GPU, never copied back (the host
      arrays then keep the prompt's contents only). On the CPU they are the cache itself.
    - `writes`: output name -> cache name. Each step's output (batch, heads, 1, dim) is written
      into that cache at the step's slot (axis 2), on the backend's side. A cache no output
      writes is a resident input (an encoder's cross-attention keys/values and its attention
      mask): sent once, reused. Every cache has the batch on axis 0 (`Stepper.reorder`).
    - `outputs`: preallocated host arrays that each step fills (the logits).
    - `shared`: output name -> cache name, for graphs that write the new keys/values into the cache
      buffer themselves (kv_layout "shared"): the output is bound to the cache, nothing is copied.
    - `replaces`: output name -> cache name: the output is the cache's next contents, same shape
      (recurrent states: conv windows, SSM states, LSTM h/c). The graph reads the cache while it
      computes the output, so they are two buffers; the output is copied over the cache after each
      run, on the backend's side.
    """

    inputs: dict[str, np.ndarray]
    caches: dict[str, np.ndarray]
    writes: dict[str, str]
    outputs: dict[str, np.ndarray]
    shared: dict[str, str] = field(default_factory=dict)
    replaces: dict[str, str] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        """Slots of the written caches (caches without writes, e.g. cross-attention, do not count)."""
        written = [self.caches[c].shape[2] for c in [*self.writes.values(), *self.shared.values()]
                   if c in self.caches]
        return min(written) if written else 0


class Stepper(abc.ABC):
    """One step loop's buffers. `step(slot)` runs the graph once and writes the new cache slot."""

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec

    def step(self, slot: int) -> None:
        """`slot`: where this step's tokens go in the slot caches (unused by a graph without any)."""
        if (self.spec.writes or self.spec.shared) and not 0 <= slot < self.spec.slots:
            raise InputError(f"cache slot {slot} is outside the cache", found=f"{self.spec.slots} slots")
        self._step_impl(slot)

    def reorder(self, rows: np.ndarray, caches: Sequence[str] | None = None) -> None:
        """Keep batch rows `rows` of the caches (all, or those named), in that order, possibly
        repeated: row i becomes what row rows[i] was. Beam search calls it after every step.

        Done where the caches live (device-side copies on a GPU): nothing of a cache crosses to
        the host. The batch size stays; the host inputs (token, mask, position) are the caller's.
        """
        names = list(self.spec.caches) if caches is None else list(caches)
        unknown = [n for n in names if n not in self.spec.caches]
        batch = next(iter(self.spec.caches.values())).shape[0] if self.spec.caches else 0
        r = np.asarray(rows)
        if unknown or r.shape != (batch,) or not np.issubdtype(r.dtype, np.integer) or \
                (batch and (r.min() < 0 or r.max() >= batch)):
            raise InputError(f"a cache reorder takes {batch} row indices in [0, {batch}) and known caches",
                             found=f"rows of shape {list(r.shape)} ({r.dtype}), unknown caches {unknown}")
        if names and not np.array_equal(r, np.arange(batch)):
            self._reorder_impl(r.astype(np.int64), names)

    @abc.abstractmethod
    def _step_impl(self, slot: int) -> None:
        """Send `inputs`, run, write each `writes` output into its cache at `slot`, copy each
        `replaces` output over its cache, fill `outputs`."""

    def run(self, feeds: Mapping[str, np.ndarray], slot: int = 0) -> dict[str, np.ndarray]:
        """One call with other inputs than a step's (a prompt) over the resident caches.

        `feeds` give every small input (other shapes allowed) and may stand in for caches (a slot
        graph's prompt runs on empty pasts); the others are the resident caches. Each `writes`
        output (batch, heads, n, dim) fills its cache's slots [slot, slot + n); `shared` outputs are
        written by the graph itself; `replaces` outputs overwrite their caches. The spec's `outputs` come back as new arrays of this call's
        shapes. This is the prefill: the prompt's keys/values go straight into the resident cache
        (on a GPU: never down to the host and back up).
        """
        missing = sorted(set(self.spec.inputs) - set(feeds))
        unknown = sorted(set(feeds) - set(self.spec.inputs) - set(self.spec.caches))
        if missing or unknown:
            raise InputError("a stepper run takes the step's small inputs (and may replace caches)",
                             found=f"missing {missing}, unexpected {unknown}")
        if not 0 <= slot <= self.spec.slots:
            raise InputError(f"cache slot {slot} is outside the cache", found=f"{self.spec.slots} slots")
        return self._run_impl({k: np.ascontiguousarray(v) for k, v in feeds.items()}, slot)

    @abc.abstractmethod
    def _run_impl(self, feeds: dict[str, np.ndarray], slot: int) -> dict[str, np.ndarray]:
        """Run once on `feeds` over the other caches, write outputs' slots from `slot`, return outputs."""

    @abc.abstractmethod
    def _reorder_impl(self, rows: np.ndarray, caches: list[str]) -> None:
        """Gather the batch rows of the named caches in place, on the backend's side."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the loop holds (device buffers, a CUDA graph). Safe to call twice."""

    def __enter__(self) -> Stepper:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class HostStepper(Stepper):
    """Any runner, through `run`: the caches are the spec's own host arrays, updated in place.

    What backends without device buffers use (the PyTorch reference), and what `bench --against`
    replays, since every step here is a visible `run` call with all its feeds.
    """

    def __init__(self, runner: Runner, spec: StepSpec) -> None:
        super().__init__(spec)
        self.runner = runner

    def _step_impl(self, slot: int) -> None:
        s = self.spec
        out = self.runner.run({**s.inputs, **s.caches})
        for name, cache in s.writes.items():
            s.caches[cache][:, :, slot] = out[name][:, :, 0]
        for name, host in s.outputs.items():
            host[...] = out[name]
        for name, cache in {**s.shared, **s.replaces}.items():
            s.caches[cache][...] = out[name]

    def _run_impl(self, feeds: dict[str, np.ndarray], slot: int) -> dict[str, np.ndarray]:
        s = self.spec
        out = self.runner.run({**s.caches, **feeds})
        for name, cache in s.writes.items():
            s.caches[cache][:, :, slot : slot + out[name].shape[2]] = out[name]
        for name, cache in {**s.shared, **s.replaces}.items():
            s.caches[cache][...] = out[name]
        return {name: out[name] for name in s.outputs}

    def _reorder_impl(self, rows: np.ndarray, caches: list[str]) -> None:
        for name in caches:
            cache = self.spec.caches[name]
            cache[...] = cache[rows]  # the fancy index copies first: overlapping rows are safe


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
