"""MiniMax (transformers' MiniMaxForCausalLM): lightning (linear) attention layers beside full-attention
layers, through state_space.py's one-token step graph.

MiniMax keeps a cache class of its own, `MiniMaxCache` (modeling_minimax.py): a DynamicCache whose
attention layers hold keys/values and whose `linear_cache` list holds each lightning layer's state,
K^T V decayed to the last token, (batch, heads, head_dim, head_dim). Its one-token decode path is the
recurrence `state = exp(-slope) * state + k^T v`, `out = q state`; its prompt path (blocks of
`block_size` with per-position decays) is the same sum unrolled, and leading pads zeroed by the mask
(apply_mask_to_padding_states) leave a zero state at zero, so a zero state fed the prompt token by token
equals the prefill (state_space.py's stepwise prompt). The lightning state is an SSMState (replaced
each step), the attention layers' keys/values AttentionKV.

transformers 5.23's own cached generate differs from the model in two ways, both measured on a
seeded MiniMax (tests/coverage_models.py):
- beam search: MiniMaxCache.reorder_cache is DynamicCache's, which walks `layers` only, so the
  lightning states are never reordered (beams continue from other beams' states): the sweep compares
  beams with transformers' uncached beam search (coverage_models.UNCACHED_BEAMS);
- left padding where layer 0 is a lightning layer (MiniMax-Text-01's layout): decode steps size the
  attention mask from the first layer that is neither linear nor a DummyLayer, which in MiniMaxCache is
  layer 0's empty DynamicLayer (0 keys), so the mask covers one key that broadcasts over all of them:
  a left-padded row's first column, a pad, masks every key. The reference then answers each row alone
  (its uncached generate equals that).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DummyLayer, DynamicLayer

from edgekit.converters.sources import Source
from edgekit.converters.specs.causal_lm import HFCausalLM
from edgekit.converters.specs.state_space import (HFStateSpaceLM, LayerState, StateDecoder, StateReference,
                                                  _forward_kwargs)
from edgekit.errors import UnsupportedError


def probe_minimax(model: Any) -> tuple[LayerState, ...]:
    """Each layer's state from a two-token prefill on the MiniMaxCache the model makes itself: a lightning
    layer's (heads, head_dim, head_dim) state, an attention layer's (heads, key dim, value dim)."""
    ids = torch.zeros((1, 2), dtype=torch.long)
    with torch.no_grad():
        cache = model(**_forward_kwargs(model, ids, torch.ones_like(ids), torch.arange(2)[None], None)).past_key_values
    layers = []
    for i, kind in enumerate(model.config.layer_types):
        state = cache.linear_cache[i] if i < len(cache.linear_cache) else None
        if isinstance(state, torch.Tensor):
            layers.append(LayerState(i, ssm=((0, tuple(state.shape[1:])),)))
            continue
        keys, values = cache.layers[i].keys, cache.layers[i].values
        if kind != "full_attention" or not isinstance(keys, torch.Tensor):
            raise UnsupportedError(f"MiniMax layer {i} ('{kind}') keeps neither a lightning state nor keys/values",
                                   found=f"{type(cache.layers[i]).__name__} after a two-token prompt",
                                   fix="generate supports MiniMax layers of types 'linear_attention' and "
                                       "'full_attention'")
        layers.append(LayerState(i, kv=(int(keys.shape[1]), int(keys.shape[3]), int(values.shape[3]))))
    return tuple(layers)


class MiniMaxDecoder(StateDecoder):
    """StateDecoder over a MiniMaxCache: keys/values in its attention layers, lightning states in its list."""

    def new_cache(self) -> Any:
        from transformers.models.minimax.modeling_minimax import MiniMaxCache

        cache = MiniMaxCache()
        # A lightning layer's slot is a DummyLayer, not the empty DynamicLayer MiniMaxCache would append:
        # masks are sized from the first layer that is neither linear nor dummy (masking_utils.
        # find_first_full_attention_index), which must be an attention layer holding the keys.
        cache.layers = [DynamicLayer() if spec.kv else DummyLayer() for spec in self.layers]
        return cache

    def put(self, cache: Any, spec: LayerState, given: Iterator[torch.Tensor], order: torch.Tensor | None,
            mask: torch.Tensor | None) -> None:
        super().put(cache, dataclasses.replace(spec, ssm=()), given, order, mask)  # keys/values as every hybrid's
        for _ in spec.ssm:
            cache.set_linear_cache(spec.index, next(given))  # the decode path builds a new tensor, never in place

    def take(self, cache: Any, spec: LayerState) -> list[torch.Tensor]:
        if spec.kv:
            layer = cache.layers[spec.index]
            return [layer.keys[:, :, -1:], layer.values[:, :, -1:]]  # this call's one token
        return [cache.linear_cache[spec.index]]


class HFMiniMaxLM(HFStateSpaceLM):
    """MiniMax through the state-space step graph, over its own cache class."""

    probe = staticmethod(probe_minimax)
    decoder = MiniMaxDecoder

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return HFCausalLM.matches(src, task) and src.config.get("model_type") == "minimax"

    def make_reference(self) -> StateReference:
        return MiniMaxReference(self.model, self.graph)


class MiniMaxReference(StateReference):
    """transformers' generate; each row alone for a left-padded batch where layer 0 is a lightning layer
    (see the module doc: transformers' decode steps then mask every key of a padded row)."""

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        if mask.all() or self.model.config.layer_types[0] == "full_attention":
            return super().greedy(ids, mask, new)
        return self.greedy_alone(ids, mask, new)
