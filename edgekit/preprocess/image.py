"""Image loading and pre-processing with PIL and numpy only (no torch on the device).

`preprocess_images(images, cfg)` follows the contract's `ImageInput` (edgekit/contract/classify.py):
resize (exact, or the short side), center crop, rescale, normalize, channel order, layout. These
reproduce Hugging Face's PIL-based image processors and plain torchvision-style pipelines.
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
    return np.stack([_one(load_image(x), cfg) for x in images]).astype(np.float32, copy=False)


def _one(img: Any, cfg: ImageInput) -> np.ndarray:
    img = _to_mode(img, cfg.channels)
    resample = _RESAMPLE[cfg.interpolation]
    if isinstance(cfg.resize, ShortestEdge):
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = cfg.resize.shortest, int(cfg.resize.shortest * long / short)
        img = img.resize((new_short, new_long) if w <= h else (new_long, new_short), resample)
    elif isinstance(cfg.resize, ExactSize) and img.size != (cfg.resize.width, cfg.resize.height):
        img = img.resize((cfg.resize.width, cfg.resize.height), resample)
    if cfg.crop is not None:
        ch, cw = cfg.crop
        w, h = img.size
        top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if cfg.channels == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * np.float32(cfg.rescale)
    arr = (arr - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    if cfg.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def _to_mode(img: Any, channels: str) -> Any:
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
