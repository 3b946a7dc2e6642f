"""Qwen2-VL / Qwen2.5-VL processors -> `Qwen2VLSteps`, and the vision graph's module.

`encoder`: transformers' vision tower splits its attention per `cu_seqlens` segment with
`lengths.tolist()` (and Qwen2.5-VL also reorders patches by window from Python loops over the
grid), so it cannot be traced once for every image size. The module here takes the patches and
their (row, column) positions (computed in numpy, edgekit/preprocess/vision/qwen2_vl.py) and runs
the same weights with one masked attention instead: an image is one frame, so one segment, and
Qwen2.5-VL's window blocks attend within windows of window_size / patch_size patches a side, which
is the window index's block-diagonal attention without moving patches (attention and rotary
positions travel with each patch; the merger groups the same merge x merge patches either way).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from edgekit.converters.image_processors import _RESAMPLE
from edgekit.contract.vision.qwen2_vl import Qwen2VLSteps
from edgekit.errors import UnsupportedError

PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")


def steps(processor: Any) -> Qwen2VLSteps:
    ip = processor.image_processor
    if getattr(ip, "backend", "pil") != "pil":
        raise UnsupportedError(f"the image processor {type(ip).__name__} must be loaded with the PIL backend",
                               fix="load the processor with AutoProcessor.from_pretrained(folder, backend='pil')")
    if not ip.do_resize or not getattr(ip, "do_convert_rgb", True):
        raise UnsupportedError("edgekit reproduces Qwen2-VL's processor with its resize and RGB conversion on",
                               found=f"do_resize={ip.do_resize}, do_convert_rgb={ip.do_convert_rgb}",
                               fix="save the processor with do_resize=True and do_convert_rgb=True")
    normalize = bool(ip.do_normalize)
    return Qwen2VLSteps(
        min_pixels=int(ip.size["shortest_edge"]), max_pixels=int(ip.size["longest_edge"]),
        patch=int(ip.patch_size), temporal_patch=int(ip.temporal_patch_size), merge=int(ip.merge_size),
        interpolation=_RESAMPLE[int(ip.resample if ip.resample is not None else 2)],
        rescale=float(ip.rescale_factor) if ip.do_rescale else 1.0,
        mean=_rgb(ip.image_mean) if normalize else (0.0, 0.0, 0.0),
        std=_rgb(ip.image_std) if normalize else (1.0, 1.0, 1.0))


def _rgb(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else (float(values),) * 3


def encoder(model: Any, steps: Qwen2VLSteps) -> torch.nn.Module:
    """forward(pixel_values (patches, C*T*P*P), vision_position_ids (patches, 2)) -> (patches / merge^2, hidden)."""
    visual = model.model.visual
    cfg = visual.config
    model_sizes = (cfg.patch_size, cfg.temporal_patch_size, cfg.spatial_merge_size)
    if model_sizes != (steps.patch, steps.temporal_patch, steps.merge):
        raise UnsupportedError("the processor's patch sizes differ from the vision tower's",
                               found=f"processor {(steps.patch, steps.temporal_patch, steps.merge)}, model {model_sizes}",
                               fix="save the model with the processor it was trained with")
    full = getattr(visual, "fullatt_block_indexes", None)  # Qwen2.5-VL: the blocks without windows
    # patches a window side: get_vision_window_index's window_size // merge // patch merged units
    window = cfg.window_size // cfg.spatial_merge_size // cfg.patch_size * cfg.spatial_merge_size if full is not None else None
    return Encoder(visual, window, frozenset(full or ()))


class Encoder(torch.nn.Module):
    def __init__(self, visual: torch.nn.Module, window: int | None, full: frozenset[int]) -> None:
        super().__init__()
        self.visual, self.window, self.full = visual, window, full

    def forward(self, pixel_values: torch.Tensor, vision_position_ids: torch.Tensor) -> torch.Tensor:
        v = self.visual
        h = v.patch_embed(pixel_values)
        cos, sin = v.rotary_pos_emb(h, vision_position_ids)
        bias = None if self.window is None else self._window_bias(vision_position_ids, h.dtype)
        for i, blk in enumerate(v.blocks):
            h = _block(blk, h, cos, sin, None if i in self.full else bias)
        return v.merger(h)

    def _window_bias(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        cell = positions // self.window  # the window (row, column) of each patch
        key = cell[:, 0] * (1 << 20) + cell[:, 1]  # grids are far under 2^20 patches a side
        same = key[:, None] == key[None, :]
        return torch.where(same, 0.0, torch.finfo(dtype).min).to(dtype)


def _block(blk: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The vision block's forward with one attention over the whole image (masked to windows by `bias`)."""
    attn, n = blk.attn, h.shape[0]
    q, k, v = attn.qkv(blk.norm1(h)).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                         attn_mask=bias, scale=attn.scaling)
    h = h + attn.proj(out[0].transpose(0, 1).reshape(n, -1))
    return h + blk.mlp(blk.norm2(h))
