"""Processors that turn every image into one fixed-size tensor and a fixed number of feature rows:
LLaVA / VipLLaVA (CLIP's processor), PaliGemma (SigLIP's), Gemma 3 (pan-and-scan off, its default)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from edgekit.contract.base import FLOAT, Need, Range
from edgekit.contract.classify import ImageInput
from edgekit.contract.vision import ImageSteps


@dataclass(frozen=True)
class FixedImages(ImageSteps):
    """One (1, C, H, W) pixel_values per image, `tokens` image tokens in the prompt.

    `trigger`: what the user writes where an image goes (LLaVA's "<image>", Gemma 3's
    "<start_of_image>"); it becomes `before` + image token x `tokens` + `after`. `layout`
    "paligemma": PaliGemma's processor also puts the bos token after the last image and a newline
    after the text, and prefixes the images when the text names none.
    """

    tag: ClassVar[str] = "fixed"
    runtime: ClassVar[str] = "edgekit.preprocess.vision.fixed:FixedPrep"
    image: ImageInput
    tokens: int
    trigger: str
    before: str = ""
    after: str = ""
    layout: Literal["inline", "paligemma"] = "inline"
    bos_token: str = ""  # the "paligemma" layout's

    def __post_init__(self) -> None:
        if self.tokens < 1 or not self.trigger:
            raise ValueError(f"fixed image steps need tokens >= 1 and a trigger text, found {self.tokens}, {self.trigger!r}")

    def graph_inputs(self) -> tuple[Need, ...]:
        return (Need(self.image.name, FLOAT, 4),)

    def rows(self) -> Range:
        return self.tokens, self.tokens, self.tokens
