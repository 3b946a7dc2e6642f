"""The two graphs of an encoder-decoder (Marian, BART/mBART, M2M100/NLLB, Pegasus, T5/mT5/UMT5).

    encoder  (input_ids, attention_mask) -> cross.{i}.key / .value of every decoder layer: the
             encoder and each layer's cross-attention projections, once per input
    decoder  the slot-cache step of edgekit/contract/generate.py: (input_ids, attention_mask,
             position_ids, past keys/values, encoder_attention_mask, cross keys/values) ->
             (logits, this call's keys/values)
The decoder is driven with explicit positions and masks because the runtime's cache has unfilled
slots between the past and the current token: a past slot is attended iff its mask column is 1.
BART-style layers are Hugging Face's own, fed a cache built from the flat tensors; T5-style
blocks are written out here with their weights, since T5's relative position bias is computed
from positions the slot layout does not give it.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


@contextlib.contextmanager
def eager_while_exporting(model: Any) -> Iterator[None]:
    """Eager attention under torch.export (plain MatMul/Softmax with our masks, no SDPA mask
    materialization); run in PyTorch (parity, bench --against) the model keeps its default."""
    switch = torch.compiler.is_exporting()
    default = model.config._attn_implementation
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(default)


def slot_bias(mask: torch.Tensor, past: int, tokens: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, tokens, past + tokens): 0 where a key is visible, the dtype's min elsewhere.
    A past slot is visible iff its mask is 1; the new tokens see each other causally."""
    cols = torch.arange(past + tokens, device=mask.device)
    # index_select, not a slice: reading the mask by index keeps its length a free dim.
    seen = mask.index_select(1, cols) != 0
    causal = cols[None, :] <= (torch.arange(tokens, device=mask.device) + past)[:, None]
    return torch.where(seen[:, None, :] & causal[None], 0.0, torch.finfo(dtype).min)[:, None].to(dtype)


def cross_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, 1, source): the encoder's padding hidden from every decoder token."""
    return torch.where(mask[:, None, None, :] != 0, 0.0, torch.finfo(dtype).min).to(dtype)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def text_decoder(model: Any) -> Any:
    """The decoder stack (its layers or blocks). A SpeechEncoderDecoderModel's get_decoder() is a whole
    *ForCausalLM (MBartForCausalLM...): its own get_decoder() is the stack."""
    dec = model.get_decoder()
    return dec if hasattr(dec, "layers") or hasattr(dec, "block") else dec.get_decoder()


def cross_attention(layer: Any) -> Any:
    """A BART-style decoder layer's cross-attention (SeamlessM4T names it cross_attention)."""
    return layer.encoder_attn if hasattr(layer, "encoder_attn") else layer.cross_attention


def cross_projections(model: Any) -> list[tuple[Any, Any, int]]:
    """(key projection, value projection, heads) of every decoder layer's cross-attention."""
    dec = text_decoder(model)
    if hasattr(dec, "block"):  # T5 family
        return [(b.layer[1].EncDecAttention.k, b.layer[1].EncDecAttention.v, b.layer[1].EncDecAttention.n_heads)
                for b in dec.block]
    dec = getattr(dec, "wrapped_decoder", dec)  # SpeechT5: the layers sit under its text pre-net's wrapper
    # Moonshine's attention keeps no head count of its own (it reads a config its encoder shares).
    return [(a.k_proj, a.v_proj, getattr(a, "num_heads", None) or a.k_proj.out_features // a.head_dim)
            for a in (cross_attention(layer) for layer in dec.layers)]


class Encoder(torch.nn.Module):
    """(input_ids, attention_mask) -> every decoder layer's cross keys and values."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.get_encoder()
        self.proj = cross_projections(model)
        self.layers = torch.nn.ModuleList([torch.nn.ModuleList([k, v]) for k, v, _ in self.proj])
        self.hf = [model]  # a list: not registered as a submodule

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with eager_while_exporting(self.hf[0]):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out: list[torch.Tensor] = []
        for k, v, heads in self.proj:
            out += [_split(k(h), heads), _split(v(h), heads)]
        return tuple(out)


class BartDecoder(torch.nn.Module):
    """Marian, BART, mBART, M2M100/NLLB, Pegasus, Moonshine, SeamlessM4T, Cohere ASR: Hugging Face's decoder
    layers on the slot contract.

    Only what surrounds the layers is written here (the families differ there): token embedding
    and its scale, positions (learned with an offset, sinusoidal tables, M2M100's padding-aware
    table, or Moonshine's rotary ones handed to every layer), the optional embedding/final layer
    norms, the LM head and its bias.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.dec = text_decoder(model)
        self.lm_head = model.get_output_embeddings()
        self.rotary = getattr(self.dec, "rotary_emb", None)
        self.norm = getattr(self.dec, "layer_norm", None) or getattr(self.dec, "norm", None)
        self.config = self.dec.config  # the decoder's own (a SpeechEncoderDecoderConfig holds two)
        self.logits_bias = getattr(model, "final_logits_bias", None)
        self.scale = float(getattr(self.dec, "embed_scale", 1.0))  # Marian, Pegasus scale outside the embedding
        self.hf = [model]  # a list: not registered as a submodule

    def positions(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor | float:
        if self.rotary is not None:
            return 0.0  # rotary: positions enter every attention, not the embedding
        if hasattr(self.dec, "pos_emb"):  # Cohere ASR: a learned table from 0
            return self.dec.pos_emb(pos)
        emb = self.dec.embed_positions
        if isinstance(emb, torch.nn.Embedding):  # learned (BART, mBART: offset 2) or a sinusoidal table
            return emb.weight[pos + int(getattr(emb, "offset", 0))]
        # M2M100: positions start after the padding index; a padding token gets the zero row.
        pad = int(emb.padding_idx)
        return emb.weights[torch.where(ids == pad, pad, pos + pad + 1)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.dec.layers)
        past, enc_mask, cross = kv[: 2 * n], kv[2 * n], kv[2 * n + 1:]
        h = self.dec.embed_tokens(input_ids) * self.scale + self.positions(input_ids, position_ids)
        embedding_norm = getattr(self.dec, "layernorm_embedding", None) or getattr(self.dec, "embedding_layernorm", None)
        if embedding_norm is not None:  # Cohere ASR names it embedding_layernorm
            h = embedding_norm(h)
        start = past[0].shape[2]
        self_bias = slot_bias(attention_mask, start, input_ids.shape[1], h.dtype)
        enc_bias = cross_bias(enc_mask, h.dtype)
        # transformers 5 caches built from the flat tensors; the cross cache, already filled, is
        # used as is (EncoderDecoderCache marks a filled layer as updated).
        cache = EncoderDecoderCache(
            DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n)], config=self.config),
            DynamicCache(ddp_cache_data=[(cross[2 * i], cross[2 * i + 1]) for i in range(n)], config=self.config))
        rotary = {} if self.rotary is None else {"position_embeddings": self.rotary(h, position_ids)}
        with eager_while_exporting(self.hf[0]):
            for layer in self.dec.layers:
                # encoder_hidden_states only has to be present: the cross keys/values come from the cache.
                h = layer(h, attention_mask=self_bias, encoder_hidden_states=cross[0],
                          encoder_attention_mask=enc_bias, past_key_values=cache, use_cache=True, **rotary)
        if self.norm is not None:
            h = self.norm(h)
        logits = self.lm_head(h)
        if self.logits_bias is not None:
            logits = logits + self.logits_bias
        new: list[torch.Tensor] = []
        for layer in cache.self_attention_cache.layers:
            new += [layer.keys[:, :, start:], layer.values[:, :, start:]]
        return (logits.float(), *new)


class T5Decoder(torch.nn.Module):
    """T5, mT5, UMT5 blocks on the slot contract, with Hugging Face's weights and op order.

    The relative position bias is computed from the real positions: the past slots are 0..past-1
    (the decoder never pads) and the new tokens sit at position_ids. T5 computes it in the first
    block and shares it; UMT5 has one per block.
    """

    def __init__(self, model: Any, scale_output: bool) -> None:
        super().__init__()
        self.dec = model.get_decoder()
        self.lm_head = model.lm_head
        self.out_scale = float(model.config.d_model) ** -0.5 if scale_output else 1.0

    @staticmethod
    def relative_bias(attn: Any, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        rel = k_pos[None, :] - q_pos[:, None]
        bucket_fn = attn._relative_position_bucket
        if "bidirectional" in inspect.signature(bucket_fn).parameters:  # T5's static form
            bucket = bucket_fn(rel, bidirectional=False, num_buckets=attn.relative_attention_num_buckets,
                               max_distance=attn.relative_attention_max_distance)
        else:  # UMT5 reads its own settings
            bucket = bucket_fn(rel)
        return attn.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    @staticmethod
    def attend(attn: Any, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = _split(attn.q(x), attn.n_heads)
        w = torch.softmax(torch.matmul(q, k.transpose(2, 3)) + bias, dim=-1)  # T5 does not scale q.k
        o = torch.matmul(w, v).transpose(1, 2)
        return attn.o(o.reshape(x.shape[0], x.shape[1], -1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.dec.block)
        past, enc_mask, cross = kv[: 2 * n], kv[2 * n], kv[2 * n + 1:]
        h = self.dec.embed_tokens(input_ids)
        start, tokens = past[0].shape[2], input_ids.shape[1]
        q_pos = position_ids[0]
        k_pos = torch.cat([torch.arange(start, device=q_pos.device, dtype=q_pos.dtype), q_pos])
        self_mask = slot_bias(attention_mask, start, tokens, h.dtype)
        enc_bias = cross_bias(enc_mask, h.dtype)
        position_bias: torch.Tensor | None = None
        presents: list[torch.Tensor] = []
        for i, block in enumerate(self.dec.block):
            sa_layer, ca_layer = block.layer[0], block.layer[1]
            sa = sa_layer.SelfAttention
            if sa.has_relative_attention_bias:
                position_bias = self.relative_bias(sa, q_pos, k_pos)
            assert position_bias is not None, "the first T5 block computes the position bias"
            x = sa_layer.layer_norm(h)
            k_new, v_new = _split(sa.k(x), sa.n_heads), _split(sa.v(x), sa.n_heads)
            presents += [k_new, v_new]
            k = torch.cat([past[2 * i], k_new], dim=2)
            v = torch.cat([past[2 * i + 1], v_new], dim=2)
            h = h + self.attend(sa, x, k, v, position_bias + self_mask)
            ca = ca_layer.EncDecAttention
            h = h + self.attend(ca, ca_layer.layer_norm(h), cross[2 * i], cross[2 * i + 1], enc_bias)
            h = block.layer[-1](h)  # the feed-forward sublayer, residual included
        h = self.dec.final_layer_norm(h) * self.out_scale
        return (self.lm_head(h).float(), *presents)
