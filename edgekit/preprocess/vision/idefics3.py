"""Idefics3 / SmolVLM pre-processing in numpy + Pillow (edgekit/contract/vision/idefics3.py).

transformers' Idefics3ImageProcessorPil step for step: every resize on 8-bit pixels with PIL (the
processor resizes uint8 arrays through PIL each time), the tiles cut from the resized 8-bit image,
rescale and normalize last; and Idefics3Processor's prompt: per tile
<fake_token_around_image><row_r_col_c> + image_seq_len image tokens, a newline after each row of
tiles, then a newline and the global image <fake_token_around_image><global-img> + image tokens
+ <fake_token_around_image>; an image that is not split is the global part alone, without newlines.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.contract.vision.idefics3 import MAX_IMAGE_SIZE, Idefics3Steps
from edgekit.preprocess.image import _RESAMPLE, load_image, to_mode
from edgekit.preprocess.vision import PreparedImage, replace_in_order, rows_of

_MAX_SIDE = MAX_IMAGE_SIZE


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(height, width) with the long side at `longest`: `_resize_output_size_rescale_to_max_len`
    (the short side int(long / aspect), odd rounded up) then `..._scale_below_upper_bound`."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > _MAX_SIDE:
        width, height = _MAX_SIDE, int(_MAX_SIDE / aspect)
    elif height > width and height > _MAX_SIDE:
        height, width = _MAX_SIDE, int(_MAX_SIDE * aspect)
    return max(height, 1), max(width, 1)


def tile_multiple_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of `tile`: `resize_for_vision_encoder` (the short side
    from int(long / aspect) of the rounded long side, then rounded up itself)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return height, width


class Idefics3Prep:
    """Runs `Idefics3Steps`: tiles + global image, and the prompt text each image becomes."""

    def __init__(self, steps: Idefics3Steps, image_token: str) -> None:
        self.steps, self.image_token = steps, image_token
        self._filter = _RESAMPLE[steps.interpolation]
        self._mean = np.asarray(steps.mean, dtype=np.float32)
        self._std = np.asarray(steps.std, dtype=np.float32)

    def prepare(self, image: Any) -> PreparedImage:
        s = self.steps
        img = to_mode(load_image(image), "RGB")
        if s.longest_edge is not None:
            img = self._resize(img, longest_edge_size(img.height, img.width, s.longest_edge))
        rows = cols = 0
        crops = []
        if s.split:
            img = self._resize(img, tile_multiple_size(img.height, img.width, s.tile))
            if img.height > s.tile or img.width > s.tile:
                rows, cols = img.height // s.tile, img.width // s.tile
                arr = np.asarray(img)
                crops = [arr[r * s.tile:(r + 1) * s.tile, c * s.tile:(c + 1) * s.tile]
                         for r in range(rows) for c in range(cols)]
        crops.append(np.asarray(self._resize(img, (s.tile, s.tile))))
        pixels = np.stack([self._normalize(c) for c in crops])[None]
        mask = np.ones((1, len(crops), s.tile, s.tile), dtype=np.int64)
        return PreparedImage({"pixel_values": pixels, "pixel_attention_mask": mask}, self._prompt(rows, cols))

    def expand(self, text: str, images: list[PreparedImage]) -> str:
        return replace_in_order(text, self.image_token, images)

    def features(self, out: np.ndarray, image: PreparedImage) -> np.ndarray:
        return rows_of(out, out.shape[-1])

    def _resize(self, img: Any, size: tuple[int, int]) -> Any:
        height, width = size
        return img if (width, height) == img.size else img.resize((width, height), self._filter)

    def _normalize(self, arr: np.ndarray) -> np.ndarray:
        # transformers' arithmetic: rescale in float64 then float32, normalize in float32, CHW.
        x = (arr.astype(np.float64) * self.steps.rescale).astype(np.float32)
        return np.ascontiguousarray(((x - self._mean) / self._std).transpose(2, 0, 1))

    def _prompt(self, rows: int, cols: int) -> str:
        s, tokens = self.steps, self.image_token * self.steps.image_seq_len
        tiles = "".join("".join(f"{s.fake_token}<row_{r + 1}_col_{c + 1}>{tokens}" for c in range(cols)) + "\n"
                        for r in range(rows))
        whole = f"{s.fake_token}{s.global_token}{tokens}{s.fake_token}"
        return f"{tiles}\n{whole}" if rows else whole
