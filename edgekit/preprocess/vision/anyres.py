"""LLaVA-NeXT / LLaVA-OneVision "anyres" images in numpy + Pillow (edgekit/contract/vision/anyres.py).

Each step is transformers 5.x's, with the PIL backend's arithmetic: `select_best_resolution`,
`get_patch_output_size` (resize into the grid keeping the aspect ratio, ceil), the centred black
pad (`_pad_for_patching`: the odd pixel after), `divide_to_patches` (row by row), the whole image
resized to the base size first, then every tile's resize / crop / rescale / normalize (the shared
`preprocess_images`). The packing is the model's `pack_image_features` as a gather: `unpad_image`
(rounding to 7 digits, then the even margin), OneVision's bilinear shrink (torch's
`interpolate(mode="bilinear", align_corners=False)` source indices and float32 weights), and one
image_newline row after each feature row. The rows therefore equal the processor's token count.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.contract.vision.anyres import PACK_INDEX, PACK_WEIGHT, PIXEL_VALUES, AnyresSteps, LlavaOnevisionSteps
from edgekit.preprocess.image import load_image, preprocess_images, to_mode
from edgekit.preprocess.vision import PreparedImage, replace_in_order, rows_of

NEWLINE = -1  # the pack_index of an image_newline row


class AnyresPrep:
    """The ImagePrep of both anyres families (their steps differ only in the packing's shrink)."""

    def __init__(self, steps: AnyresSteps, image_token: str) -> None:
        self.steps, self.image_token = steps, image_token

    def prepare(self, image: Any) -> PreparedImage:
        img = to_mode(load_image(image), "RGB")
        width, height = img.size
        pixels = preprocess_images(tiles(img, self.steps), self.steps.tile)
        index, weight = pack(height, width, self.steps)
        feeds = {PIXEL_VALUES: pixels}
        if isinstance(self.steps, LlavaOnevisionSteps):
            feeds |= {PACK_INDEX: index, PACK_WEIGHT: weight}
        else:
            feeds[PACK_INDEX] = index[:, 0]
        return PreparedImage(feeds, self.image_token * len(index))

    def expand(self, text: str, images: list[PreparedImage]) -> str:
        return replace_in_order(text, self.image_token, images)

    def features(self, out: np.ndarray, image: PreparedImage) -> np.ndarray:
        return rows_of(out, out.shape[-1])  # the graph already packs the rows


def best_resolution(height: int, width: int, pinpoints: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """transformers' select_best_resolution: the most image kept, then the least padding; first wins ties."""
    best, most, waste = pinpoints[0], 0, math.inf
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        if kept > most or (kept == most and h * w - kept < waste):
            best, most, waste = (h, w), kept, h * w - kept
    return best


def fitted_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) inside `target` keeping the aspect ratio: transformers' get_patch_output_size."""
    th, tw = target
    if tw / width < th / height:
        return min(math.ceil(height * (tw / width)), th), tw
    return th, min(math.ceil(width * (th / height)), tw)


def tiles(img: Any, steps: AnyresSteps) -> list[Any]:
    """[the whole image at base_size, then the grid's tiles row by row], as uint8 PIL images / arrays."""
    from PIL import Image

    resample = Image.Resampling[steps.tile.interpolation.upper()]
    width, height = img.size
    grid = best_resolution(height, width, steps.grid_pinpoints)
    h, w = fitted_size(height, width, grid)
    arr = np.asarray(img.resize((w, h), resample) if (w, h) != img.size else img)
    top, left = (grid[0] - h) // 2, (grid[1] - w) // 2
    padded = np.zeros((*grid, 3), np.uint8)
    padded[top : top + h, left : left + w] = arr
    t = steps.tile_size
    out = [img.resize(steps.base_size[::-1], resample) if steps.base_size[::-1] != img.size else img]
    return out + [padded[y : y + t, x : x + t] for y in range(0, grid[0], t) for x in range(0, grid[1], t)]


def pack(height: int, width: int, steps: AnyresSteps) -> tuple[np.ndarray, np.ndarray]:
    """(index (rows, 4) int64, weight (rows, 4) float32): each output row as taps into the tiles'
    feature rows (tile t, row r at t * side^2 + r; -1 for image_newline), base tile first."""
    side = steps.side()
    gh, gw = (n // steps.tile_size for n in best_resolution(height, width, steps.grid_pinpoints))
    top, bottom, left, right = _unpadded(height, width, gh * side, gw * side)
    ys, xs = np.arange(top, bottom), np.arange(left, right)
    full = ((1 + (ys[:, None] // side) * gw + xs[None, :] // side) * side * side
            + (ys[:, None] % side) * side + xs[None, :] % side)  # (unpadded h, w) flat feature rows
    taps, weights = _shrink(full, steps)
    h, w = taps.shape[:2]
    newline = np.full((h, 1, 4), NEWLINE, np.int64)
    one = np.zeros((h, 1, 4), np.float32)
    one[..., 0] = 1.0
    base = np.repeat(np.arange(side * side, dtype=np.int64)[:, None], 4, axis=1)
    base_w = np.zeros((side * side, 4), np.float32)
    base_w[:, 0] = 1.0
    index = np.concatenate([base, np.concatenate([taps, newline], axis=1).reshape(-1, 4)])
    weight = np.concatenate([base_w, np.concatenate([weights, one], axis=1).reshape(-1, 4)])
    return index, weight


def _unpadded(height: int, width: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the feature map that covers the image: transformers' unpad_image."""
    if width / height > cols / rows:
        pad = (rows - int(round(height * (cols / width), 7))) // 2
        return pad, rows - pad, 0, cols
    pad = (cols - int(round(width * (rows / height), 7))) // 2
    return 0, rows, pad, cols - pad


def _shrink(full: np.ndarray, steps: AnyresSteps) -> tuple[np.ndarray, np.ndarray]:
    """The unpadded map as 4 taps per position: itself (weights 1, 0, 0, 0), or OneVision's bilinear
    shrink to (int(h // ratio), int(w // ratio)) when it holds over 1.1x max_patches tiles' rows."""
    h, w = full.shape
    ratio = math.sqrt(h * w / (steps.max_patches * steps.side() ** 2)) if isinstance(
        steps, LlavaOnevisionSteps) else 0.0
    if ratio <= 1.1:
        weight = np.zeros((h, w, 4), np.float32)
        weight[..., 0] = 1.0
        return np.repeat(full[..., None], 4, axis=2).astype(np.int64), weight
    y0, y1, ly = _linear(h, int(h // ratio))
    x0, x1, lx = _linear(w, int(w // ratio))
    taps = np.stack([full[y0][:, x0], full[y0][:, x1], full[y1][:, x0], full[y1][:, x1]], axis=2)
    wy, wx = np.stack([1 - ly, ly]), np.stack([1 - lx, lx])  # (2, out)
    weight = np.stack([wy[a][:, None] * wx[b][None, :] for a in (0, 1) for b in (0, 1)], axis=2)
    return taps.astype(np.int64), weight.astype(np.float32)


def _linear(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's align_corners=False linear source taps (i0, i1, lambda1) for `out` points over `size`."""
    scale = np.float32(size) / np.float32(out)
    src = np.maximum(scale * (np.arange(out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), size - 1)
    i1 = i0 + (i0 < size - 1)
    return i0, i1, np.clip(src - i0, 0, 1).astype(np.float32)

