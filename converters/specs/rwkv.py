"""RWKV (transformers' `RwkvForCausalLM`, model_type "rwkv"): a one-token step graph over its five state tensors.

RWKV keeps its state in its own `state` argument, not a transformers Cache: five tensors of shape
(batch, hidden, layers), per layer the channel-mix and time-mix token shifts (the previous token's
normed hidden state) and the time-mix WKV numerator, denominator and running maximum. Each is
declared per layer as an SSMState (index = its place in transformers' list, dims after batch
(hidden,)), so batch is axis 0 and beam search reorders rows; the step reads and returns one
layer's five tensors at a time (transformers' [:, :, layer] slices).

Two facts of transformers 5.23's modeling_rwkv.py shape the graph:
- the one-token path (`extract_key_value`, `RwkvFeedForward.forward`) reads the token shift as
  `state[i][:, :, layer]`, (batch, hidden), and mixes it with the (batch, 1, hidden) hidden states:
  at batch > 1 that broadcasts to (batch, batch, hidden), every row's step running over all rows
  (logits (batch, batch, vocab)). The step graph is that path written with the shifts kept
  (batch, 1, hidden), over the model's own modules: each row computes what transformers computes
  for it at batch 1 (torch.func.vmap over the model's forward would, but torch.export specializes
  its batch);
- the initial maximum is -1e30, not 0 (`state[4] -= 1e30`), while a "replace" state starts from
  zeros. The denominator is 0 exactly until a token has been read (after one it is >= 1: each
  update keeps it or adds exp(0)), so a zero denominator marks a fresh row and its maximum is set
  to -1e30: the first token computes what transformers computes.

Left-padded batches: RWKV ignores attention_mask, so transformers' generate would read pads as
tokens, and its batched decode steps mix rows (above). Neither is a row's own answer; the runtime
feeds each row's real tokens on its own (edgekit/tasks/state_loop.py), which equals transformers
run on that row alone, and that is the reference (`RowsAloneReference`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions
from edgekit.converters.specs.causal_lm import Family, HFCausalLM, _tokenizer_json
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.converters.specs.state_space import HFStateSpaceLM, RowsAloneReference, dynamic_shapes

from edgekit.contract.state import DecoderState, SSMState
from edgekit.errors import UnsupportedError

STATES = 5  # transformers' RWKV state list: ffn shift, attention shift, numerator, denominator, maximum
FRESH_MAX = -1e30  # RwkvModel.forward: state[4] -= 1e30


class RwkvStep(torch.nn.Module):
    """(input_ids (batch, 1), per layer i and state k the tensor (batch, hidden)) in,
    (logits (batch, 1, vocab), the next state in the same order) out.

    RwkvBlock's one-token step written over the model's own modules and transformers' WKV update
    (`rwkv_linear_attention_cpu`), with the token shifts kept (batch, 1, hidden): the model's own
    one-token path broadcasts them to (batch, batch, hidden) at batch > 1 (module docstring)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rwkv, every = self.model.rwkv, int(self.model.config.rescale_every)
        hidden = rwkv.embeddings(input_ids)
        new: list[torch.Tensor] = []
        for i, block in enumerate(rwkv.blocks):
            ffn_shift, att_shift, num, den, top = flat[i * STATES:(i + 1) * STATES]
            top = torch.where(den == 0, torch.full_like(top, FRESH_MAX), top)
            if i == 0:
                hidden = block.pre_ln(hidden)
            x = block.ln1(hidden)
            wkv, (num, den, top), r = _time_mix(block.attention, x, att_shift[:, None], [num, den, top])
            hidden = hidden + block.attention.output(r * wkv)
            y = block.ln2(hidden)
            hidden = hidden + _channel_mix(block.feed_forward, y, ffn_shift[:, None])
            if rwkv.layers_are_rescaled and every > 0 and (i + 1) % every == 0:
                hidden = hidden / 2  # RwkvModel.forward, for layers rescaled at inference
            new += [y[:, 0], x[:, 0], num, den, top]
        return (self.model.head(rwkv.ln_out(hidden)).float(), *new)


def _mix(x: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight + shift * (1 - weight)


def _time_mix(att: Any, x: torch.Tensor, shift: torch.Tensor,
              state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """RwkvSelfAttention.extract_key_value and its WKV update for one token: (wkv, next state, receptance)."""
    from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

    key, value = att.key(_mix(x, shift, att.time_mix_key)), att.value(_mix(x, shift, att.time_mix_value))
    receptance = torch.sigmoid(att.receptance(_mix(x, shift, att.time_mix_receptance)))
    wkv, state = rwkv_linear_attention_cpu(att.time_decay, att.time_first, key, value, state=state, return_state=True)
    return wkv, state, receptance


def _channel_mix(ffn: Any, y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RwkvFeedForward.forward for one token."""
    key = torch.square(torch.relu(ffn.key(_mix(y, shift, ffn.time_mix_key))))
    return torch.sigmoid(ffn.receptance(_mix(y, shift, ffn.time_mix_receptance))) * ffn.value(key)


def probe_hidden(model: Any) -> int:
    """The state's hidden size from one forward (which also lets the model rescale its layers for
    inference, once, before the export traces it: `_rescale_layers` runs at the first eval forward)."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=True)
    shapes = sorted({tuple(s.shape) for s in out.state})
    if len(out.state) != STATES or len(shapes) != 1:  # transformers 5.23: five (batch, hidden, layers)
        raise UnsupportedError("this RWKV keeps a state other than transformers 5.23's five (batch, hidden, layers) "
                               "tensors", found=f"{len(out.state)} state tensors of shapes {shapes}",
                               fix="convert with the transformers version edgekit supports (5.23)")
    return int(shapes[0][1])


def rwkv_state(layers: int, hidden: int) -> DecoderState:
    entries = tuple(SSMState(i, k, (hidden,)) for i in range(layers) for k in range(STATES))
    return DecoderState(entries, inputs=("input_ids",), prompt="stepwise")


class HFRwkvLM(HFStateSpaceLM):
    """The step graph above; contract, tokenizer and runtime graphs are the state-space LM's."""

    generic = False

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return HFCausalLM.matches(src, task) and src.hf_dir is not None and src.config.get("model_type") == "rwkv"

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)  # not HFStateSpaceLM's: its probe reads a transformers Cache
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family, self.facts = "rwkv", Family()
        layers, hidden = int(self.model.config.num_hidden_layers), probe_hidden(self.model)
        self.cache = rwkv_state(layers, hidden)
        self.graph = GraphExport("model", RwkvStep(self.model), _example(self.model, self.cache),
                                 ["input_ids", *self.cache.past()], ["logits", *self.cache.present()],
                                 dynamic_shapes(self.cache))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = RowsAloneReference(self.model, self.graph)


def _example(model: Any, state: DecoderState) -> tuple[torch.Tensor, ...]:
    """Batch 2 (no dim torch.export would specialize), a random state with positive denominators."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (2, 1), generator=gen)
    return (ids, *(torch.rand(t.shape(2, 0), generator=gen) + 0.5 for t in state.tensors()))

