"""Image pre-processing (PIL + numpy, no torch): each recorded step does what it says."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.errors import InputError
from edgekit.preprocess.image import load_image, preprocess_images

BASE = {"size": [4, 6], "resize": [4, 6], "crop": None, "interpolation": "nearest", "rescale": 1 / 255,
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channels": "RGB", "layout": "NCHW"}


def _cfg(**keys: object) -> object:
    """The typed ImageInput that `preprocess=` keys make (what a plain image model records)."""
    from edgekit.converters.specs.classify import image_input

    return image_input(3, (4, 6), {**BASE, **keys})


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_resize_scale_normalize_layout() -> None:
    arr = _img(8, 12)
    cfg = _cfg(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    got = preprocess_images([arr], cfg)[0]
    want = np.asarray(Image.fromarray(arr).resize((6, 4), Image.NEAREST), np.float32) / 255
    want = ((want - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5]).transpose(2, 0, 1)
    assert got.shape == (3, 4, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_bgr_nhwc_and_grey() -> None:
    arr = _img(4, 6)
    rgb = preprocess_images([arr], _cfg(layout="NHWC"))[0]
    bgr = preprocess_images([arr], _cfg(layout="NHWC", channels="BGR"))[0]
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    grey = preprocess_images([arr], _cfg(channels="L", mean=[0.0], std=[1.0]))[0]
    want = np.asarray(Image.fromarray(arr).convert("L"), np.float32) / 255
    np.testing.assert_allclose(grey[0], want, atol=1e-6)


def test_shortest_edge_then_center_crop() -> None:
    """torchvision-style Resize(s) + CenterCrop(c): the short side to s, aspect kept, then the middle."""
    arr = _img(20, 40)
    cfg = _cfg(resize={"shortest_edge": 10}, crop=[8, 8], size=[8, 8])
    got = preprocess_images([arr], cfg)[0]
    mid = Image.fromarray(arr).resize((20, 10), Image.NEAREST)
    want = np.asarray(mid, np.float32)[1:9, 6:14] / 255
    np.testing.assert_allclose(got, want.transpose(2, 0, 1), atol=1e-6)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)  # fully transparent black
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = preprocess_images([path], _cfg())[0]
    np.testing.assert_allclose(got, 1.0)


def test_paths_pil_and_arrays_agree(tmp_path: Path) -> None:
    arr = _img(9, 7)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    a, b, c = preprocess_images([arr, Image.fromarray(arr), path], _cfg(interpolation="bilinear"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros((4, 4, 2), np.uint8), 3.0, "nope.png"])
def test_bad_images(bad: object) -> None:
    with pytest.raises(InputError):
        load_image(bad)


def test_hf_processor_config_is_read(tmp_path: Path) -> None:
    """A ViT-style preprocessor_config.json becomes the manifest's recorded pipeline."""
    import json

    from edgekit.contract.classify import ShortestEdge
    from edgekit.converters.specs.classify import hf_image_input

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 40}, "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32}, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.3, 0.2, 0.1]}))
    pre = hf_image_input(tmp_path, {"num_channels": 3}, {})
    assert pre.resize == ShortestEdge(40) and pre.crop == (32, 32) and pre.size == (32, 32)
    assert pre.interpolation == "bicubic" and pre.mean == (0.1, 0.2, 0.3)
    assert preprocess_images([_img(50, 70)], pre).shape == (1, 3, 32, 32)
