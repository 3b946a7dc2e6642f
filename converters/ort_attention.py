"""Decoders exported for onnxruntime: attention as one `com.microsoft::GroupQueryAttention` per layer.

Why: the portable decoder graph (standard ONNX, what TensorRT builds from) writes attention out op
by op, and every decode step concatenates the cache with the new keys/values and repeats the KV
heads over the whole cache (`Expand`): on a Qwen2-shaped 125M model that copying took 6.6 of 11.4 ms
of a late int4 decode step. GroupQueryAttention reads grouped KV heads as they are and, with past
and present bound to one buffer, writes only the new keys/values into it.

How, for any Hugging Face decoder whose attention goes through transformers' attention interface
(driven by that interface, not by model names): the model runs with attention implementation
"edgekit_gqa", whose function calls the custom op `edgekit::group_query_attention`; its ONNX
translation emits GroupQueryAttention. A cache object hands each layer's new keys/values to it
untouched (`PassThroughCache`), and the decoder's inputs give the shared buffers.

The graph ("shared" KV layout), rows right-aligned as GroupQueryAttention batches them:
    inputs   input_ids (batch, sequence), position_ids (batch, sequence), total_length (batch,)
             int64: each row's tokens in the cache after this call; per layer
             past_key_values.{i}.key/.value (batch, kv_heads, slots, head_dim): the buffers
    outputs  logits (batch, sequence, vocab); present.{i}.key/.value: the same buffers, this call's
             keys/values written at each row's next slots. The runtime binds each present to its past.
Row b's tokens fill slots [0, total_length[b]): a prompt's rows start at slot 0 (shorter ones padded
on the right, their pads never attended), each step adds one token per row at its own next slot.
So no mask is needed: each row attends exactly its own tokens, causally, at the positions the runtime
gives (0, 1, 2, ... for its real tokens: what a left-padded batch has in transformers).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache

from edgekit.contract.base import BATCH, SEQUENCE
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.export import GraphExport
from edgekit.converters.spec import NoRuntimeGraph
from edgekit.converters.wrappers import export_experts

ATTENTION = "edgekit_gqa"
SLOTS = "slots"
MAX_BATCH, MAX_LEN = 256, 32768


class NotExpressible(NoRuntimeGraph):
    """The model's attention uses something GroupQueryAttention cannot express (ALiBi, sinks, ...)."""


# ---------------------------------------------------------------- the custom op, in torch and in ONNX

@torch.library.custom_op("edgekit::group_query_attention", mutates_args=())
def group_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, past_key: torch.Tensor,
                          past_value: torch.Tensor, total_length: torch.Tensor, cos_cache: torch.Tensor,
                          sin_cache: torch.Tensor, num_heads: int, kv_heads: int, scale: float, softcap: float,
                          window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What GroupQueryAttention computes with a shared buffer, in torch (the eager check; export uses the ONNX below).

    query (b, s, heads * d), key/value (b, s, kv_heads * d) new tokens; past (b, kv_heads, slots, d);
    row r holds total_length[r] tokens after the call: this call's start at max(total - s, 0). A
    non-empty cos/sin cache (positions, rotary dims / 2) rotates q and k first (half-split rotary).
    """
    b, s, _ = query.shape
    d = past_key.shape[3]
    present_k, present_v = past_key.clone(), past_value.clone()
    out = query.new_zeros(b, s, num_heads * d)
    for r in range(b):
        t = int(total_length[r])
        p = max(t - s, 0)
        n = t - p  # this call's tokens of row r (a right-padded prompt row has fewer than s)
        q = query[r, :n].view(n, num_heads, d).transpose(0, 1)
        k = key[r, :n].view(n, kv_heads, d).transpose(0, 1)
        if cos_cache.numel():
            q, k = _rotate(q, cos_cache[p:t], sin_cache[p:t]), _rotate(k, cos_cache[p:t], sin_cache[p:t])
        present_k[r, :, p:t] = k
        present_v[r, :, p:t] = value[r, :n].view(n, kv_heads, d).transpose(0, 1)
        keys = present_k[r, :, :t].repeat_interleave(num_heads // kv_heads, dim=0)
        values = present_v[r, :, :t].repeat_interleave(num_heads // kv_heads, dim=0)
        w = (q @ keys.transpose(1, 2)) * scale
        if softcap > 0:
            w = softcap * torch.tanh(w / softcap)
        rows, cols = torch.arange(p, t)[:, None], torch.arange(t)[None, :]
        allowed = cols <= rows
        if window > 0:
            allowed &= cols > rows - window
        w = w.masked_fill(~allowed, torch.finfo(w.dtype).min)
        out[r, :n] = (w.softmax(-1) @ values).transpose(0, 1).reshape(n, num_heads * d)
    return out, present_k, present_v


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary on the first 2 * cos.shape[-1] dims of x (heads, tokens, d)."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half: 2 * half], x[..., 2 * half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


@group_query_attention.register_fake
def _(query, key, value, past_key, past_value, total_length, cos_cache, sin_cache, num_heads, kv_heads, scale,
      softcap, window):  # type: ignore[no-untyped-def]
    return query.new_empty(query.shape), past_key.new_empty(past_key.shape), past_value.new_empty(past_value.shape)


def _register_schema() -> None:
    """The subset of ORT's GroupQueryAttention schema the translation uses (onnx knows no contrib ops)."""
    def param(name: str, typ: str, optional: bool = False) -> OpSchema.FormalParameter:
        option = OpSchema.FormalParameterOption.Optional if optional else OpSchema.FormalParameterOption.Single
        return OpSchema.FormalParameter(name, typ, "", param_option=option)

    attrs = [OpSchema.Attribute(n, t, "") for n, t in (("num_heads", OpSchema.AttrType.INT),
                                                        ("kv_num_heads", OpSchema.AttrType.INT),
                                                        ("scale", OpSchema.AttrType.FLOAT),
                                                        ("softcap", OpSchema.AttrType.FLOAT),
                                                        ("local_window_size", OpSchema.AttrType.INT),
                                                        ("do_rotary", OpSchema.AttrType.INT),
                                                        ("rotary_interleaved", OpSchema.AttrType.INT))]
    onnx.defs.register_schema(OpSchema(
        "GroupQueryAttention", "com.microsoft", 1,
        inputs=[param("query", "T"), param("key", "T", True), param("value", "T", True), param("past_key", "T", True),
                param("past_value", "T", True), param("seqlens_k", "M"), param("total_sequence_length", "M"),
                param("cos_cache", "T", True), param("sin_cache", "T", True),
                param("position_ids", "tensor(int64)", True), param("attention_bias", "T", True)],
        outputs=[param("output", "T"), param("present_key", "T"), param("present_value", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=attrs))


_schema_lock = threading.Lock()


def _ensure_schema() -> None:
    with _schema_lock:
        if not onnx.defs.has("GroupQueryAttention", "com.microsoft"):
            _register_schema()


def _gqa_onnx(query: Any, key: Any, value: Any, past_key: Any, past_value: Any, total_length: Any, cos_cache: Any,
              sin_cache: Any, num_heads: int, kv_heads: int, scale: float, softcap: float, window: int) -> Any:
    """The ONNX of the op: each row's length, the batch's longest, then GroupQueryAttention.

    The lengths come from the graph input alone, so the same few nodes in every layer are merged
    into one by common-subexpression elimination (ort_graph.py). With rotary caches, the op rotates
    q and k itself at each row's own positions (its tokens so far): what transformers' position ids
    of a left-padded batch are.
    """
    from onnxscript import opset18 as op

    ms = onnxscript.values.Opset("com.microsoft", 1)
    seqlens_k = op.Cast(op.Sub(total_length, op.Constant(value_ints=[1])), to=onnx.TensorProto.INT32)
    total = op.Cast(op.ReduceMax(total_length, keepdims=0), to=onnx.TensorProto.INT32)
    rotary = cos_cache.shape is not None and len(cos_cache.shape) == 2 and cos_cache.shape[0] != 0
    return ms.GroupQueryAttention(query, key, value, past_key, past_value, seqlens_k, total,
                                  cos_cache if rotary else None, sin_cache if rotary else None,
                                  num_heads=num_heads, kv_num_heads=kv_heads, scale=scale, softcap=softcap,
                                  local_window_size=window - 1 if window > 0 else -1,  # GQA: tokens before the query
                                  do_rotary=int(rotary), rotary_interleaved=0)


TRANSLATIONS = {torch.ops.edgekit.group_query_attention.default: _gqa_onnx}


# ---------------------------------------------------------------- the model side

_CALL = threading.local()  # per export (one thread traces): the layer buffers and the presents made


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
               scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (b, heads, s, d) query, (b, kv_heads, s, d) NEW keys/values."""
    for name in ("s_aux", "sinks", "position_bias", "alibi"):
        if kwargs.get(name) is not None:
            raise NotExpressible(f"attention with {name}")
    if getattr(module, "is_causal", True) is False:
        raise NotExpressible("bidirectional attention")
    b, n, s, d = query.shape
    kvh = key.shape[1]
    call = _CALL.state
    i = module.layer_idx
    scale = float(scaling) if scaling is not None else d ** -0.5
    softcap = float(kwargs.get("softcap") or 0.0)
    window = int(kwargs.get("sliding_window") or 0)
    out, pk, pv = torch.ops.edgekit.group_query_attention(
        query.transpose(1, 2).reshape(b, s, n * d), key.transpose(1, 2).reshape(b, s, kvh * d),
        value.transpose(1, 2).reshape(b, s, kvh * d), call.past[2 * i], call.past[2 * i + 1], call.total_length,
        call.cos, call.sin, n, kvh, scale, softcap, window)
    call.present[i] = (pk, pv)
    return out.view(b, s, n, d), None


AttentionInterface.register(ATTENTION, _attention)


class PassThroughCache(DynamicCache):
    """Hands each layer's new keys/values to the attention unchanged: the op writes them into the buffer."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions come from position_ids; no mask is built from the cache


class _State:
    def __init__(self, past: tuple[torch.Tensor, ...], total_length: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> None:
        self.past, self.total_length, self.cos, self.sin = past, total_length, cos, sin
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


class Rotary:
    """A model's rotary embedding handed to the attention op: half-split cos/sin caches for every
    position, and the modeling modules whose `apply_rotary_pos_emb` steps aside while it runs."""

    def __init__(self, model: Any, head_dim: int) -> None:
        self.modules: list[Any] = []
        self.cos = self.sin = torch.zeros((0, 0))
        rotary = next((m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")
                       and hasattr(m, "inv_freq")), None)
        if rotary is None:
            return  # learned or no positions (GPT-2, OPT): nothing to hand over
        rope = getattr(rotary, "rope_type", "default")
        if rope in ("dynamic", "longrope"):
            raise NotExpressible(f"rotary scaling '{rope}' depends on the sequence length")
        n = int(getattr(model.config, "max_position_embeddings", 0) or MAX_LEN)
        with torch.no_grad():
            cos, sin = rotary(torch.zeros(1), torch.arange(n)[None])
        cos, sin, half = cos[0].float(), sin[0].float(), cos.shape[-1] // 2
        if not (torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])):
            raise NotExpressible("the rotary embedding is not half-split (interleaved?)")
        # onnxruntime's GroupQueryAttention rotates the first 2 * cos_cache.shape[1] dims of each head
        # and refuses at run time a half-size that is not a multiple of 8 (or is over head_size / 2):
        # partial rotary (GPT-NeoX 0.25, Phi 0.4...) fits only where the rotated part does.
        if half % 8 or half > (head_dim // 16) * 8:
            raise NotExpressible(f"rotary embedding over {2 * half} of {head_dim} head dims (GroupQueryAttention "
                                 "rotates a multiple of 16 dims, at most the whole head)")
        self.cos, self.sin = cos[:, :half].contiguous(), sin[:, :half].contiguous()
        self.modules = sorted({sys.modules[type(m).__module__] for m in model.modules()
                               if hasattr(sys.modules[type(m).__module__], "apply_rotary_pos_emb")}, key=id)
        if not self.modules:
            raise NotExpressible("a rotary embedding without apply_rotary_pos_emb")

    @contextlib.contextmanager
    def handed_over(self) -> Iterator[None]:
        saved = [m.apply_rotary_pos_emb for m in self.modules]
        for m in self.modules:
            m.apply_rotary_pos_emb = _keep_qk
        try:
            yield
        finally:
            for m, f in zip(self.modules, saved):
                m.apply_rotary_pos_emb = f


def _keep_qk(q: torch.Tensor, k: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return q, k


class SharedKVDecoder(torch.nn.Module):
    """(input_ids, position_ids, total_length, *buffers) -> (logits, *buffers written)."""

    def __init__(self, model: Any, layers: int, head_dim: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers
        self.rotary = Rotary(model, head_dim)
        self.register_buffer("cos_cache", self.rotary.cos)
        self.register_buffer("sin_cache", self.rotary.sin)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, total_length: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _CALL.state = _State(past, total_length, self.cos_cache, self.sin_cache)
        try:
            with self.rotary.handed_over(), export_experts(self.model):
                out = self.model(input_ids=input_ids, attention_mask=None, position_ids=position_ids,
                                 past_key_values=PassThroughCache(config=self.model.config), use_cache=True)
            present = _CALL.state.present
        finally:
            del _CALL.state
        if len(present) != self.layers:
            raise NotExpressible(f"{len(present)} of {self.layers} layers went through the attention interface")
        return (out.logits.float(), *[t for i in range(self.layers) for t in present[i]])


def shared_kv_graph(hf_model: Any, cache: KVGeometry, quant_exclude_ops: list[str]) -> GraphExport:
    """The onnxruntime decoder of `hf_model` (a copy switched to ATTENTION), checked in torch first.

    Raises NotExpressible when the family's attention cannot be written as GroupQueryAttention, or
    when the rewritten model does not answer like the original (the op's torch reference).
    """
    import copy

    _ensure_schema()
    if cache.head_dim % 16:  # onnxruntime 1.32's CPU kernel: "head_size shall be a multiple of 16"
        raise NotExpressible(f"head size {cache.head_dim} (GroupQueryAttention takes multiples of 16)")
    model = copy.deepcopy(hf_model)  # its config is switched; the portable export keeps the original
    try:
        model.set_attn_implementation(ATTENTION)
    except (ValueError, TypeError, KeyError) as e:
        raise NotExpressible(f"the model does not take a custom attention implementation ({e})") from None
    wrapper = SharedKVDecoder(model, cache.layers, cache.head_dim).eval()
    b, s, slots = 2, 4, 9
    ids = torch.randint(0, int(model.config.vocab_size), (b, s), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(s).expand(b, s).contiguous()
    past = tuple(torch.zeros((b, cache.heads, slots, cache.head_dim)) for _ in range(2 * cache.layers))
    args = (ids, pos, torch.tensor([s, s]), *past)
    with torch.no_grad():  # NotExpressible surfaces here, before an export is attempted
        got = wrapper(*args)[0]
        want = hf_model(input_ids=ids, position_ids=pos).logits.float()
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
        raise NotExpressible(f"the rewritten attention answers differently (max diff {(got - want).abs().max():.3g})")
    batch = torch.export.Dim(BATCH, min=1, max=MAX_BATCH)
    seq = torch.export.Dim(SEQUENCE, min=1, max=MAX_LEN)
    slot_dim = torch.export.Dim(SLOTS, min=2, max=MAX_LEN)
    dims = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, tuple({0: batch, 2: slot_dim} for _ in past))
    return GraphExport("model", wrapper, args, ["input_ids", "position_ids", "total_length", *cache.past()],
                       ["logits", *cache.present()], dims, quant_exclude_ops=quant_exclude_ops,
                       translations=TRANSLATIONS)


def portable_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A shared-layout call's feeds as the portable graph takes the same work (for `edgekit bench
    --against`): each row's cached tokens as the past (masked where a row has fewer), then this call's."""
    ids = feeds["input_ids"]
    total = feeds["total_length"].astype(np.int64)
    past = np.maximum(total - ids.shape[1], 0)
    width = int(past.max())
    mask = np.concatenate([(np.arange(width)[None, :] < past[:, None]).astype(np.int64), np.ones_like(ids)], axis=1)
    out = {"input_ids": ids, "position_ids": feeds["position_ids"], "attention_mask": mask}
    out.update({k: np.ascontiguousarray(v[:, :, :width]) for k, v in feeds.items() if k.startswith("past_key_values.")})
    return out
