"""`FixedImages` (edgekit/contract/vision/fixed.py): the classification pipeline's steps per image,
and the placeholder expansion of LLaVA's, PaliGemma's and Gemma 3's processors."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.contract.vision.fixed import FixedImages
from edgekit.errors import ArtifactError
from edgekit.preprocess.image import load_image, preprocess_images
from edgekit.preprocess.vision import PreparedImage, replace_in_order


class FixedPrep:
    def __init__(self, steps: FixedImages, image_token: str) -> None:
        self.steps, self.image_token = steps, image_token
        self.placeholder = steps.before + image_token * steps.tokens + steps.after

    def prepare(self, image: Any) -> PreparedImage:
        pixels = preprocess_images([load_image(image)], self.steps.image)
        return PreparedImage({self.steps.image.name: pixels}, self.placeholder)

    def expand(self, text: str, images: list[PreparedImage]) -> str:
        s = self.steps
        if s.layout == "paligemma":
            text = self._paligemma(text, len(images))
        return replace_in_order(text, s.trigger, images)

    def _paligemma(self, text: str, n: int) -> str:
        """PaliGemmaProcessor's prompt: images first when the text names none, the bos token after the
        last image, a newline after the text."""
        t = self.steps.trigger
        if t not in text:
            return t * n + self.steps.bos_token + text + "\n"
        end = text.rfind(t) + len(t)
        return text[:end] + self.steps.bos_token + text[end:] + "\n"

    def features(self, out: np.ndarray, image: PreparedImage) -> np.ndarray:
        rows = out.reshape(-1, out.shape[-1])
        if len(rows) != self.steps.tokens:
            raise ArtifactError(f"the vision graph gave {len(rows)} feature rows for an image of {self.steps.tokens} tokens",
                             fix="convert the model again")
        return rows
