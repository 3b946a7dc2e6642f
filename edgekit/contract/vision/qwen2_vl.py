"""Qwen2-VL / Qwen2.5-VL image steps: a resize to multiples of patch * merge within a pixel budget, then
flat patches, and the patch positions the vision encoder's rotary embedding reads.

transformers' Qwen2VLImageProcessor (PIL backend; Qwen2.5-VL's processor uses the same one):
`smart_resize` (both sides to multiples of patch_size * merge_size, the area between min_pixels and
max_pixels), rescale, normalize, each patch repeated temporal_patch_size times (an image is one
frame) and flattened to (patches, C * T * P * P), block-major over merge x merge groups; the grid
(t, h, w) = (1, H / P, W / P). The prompt's image token is repeated t * h * w / merge^2 times.
The vision graph also takes `vision_position_ids` (patches, 2): each patch's (row, column), the
positions transformers derives from the grid with Python loops, computed in numpy instead so the
graph has no shape that depends on values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import FLOAT, INT64, Need, Range
from edgekit.contract.classify import Interpolation
from edgekit.contract.vision import ImageSteps

POSITIONS = "vision_position_ids"


@dataclass(frozen=True)
class Qwen2VLSteps(ImageSteps):
    tag: ClassVar[str] = "qwen2_vl"
    runtime: ClassVar[str] = "edgekit.preprocess.vision.qwen2_vl:Qwen2VLPrep"
    min_pixels: int  # size["shortest_edge"]
    max_pixels: int  # size["longest_edge"]
    patch: int
    temporal_patch: int
    merge: int
    interpolation: Interpolation
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if min(self.patch, self.temporal_patch, self.merge, self.min_pixels) < 1 or self.max_pixels < self.min_pixels:
            raise ValueError(f"qwen2_vl steps need sizes >= 1 and max_pixels >= min_pixels: {self}")
        if len(self.mean) != 3 or len(self.std) != 3 or 0.0 in self.std:
            raise ValueError(f"qwen2_vl steps need 3 means and 3 non-zero stds (RGB): {self.mean}, {self.std}")

    def graph_inputs(self) -> tuple[Need, ...]:
        return Need("pixel_values", FLOAT, 2), Need(POSITIONS, INT64, 2)

    def rows(self) -> Range:
        """Merged patches (smart_resize's area / (patch * merge)^2), with its aspect limit of 200:1: the
        down-scale keeps the area within max_pixels unless a side would fall below one merged patch (then
        that side is one, the other under 200); the up-scale from below min_pixels rounds sides a, b up,
        so at most a*b + a + b + 1 with a*b = min_pixels / (patch * merge)^2 and a/b <= 200."""
        f2 = (self.patch * self.merge) ** 2
        budget, small = self.max_pixels // f2, self.min_pixels / f2
        up = math.floor(small + math.sqrt(small) * (math.sqrt(200) + math.sqrt(1 / 200)) + 1)
        return 1, max(1, budget), max(budget, 199, up)
