"""Attention keys/values of one layer: their own head count and key and value head sizes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import BATCH, PAST
from edgekit.contract.state.base import APPEND, SLOTS, StateEntry, StateTensor


@dataclass(frozen=True)
class AttentionKV(StateEntry):
    """Layer `layer`'s keys (batch, heads, past, key_dim) and values (batch, heads, past, value_dim).

    Key and value sizes differ under latent attention as transformers caches it (DeepSeek-V2/V3,
    MiniCPM3...: the key head holds the rotary part too); head counts and sizes differ per layer in
    models that mix sliding and global layers (Gemma 4, MiMo-V2-Flash). `window`: a sliding layer's
    span, for the record (the runtime limits the context below it, GenerateSection.max_context).
    `compact`: the past holds exactly the tokens so far ("append"; positions from the cache
    length, ALiBi by key index), else preallocated slots with unfilled ones masked ("slots").
    """

    tag: ClassVar[str] = "attention_kv"
    layer: int
    heads: int
    key_dim: int
    value_dim: int
    window: int | None = None
    compact: bool = False

    def __post_init__(self) -> None:
        self._check_sizes(self.heads, self.key_dim, self.value_dim, self.layer + 1)

    def tensors(self) -> tuple[StateTensor, ...]:
        i, update = self.layer, APPEND if self.compact else SLOTS
        return (StateTensor(f"past_key_values.{i}.key", f"present.{i}.key", (BATCH, self.heads, PAST, self.key_dim),
                            update),
                StateTensor(f"past_key_values.{i}.value", f"present.{i}.value",
                            (BATCH, self.heads, PAST, self.value_dim), update))


@dataclass(frozen=True)
class IndexerKeys(StateEntry):
    """A sparse-attention indexer's keys of layer `layer` (DeepSeek-V3.2, GLM-MoE-DSA: one head of
    size `dim` per token, scored to pick the keys each query attends), kept per slot like keys:
    (batch, 1, past, dim)."""

    tag: ClassVar[str] = "indexer_keys"
    layer: int
    dim: int
    compact: bool = False  # as the layer's keys/values (AttentionKV.compact)

    def __post_init__(self) -> None:
        self._check_sizes(self.dim, self.layer + 1)

    def tensors(self) -> tuple[StateTensor, ...]:
        return (StateTensor(f"indexer_keys.{self.layer}", f"present_indexer_keys.{self.layer}",
                            (BATCH, 1, PAST, self.dim), APPEND if self.compact else SLOTS),)
