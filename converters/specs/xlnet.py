"""XLNet with mems (transformers' `XLNetLMHeadModel`, `use_mems_eval` true, its default): one graph, compact memories.

What transformers 5.23's generate computes (modeling_xlnet.py, XLNetLMHeadModel.prepare_inputs_for_
generation; generation/utils.py passes `outputs.mems` back as the past and beam search reorders it
with `_reorder_cache`):
- the prompt call feeds [p1..pn, dummy id 0], the dummy hidden from every token (perm_mask's last
  column), predicted by the query stream (target_mapping on the last position), no attention mask
  (generate's mask is popped), no mems; it returns per layer the layer INPUTS of all n + 1 positions;
- every later call feeds [the last two tokens, dummy] with mems = the past less its last two
  positions: the memory grows by one position per call, the first of the two recomputed tokens,
  as that call computed it. After the prompt it holds p1..p(n-1) as the prompt call computed them.

The graph (`XLNetStep`) keeps exactly that, per layer a `HiddenMemory` ("append") and the last fed
token's word embedding, a `TokenEmbedding` ("replace"): the word embedding is XLNet's first-layer
input, so recomputing the previous token needs nothing else. Each call runs the model's own layers
over [previous embedding, embeddings of the new ids, dummy] after the memory and appends the layer
inputs of its first n positions (the previous token and the new ids but the last). At the prompt
there is no previous token: its position (zeros) is masked for every query and kept as the memory's
first row, masked at every later call too. A masked key adds exactly 0 (its score gets -1e30, as the
model's own masks do) and XLNet's relative attention reads only index differences, so an extra
masked row changes nothing: one graph, no branch on the past length.

Masks: the key mask is [0, attention_mask, 0] (the first row, the real tokens, the dummy); the
attention_mask covers the tokens so far (the compact loop's mask), so a left-padded row's pads are
never attended and each row answers what transformers' generate answers for it alone, which is what
generate's answer for a row is meant to be (on a padded batch it would read the pads as tokens: the
mask is popped). The content stream lets each position see itself (XLNet's non_tgt_mask), the query
stream does not.

Limits: mems are truncated to the last `mem_len` positions (cache_mem); a call that has fed t tokens
returns t + 1 positions, so a context of at most mem_len tokens never truncates (max_context).
`bi_data` (two position directions over half batches), `reuse_len` (mems cut to the first positions)
and `same_length` under "uni" attention (a mask that depends on the call's length) compute something
else per call and are refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, TOTAL
from edgekit.contract.generate import GenerateSection
from edgekit.contract.state import DecoderState, HiddenMemory, TokenEmbedding
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions, RuntimeGraphExport
from edgekit.converters.specs.causal_lm import MAX_BATCH, MAX_LEN, Family, HFCausalLM, HFReference, _tokenizer_json
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.errors import UnsupportedError

INPUTS = ("input_ids", "attention_mask")  # XLNet has no position ids: relative positions from indices


def uses_mems(config: dict[str, Any]) -> bool:
    """Whether transformers' generate keeps mems for this config.json (XLNetConfig's default: it does)."""
    return config.get("model_type") == "xlnet" and bool(config.get("use_mems_eval", True))


class XLNetStep(torch.nn.Module):
    """(input_ids (batch, n), attention_mask (batch, past + n), last_embedding (batch, d), per layer mems.i
    (batch, 1, past, d)) in, (logits (batch, 1, vocab), last_embedding_out, new_mems.i (batch, 1, n, d)) out:
    the DecoderState's tensors in its order (`xlnet_state`)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prev: torch.Tensor,
                *mems: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xl = self.model.transformer
        b, n = input_ids.shape
        qlen, past = n + 2, mems[0].shape[2]
        emb = xl.word_embedding(torch.cat([input_ids, torch.zeros_like(input_ids[:, :1])], 1))  # + the dummy
        h = torch.cat([prev[:, None], emb], 1).transpose(0, 1)  # XLNet's (length, batch, d)
        attn, own = _masks(xl, attention_mask, qlen, past, h.dtype)
        target = (torch.arange(qlen) == qlen - 1).to(h.dtype)[None, :, None].expand(1, qlen, b)  # the dummy
        g = xl.mask_emb.expand(1, b, -1)
        pos = xl.relative_positional_encoding(qlen, qlen + past, bsz=b)
        new = []
        for mem, layer in zip(mems, xl.layer):
            new.append(h[:n].transpose(0, 1)[:, None])  # this layer's inputs: previous token, new ids but the last
            h, g = layer(h, g, attn_mask_h=own, attn_mask_g=attn, r=pos, seg_mat=None,
                         mems=mem[:, 0].transpose(0, 1), target_mapping=target)[:2]
        return (self.model.lm_loss(g.transpose(0, 1)).float(), emb[:, n - 1], *new)


def _masks(xl: Any, attention_mask: torch.Tensor, qlen: int, past: int,
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """XLNetModel.forward's masks, 1.0 = not attended, (query, key, batch, 1): the query stream's, and the
    content stream's (each position also sees itself). Keys: the memory's first row, the tokens so far
    (attention_mask), the dummy; the first and the dummy are never attended."""
    b = attention_mask.shape[0]
    zero = torch.zeros_like(attention_mask[:, :1])
    # The mask's columns taken by index (its length is past + n at every call the loop makes): the graph's
    # total_sequence dim then stays its own, as the contract names it, not one torch.export ties to the others.
    keep = torch.cat([zero, attention_mask, zero], 1)
    cols = torch.arange(past + qlen) + (keep.shape[1] - past - qlen)
    hidden = 1.0 - keep.index_select(1, cols).to(dtype)
    attn = hidden.t()[None, :, :, None].expand(qlen, past + qlen, b, 1)
    if xl.attn_type == "uni":
        attn = ((attn + xl.create_mask(qlen, past)[:, :, None, None]) > 0).to(dtype)
    itself = torch.cat([torch.zeros(qlen, past, dtype=dtype), torch.eye(qlen, dtype=dtype)], 1)
    return attn, ((attn - itself[:, :, None, None]) > 0).to(dtype)


def xlnet_state(layers: int, d_model: int) -> DecoderState:
    entries = (TokenEmbedding(d_model), *(HiddenMemory(i, d_model) for i in range(layers)))
    return DecoderState(entries, inputs=INPUTS, prompt="whole")


def _example(model: Any, state: DecoderState) -> tuple[torch.Tensor, ...]:
    """Batch 2, 3 new ids after 4 memory rows (no dim 0 or 1 for torch.export to specialize)."""
    b, n, p = 2, 3, 4
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (b, n), generator=gen)
    return (ids, torch.ones((b, p + n), dtype=torch.long), *(torch.randn(t.shape(b, p), generator=gen)
                                                              for t in state.tensors()))


def _dynamic_shapes(state: DecoderState) -> tuple[Any, ...]:
    batch = Dim(BATCH, min=1, max=MAX_BATCH)
    seq, past = Dim(SEQUENCE, min=1, max=MAX_LEN), Dim(PAST, min=0, max=MAX_LEN)
    total = Dim(TOTAL, min=1, max=2 * MAX_LEN)
    mems = tuple({0: batch, 2: past} for _ in state.tensors()[1:])  # varargs nest as one tuple
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch}, mems)


class HFXLNetLM(HFCausalLM):
    """The graph above, contract and tokenizer the causal LM's, with the context mems never truncate."""

    generic = False

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return HFCausalLM.matches(src, task) and src.hf_dir is not None and uses_mems(src.config)

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)  # not HFCausalLM's: its probe reads a transformers Cache
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        config = self.model.config
        self.family, self.facts = "xlnet", Family()
        _refuse_other_mems(config)
        self.cache = xlnet_state(int(config.n_layer), int(config.d_model))
        self.graph = GraphExport("model", XLNetStep(self.model), _example(self.model, self.cache),
                                 [*INPUTS, *self.cache.past()], ["logits", *self.cache.present()],
                                 _dynamic_shapes(self.cache))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = XLNetReference(self.model, self.graph)

    def runtime_graphs(self, target: str) -> list[RuntimeGraphExport]:
        return []  # onnxruntime's fused-attention stand-in keeps keys/values, not hidden-state memories

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        mem_len = self.model.config.mem_len
        context = min(MAX_LEN, int(mem_len)) if mem_len else MAX_LEN  # None or 0: mems never truncated
        return dataclasses.replace(super().contract(graphs), max_context=context)


def _refuse_other_mems(config: Any) -> None:
    """The settings under which transformers' calls compute something other than the graph (module doc)."""
    odd = {k: v for k, v in (("bi_data", config.bi_data), ("reuse_len", config.reuse_len),
                             ("same_length", config.same_length and config.attn_type == "uni")) if v}
    if odd:
        raise UnsupportedError("this XLNet's mems are not one memory row per fed token",
                               found=", ".join(f"{k}={v}" for k, v in odd.items()),
                               fix="convert with bi_data false, reuse_len null and, under attn_type \"uni\", "
                                   "same_length false (the pretrained XLNet checkpoints' inference settings)")


class XLNetReference(HFReference):
    """transformers' generate (on each row alone where the batch is padded: generate pops the mask), the
    prompt call's logits, and its decode steps' logits (the memories make them differ from a longer prompt's)."""

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        return super().greedy(ids, mask, new) if mask.all() else self.greedy_alone(ids, mask, new)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        return self.decode_logits(ids, 0)

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:
        return decode_logits(self.model, ids, steps)


def decode_logits(model: Any, ids: np.ndarray, steps: int) -> np.ndarray:
    """(batch, steps + 1, vocab): transformers' call on the prompt ids[:, :-steps], then one call per later id,
    as generate feeds them (prepare_inputs_for_generation with the mems each call returns)."""
    past, out = None, []
    with torch.no_grad():
        for end in range(ids.shape[1] - steps, ids.shape[1] + 1):
            seq = torch.from_numpy(np.ascontiguousarray(ids[:, :end]))
            got = model(**model.prepare_inputs_for_generation(seq, past_key_values=past))
            past = got.mems
            out.append(got.logits[:, -1:].float())
    return torch.cat(out, 1).numpy()
