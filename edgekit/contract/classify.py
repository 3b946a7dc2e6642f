"""What a `classify` artifact contains: one graph, its input (image, text or tensor), labels, scores.

    graph "model":  input  pixel_values (batch, C, H, W) float | input_ids/attention_mask/... int64
                           | any tensor (batch, ...)
                    output the `output` tensor (batch, classes) float
The runtime (edgekit/tasks/classifier.py) turns raw inputs into the graph's input as `input`
says, runs the graph, and turns the output row into scores as `scores` says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from edgekit.contract.base import BATCH, DTYPES, FLOAT, INT64, GraphNeeds, Need, Phase, Range, SEQUENCE, Section

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


def _dims(pair: tuple[int, int], what: str) -> None:
    if not all(1 <= x <= 16384 for x in pair):
        raise ValueError(f"{what} must be between 1 and 16384 pixels, found {list(pair)}")


@dataclass(frozen=True)
class ExactSize:
    """Resize to exactly height x width (the aspect ratio is not kept)."""

    tag: ClassVar[str] = "exact"
    height: int
    width: int

    def __post_init__(self) -> None:
        _dims((self.height, self.width), "resize")


@dataclass(frozen=True)
class ShortestEdge:
    """Resize so that the short side is `shortest` pixels, keeping the aspect ratio."""

    tag: ClassVar[str] = "shortest_edge"
    shortest: int

    def __post_init__(self) -> None:
        _dims((self.shortest, 1), "shortest_edge")


@dataclass(frozen=True)
class ImageInput:
    """Image -> float tensor: resize, center crop, rescale, normalize, channel order and layout."""

    tag: ClassVar[str] = "image"
    name: str  # the graph input
    size: tuple[int, int]  # (height, width) the graph takes
    resize: ExactSize | ShortestEdge | None
    crop: tuple[int, int] | None  # center crop (height, width) after the resize
    interpolation: Interpolation
    rescale: float  # applied to 0..255 pixel values
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: Literal["RGB", "BGR", "L"]
    layout: Literal["NCHW", "NHWC"]

    def __post_init__(self) -> None:
        _dims(self.size, "size")
        if self.crop is not None:
            _dims(self.crop, "crop")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if not 1 <= len(values) <= 4:
                raise ValueError(f"{what} must have 1 to 4 values (one per channel), found {len(values)}")
        if 0.0 in self.std:
            raise ValueError("std must not contain 0")


@dataclass(frozen=True)
class TextInput:
    """Text -> token ids with the artifact's tokenizer.json (the `tokenizers` library, no transformers)."""

    tag: ClassVar[str] = "text"
    tokenizer: str  # file in the artifact
    max_length: int  # longer texts are truncated (the closing special token kept)
    pad_id: int
    inputs: tuple[Literal["input_ids", "attention_mask", "token_type_ids"], ...]  # what the graph takes

    def __post_init__(self) -> None:
        if not 1 <= self.max_length <= 1 << 20:
            raise ValueError(f"max_length must be a positive number of tokens, found {self.max_length}")
        if "input_ids" not in self.inputs:
            raise ValueError("a text graph must take input_ids")


@dataclass(frozen=True)
class TensorInput:
    """A plain tensor model: each item passed to `classify` is one sample without its batch axis."""

    tag: ClassVar[str] = "tensor"
    name: str


@dataclass(frozen=True)
class ClassifySection(Section):
    task: ClassVar[str] = "classify"
    tag: ClassVar[str] = "classify"
    model: ClassVar[str] = "edgekit.tasks.classifier:Classifier"
    batch: ClassVar[Range] = (1, 8, 32)  # the classifier runs lists in batches of up to 32

    input: ImageInput | TextInput | TensorInput
    labels: tuple[str, ...]
    output: str = "logits"

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels must not be empty")

    def needs(self) -> dict[str, GraphNeeds]:
        x = self.input
        if isinstance(x, ImageInput):
            inputs = (Need(x.name, FLOAT, 4),)
        elif isinstance(x, TextInput):
            inputs = tuple(Need(n, INT64, 2) for n in x.inputs)
        else:
            inputs = (Need(x.name, DTYPES, None),)
        return {"model": GraphNeeds(inputs, (Need(self.output, FLOAT, 2),))}

    def call_shapes(self, graph: str) -> list[Phase]:
        dims: dict[str, Range] = {BATCH: self.batch}
        if isinstance(self.input, TextInput):
            n = self.input.max_length
            dims[SEQUENCE] = (1, min(128, n), n)
        return [("all", dims)]
