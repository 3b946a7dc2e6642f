"""What every task's contract shares: graph descriptions, dimension names, and the Section base.

A `Section` is one task's part of `edgekit.json`: the graphs' input/output names and what the
runtime feeds them, the pre- and post-processing, the cache layout. The converter builds it, the
manifest serializes it (`codec.py`), and at load `check_graphs` holds the ONNX graphs to it: every
tensor the task needs exists with its rank and dtype, and the graph takes nothing the task cannot
feed. The TensorRT profile builder reads the ranges of the named dims from `call_shapes`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# Named dynamic dims, shared by the exporters (torch.export.Dim names), the manifest and TensorRT.
BATCH = "batch"
SEQUENCE = "sequence"  # tokens fed in this call
PAST = "past_sequence"  # cache slots before them
TOTAL = "total_sequence"  # the attention mask: past slots + this call's tokens
SOURCE = "source_sequence"  # an encoder-decoder's input tokens
SAMPLES = "samples"  # audio samples
FRAMES = "frames"  # feature frames

DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
          "int64", "uint64", "bool")
FLOAT = ("float32", "float16")
INT64 = ("int64",)

Range = tuple[int, int, int]  # (min, opt, max)
Phase = tuple[str, dict[str, Range]]  # ("all" | "prompt" | "verify" | "decode", {dim: range})


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name, and shape with named dynamic dims."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES and not self.dtype.startswith("onnx-"):
            raise ValueError(f"tensor '{self.name:.40}' has unknown dtype '{self.dtype:.40}'")
        if any(isinstance(d, int) and d < 0 for d in self.shape):
            raise ValueError(f"tensor '{self.name:.40}' has a negative size in {list(self.shape)}")


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the artifact, as read from the file after export and precision."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dims(self) -> set[str]:
        return {d for t in self.inputs for d in t.shape if isinstance(d, str)}


@dataclass(frozen=True)
class Need:
    """A tensor the task reads or feeds: its name, the dtypes it may have, and its rank."""

    name: str
    dtypes: tuple[str, ...]
    rank: int | None  # None: any rank (a plain tensor model's input)


@dataclass(frozen=True)
class GraphNeeds:
    """What the task does with one graph: the inputs it feeds (all of them) and the outputs it reads."""

    inputs: tuple[Need, ...]
    outputs: tuple[Need, ...]


class Section:
    """Base of the typed per-task sections (frozen dataclasses in contract/<task>.py).

    Class variables: `task` (the public task name), `tag` (which section of that task, the JSON
    "type"), `model` ("module:Class" of the runtime object serving it, imported on load) and
    `batch` (the batch sizes the task calls with: min, typical, max).
    """

    task: ClassVar[str]
    tag: ClassVar[str]
    model: ClassVar[str]
    batch: ClassVar[Range] = (1, 1, 4)

    def needs(self) -> dict[str, GraphNeeds]:
        """Graph name -> what the runtime feeds and reads."""
        raise NotImplementedError

    def call_shapes(self, graph: str) -> list[Phase]:
        """How the runtime calls `graph`: per phase, the (min, typical, max) size of each named dim."""
        raise NotImplementedError

    def runtime_needs(self, graph: str, kv_layout: str) -> GraphNeeds | None:
        """What a backend-specific stand-in for `graph` with this cache layout must take and give;
        None where the task has no such stand-in (see Manifest.runtime_graphs)."""
        return None


def check_graphs(section: Section, graphs: dict[str, GraphSpec]) -> list[str]:
    """Where the graphs disagree with the section; empty when the runtime can call them."""
    needs = section.needs()
    if set(needs) != set(graphs):
        return [f"the task needs graphs {sorted(needs)}, the manifest has {sorted(graphs)}"]
    return [p for name, need in needs.items() for p in check_graph(name, graphs[name], need)]


def check_graph(name: str, g: GraphSpec, need: GraphNeeds) -> list[str]:
    """Where one graph disagrees with what the task feeds and reads."""
    have_in = {t.name: t for t in g.inputs}
    have_out = {t.name: t for t in g.outputs}
    fed = {n.name for n in need.inputs}
    problems = [f"graph '{name}' takes input '{t}', which the task does not feed" for t in have_in if t not in fed]
    for side, wanted, have in (("input", need.inputs, have_in), ("output", need.outputs, have_out)):
        for n in wanted:
            t = have.get(n.name)
            if t is None:
                problems.append(f"graph '{name}' has no {side} '{n.name}'")
            elif t.dtype not in n.dtypes or n.rank not in (None, len(t.shape)):
                problems.append(f"graph '{name}' {side} '{n.name}' is {t.dtype} rank {len(t.shape)}, "
                                f"the task needs {'/'.join(n.dtypes)} rank {n.rank or 'any'}")
    return problems
