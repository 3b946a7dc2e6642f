"""Image loading and pre-processing with PIL and numpy only (no torch on the device).

The `preprocess` section of a manifest (kind "image") holds:
  size [h, w]            the network's input size
  resize                 [h, w] | {"shortest_edge": n} | null
  crop                   [h, w] center crop after resize | null
  interpolation          "bilinear" | "bicubic" | "nearest" | "lanczos"
  rescale                factor applied to 0..255 pixels (1/255 by default)
  mean, std              per channel, applied after rescale
  channels               "RGB" | "BGR" | "L"
  layout                 "NCHW" | "NHWC"
These reproduce Hugging Face's (PIL-based) image processors and plain torchvision-style pipelines.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ArtifactError, InputError

_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


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


def _is_dims(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 16384 for x in v))


def _is_numbers(v: Any) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= 4
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v))


def check_image_config(cfg: dict[str, Any]) -> None:
    """Refuse a malformed preprocess section (an edited or damaged edgekit.json) with one clear error."""
    resize = cfg.get("resize", cfg.get("size"))
    checks = {
        "size": _is_dims(cfg.get("size", [1, 1])),
        "resize": resize is None or _is_dims(resize) or (
            isinstance(resize, dict) and _is_dims([resize.get("shortest_edge"), 1])),
        "crop": cfg.get("crop") is None or _is_dims(cfg.get("crop")),
        "interpolation": str(cfg.get("interpolation", "bilinear")) in _RESAMPLE,
        "rescale": _is_numbers([cfg.get("rescale", 1.0)]),
        "mean": _is_numbers(cfg.get("mean", [0.0])),
        "std": _is_numbers(cfg.get("std", [1.0])) and 0.0 not in cfg.get("std", [1.0]),
        "channels": cfg.get("channels", "RGB") in ("RGB", "BGR", "L"),
        "layout": cfg.get("layout", "NCHW") in ("NCHW", "NHWC"),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ArtifactError(
            "the artifact's image pre-processing settings are malformed",
            found=", ".join(f"{k}={cfg.get(k)!r:.60}" for k in bad),
            fix="the edgekit.json was edited or damaged; convert the model again",
        )


def preprocess_images(images: list[Any], cfg: dict[str, Any]) -> np.ndarray:
    """Images -> one float32 batch laid out as the graph expects."""
    check_image_config(cfg)
    return np.stack([_one(load_image(x), cfg) for x in images]).astype(np.float32, copy=False)


def _one(img: Any, cfg: dict[str, Any]) -> np.ndarray:
    from PIL import Image

    channels = cfg.get("channels", "RGB")
    if img.mode not in ("RGB", "L") or (channels == "L") != (img.mode == "L"):
        # Palette, RGBA, CMYK, 16-bit...: composite alpha on white, then the channel mode wanted.
        if img.mode in ("RGBA", "LA", "P") and "transparency" in img.info or img.mode in ("RGBA", "LA"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        try:
            img = img.convert("L" if channels == "L" else "RGB")
        except (ValueError, OSError) as e:  # modes PIL cannot convert directly (La, PA, I;16B...)
            raise InputError(f"cannot convert a PIL image of mode {img.mode} to {channels} ({e})",
                             fix="convert it yourself first, e.g. img.convert('RGB')") from None
    resample = _RESAMPLE[cfg.get("interpolation", "bilinear")]
    resize = cfg.get("resize", cfg.get("size"))
    if isinstance(resize, dict) and "shortest_edge" in resize:
        s = int(resize["shortest_edge"])
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        img = img.resize((new_short, new_long) if w <= h else (new_long, new_short), resample)
    elif resize:
        h, w = int(resize[0]), int(resize[1])
        if img.size != (w, h):
            img = img.resize((w, h), resample)
    crop = cfg.get("crop")
    if crop:
        ch, cw = int(crop[0]), int(crop[1])
        w, h = img.size
        top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * float(cfg.get("rescale", 1.0 / 255.0))
    mean = np.asarray(cfg.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(cfg.get("std", [1.0]), dtype=np.float32)
    arr = (arr - mean) / std
    if cfg.get("layout", "NCHW") == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)
