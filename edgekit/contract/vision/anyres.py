"""LLaVA-NeXT and LLaVA-OneVision "anyres" images: tiles of a best-fit grid plus the whole image.

The processor picks the grid resolution that keeps the most of the image (`select_best_resolution`
over `grid_pinpoints`), resizes the image into it keeping the aspect ratio, pads it centred with
black, cuts `tile_size` tiles row by row, and puts the whole image resized to `base_size` first;
every tile then runs the per-tile steps (`tile`). The model's `pack_image_features` unpads the
grid's feature map by the original aspect ratio and ends each feature row with `image_newline`
(OneVision first shrinks a map larger than `max_patches` tiles bilinearly). The vision graph
takes that packing as a gather, so it has no shape that depends on the data:

    pixel_values (tiles, 3, H, W) float, pack_index (rows,) int64   [LLaVA-NeXT]
        row k of the output = tile-feature row pack_index[k] (tiles x side^2 flattened), or
        image_newline where pack_index[k] is -1
    pixel_values, pack_index (rows, 4) int64, pack_weight (rows, 4) float   [LLaVA-OneVision]
        row k = sum over j of pack_weight[k, j] * (that row or image_newline): the 4 taps of
        the bilinear shrink (weights 1, 0, 0, 0 where the map is not shrunk)
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from edgekit.contract.base import FLOAT, INT64, Need, Range
from edgekit.contract.classify import ImageInput
from edgekit.contract.vision import ROWS, TILES, ImageSteps

PIXEL_VALUES = "pixel_values"
PACK_INDEX = "pack_index"
PACK_WEIGHT = "pack_weight"
Strategy = Literal["default", "full"]  # "default" drops the vision tower's first (CLS) row


@dataclass(frozen=True)
class AnyresSteps(ImageSteps):
    """The fields both families save; `side` and `base_rows` are each family's own."""

    tile: ImageInput  # per tile: resize, crop, rescale, normalize (the processor's do_* steps)
    base_size: tuple[int, int]  # (height, width) the whole image is resized to before its tile steps
    tile_size: int  # the grid is cut into tile_size x tile_size tiles
    grid_pinpoints: tuple[tuple[int, int], ...]  # (height, width) grid resolutions to choose from
    strategy: Strategy

    def __post_init__(self) -> None:
        if not self.grid_pinpoints or any(h % self.tile_size or w % self.tile_size for h, w in self.grid_pinpoints):
            raise ValueError(f"grid_pinpoints must be multiples of the tile size {self.tile_size}, "
                             f"found {self.grid_pinpoints}")
        if self.tile.layout != "NCHW" or self.tile.channels != "RGB":
            raise ValueError(f"anyres tiles are RGB NCHW, found {self.tile.channels} {self.tile.layout}")
        if self.tile.size != (self.tile_size, self.tile_size):  # the grid's tiles must be what the tower takes
            raise ValueError(f"tiles cut at {self.tile_size} become {list(self.tile.size)} after their steps")
        if self.base_rows() != self.side() ** 2:  # transformers' pack_image_features fails on this config too
            raise ValueError(f"a tile gives {self.base_rows()} feature rows, not the {self.side()}^2 of its grid")

    @abc.abstractmethod
    def side(self) -> int:
        """Feature rows along one side of a tile."""

    def map_rows(self, height: int, width: int) -> int:
        """The most rows a grid's unpadded feature map (height x width) keeps in the packing."""
        return height * width

    def rows(self) -> Range:
        # The packing: the base tile's side^2 rows, then the grid's unpadded map (at most the whole grid,
        # gh*side x gw*side rows) with an image_newline after each of its rows. A square image on the
        # square grid keeps its whole map. Unpadding may keep no map rows at all (an extreme aspect ratio).
        s = self.side()

        def most(grid: tuple[int, int]) -> int:
            return s * s + self.map_rows(grid[0] * s, grid[1] * s) + grid[0] * s
        return s * s, most(self.square_grid()), max(most(g) for g in self.grids())

    def dim_ranges(self) -> dict[str, Range]:
        tiles = [1 + gh * gw for gh, gw in self.grids()]  # the grid's tiles after the whole image's
        gh, gw = self.square_grid()
        return {TILES: (min(tiles), 1 + gh * gw, max(tiles)), ROWS: self.rows()}

    def grids(self) -> tuple[tuple[int, int], ...]:
        """Each pinpoint's (rows, columns) of tiles."""
        return tuple((h // self.tile_size, w // self.tile_size) for h, w in self.grid_pinpoints)

    def square_grid(self) -> tuple[int, int]:
        """The grid select_best_resolution gives a large square image: the pinpoint keeping the most of
        it (its short side squared), then the least padding, the first of equals."""
        h, w = max(self.grid_pinpoints, key=lambda p: (min(p), -p[0] * p[1]))
        return h // self.tile_size, w // self.tile_size

    @abc.abstractmethod
    def base_rows(self) -> int:
        """Feature rows of one tile after the selection strategy (the whole image's share of the prompt)."""


@dataclass(frozen=True)
class LlavaNextSteps(AnyresSteps):
    tag: ClassVar[str] = "llava_next"
    runtime: ClassVar[str] = "edgekit.preprocess.vision.anyres:AnyresPrep"

    patch_size: int  # the vision tower's patch
    extra_tokens: int  # rows the tower adds to a tile's patches (1: CLIP's CLS), num_additional_image_tokens

    def side(self) -> int:
        return self.tile.size[0] // self.patch_size

    def base_rows(self) -> int:
        return self.side() ** 2 + self.extra_tokens - (self.strategy == "default")

    def graph_inputs(self) -> tuple[Need, ...]:
        return Need(PIXEL_VALUES, FLOAT, 4), Need(PACK_INDEX, INT64, 1)


@dataclass(frozen=True)
class LlavaOnevisionSteps(AnyresSteps):
    tag: ClassVar[str] = "llava_onevision"
    runtime: ClassVar[str] = "edgekit.preprocess.vision.anyres:AnyresPrep"

    image_tokens: int  # a tile's feature rows with the tower's own extra rows (num_image_tokens)
    max_patches: int  # vision_aspect_ratio "anyres_max_N": a larger unpadded map shrinks to about N tiles

    def side(self) -> int:
        return math.isqrt(self.image_tokens)

    def map_rows(self, height: int, width: int) -> int:
        # A map of at most 1.1^2 x max_patches tiles' rows is kept; a larger one shrinks to fewer than
        # max_patches tiles' rows (edgekit/preprocess/vision/anyres.py `_shrink`).
        return min(height * width, 121 * self.max_patches * self.side() ** 2 // 100)

    def base_rows(self) -> int:
        return self.image_tokens - (self.strategy == "default")

    def graph_inputs(self) -> tuple[Need, ...]:
        return Need(PIXEL_VALUES, FLOAT, 4), Need(PACK_INDEX, INT64, 2), Need(PACK_WEIGHT, FLOAT, 2)
