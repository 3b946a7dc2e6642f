"""Images beside the text of a vision-language generate (edgekit/contract/vision).

Per prompt: its images pre-processed (numpy + Pillow, the family's ImagePrep), its text with each
image's placeholder expanded as the family's processor writes it, and the vision graph run once per
image; the rows of a prompt's images, in order, are what its image tokens' embeddings become.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.contract.vision import IMAGE_FEATURES, VisionPart
from edgekit.errors import ConfigError, InputError
from edgekit.preprocess.vision import ImagePrep, PreparedImage, image_prep
from edgekit.runtimes.base import Runner


@dataclass(frozen=True)
class ImagePrompts:
    """The expanded prompt texts and, per prompt, its image rows (rows, hidden)."""

    texts: list[str]
    rows: list[np.ndarray]


class VisionInputs:
    def __init__(self, part: VisionPart, runner: Runner) -> None:
        self.part, self.runner = part, runner
        self.prep: ImagePrep = image_prep(part.steps, part.image_token)
        # What a user writes where an image goes: the processor's own trigger (Gemma 3's start-of-image
        # token) where it differs from the token the features replace.
        self.placeholder: str = getattr(part.steps, "trigger", part.image_token)

    def prompts(self, texts: Sequence[str], images: Sequence[Sequence[Any]]) -> ImagePrompts:
        """Each text with its images (`images[i]` belongs to `texts[i]`)."""
        if len(images) != len(texts):
            raise InputError(f"{len(texts)} prompts came with image lists for {len(images)}",
                             fix="pass images=[[...], [...]]: one list of images per prompt")
        total = sum(len(i) for i in images)
        if total > self.part.max_images * len(texts):
            raise InputError(f"too many images: {total} for {len(texts)} prompts",
                             fix=f"pass at most {self.part.max_images} images per prompt")
        out_texts, rows = [], []
        for text, pics in zip(texts, images):
            prepared = [self.prep.prepare(p) for p in pics]
            out_texts.append(self.prep.expand(text, prepared))
            feats = [self._rows(p) for p in prepared]
            rows.append(np.concatenate(feats) if feats else np.zeros((0, self.part.hidden), np.float32))
        return ImagePrompts(out_texts, rows)

    def _rows(self, image: PreparedImage) -> np.ndarray:
        out = self.runner.run(image.feeds)[IMAGE_FEATURES]
        return np.ascontiguousarray(self.prep.features(out, image), dtype=np.float32)

    def check(self, ids: np.ndarray, rows: list[np.ndarray]) -> None:
        """Every row's image tokens must match its images' rows (a literal image token in the text
        would shift every image after it)."""
        for r, (row, feats) in enumerate(zip(ids, rows)):
            n = int((row == self.part.image_token_id).sum())
            if n != len(feats):
                raise InputError(f"prompt {r} holds {n} image tokens for {len(feats)} image feature rows",
                                 fix=f"write the image placeholder '{self.part.image_token}' only where an image goes "
                                     "(or leave it to messages=), and keep long prompts within the context")


def per_prompt(images: Any, prompts: int) -> list[list[Any]]:
    """`images=` as one list per prompt: a flat list belongs to the one prompt (or gives one image to
    each of several prompts); a list of lists is already per prompt."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    if images and all(isinstance(i, (list, tuple)) for i in images):
        return [list(i) for i in images]
    if prompts == 1:
        return [list(images)]
    if len(images) == prompts:
        return [[i] for i in images]
    raise InputError(f"{len(images)} images for {prompts} prompts", fix="pass images=[[...], [...]], one list per prompt")


def messages_images(messages: Any) -> tuple[Any, list[list[Any]]]:
    """Messages with their image payloads taken out ({"type": "image"} stays, as processors' chat
    templates expect), and the images of each conversation in order."""
    batched = isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))
    convs = list(messages) if batched else [messages]
    cleaned, found = [], []
    for conv in convs:
        pics: list[Any] = []
        new_conv = []
        for m in conv if isinstance(conv, (list, tuple)) else []:
            content = m.get("content") if isinstance(m, Mapping) else None
            if isinstance(content, (list, tuple)):
                parts = []
                for part in content:
                    if isinstance(part, Mapping) and part.get("type") == "image":
                        image = next((part[k] for k in ("image", "url", "path") if part.get(k) is not None), None)
                        if image is None:
                            raise ConfigError("an image part of a message needs its image",
                                              found=repr(dict(part))[:80],
                                              fix='use {"type": "image", "image": "cat.jpg"} (a path, PIL image or array)')
                        pics.append(image)
                        parts.append({"type": "image"})
                    else:
                        parts.append(part)
                m = {**m, "content": parts}
            new_conv.append(m)
        cleaned.append(new_conv if isinstance(conv, (list, tuple)) else conv)
        found.append(pics)
    return (cleaned if batched else cleaned[0]), found
