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

The graph ("shared" KV layout):
    inputs   input_ids (batch, sequence), attention_mask (batch, slots): 1 where a cache slot or this
             call's token is attended, position_ids (batch, sequence), past_length (1,) int64: the
             slots already written; per layer past_key_values.{i}.key/.value (batch, kv_heads,
             slots, head_dim): the buffers
    outputs  logits (batch, sequence, vocab); present.{i}.key/.value: the same buffers, with this
             call's keys/values written at slots [past_length, past_length + sequence). The runtime
             binds each present to its past buffer.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache

from edgekit.contract.base import BATCH, SEQUENCE
from edgekit.contract.generate import KVCache
from edgekit.converters.export import GraphExport

ATTENTION = "edgekit_gqa"
SLOTS = "slots"
MAX_BATCH, MAX_LEN = 256, 32768


class NotExpressible(Exception):
    """The model's attention uses something GroupQueryAttention cannot express (ALiBi, sinks, ...)."""


# ---------------------------------------------------------------- the custom op, in torch and in ONNX

@torch.library.custom_op("edgekit::group_query_attention", mutates_args=())
def group_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, past_key: torch.Tensor,
                          past_value: torch.Tensor, attention_mask: torch.Tensor, past_length: torch.Tensor,
                          num_heads: int, kv_heads: int, scale: float, softcap: float,
                          window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What GroupQueryAttention computes with a shared buffer, in torch (for checks; export uses the ONNX below).

    query (b, s, heads * d), key/value (b, s, kv_heads * d) new tokens; past (b, kv_heads, slots, d).
    """
    b, s, _ = query.shape
    d = past_key.shape[3]
    p = int(past_length.reshape(-1)[0])
    t = p + s
    q = query.view(b, s, num_heads, d).transpose(1, 2)
    k = key.view(b, s, kv_heads, d).transpose(1, 2)
    v = value.view(b, s, kv_heads, d).transpose(1, 2)
    present_k, present_v = past_key.clone(), past_value.clone()
    present_k[:, :, p:t], present_v[:, :, p:t] = k, v
    keys = present_k[:, :, :t].repeat_interleave(num_heads // kv_heads, dim=1)
    values = present_v[:, :, :t].repeat_interleave(num_heads // kv_heads, dim=1)
    w = (q @ keys.transpose(2, 3)) * scale
    if softcap > 0:
        w = softcap * torch.tanh(w / softcap)
    rows, cols = torch.arange(p, t)[:, None], torch.arange(t)[None, :]
    allowed = (cols <= rows) & (attention_mask[:, None, None, :t] != 0)
    if window > 0:
        allowed &= cols > rows - window
    w = w.masked_fill(~allowed, torch.finfo(w.dtype).min)
    out = (w.softmax(-1) @ values).transpose(1, 2).reshape(b, s, num_heads * d)
    return out, present_k, present_v


@group_query_attention.register_fake
def _(query, key, value, past_key, past_value, attention_mask, past_length, num_heads, kv_heads, scale, softcap,
      window):  # type: ignore[no-untyped-def]
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
                                                        ("local_window_size", OpSchema.AttrType.INT))]
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


def _gqa_onnx(query: Any, key: Any, value: Any, past_key: Any, past_value: Any, attention_mask: Any, past_length: Any,
              num_heads: int, kv_heads: int, scale: float, softcap: float, window: int) -> Any:
    """The ONNX of the op: lengths and the mask bias from the inputs, then GroupQueryAttention."""
    from onnxscript import opset18 as op

    ms = onnxscript.values.Opset("com.microsoft", 1)
    seq = op.Shape(query, start=1, end=2)  # (1,) this call's tokens
    total = op.Add(past_length, seq)  # (1,) slots attended after this call
    batch = op.Shape(query, start=0, end=1)
    seqlens_k = op.Cast(op.Expand(op.Sub(total, op.Constant(value_ints=[1])), batch), to=onnx.TensorProto.INT32)
    total_32 = op.Cast(op.Squeeze(total), to=onnx.TensorProto.INT32)
    # GroupQueryAttention applies causality itself; the bias says which slots exist (left padding,
    # slots not written yet). Its last dim must be the total length: the mask's first `total` columns.
    mask = op.Slice(attention_mask, op.Constant(value_ints=[0]), total, op.Constant(value_ints=[1]))
    keep = op.Unsqueeze(op.Cast(mask, to=onnx.TensorProto.BOOL), op.Constant(value_ints=[1, 2]))
    shape = op.Concat(batch, op.Constant(value_ints=[1]), seq, total, axis=0)
    bias = op.Where(op.Expand(keep, shape), op.Constant(value_float=0.0),
                    op.Constant(value_float=float(np.finfo(np.float32).min)))
    return ms.GroupQueryAttention(query, key, value, past_key, past_value, seqlens_k, total_32, None, None, None, bias,
                                  num_heads=num_heads, kv_num_heads=kv_heads, scale=scale, softcap=softcap,
                                  local_window_size=window - 1 if window > 0 else -1)  # GQA: tokens before the query


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
        value.transpose(1, 2).reshape(b, s, kvh * d), call.past[2 * i], call.past[2 * i + 1], call.mask,
        call.past_length, n, kvh, scale, softcap, window)
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
    def __init__(self, past: tuple[torch.Tensor, ...], mask: torch.Tensor, past_length: torch.Tensor) -> None:
        self.past, self.mask, self.past_length = past, mask, past_length
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


class SharedKVDecoder(torch.nn.Module):
    """(input_ids, attention_mask, position_ids, past_length, *buffers) -> (logits, *buffers written)."""

    def __init__(self, model: Any, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_length: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _CALL.state = _State(past, attention_mask, past_length)
        try:
            out = self.model(input_ids=input_ids, attention_mask=None, position_ids=position_ids,
                             past_key_values=PassThroughCache(config=self.model.config), use_cache=True)
            present = _CALL.state.present
        finally:
            del _CALL.state
        if len(present) != self.layers:
            raise NotExpressible(f"{len(present)} of {self.layers} layers went through the attention interface")
        return (out.logits.float(), *[t for i in range(self.layers) for t in present[i]])


def shared_kv_graph(hf_model: Any, cache: KVCache, quant_exclude_ops: list[str]) -> GraphExport:
    """The onnxruntime decoder of `hf_model` (a copy switched to ATTENTION), checked to trace in torch.

    Raises NotExpressible when the family's attention cannot be written as GroupQueryAttention.
    """
    import copy

    _ensure_schema()
    model = copy.deepcopy(hf_model)  # its config is switched; the portable export keeps the original
    try:
        model.set_attn_implementation(ATTENTION)
    except (ValueError, TypeError, KeyError) as e:
        raise NotExpressible(f"the model does not take a custom attention implementation ({e})") from None
    wrapper = SharedKVDecoder(model, cache.layers).eval()
    b, s, slots = 2, 4, 9
    ids = torch.randint(0, int(model.config.vocab_size), (b, s), generator=torch.Generator().manual_seed(0))
    mask = torch.ones((b, slots), dtype=torch.long)
    pos = torch.arange(3, 3 + s).expand(b, s).contiguous()
    past = tuple(torch.zeros((b, cache.heads, slots, cache.head_dim)) for _ in range(2 * cache.layers))
    args = (ids, mask, pos, torch.tensor([3]), *past)
    with torch.no_grad():
        wrapper(*args)  # NotExpressible surfaces here, before an export is attempted
    batch = torch.export.Dim(BATCH, min=1, max=MAX_BATCH)
    seq = torch.export.Dim(SEQUENCE, min=1, max=MAX_LEN)
    slot_dim = torch.export.Dim(SLOTS, min=2, max=MAX_LEN)
    dims = ({0: batch, 1: seq}, {0: batch, 1: slot_dim}, {0: batch, 1: seq}, None,
            tuple({0: batch, 2: slot_dim} for _ in past))
    return GraphExport("model", wrapper, args, ["input_ids", "attention_mask", "position_ids", "past_length",
                                                *cache.past()], ["logits", *cache.present()], dims,
                       quant_exclude_ops=quant_exclude_ops, translations=TRANSLATIONS)


def portable_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A shared-layout call's feeds as the portable graph takes the same work: the written slots as
    the past, the mask over them and this call's tokens (for `edgekit bench --against`)."""
    ids = feeds["input_ids"]
    p = int(feeds["past_length"].reshape(-1)[0])
    mask = feeds["attention_mask"]
    out = {"input_ids": ids, "position_ids": feeds["position_ids"],
           "attention_mask": np.concatenate([mask[:, :p], np.ones_like(ids)], axis=1)}
    out.update({k: np.ascontiguousarray(v[:, :, :p]) for k, v in feeds.items() if k.startswith("past_key_values.")})
    return out
