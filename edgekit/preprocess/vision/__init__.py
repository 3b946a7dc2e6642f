"""Image pre-processing for vision-language generate, numpy + Pillow only (no torch on the device).

One `ImagePrep` per processor family (a module here), named by its contract dataclass
(edgekit/contract/vision: `ImageSteps.runtime`). What each does, as the family's transformers
processor does it:
    prepare(image) -> PreparedImage   the vision graph's inputs for one image (resize, tiles,
                                      patches, normalisation) and the text its placeholder becomes
    expand(text, images) -> str       the prompt with each image's placeholder text in place
                                      (the processor's own expansion: the tokenizer then reads it)
    features(out, image) -> rows      the vision graph's output as the decoder's rows (most
                                      families: unchanged; tile packing where the family does it
                                      outside the encoder)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgekit.contract.vision import ImageSteps
from edgekit.errors import ArtifactError, InputError


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for the vision graph: `feeds` by graph input name, and `placeholder`, the text
    its image token expands to in the prompt. `grid` holds what a family's positions need (Qwen2-VL's
    (t, h, w) patch grid), empty where none."""

    feeds: dict[str, np.ndarray]
    placeholder: str
    grid: tuple[int, ...] = field(default=())


class ImagePrep(Protocol):
    def __init__(self, steps: Any, image_token: str) -> None: ...

    def prepare(self, image: Any) -> PreparedImage: ...

    def expand(self, text: str, images: list[PreparedImage]) -> str: ...

    def features(self, out: np.ndarray, image: PreparedImage) -> np.ndarray: ...


def image_prep(steps: ImageSteps, image_token: str) -> ImagePrep:
    """The runtime of `steps`, imported from edgekit's own package by the class's name for it."""
    module, _, name = type(steps).runtime.partition(":")
    if not module.startswith("edgekit.preprocess.vision."):
        raise ArtifactError(f"image steps '{type(steps).tag}' name a runtime outside edgekit", found=module)
    return getattr(importlib.import_module(module), name)(steps, image_token)


def replace_in_order(text: str, token: str, images: list[PreparedImage]) -> str:
    """Each occurrence of `token` in `text` replaced by the next image's placeholder text: what
    LLaVA-style processors do. The counts must agree, as transformers' processors require."""
    parts = text.split(token)
    if len(parts) - 1 != len(images):
        raise InputError(f"the prompt has {len(parts) - 1} image placeholders '{token}' for {len(images)} images",
                         fix=f"put one '{token}' in the text per image, or pass the images in messages=")
    out = [parts[0]]
    for image, rest in zip(images, parts[1:]):
        out += [image.placeholder, rest]
    return "".join(out)


def rows_of(out: np.ndarray, hidden: int) -> np.ndarray:
    """A vision graph's output as (rows, hidden) float32."""
    return np.ascontiguousarray(out.reshape(-1, hidden), dtype=np.float32)
