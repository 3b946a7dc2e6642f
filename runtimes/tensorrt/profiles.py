"""TensorRT optimization profiles from the artifact's contract (pure Python, no tensorrt).

The contract section says how the runtime calls each graph: per phase ("all", or "prompt" and
"decode" for a cached decoder), the (min, typical, max) size of every named dim. A profile is that,
with the user's overrides (`--max-batch`, `--shape DIM=MIN,OPT,MAX`) applied. A dim the graph has
and the contract does not range is an error naming the `--shape` fix, never a guess.
"""
from __future__ import annotations

from edgekit.contract import GraphSpec, Section
from edgekit.contract.base import BATCH
from edgekit.errors import ConfigError, EngineError

Range = tuple[int, int, int]
Profile = tuple[str, dict[str, Range]]


def choose_profiles(contract: Section, name: str, graph: GraphSpec, max_batch: int | None = None,
                    shapes: dict[str, Range] | None = None) -> list[Profile]:
    """One profile per phase of graph `name`; [] for a fully static graph (TensorRT needs none).

    `max_batch` caps the batch range; `shapes` gives a dim's (min, opt, max) outright.
    """
    dims = graph.dims()
    if not dims:
        return []
    return [(phase, {d: _range(d, ranges, max_batch, shapes or {}) for d in sorted(dims)})
            for phase, ranges in contract.call_shapes(name)]


def phase_names(contract: Section, name: str, graph: GraphSpec) -> list[str]:
    """The names of the profiles `choose_profiles` makes for graph `name` (overrides change ranges only)."""
    return [phase for phase, _ in contract.call_shapes(name)] if graph.dims() else []


def _range(name: str, ranges: dict[str, Range], max_batch: int | None, shapes: dict[str, Range]) -> Range:
    if name in shapes:
        return tuple(shapes[name])  # type: ignore[return-value]
    if "+" in name:  # a derived dim such as "past_sequence + sequence" (an attention mask's length)
        parts = [_range(p.strip(), ranges, max_batch, shapes) for p in name.split("+")]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))
    if name == BATCH and max_batch is not None and BATCH in ranges:
        lo, opt, _ = ranges[BATCH]
        return (min(lo, max_batch), min(opt, max_batch), max_batch)
    if name not in ranges:
        raise EngineError(
            f"no TensorRT profile range for the dynamic dimension '{name}'",
            found=f"the contract ranges {sorted(ranges)}",
            fix=f"give its range: `edgekit build ... --shape {name}=MIN,OPT,MAX` or BuildOptions(shapes=...)",
        )
    return ranges[name]


def parse_shape(text: str) -> tuple[str, Range]:
    """"past_sequence=1,512,2047" -> ("past_sequence", (1, 512, 2047)); checks min <= opt <= max."""
    name, _, values = text.partition("=")
    try:
        lo, opt, hi = (int(v) for v in values.split(","))
    except ValueError:
        lo = opt = hi = -1
    if not name or not 0 <= lo <= opt <= hi:
        raise ConfigError(f"bad shape range '{text}'",
                          fix="write DIM=MIN,OPT,MAX with 0 <= MIN <= OPT <= MAX, e.g. batch=1,8,32")
    return name.strip(), (lo, opt, hi)


def input_shapes(graph: GraphSpec, dims: dict[str, Range]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Per dynamic input: its (min, opt, max) shapes under one profile."""
    out = {}
    for t in graph.inputs:
        if all(isinstance(d, int) for d in t.shape):
            continue
        out[t.name] = tuple([d if isinstance(d, int) else dims[d][i] for d in t.shape] for i in range(3))
    return out  # type: ignore[return-value]
