"""Hidden-state memories: what a layer's keys/values are recomputed from each call (XLNet's `mems`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import BATCH, PAST
from edgekit.contract.state.base import APPEND, REPLACE, StateEntry, StateTensor


@dataclass(frozen=True)
class HiddenMemory(StateEntry):
    """Layer `layer`'s input hidden states of the tokens so far, (batch, 1, past, dim): Transformer-XL-style
    memories, which the layer projects to keys/values at every call. Kept compact ("append"): the
    model's relative positions count memory rows, so the past holds exactly the rows the graph returned."""

    tag: ClassVar[str] = "hidden_memory"
    layer: int
    dim: int

    def __post_init__(self) -> None:
        self._check_sizes(self.dim, self.layer + 1)

    def tensors(self) -> tuple[StateTensor, ...]:
        return (StateTensor(f"mems.{self.layer}", f"new_mems.{self.layer}", (BATCH, 1, PAST, self.dim), APPEND),)


@dataclass(frozen=True)
class TokenEmbedding(StateEntry):
    """The last fed token's input embedding, (batch, dim), replaced by every call: a model that
    recomputes the previous token beside the new one (XLNet's generate feeds the last two) needs its
    first-layer input, which is its word embedding; zeros before the prompt."""

    tag: ClassVar[str] = "token_embedding"
    dim: int

    def __post_init__(self) -> None:
        self._check_sizes(self.dim)

    def tensors(self) -> tuple[StateTensor, ...]:
        return (StateTensor("last_embedding", "last_embedding_out", (BATCH, self.dim), REPLACE),)
