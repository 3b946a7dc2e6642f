"""Idefics3 / SmolVLM processors -> `Idefics3Steps`.

`encoder`: get_image_features without its filter of all-zero (padding) tiles. That filter is a
NonZero, so the exported rows would be data-dependent (TensorRT cannot size them); every tile of one
image is real here (the processor pads only across images of a batch, and the vision graph runs one
image). Its rows are image_seq_len per tile, tiles in the prompt's order.
"""
from __future__ import annotations

from typing import Any

import torch

from edgekit.converters.image_processors import _RESAMPLE
from edgekit.contract.vision import TILES
from edgekit.contract.vision.idefics3 import Idefics3Steps
from edgekit.errors import UnsupportedError

PROCESSORS = ("Idefics3Processor", "SmolVLMProcessor")


def steps(processor: Any) -> Idefics3Steps:
    """The image processor's settings and the prompt's tokens (SmolVLM names its global token
    `global_image_token`, Idefics3 `global_image_tag`)."""
    ip = processor.image_processor
    if getattr(ip, "backend", "pil") != "pil":
        raise UnsupportedError(f"the image processor {type(ip).__name__} must be loaded with the PIL backend",
                               fix="load the processor with AutoProcessor.from_pretrained(folder, backend='pil')")
    size = dict(ip.size or {})
    if ip.do_resize and set(size) != {"longest_edge"}:
        raise UnsupportedError(f"edgekit reproduces Idefics3's resize by longest_edge only, found size {size}",
                               fix="save the processor with size={'longest_edge': n}")
    if not getattr(ip, "do_convert_rgb", True):
        raise UnsupportedError("edgekit converts every image to RGB, this processor has do_convert_rgb off",
                               fix="save the processor with do_convert_rgb=True")
    normalize = bool(ip.do_normalize)
    return Idefics3Steps(
        longest_edge=int(size["longest_edge"]) if ip.do_resize else None,
        tile=int(ip.max_image_size["longest_edge"]), split=bool(ip.do_image_splitting),
        image_seq_len=int(processor.image_seq_len),
        interpolation=_RESAMPLE[int(ip.resample if ip.resample is not None else 2)],
        rescale=float(ip.rescale_factor) if ip.do_rescale else 1.0,
        mean=_rgb(ip.image_mean) if normalize else (0.0, 0.0, 0.0),
        std=_rgb(ip.image_std) if normalize else (1.0, 1.0, 1.0),
        fake_token=processor.fake_image_token,
        global_token=getattr(processor, "global_image_token", None) or processor.global_image_tag)


def _rgb(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else (float(values),) * 3


def dims(steps: Idefics3Steps) -> dict[str, dict[int, str]]:
    """The vision graph's axis that varies per image: its tile count (the global image included)."""
    return {"pixel_values": {1: TILES}, "pixel_attention_mask": {1: TILES}}


class Encoder(torch.nn.Module):
    """(pixel_values (1, tiles, 3, tile, tile), pixel_attention_mask (1, tiles, tile, tile)) -> (rows, hidden):
    transformers' Idefics3Model.get_image_features, every tile kept."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model.model

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        m = self.inner
        b, n, c, h, w = pixel_values.shape
        pixels = pixel_values.reshape(b * n, c, h, w).to(m.dtype)
        mask = pixel_attention_mask.reshape(b * n, h, w)
        patch = m.config.vision_config.patch_size
        grid = mask.unfold(dimension=1, size=patch, step=patch).unfold(dimension=2, size=patch, step=patch)
        states = m.vision_model(pixel_values=pixels, patch_attention_mask=grid.sum(dim=(-1, -2)) > 0,
                                return_dict=True).last_hidden_state
        rows = m.connector(states)
        return rows.reshape(-1, rows.shape[-1]).float()


def encoder(model: Any, steps: Idefics3Steps) -> torch.nn.Module:
    return Encoder(model)
