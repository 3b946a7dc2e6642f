"""Idefics3 / SmolVLM image steps: tiles of a fixed side plus the global image, each `image_seq_len` rows.

transformers' Idefics3ImageProcessor (PIL backend; SmolVLM's is the same code): the long side to
`longest_edge` (the short side int(long / aspect), rounded up to even), then, when splitting, both
sides up to multiples of `tile` and cut into tile x tile crops, row by row, followed by the whole
image resized to tile x tile (the global image); without splitting, only the tile x tile image.
The pixel values are (1, tiles, 3, tile, tile); every tile of one image has the full size, so its
pixel_attention_mask is all ones (the processor pads only across images of a batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import FLOAT, INT64, Need, Range
from edgekit.contract.classify import Interpolation
from edgekit.contract.vision import TILES, ImageSteps

MAX_IMAGE_SIZE = 4096  # the processor's MAX_IMAGE_SIZE: its first resize never makes a side longer


@dataclass(frozen=True)
class Idefics3Steps(ImageSteps):
    tag: ClassVar[str] = "idefics3"
    runtime: ClassVar[str] = "edgekit.preprocess.vision.idefics3:Idefics3Prep"
    longest_edge: int | None  # the first resize of the long side; None: the processor's do_resize is off
    tile: int  # max_image_size["longest_edge"]: the side of each tile and of the global image
    split: bool  # do_image_splitting
    image_seq_len: int  # image tokens (feature rows) per tile
    interpolation: Interpolation
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fake_token: str  # <fake_token_around_image>
    global_token: str  # <global-img>

    def __post_init__(self) -> None:
        if self.tile < 1 or self.image_seq_len < 1 or (self.longest_edge is not None and self.longest_edge < 1):
            raise ValueError(f"idefics3 steps need a tile side, image_seq_len and longest_edge >= 1: {self}")
        if len(self.mean) != 3 or len(self.std) != 3 or 0.0 in self.std:
            raise ValueError(f"idefics3 steps need 3 means and 3 non-zero stds (RGB): {self.mean}, {self.std}")

    def graph_inputs(self) -> tuple[Need, ...]:
        return Need("pixel_values", FLOAT, 5), Need("pixel_attention_mask", INT64, 4)

    def tiles(self) -> Range:
        """Tiles of one image, the global image included: an n x n grid at most, n from the longest side
        (longest_edge; without that resize, images up to MAX_IMAGE_SIZE a side), whose short side is
        rounded up to even (one pixel past an odd longest_edge); an image of one tile is not split."""
        if not self.split:
            return 1, 1, 1
        longest = min(self.longest_edge or MAX_IMAGE_SIZE, MAX_IMAGE_SIZE)

        def grid(side: int) -> int:
            n = math.ceil(side / self.tile)
            return n * n + 1 if n > 1 else 1
        return 1, grid(longest), grid(longest + longest % 2)

    def rows(self) -> Range:
        lo, opt, hi = self.tiles()
        return lo * self.image_seq_len, opt * self.image_seq_len, hi * self.image_seq_len

    def dim_ranges(self) -> dict[str, Range]:
        return {TILES: self.tiles()}
