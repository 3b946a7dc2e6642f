"""What a `classify` artifact contains: one graph, its input (image, text or tensor), labels, scores.

    graph "model":  input  pixel_values (batch, C, H, W) float | input_ids/attention_mask/... int64
                           | any tensor (batch, ...)
                    output the `output` tensor (batch, classes) float
The runtime (edgekit/tasks/classifier.py) turns raw inputs into the graph's input as `input`
says, runs the graph, and turns the output row into scores as `scores` says: the graph's output is
recorded as what it is (logits, probabilities, log-probabilities), never assumed, so `classify()`
returns the scores a user of the source model reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from edgekit.contract.base import BATCH, DTYPES, FLOAT, INT64, GraphNeeds, Need, Phase, Range, SEQUENCE, Section

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
# How the graph's output row becomes the scores `classify` returns:
#   "softmax"            the output is logits of one-label classes (softmax over them)
#   "sigmoid"            the output is logits of independent labels (multi-label, or one logit)
#   "probabilities"      the output already is probabilities (the model ends in softmax or sigmoid)
#   "log_probabilities"  the output is log-probabilities (the model ends in log_softmax): exp
#   "none"               raw values (regression heads), ranked as they are
Scores = Literal["softmax", "sigmoid", "probabilities", "log_probabilities", "none"]
SCORES: tuple[str, ...] = ("softmax", "sigmoid", "probabilities", "log_probabilities", "none")


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
    """Resize so that the short side is `shortest` pixels, keeping the aspect ratio.

    The long side is int(shortest * long / short) (torchvision's and transformers' rule). With
    `longest`, the short side shrinks first so that the long side is at most `longest` pixels
    (transformers' {"shortest_edge", "longest_edge"} sizes: `get_size_with_aspect_ratio`).
    """

    tag: ClassVar[str] = "shortest_edge"
    shortest: int
    longest: int | None = None

    def __post_init__(self) -> None:
        _dims((self.shortest, self.longest or self.shortest), "shortest_edge")
        if self.longest is not None and self.longest < self.shortest:
            raise ValueError(f"longest_edge {self.longest} must be at least shortest_edge {self.shortest}")


@dataclass(frozen=True)
class ImageInput:
    """Image -> float tensor: resize, center crop, rescale, normalize, channel order and layout.

    The steps and their arithmetic are transformers' PIL image processors': resize on 8-bit
    pixels with PIL's `resample` filter, center crop zero-padded where the image is smaller than
    the crop, rescale in float64 then float32, normalize in float32. Conventions with another
    arithmetic (crop_pct, rescale offsets) are translated into these steps at convert time, or
    refused there.
    """

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
    # False for models whose answer changes when masked padding follows a text (convolutions, Fourier
    # mixing over positions): texts then run in groups of one token length, never padded.
    pad_batches: bool = True

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
    scores: Scores = "softmax"

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels must not be empty")
        if self.scores not in SCORES:
            raise ValueError(f"scores must be one of {list(SCORES)}, found {self.scores!r}")

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
