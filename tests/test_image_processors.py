"""edgekit's numpy + PIL pre-processing against transformers' own image processors, pixel by pixel.

Each processor family edgekit supports (converters/image_processors.py), with each convention the
family has: size as height/width, shortest_edge, shortest + longest edge, crop_pct below and at
384, center crop on/off (zero-padded for small images), resample filters, rescale (and offset),
normalize on/off, RGB/BGR. Images of odd sizes and modes (tall, wide, tiny, grayscale, RGBA).
A convention edgekit cannot reproduce is refused with a clear error.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgekit.converters.image_processors import hf_pixels, processor_keys
from edgekit.converters.specs.classify import image_input
from edgekit.errors import UnsupportedError
from edgekit.preprocess.image import preprocess_images


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for (h, w), mode in (((45, 61), "RGB"), ((70, 37), "RGB"), ((9, 13), "RGB"), ((33, 33), "L"), ((50, 80), "RGBA")):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[: h // 2] //= 3  # structure, not only noise: resampling filters differ on edges
        out.append(Image.fromarray(arr).convert(mode))
    return out


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit-height-width": ("ViTImageProcessorPil", {"size": {"height": 24, "width": 20}}),
    "vit-no-normalize-no-rescale": ("ViTImageProcessorPil", {"size": {"height": 16, "width": 16},
                                                             "do_normalize": False, "do_rescale": False}),
    "vit-nearest": ("ViTImageProcessorPil", {"size": {"height": 16, "width": 16}, "resample": 0}),
    "vit-no-resize": ("ViTImageProcessorPil", {"do_resize": False, "do_center_crop": True,
                                               "crop_size": {"height": 8, "width": 8}}),
    "bit-shortest-crop": ("BitImageProcessorPil", {"size": {"shortest_edge": 20}, "crop_size": {"height": 16, "width": 16}}),
    "bit-crop-larger-than-image": ("BitImageProcessorPil", {"size": {"shortest_edge": 12},
                                                            "crop_size": {"height": 16, "width": 20}}),
    "clip-lanczos": ("CLIPImageProcessorPil", {"size": {"shortest_edge": 18}, "crop_size": {"height": 18, "width": 18},
                                               "resample": 1}),
    "deit-resize-then-crop": ("DeiTImageProcessorPil", {"size": {"height": 26, "width": 26},
                                                        "crop_size": {"height": 22, "width": 22}}),
    "convnext-crop-pct": ("ConvNextImageProcessorPil", {"size": {"shortest_edge": 32}}),
    "convnext-crop-pct-0.95": ("ConvNextImageProcessorPil", {"size": {"shortest_edge": 30}, "crop_pct": 0.95}),
    "convnext-384": ("ConvNextImageProcessorPil", {"size": {"shortest_edge": 384}}),
    "poolformer-shortest": ("PoolFormerImageProcessorPil", {"size": {"shortest_edge": 24},
                                                            "crop_size": {"height": 24, "width": 24}}),
    "poolformer-height-width": ("PoolFormerImageProcessorPil", {"size": {"height": 20, "width": 28},
                                                                "crop_size": {"height": 18, "width": 24}}),
    "levit": ("LevitImageProcessorPil", {"size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28}}),
    "mobilevit-bgr": ("MobileViTImageProcessorPil", {"size": {"shortest_edge": 20}, "crop_size": {"height": 16, "width": 16}}),
    "efficientnet-offset-top": ("EfficientNetImageProcessorPil", {"size": {"height": 20, "width": 20},
                                                                  "rescale_offset": True, "include_top": True}),
    "mobilenet_v2": ("MobileNetV2ImageProcessorPil", {"size": {"shortest_edge": 24}, "crop_size": {"height": 20, "width": 20}}),
    "beit": ("BeitImageProcessorPil", {"size": {"height": 20, "width": 20}}),
    "shortest-longest": ("ViTImageProcessorPil", {"size": {"shortest_edge": 20, "longest_edge": 24},
                                                  "do_center_crop": True, "crop_size": {"height": 16, "width": 16}}),
}

# Largest difference per processor (normalized units); transformers' float64 rescale is reproduced,
# so only EfficientNet's second division by std (one float32 rounding) is not bit-exact.
TOLERANCE = 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_pixels_match_the_hf_processor(case: str) -> None:
    import transformers

    cls, kwargs = CASES[case]
    proc = getattr(transformers, cls)(**kwargs)
    cfg = image_input(3, (1, 1), processor_keys(proc, 3))
    for img in _images():
        want = hf_pixels(proc, [img.convert("RGB") if img.mode != "RGBA" else _on_white(img)])
        got = preprocess_images([img], cfg)
        assert got.shape == want.shape, f"{case}: {got.shape} vs {want.shape} for a {img.size} image"
        assert np.abs(got - want).max() <= TOLERANCE, f"{case}: max diff {np.abs(got - want).max()} for {img.size}"


def _on_white(img: Image.Image) -> Image.Image:
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, img).convert("RGB")


def test_photos_of_different_shapes_batch_after_crop_pct() -> None:
    """The issue's ConvNeXt case: a batch of non-square photos used to die in np.stack."""
    from transformers import ConvNextImageProcessorPil

    cfg = image_input(3, (1, 1), processor_keys(ConvNextImageProcessorPil(size={"shortest_edge": 32}), 3))
    assert preprocess_images(_images(), cfg).shape == (5, 3, 32, 32)


def test_processors_edgekit_cannot_reproduce_are_refused() -> None:
    from transformers import ConvNextImageProcessorPil, ImageGPTImageProcessorPil

    with pytest.raises(UnsupportedError, match="ImageGPTImageProcessorPil"):
        processor_keys(ImageGPTImageProcessorPil(), 3)
    with pytest.raises(UnsupportedError, match="second center crop"):
        processor_keys(ConvNextImageProcessorPil(size={"shortest_edge": 32}, do_center_crop=True,
                                                 crop_size={"height": 24, "width": 24}), 3)
