"""Image loading and pre-processing with PIL and numpy only (no torch on the device).

`preprocess_images(images, cfg)` follows the contract's `ImageInput` (edgekit/contract/classify.py):
resize (exact, the short side, or the short side bounded by the long one), center crop (zero-padded
when the image is smaller), rescale, normalize, channel order, layout. These reproduce transformers'
PIL image processors step for step (tests/test_image_processors.py compares them pixel by pixel).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract.classify import ExactSize, ImageInput, ShortestEdge
from edgekit.errors import InputError

_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}  # PIL's numbers


def load_image(x: Any) -> Any:
    """A path, PIL image, or HxW / HxWxC uint8 array -> PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(x, Image.Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        if not p.is_file():
            raise InputError(f"no image file at '{p}'", fix="check the path")
        try:
            img = Image.open(p)
            img.load()
            return img
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"'{p}' is not a readable image ({e})", fix="pass a JPEG, PNG, BMP or WebP file") from None
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise InputError(
                "an image array must be uint8 (HxW or HxWxC, 0..255)",
                found=f"dtype {x.dtype}",
                fix="pass (array * 255).clip(0, 255).astype(np.uint8), or a PIL image",
            )
        if x.ndim == 3 and x.shape[2] == 1:
            x = x[:, :, 0]
        if not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4))) or 0 in x.shape:
            raise InputError("an image array must be HxW, HxWx1, HxWx3 or HxWx4", found=f"shape {list(x.shape)}")
        return Image.fromarray(x)
    raise InputError(
        f"cannot read an image from a {type(x).__name__}",
        fix="pass a file path, a PIL image, or an HxWxC uint8 numpy array",
    )


def preprocess_images(images: list[Any], cfg: ImageInput) -> np.ndarray:
    """Images -> one float32 batch laid out as the graph expects."""
    arrays = [_one(load_image(x), cfg) for x in images]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:  # only without a resize to one size: images of different sizes cannot batch
        raise InputError("the images pre-process to different sizes, so they cannot run as one batch",
                         found=f"shapes {[list(s) for s in shapes[:4]]}",
                         fix="pass images of one size, or classify them one at a time")
    return np.stack(arrays).astype(np.float32, copy=False)


def resized_size(width: int, height: int, resize: ExactSize | ShortestEdge) -> tuple[int, int]:
    """(width, height) after `resize`: transformers' `get_resize_output_image_size` (short side) and
    `get_size_with_aspect_ratio` (short side bounded by a long side), integer truncation included."""
    if isinstance(resize, ExactSize):
        return resize.width, resize.height
    size, longest = resize.shortest, resize.longest
    if longest is None:
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        return (size, new_long) if width <= height else (new_long, size)
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > longest:
        raw = longest * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return width, height
    scale = raw if raw is not None else size
    if width < height:
        return size, int(scale * height / width)
    return int(scale * width / height), size


def center_crop(arr: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Center crop of an HxWxC array; zero-padded (centered) where the image is smaller, as transformers does."""
    h, w = arr.shape[:2]
    ch, cw = crop
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return arr[top : top + ch, left : left + cw]
    out = np.zeros((max(ch, h), max(cw, w), arr.shape[2]), arr.dtype)
    pt, pl = -(-(out.shape[0] - h) // 2), -(-(out.shape[1] - w) // 2)  # ceil, as transformers pads
    out[pt : pt + h, pl : pl + w] = arr
    top, left = (out.shape[0] - ch) // 2, (out.shape[1] - cw) // 2
    return out[top : top + ch, left : left + cw]


def _one(img: Any, cfg: ImageInput) -> np.ndarray:
    img = to_mode(img, cfg.channels)
    if cfg.resize is not None:
        size = resized_size(*img.size, cfg.resize)
        if size != img.size:  # PIL returns a copy for the same size anyway
            img = img.resize(size, _RESAMPLE[cfg.interpolation])
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if cfg.crop is not None:
        arr = center_crop(arr, cfg.crop)
    if cfg.channels == "BGR":
        arr = arr[:, :, ::-1]
    # transformers' arithmetic: rescale in float64 then float32, normalize in float32.
    x = (arr.astype(np.float64) * cfg.rescale).astype(np.float32)
    x = (x - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    if cfg.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x)


def to_mode(img: Any, channels: str) -> Any:
    """Palette, RGBA, CMYK, 16-bit...: composite alpha on white, then the channel mode wanted."""
    from PIL import Image

    if img.mode in ("RGB", "L") and (channels == "L") == (img.mode == "L"):
        return img
    if img.mode in ("RGBA", "LA", "P") and "transparency" in img.info or img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    try:
        return img.convert("L" if channels == "L" else "RGB")
    except (ValueError, OSError) as e:  # modes PIL cannot convert directly (La, PA, I;16B...)
        raise InputError(f"cannot convert a PIL image of mode {img.mode} to {channels} ({e})",
                         fix="convert it yourself first, e.g. img.convert('RGB')") from None
