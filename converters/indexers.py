"""Sparse-attention indexers whose selection loops over rows and queries, made exportable.

Qwen4-Exp's QSA indexer (`Qwen4ExpTextQSAIndexer`, transformers 5.23) picks, for each row and query,
the keys it attends: the visible keys (its 4D mask) in order, cut into blocks of `compress_ratio`,
each complete block's keys averaged, normed and rotated to the block's first position, scored
against the query's heads (relu, summed, over sqrt(dim)); the `token_budget // compress_ratio` best
blocks and the incomplete tail are kept. It loops in Python over rows and queries and sizes the
blocks with torch.nonzero, so torch.export stops at "Could not guard on data-dependent expression".
While exporting, its forward is swapped, per instance and restored after, for the same selection
computed for all rows and queries at once: each visible key's rank among the visible keys gives its
block (rank // ratio), blocks are pooled by scatter-add and ranked by top-k over a fixed number of
columns, with the blocks a row lacks scored -inf (never above a real block, whose score is >= 0).
PyTorch runs (parity's reference) keep the model's loop.

Blocks of equal score at the cut: the graph keeps the first (ONNX TopK orders equal values by index);
transformers keeps what torch's CPU topk returns, whose order among equal values is unspecified
(it varies with the count). Scores are sums of relus, so a query whose every head scores every block
<= 0 ties them all at 0: a query of zeros does (a random model's zero embedding row of its pad id).
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

import torch

from edgekit.converters.expert_loops import swapped_forwards


def _qsa(self: Any, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
         attention_mask: torch.Tensor, past_key_values: Any) -> torch.Tensor:
    rope = sys.modules[type(self).__module__].apply_rotary_pos_emb  # the model's own rotary
    batch, seq, _ = hidden_states.shape
    full_cos, full_sin = position_embeddings  # (batch, keys, rotary dim): every key's position
    q, keys = torch.split(self.index_qk_proj(hidden_states),
                          [self.index_n_heads * self.index_head_dim, self.index_kv_heads * self.index_head_dim], dim=-1)
    q = self.q_layernorm(q.reshape(batch, seq, -1, self.index_head_dim))
    q = rope(q, cos=full_cos[:, -seq:], sin=full_sin[:, -seq:], unsqueeze_dim=2)  # (batch, seq, heads, dim)
    keys = keys.reshape(batch, seq, -1, self.index_head_dim).squeeze(2)
    if past_key_values is not None:
        keys = past_key_values.update_indexer(keys, self.layer_idx)  # (batch, keys, dim)
    visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    visible = visible[:, 0]  # (batch, seq, keys)
    ratio, top = self.compress_ratio, self.block_topk
    rank = visible.long().cumsum(-1) - 1
    complete = (visible.sum(-1, keepdim=True) // ratio) * ratio  # visible keys in complete blocks
    in_block = visible & (rank < complete)
    blocks = visible.shape[-1] // ratio + 1  # the last column collects the keys outside complete blocks
    block = torch.where(in_block, rank // ratio, blocks - 1)
    dim = keys.shape[-1]
    pooled = keys.new_zeros((batch, seq, blocks, dim), dtype=torch.float32).scatter_add(
        2, block[..., None].expand(-1, -1, -1, dim), keys[:, None].expand(-1, seq, -1, -1).float())
    pooled = self.k_layernorm((pooled / ratio).to(keys.dtype))  # the model's float mean, in its dtype
    # Each block's first key position: the slot of rank 0 modulo ratio, summed into its block alone.
    slot = torch.arange(visible.shape[-1], device=keys.device).expand_as(rank)
    first = rank.new_zeros((batch, seq, blocks)).scatter_add(2, block, torch.where(in_block & (rank % ratio == 0),
                                                                                    slot, 0))
    cos = full_cos.gather(1, first.reshape(batch, -1, 1).expand(-1, -1, full_cos.shape[-1]))
    sin = full_sin.gather(1, first.reshape(batch, -1, 1).expand(-1, -1, full_sin.shape[-1]))
    pooled = rope(pooled.reshape(batch, -1, 1, dim), cos=cos, sin=sin, unsqueeze_dim=2)
    pooled = pooled.reshape(batch, seq, blocks, -1)
    scores = torch.relu(q.float() @ pooled.float().transpose(-1, -2)).sum(2) / math.sqrt(self.index_head_dim)
    real = torch.arange(blocks, device=keys.device) < (complete // ratio)  # (batch, seq, blocks)
    scores = torch.cat([scores.masked_fill(~real, -math.inf), scores.new_full((batch, seq, top), -math.inf)], -1)
    chosen = (torch.zeros_like(scores).scatter(2, scores.topk(top, dim=-1).indices, 1.0)[..., :blocks] > 0) & real
    picked = chosen.gather(2, block) | (visible & ~in_block)  # the chosen blocks' keys and the tail
    return picked[:, None]  # (batch, 1, seq, keys), as the model's indexer returns it


SELECTORS = {"Qwen4ExpTextQSAIndexer": _qsa}


@contextlib.contextmanager
def exportable_indexers(model: Any) -> Iterator[None]:
    """While torch.export traces: SELECTORS' forward on each such indexer module of `model`."""
    with swapped_forwards(model, SELECTORS):
        yield
