"""What a vision-language `generate` artifact adds: a "vision" graph and the image pre-processing.

graph "vision"  one image's pre-processed tensors (the processor's output names: pixel_values, and
                where the family has them image_sizes, pixel_attention_mask, image_grid_thw, ...)
                -> image_features (rows, hidden): the rows that replace the image's placeholder
                tokens, in order. It runs once per image, so images of different sizes never pad.
graph "model"   the decoder of edgekit/contract/generate.py plus the input image_features
                (rows, hidden): row k replaces the embedding of the k-th placeholder token
                (`image_token_id`) of the call, counted row by row through the batch (transformers'
                masked_scatter order). Decode steps feed zero rows.

`ImageSteps` is an open family like the state kinds: one frozen dataclass per processor family
(edgekit/contract/vision/<family>.py), holding its saved config, and naming the numpy + Pillow
code that runs it (`runtime`, "module:Class" inside edgekit.preprocess.vision, imported by name
from edgekit's own package: never from the artifact).
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from edgekit.contract.base import FLOAT, GraphNeeds, Need, Range

IMAGE_FEATURES = "image_features"
ROWS = "image_rows"  # the vision graph's output rows and the decoder's image_features rows
TILES = "image_tiles"  # the vision graph's tiles of one image (tiling families)


class ImageSteps(abc.ABC):
    """One processor family's pre-processing (frozen dataclass subclasses with a `tag` and a `runtime`)."""

    tag: ClassVar[str]
    runtime: ClassVar[str]  # "edgekit.preprocess.vision.<module>:<Class>", the ImagePrep that runs it

    @classmethod
    def members(cls) -> tuple[type[ImageSteps], ...]:
        """The processor families a field of this type may hold (the codec decodes one by its "type")."""
        return kinds()

    @abc.abstractmethod
    def graph_inputs(self) -> tuple[Need, ...]:
        """The vision graph's inputs, named as the processor names its outputs."""

    @abc.abstractmethod
    def rows(self) -> Range:
        """(min, typical, max) feature rows one image gives: its share of the decoder's image_features."""

    def dim_ranges(self) -> dict[str, Range]:
        """(min, typical, max) of each named dim of the vision graph, per image (TensorRT's profile);
        none where every image has one shape."""
        return {}


def kinds() -> tuple[type[ImageSteps], ...]:
    """Every ImageSteps subclass: this package's modules (imported once) and any defined elsewhere."""
    _import_kinds()
    out, todo = [], list(ImageSteps.__subclasses__())
    while todo:
        sub = todo.pop()
        todo += sub.__subclasses__()
        if dataclasses.is_dataclass(sub) and "tag" in vars(sub):
            out.append(sub)
    return tuple(sorted(out, key=lambda c: c.tag))


@cache
def _import_kinds() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


@dataclass(frozen=True)
class VisionPart:
    """The image side of a vision-language decoder.

    `image_token` / `image_token_id`: the placeholder the processor expands per image and whose
    embeddings the features replace; `hidden`: the feature width (the decoder's embedding size);
    `max_images`: the most images one call takes (each adds its rows to the prompt).
    """

    steps: ImageSteps
    image_token: str
    image_token_id: int
    hidden: int
    max_images: int = 8

    def __post_init__(self) -> None:
        if self.image_token_id < 0 or self.hidden < 1 or self.max_images < 1 or not self.image_token:
            raise ValueError(f"a vision part needs an image token, its id >= 0, hidden >= 1, max_images >= 1: {self}")

    def graph_needs(self) -> GraphNeeds:
        return GraphNeeds(self.steps.graph_inputs(), (Need(IMAGE_FEATURES, FLOAT, 2),))

    def decoder_input(self) -> Need:
        return Need(IMAGE_FEATURES, FLOAT, 2)
