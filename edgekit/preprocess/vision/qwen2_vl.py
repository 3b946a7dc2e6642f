"""Qwen2-VL / Qwen2.5-VL pre-processing in numpy + Pillow (edgekit/contract/vision/qwen2_vl.py), and
`rope_index`: the decoder's 3-row M-RoPE positions for a prompt with images (transformers'
`get_rope_index`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.contract.vision.qwen2_vl import POSITIONS, Qwen2VLSteps
from edgekit.errors import InputError
from edgekit.preprocess.image import _RESAMPLE, load_image, to_mode
from edgekit.preprocess.vision import PreparedImage, replace_in_order, rows_of


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' `smart_resize`: both sides to multiples of `factor` (Python's round, half to even),
    the area brought within [min_pixels, max_pixels] keeping the aspect ratio."""
    if max(height, width) / min(height, width) > 200:
        raise InputError(f"Qwen2-VL takes images with sides at most 200:1, found {width}x{height}",
                         fix="crop or pad the image to a less extreme aspect ratio")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def patch_positions(grid_h: int, grid_w: int, merge: int) -> np.ndarray:
    """(h * w, 2) int64 (row, column) of each patch in the processor's block-major order (merge x merge
    groups, row by row): transformers' `get_vision_position_ids` for one frame."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    block = (grid_h // merge, merge, grid_w // merge, merge)
    return np.stack([rows.reshape(block).transpose(0, 2, 1, 3).ravel(),
                     cols.reshape(block).transpose(0, 2, 1, 3).ravel()], axis=-1).astype(np.int64)


class Qwen2VLPrep:
    """Runs `Qwen2VLSteps`: flat patches, their positions, and the image's placeholder tokens."""

    def __init__(self, steps: Qwen2VLSteps, image_token: str) -> None:
        self.steps, self.image_token = steps, image_token
        self._mean = np.asarray(steps.mean, dtype=np.float32)
        self._std = np.asarray(steps.std, dtype=np.float32)

    def prepare(self, image: Any) -> PreparedImage:
        s = self.steps
        img = to_mode(load_image(image), "RGB")
        height, width = smart_resize(img.height, img.width, s.patch * s.merge, s.min_pixels, s.max_pixels)
        if (width, height) != img.size:
            img = img.resize((width, height), _RESAMPLE[s.interpolation])
        # transformers' arithmetic: rescale in float64 then float32, normalize in float32.
        x = (np.asarray(img).astype(np.float64) * s.rescale).astype(np.float32)
        x = ((x - self._mean) / self._std).transpose(2, 0, 1)
        gh, gw = height // s.patch, width // s.patch
        # (C, H, W) -> (h/m, w/m, m, m, C, T, P, P): the processor's `patchify`, the frame repeated T times
        x = x.reshape(3, gh // s.merge, s.merge, s.patch, gw // s.merge, s.merge, s.patch).transpose(1, 4, 2, 5, 0, 3, 6)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], s.temporal_patch, s.patch, s.patch))
        pixels = np.ascontiguousarray(x.reshape(gh * gw, 3 * s.temporal_patch * s.patch * s.patch))
        feeds = {"pixel_values": pixels, POSITIONS: patch_positions(gh, gw, s.merge)}
        return PreparedImage(feeds, self.image_token * (gh * gw // s.merge**2), grid=(1, gh, gw))

    def expand(self, text: str, images: list[PreparedImage]) -> str:
        return replace_in_order(text, self.image_token, images)

    def features(self, out: np.ndarray, image: PreparedImage) -> np.ndarray:
        return rows_of(out, out.shape[-1])


def rope_index(input_ids: np.ndarray, image_token_id: int, grids: list[tuple[int, ...]], merge: int,
               attention_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """transformers' Qwen2-VL `get_rope_index` for images: (positions (3, batch, seq) int64, deltas (batch, 1)).

    Per row, over its unmasked tokens: a text run continues one position for all three rows; a run of
    image tokens takes the next grid and gets (start, start + row, start + column) over its merged
    (h / merge, w / merge) grid, after which text resumes at start + max(h, w) / merge. Masked
    (padding) tokens keep position 0. A later token's position, on all three rows, is the number of
    unmasked tokens before it + delta (transformers' decode steps: attention_mask.cumsum - 1 + delta).
    """
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    positions = np.zeros((3, *ids.shape), dtype=np.int64)
    deltas = np.zeros((ids.shape[0], 1), dtype=np.int64)
    todo = iter(grids)
    for b in range(ids.shape[0]):
        kinds = ids[b][mask[b]] == image_token_id
        cuts = [0, *(np.flatnonzero(np.diff(kinds)) + 1).tolist(), len(kinds)]  # runs of text / image tokens
        pieces, start = [], 0
        for i, end in zip(cuts[:-1], cuts[1:]):
            if kinds[i]:
                _, h, w = next(todo)
                rows, cols = np.meshgrid(np.arange(h // merge), np.arange(w // merge), indexing="ij")
                pieces.append(np.stack([np.zeros(rows.size, np.int64), rows.ravel(), cols.ravel()]) + start)
                start += max(h, w) // merge
            else:
                pieces.append(np.broadcast_to(np.arange(end - i) + start, (3, end - i)))
                start += end - i
        row = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        positions[:, b, mask[b]] = row
        deltas[b, 0] = (row.max() + 1 if row.size else 0) - len(kinds)
    return positions, deltas
