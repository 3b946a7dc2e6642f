"""A Hugging Face folder's image processor -> the contract's `ImageInput`, or a clear refusal.

The processor is loaded as transformers loads it (its class defaults filled in, not just the
keys the JSON happens to hold), with the PIL backend: the one whose arithmetic edgekit's numpy +
PIL runtime reproduces. Each processor family's own steps, as transformers 5.x implements them:

    base PilBackend (ViT, BiT, CLIP, DeiT, MobileNetV1, PVT, ...): resize by {height, width} |
        {shortest_edge} | {shortest_edge, longest_edge}; center crop; rescale; normalize
    ConvNeXt (also ResNet, RegNet, CvT): crop_pct below 384: short side to int(size / crop_pct),
        center crop size x size; at 384 and above: resize to size x size
    PoolFormer: crop_pct always: short side (or height, width) / crop_pct, then center crop
    LeViT: short side to int(256 / 224 * shortest_edge), then center crop
    MobileViT: no normalize, channels flipped to BGR
    EfficientNet: rescale offset (x * scale - 1) and include_top (a second division by std)
    BEiT, MobileNetV2, Segformer: the base steps (their overrides only touch segmentation maps)
Any other processor overriding a step is refused, naming it: never converted into silent drift.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import UnsupportedError

_STEPS = ("resize", "_preprocess", "center_crop", "rescale", "normalize", "process_image", "preprocess")
# Classes whose overrides keep the base arithmetic for images (they add segmentation-map handling).
_SAME_AS_BASE = ("BeitImageProcessorPil", "MobileNetV2ImageProcessorPil", "SegformerImageProcessorPil")
# Classes whose overrides add one step behind an option: the base arithmetic while that option is off.
_SAME_WHEN_OFF = {"LlavaImageProcessorPil": "do_pad", "Gemma3ImageProcessorPil": "do_pan_and_scan"}
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def load_processor(folder: Path) -> Any:
    """The folder's image processor with the PIL backend (None when the folder has none)."""
    import json

    from transformers import AutoImageProcessor
    from transformers.image_processing_backends import PilBackend

    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        if "image_processor_type" not in raw and not (folder / "config.json").is_file():
            # Standard keys and no class named: the base steps are what the keys mean.
            return PilBackend(**{k: v for k, v in raw.items() if not k.startswith("_")})
        return AutoImageProcessor.from_pretrained(folder, backend="pil")
    except Exception as e:  # transformers raises ValueError/OSError/KeyError for unknown processors
        raise UnsupportedError(f"cannot load the image processor of '{folder}' with transformers ({e})",
                               fix="pass preprocess= with the steps the model expects") from None


def processor_keys(proc: Any, channels: int) -> dict[str, Any]:
    """The `preprocess=` keys (converters/specs/classify.py `image_input`) that reproduce `proc`."""
    cls = type(proc).__name__
    overridden = [m for m in _STEPS if any(m in k.__dict__ for k in type(proc).__mro__
                                            if k.__name__.endswith("Pil") and k.__name__ != "PilBackend")]
    translate = _FAMILIES.get(cls)
    option = _SAME_WHEN_OFF.get(cls)
    if option is not None and getattr(proc, option, False):
        raise UnsupportedError(f"edgekit cannot reproduce {cls} with {option} on", fix=f"set {option} to false")
    if translate is None and overridden and cls not in _SAME_AS_BASE and option is None:
        raise UnsupportedError(
            f"edgekit cannot reproduce the image processor {cls}", found=f"it overrides {overridden}",
            fix="pass preprocess= with equivalent steps (the convert gate compares them with this processor)")
    size = dict(proc.size or {}) if getattr(proc, "do_resize", True) else {}
    if set(size) - {"height", "width", "shortest_edge", "longest_edge"}:
        raise UnsupportedError(f"edgekit cannot reproduce the resize {size} of {cls}",
                               fix="pass preprocess= with a resize to [height, width] or {'shortest_edge': n}")
    crop = proc.crop_size if getattr(proc, "do_center_crop", False) else None
    keys: dict[str, Any] = {
        "resize": _base_resize(size),
        "crop": [int(crop["height"]), int(crop["width"])] if crop else None,
        "interpolation": _RESAMPLE[int(proc.resample if proc.resample is not None else 2)],
        "rescale": float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0,
        "mean": _per_channel(proc.image_mean, channels, 0.0) if getattr(proc, "do_normalize", False) else [0.0] * channels,
        "std": _per_channel(proc.image_std, channels, 1.0) if getattr(proc, "do_normalize", False) else [1.0] * channels,
        "channels": "RGB" if channels == 3 else "L", "layout": "NCHW",
    }
    if translate is not None:
        translate(proc, size, keys)
    keys["size"] = keys["crop"] or _final(keys["resize"])
    if keys["size"] is None:
        raise UnsupportedError(f"the image processor {cls} keeps each image's own size",
                               fix="pass preprocess= with a resize to the size the model takes")
    return keys


def _base_resize(size: dict[str, int]) -> Any:
    if not size:
        return None
    if "height" in size and "width" in size:
        return [int(size["height"]), int(size["width"])]
    if "longest_edge" in size:
        return {"shortest_edge": int(size["shortest_edge"]), "longest_edge": int(size["longest_edge"])}
    return {"shortest_edge": int(size["shortest_edge"])}


def _final(resize: Any) -> list[int] | None:
    """The one size every image has after `resize`, if it has one (a short-side resize keeps the ratio)."""
    return resize if isinstance(resize, list) else None


def _per_channel(v: Any, channels: int, default: float) -> list[float]:
    if v is None:
        return [default] * channels
    values = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * channels
    return values


def _convnext(proc: Any, size: dict[str, int], keys: dict[str, Any]) -> None:
    if not size:
        return
    edge = int(size["shortest_edge"])
    if edge < 384:
        if getattr(proc, "do_center_crop", False):  # a crop of a crop rounds differently from one crop
            raise UnsupportedError("edgekit cannot reproduce ConvNeXt's crop_pct followed by a second center crop",
                                   found=f"size {size}, crop_size {proc.crop_size}",
                                   fix="set do_center_crop to false in preprocessor_config.json, or pass preprocess=")
        keys["resize"] = {"shortest_edge": int(edge / proc.crop_pct)}
        keys["crop"] = [edge, edge]
    else:
        keys["resize"] = [edge, edge]


def _poolformer(proc: Any, size: dict[str, int], keys: dict[str, Any]) -> None:
    if not size or proc.crop_pct is None:
        return
    pct = proc.crop_pct
    if "shortest_edge" in size:
        keys["resize"] = {"shortest_edge": int(size["shortest_edge"] / pct)}
    elif size["height"] == size["width"]:
        keys["resize"] = {"shortest_edge": int(size["height"] / pct)}
    else:
        keys["resize"] = [int(size["height"] / pct), int(size["width"] / pct)]


def _levit(proc: Any, size: dict[str, int], keys: dict[str, Any]) -> None:
    if "shortest_edge" in size:
        keys["resize"] = {"shortest_edge": int((256 / 224) * size["shortest_edge"])}


def _mobilevit(proc: Any, size: dict[str, int], keys: dict[str, Any]) -> None:
    if getattr(proc, "do_flip_channel_order", True):
        keys["channels"] = "BGR"


def _efficientnet(proc: Any, size: dict[str, int], keys: dict[str, Any]) -> None:
    if getattr(proc, "do_rescale", True) and getattr(proc, "rescale_offset", False):
        keys["mean"] = [m + 1.0 for m in keys["mean"]]  # (x * scale - 1 - mean) / std
    if getattr(proc, "include_top", False) and getattr(proc, "do_normalize", False):
        keys["std"] = [s * s for s in keys["std"]]  # normalized again by std alone


_FAMILIES = {"ConvNextImageProcessorPil": _convnext, "PoolFormerImageProcessorPil": _poolformer,
             "LevitImageProcessorPil": _levit, "MobileViTImageProcessorPil": _mobilevit,
             "EfficientNetImageProcessorPil": _efficientnet}


def hf_pixels(proc: Any, images: list[Any]) -> Any:
    """What the processor itself makes of `images` (RGB PIL images): (batch, C, H, W) float32."""
    import numpy as np

    out = proc(images=images, return_tensors="np")["pixel_values"]
    return np.asarray(out, dtype=np.float32)
