"""The state contract's base classes: `StateTensor`, `StateEntry` and the `DecoderState` that lists them."""
from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import ClassVar, Literal

from edgekit.contract.base import BATCH, FLOAT, INT64, PAST, GraphNeeds, Need

Update = Literal["slots", "append", "replace"]
SLOTS: Update = "slots"
APPEND: Update = "append"
REPLACE: Update = "replace"
SLOT_AXIS = 2  # where "slots" and "append" tensors hold their tokens


@dataclass(frozen=True)
class StateTensor:
    """One tensor of an entry: the graph input it is read from, the output that updates it, its dims
    (BATCH first; PAST on axis 2 for tokens kept per slot; ints for fixed sizes)."""

    input: str
    output: str
    dims: tuple[int | str, ...]
    update: Update

    def shape(self, batch: int, slots: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else slots if d == PAST else int(d) for d in self.dims)

    def initial_shape(self, batch: int) -> tuple[int, ...]:
        """What the first call (the prompt) is fed: no past tokens, or a zero state."""
        return self.shape(batch, 0)


class StateEntry(abc.ABC):
    """One kind of state, for one layer or a group of layers. Subclasses are frozen dataclasses with a
    `tag` (the manifest's "type") and define `tensors`; the codec finds them through `kinds()`."""

    tag: ClassVar[str]

    @classmethod
    def members(cls) -> tuple[type[StateEntry], ...]:
        """The kinds a field of this type may hold (the codec decodes one by its "type")."""
        return kinds()

    @abc.abstractmethod
    def tensors(self) -> tuple[StateTensor, ...]:
        """The entry's tensors, inputs and outputs named as the graph names them."""

    def _check_sizes(self, *sizes: int) -> None:
        if min(sizes, default=1) < 1:
            raise ValueError(f"state sizes must be positive, found {self}")


def kinds() -> tuple[type[StateEntry], ...]:
    """Every StateEntry subclass: those of this package's modules (imported once) and any defined elsewhere."""
    _import_kinds()
    return _subclasses(StateEntry)


@cache
def _import_kinds() -> None:
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")


def _subclasses(cls: type) -> tuple[type[StateEntry], ...]:
    out: list[type[StateEntry]] = []
    for sub in cls.__subclasses__():
        if dataclasses.is_dataclass(sub) and "tag" in vars(sub):
            out.append(sub)
        out += _subclasses(sub)
    return tuple(out)


STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")
# 1 in every row while a prompt is fed, 0 for generated tokens (see DecoderState). Not in STEP_INPUTS:
# the key/value decoders' graphs take those three by that name (specs/causal_lm.py, seq2seq.py, ...).
PROMPT_FLAG = "prompt_flag"
DECODER_INPUTS = (*STEP_INPUTS, PROMPT_FLAG)


@dataclass(frozen=True)
class DecoderState:
    """A decoder graph's state: its entries, the small inputs of every call, how a prompt is fed.

    `inputs`: what each call takes beside the state: ids, and for models with attention the mask
    over past slots + this call's tokens and the tokens' positions (all int64, (batch, n)); and
    `prompt_flag` (int64 (batch, 1)), for models whose prompt runs a different program than their
    steps: 1 in every call that feeds prompt tokens (a whole prompt's one call, or each token of a
    stepwise prompt), 0 in every call that feeds a generated token. Only graphs that declare it take it.
    `prompt`: "whole" (one call takes the prompt; the graph's sequence dim is free) or "stepwise"
    (the graph takes one token per call, so the prompt is fed token by token: recurrent models,
    whose prompt path cannot be one graph for all lengths).
    """

    tag: ClassVar[str] = "state"
    entries: tuple[StateEntry, ...]
    inputs: tuple[str, ...] = STEP_INPUTS
    prompt: Literal["whole", "stepwise"] = "whole"

    def __post_init__(self) -> None:
        if "input_ids" not in self.inputs or not set(self.inputs) <= set(DECODER_INPUTS):
            raise ValueError(f"a decoder's inputs are input_ids and any of {DECODER_INPUTS[1:]}, found {self.inputs}")
        names = [n for t in self.tensors() for n in (t.input, t.output)]
        if len(set(names)) != len(names):
            raise ValueError("state tensor names must be distinct")
        if any(t.update in (SLOTS, APPEND) and "attention_mask" not in self.inputs for t in self.tensors()):
            raise ValueError("keys/values kept per slot need the attention_mask input")
        if len({t.update for t in self.tensors()} & {SLOTS, APPEND}) > 1:
            raise ValueError("one decoder keeps its tokens either in slots or compact, not both")
        if self.prompt == "stepwise" and self.compact:
            raise ValueError("a stepwise prompt feeds the preallocated slots; a compact past cannot take it")

    def tensors(self) -> tuple[StateTensor, ...]:
        return tuple(t for e in self.entries for t in e.tensors())

    def past(self) -> list[str]:
        return [t.input for t in self.tensors()]

    def present(self) -> list[str]:
        return [t.output for t in self.tensors()]

    @property
    def compact(self) -> bool:
        """Whether the past must hold exactly the tokens so far (see "append")."""
        return any(t.update == APPEND for t in self.tensors())

    @property
    def slotted(self) -> bool:
        """Whether any tensor keeps tokens per slot (the call's mask then spans past slots)."""
        return any(t.update in (SLOTS, APPEND) for t in self.tensors())

    def needs(self, resident: list[str] | None = None, extra: tuple[Need, ...] = ()) -> GraphNeeds:
        """What the decoder graph must take and give (checked at load); `resident`: inputs fed
        unchanged every call (an encoder's keys/values), rank 4."""
        ins = [Need(n, INT64, 2) for n in self.inputs]
        ins += [Need(t.input, FLOAT, len(t.dims)) for t in self.tensors()]
        ins += [Need(n, FLOAT, 4) for n in resident or []]
        outs = [Need("logits", FLOAT, 3)] + [Need(t.output, FLOAT, len(t.dims)) for t in self.tensors()]
        return GraphNeeds(tuple(ins) + extra, tuple(outs))

    def dims(self) -> set[str]:
        return {d for t in self.tensors() for d in t.dims if isinstance(d, str)} | {BATCH}
