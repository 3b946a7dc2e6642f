"""xLSTM (transformers' `xLSTMForCausalLM`, model_type "xlstm"): a one-token step graph over its mLSTM states.

xLSTM keeps its state in its own `xLSTMCache` (`cache_params`), not a transformers Cache: per
layer the mLSTM's matrix memory C (heads, qk_head_dim, v_head_dim), normaliser n (heads,
qk_head_dim) and stabilising maximum m (heads, 1), all starting at zeros (xLSTMCache.__init__).
C is a linear-attention state and n, m its running normaliser and maximum (as RWKV's WKV
numerator, denominator and maximum): each is declared an SSMState (index = its place in the
layer's tuple), batch on axis 0, so beam search reorders rows.

The step graph is the model's own forward on one token, its cache built from the flat state: a
one-token call takes mlstm_recurrent_step_native (wrap_chunkwise_arbitrary_sequence_length), the
same recurrence transformers' prefill runs token by token on a prompt shorter than `chunk_size`
(mlstm_recurrent_sequence_native); from there on its chunkwise kernel sums the same terms in
another order (in `autocast_kernel_dtype`).

Left-padded batches: xLSTM's forward takes no attention_mask, so transformers' generate would read
pads as tokens; the runtime feeds each row's real tokens on its own (edgekit/tasks/state_loop.py),
which equals transformers run on that row alone, the reference (`RowsAloneReference`).
"""
from __future__ import annotations

from typing import Any

import torch
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions
from edgekit.converters.specs.causal_lm import Family, HFCausalLM, _tokenizer_json
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.converters.specs.state_space import HFStateSpaceLM, RowsAloneReference, dynamic_shapes, example

from edgekit.contract.state import DecoderState, SSMState


class XlstmStep(torch.nn.Module):
    """(input_ids (batch, 1), per layer i its C, n, m) in, (logits (batch, 1, vocab), the next C, n, m) out."""

    def __init__(self, model: Any, state: DecoderState) -> None:
        super().__init__()
        self.model, self.layers = model, int(model.config.num_hidden_layers)
        self.per_layer = len(state.entries) // self.layers

    def forward(self, input_ids: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.models.xlstm.modeling_xlstm import xLSTMCache

        k = self.per_layer
        cache = xLSTMCache(self.model.config, input_ids.shape[0], dtype=flat[0].dtype)
        # Copies: the forward writes each layer's next state into the cache's tensors in place (copy_).
        cache.rnn_state = {i: tuple(t.clone() for t in flat[i * k:(i + 1) * k]) for i in range(self.layers)}
        out = self.model(input_ids=input_ids, cache_params=cache, use_cache=True)
        return (out.logits.float(), *(t for i in range(self.layers) for t in cache.rnn_state[i]))


def xlstm_state(model: Any) -> DecoderState:
    """Each layer's states as the model's own cache holds them after a two-token prompt (dims after batch)."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=True)
    rnn = out.cache_params.rnn_state
    entries = tuple(SSMState(i, k, tuple(t.shape[1:])) for i in sorted(rnn) for k, t in enumerate(rnn[i]))
    return DecoderState(entries, inputs=("input_ids",), prompt="stepwise")


class HFXlstmLM(HFStateSpaceLM):
    """The step graph above; contract, tokenizer and runtime graphs are the state-space LM's."""

    generic = False

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return HFCausalLM.matches(src, task) and src.hf_dir is not None and src.config.get("model_type") == "xlstm"

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)  # not HFStateSpaceLM's: its probe reads a transformers Cache
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family, self.facts = "xlstm", Family()
        self.cache = xlstm_state(self.model)
        self.graph = GraphExport("model", XlstmStep(self.model, self.cache), example(self.model, self.cache),
                                 ["input_ids", *self.cache.past()], ["logits", *self.cache.present()],
                                 dynamic_shapes(self.cache))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = RowsAloneReference(self.model, self.graph)
