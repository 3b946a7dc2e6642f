"""Recurrent Gemma (transformers' `RecurrentGemmaForCausalLM`, model_type "recurrent_gemma"): a one-token
step graph over the state its recurrent blocks keep in their modules.

transformers 5.23 keeps this model's state in two places (modeling_recurrent_gemma.py):
- the attention blocks (local attention: config.layer_types names them "sliding_attention") write
  keys/values into the DynamicCache the caller passes, a DynamicSlidingWindowLayer per layer;
- each recurrent block keeps `conv1d_state` (batch, lru_width, conv1d_width - 1) and its RG-LRU
  `rg_lru.recurrent_states` (batch, lru_width) as module attributes, replaced by every forward; the
  cache's layer for them (a LinearAttentionLayer) stays empty, and the forward returns no cache.
The step graph carries all of it: keys/values as AttentionKV slots, the two module states as a
ConvState and an SSMState of the layer, set on the modules from the graph's inputs before the
forward and read back after it (non-strict export traces those attribute writes), then restored.

The prompt is fed stepwise: the prefill path (nn.Conv1d over the prompt, a Python loop over its
tokens in `_rnn_scan`) is not one graph for all lengths, the decode path (one token) is. From a zero
state, token by token equals the prefill: the prefill zero-pads the convolution's window, and the
RG-LRU resets at position 0 (`reset = position_ids == 0`: no decay of the zero state, multiplier 1).

Two facts of transformers' generate decide the reference:
- a left-padded batch runs its pads through the convolution (RecurrentGemmaRecurrentBlock masks no
  position), so `linear_x`'s output for a pad enters the first real tokens' window: a row's answer
  depends on its padding wherever that output is not zero (a trained `linear_x.bias`). The runtime
  feeds each row's real tokens alone (edgekit/tasks/state_loop.py); the reference is transformers
  on each row alone, unpadded (HFReference.greedy_alone);
- its beam search reorders the cache (`DynamicCache.reorder_cache`) but not the module-held states,
  so a beam continues from another beam's recurrence. The runtime reorders every declared state;
  transformers' uncached beam search (each step reruns whole rows) is the same search done right.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions
from edgekit.converters.specs.causal_lm import Family, HFCausalLM, _tokenizer_json
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.converters.specs.state_slots import aligned, aligned_mask, choose_layout, right_aligned
from edgekit.converters.specs.state_space import (HFStateSpaceLM, LayerState, StateDecoder, RowsAloneReference,
                                                  dynamic_shapes, example)
from transformers.cache_utils import DynamicCache

from edgekit.contract.state import AttentionKV, ConvState, DecoderState, SSMState, StateEntry
from edgekit.errors import UnsupportedError

MODEL_TYPE = "recurrent_gemma"


def _recurrent_blocks(model: Any) -> dict[int, Any]:
    """Layer index -> the layer's recurrent block (those keeping `conv1d_state`)."""
    return {i: layer.temporal_block for i, layer in enumerate(model.model.layers)
            if hasattr(layer.temporal_block, "conv1d_state")}


@contextmanager
def module_state_kept(model: Any) -> Iterator[dict[int, Any]]:
    """The recurrent blocks, their states restored on exit: a probe or a traced step leaves the
    modules as it found them (a traced step would otherwise leave export-time tensors there)."""
    blocks = _recurrent_blocks(model)
    saved = {i: (b.conv1d_state, b.rg_lru.recurrent_states) for i, b in blocks.items()}
    try:
        yield blocks
    finally:
        for i, b in blocks.items():
            b.conv1d_state, b.rg_lru.recurrent_states = saved[i]


def probe_layers(model: Any) -> tuple[LayerState, ...]:
    """Every layer's state from one two-token prefill: attention layers' key/value shapes off the cache
    passed in, recurrent blocks' conv and RG-LRU state shapes off the modules."""
    ids = torch.zeros((1, 2), dtype=torch.long)
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), module_state_kept(model) as blocks:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(2)[None],
              past_key_values=cache, use_cache=True)
        layers = []
        for i, layer in enumerate(cache.layers):
            if i in blocks:
                conv, lru = blocks[i].conv1d_state, blocks[i].rg_lru.recurrent_states
                layers.append(LayerState(i, conv=((0, tuple(conv.shape[1:])),), ssm=((0, tuple(lru.shape[1:])),)))
                continue
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor) or not keys.numel():
                raise UnsupportedError(f"layer {i} of this '{MODEL_TYPE}' keeps neither keys/values nor a recurrent "
                                       "block's state", found=f"{type(layer).__name__} after a two-token prompt",
                                       fix="convert with the transformers version edgekit supports (5.23)")
            layers.append(LayerState(i, kv=(int(keys.shape[1]), int(keys.shape[3]), int(values.shape[3]))))
    return tuple(layers)


def recurrent_gemma_state(layers: tuple[LayerState, ...], window: int | None) -> DecoderState:
    """Keys/values of the local-attention layers (their window recorded), conv and RG-LRU states of the
    recurrent ones; a stepwise prompt (module docstring)."""
    entries: list[StateEntry] = []
    for spec in layers:
        if spec.kv:
            entries.append(AttentionKV(spec.index, *spec.kv, window=window))
        entries += [ConvState(spec.index, k, shape) for k, shape in spec.conv]
        entries += [SSMState(spec.index, k, shape) for k, shape in spec.ssm]
    return DecoderState(tuple(entries), prompt="stepwise")


class RecurrentGemmaStep(StateDecoder):
    """(input_ids, attention_mask, position_ids, *flat state) in, (logits, *this step's state) out: one
    token. Keys/values go through the DynamicCache as for other state decoders; a recurrent block's
    conv and RG-LRU states are set on its modules before the forward and read back after it."""

    def __init__(self, model: Any, layers: tuple[LayerState, ...], window: int | None) -> None:
        super().__init__(model, layers)
        self.state = recurrent_gemma_state(layers, window)

    def forward(self, input_ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask, position, flat = rest[0], rest[1], iter(rest[2:])
        cache = DynamicCache(config=self.model.config)
        order = right_aligned(mask) if self.align else None
        mask = aligned_mask(mask, order) if order is not None else mask
        with module_state_kept(self.model) as blocks:
            for spec in self.layers:
                if spec.kv:
                    keys, values = next(flat), next(flat)
                    if order is not None:
                        keys, values = aligned(keys, order), aligned(values, order)
                    cache.layers[spec.index].update(keys, values)
                else:
                    blocks[spec.index].conv1d_state, blocks[spec.index].rg_lru.recurrent_states = next(flat), next(flat)
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                             use_cache=True)
            new: list[torch.Tensor] = []
            for spec in self.layers:
                if spec.kv:  # this call's one token
                    new += [cache.layers[spec.index].keys[:, :, -1:], cache.layers[spec.index].values[:, :, -1:]]
                else:
                    new += [blocks[spec.index].conv1d_state, blocks[spec.index].rg_lru.recurrent_states]
        return (out.logits.float(), *new)


class HFRecurrentGemmaLM(HFStateSpaceLM):
    """The step graph above; contract, tokenizer and runtime graphs are the state-space LM's."""

    generic = False

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return HFCausalLM.matches(src, task) and src.hf_dir is not None and src.config.get("model_type") == MODEL_TYPE

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)  # not HFStateSpaceLM's: its probe reads states off the cache
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family, self.facts = MODEL_TYPE, Family()
        window = getattr(self.model.config, "sliding_window", None)  # attention_window_size (config attribute_map)
        decoder = RecurrentGemmaStep(self.model, probe_layers(self.model), window if isinstance(window, int) else None)
        self.cache = decoder.state
        choose_layout(decoder)
        self.graph = GraphExport("model", decoder, example(self.model, self.cache),
                                 [*self.cache.inputs, *self.cache.past()], ["logits", *self.cache.present()],
                                 dynamic_shapes(self.cache))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = RowsAloneReference(self.model, self.graph)  # the module docstring says why
