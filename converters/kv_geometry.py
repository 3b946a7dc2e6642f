"""Keys/values of one size in every layer, as the converters that build such graphs see them.

The artifact holds a `DecoderState` (edgekit/contract/state); this is the exporter's shorthand for
the uniform case (encoder-decoders, Whisper, plain KV modules, onnxruntime's fused-attention
stand-in, which needs one head size in every layer).
"""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.contract.generate import cross_names, kv_state
from edgekit.contract.state import AttentionKV, DecoderState


@dataclass(frozen=True)
class KVGeometry:
    layers: int
    heads: int
    head_dim: int
    compact: bool = False

    def state(self) -> DecoderState:
        return kv_state(self.layers, self.heads, self.head_dim, self.compact)

    def past(self) -> list[str]:
        return self.state().past()

    def present(self) -> list[str]:
        return self.state().present()

    def cross(self) -> list[str]:
        return cross_names(self.state())

    @classmethod
    def of(cls, state: DecoderState) -> KVGeometry | None:
        """The uniform geometry of `state`, or None where its layers differ (or hold other kinds)."""
        entries = state.entries
        if not entries or not all(isinstance(e, AttentionKV) for e in entries):
            return None
        shapes = {(e.heads, e.key_dim, e.value_dim, e.compact) for e in entries if isinstance(e, AttentionKV)}
        if len(shapes) != 1:
            return None
        heads, k, v, compact = shapes.pop()
        ordered = [e.layer for e in entries if isinstance(e, AttentionKV)] == list(range(len(entries)))
        return cls(len(entries), heads, k, compact) if k == v and ordered else None
