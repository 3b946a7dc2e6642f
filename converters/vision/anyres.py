"""LLaVA-NeXT (and NeXT-Video's images) and LLaVA-OneVision: the anyres processor's steps, and the
vision graph's module that packs the tiles' features by the prepared gather.

transformers' `get_image_features` splits the tiles per image by Python sizes and unpads with
slices that depend on the image's size, so it cannot export with a varying tile count. The module
here runs the same vision tower, feature layer(s), CLS drop and projector over the tiles, then
takes the packing as data (edgekit/contract/vision/anyres.py): a gather with image_newline where
the index is -1, and for OneVision the bilinear shrink as 4 weighted taps.
"""
from __future__ import annotations

from typing import Any

from edgekit.contract.classify import ImageInput
from edgekit.contract.vision import ROWS, TILES
from edgekit.contract.vision.anyres import (PACK_INDEX, PACK_WEIGHT, PIXEL_VALUES, AnyresSteps, LlavaNextSteps,
                                            LlavaOnevisionSteps)
from edgekit.converters.specs.classify import image_input
from edgekit.errors import SourceError, UnsupportedError

PROCESSORS = ("LlavaNextProcessor", "LlavaNextVideoProcessor", "LlavaOnevisionProcessor")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def steps(processor: Any) -> AnyresSteps:
    """The processor's saved anyres config (its image processor's, the feature count's fields)."""
    ip, name = processor.image_processor, type(processor).__name__
    # The processor takes the CLS row off its count only when it says "default"; unset counts it.
    saved = processor.vision_feature_select_strategy
    strategy = {None: "full", "full": "full", "default": "default"}.get(saved)
    if strategy is None:
        raise UnsupportedError(f"{name} has vision_feature_select_strategy {saved!r}",
                               found="edgekit knows 'default' (drop CLS) and 'full'", fix="fix processor_config.json")
    size, crop = ip.size, ip.crop_size
    base = (size.height, size.width) if size.height and size.width else (size.shortest_edge, size.shortest_edge)
    tile_size = crop.height if crop and crop.height else size.height or size.shortest_edge
    common = {"tile": _tile(ip), "base_size": base, "tile_size": tile_size, "strategy": strategy,
              "grid_pinpoints": tuple((int(h), int(w)) for h, w in ip.image_grid_pinpoints)}
    try:
        if name != "LlavaOnevisionProcessor":
            return LlavaNextSteps(**common, patch_size=int(processor.patch_size),
                                  extra_tokens=int(processor.num_additional_image_tokens or 0))
        return LlavaOnevisionSteps(**common, image_tokens=int(processor.num_image_tokens),
                                   max_patches=_max_patches(str(processor.vision_aspect_ratio)))
    except (ValueError, TypeError) as e:  # the contract's own checks, or a field the folder leaves unset
        raise UnsupportedError(f"edgekit cannot reproduce the anyres config of {name} ({e})",
                               fix="check processor_config.json against the model's config.json") from None


def image_token(processor: Any) -> str:
    """The token whose embeddings the features replace (and that the user writes per image)."""
    return str(processor.image_token)


def dims(steps: AnyresSteps) -> dict[str, dict[int, str]]:
    """The vision graph's axes that vary per image: tiles, and the packed rows."""
    out = {PIXEL_VALUES: {0: TILES}, PACK_INDEX: {0: ROWS}}
    return out | {PACK_WEIGHT: {0: ROWS}} if isinstance(steps, LlavaOnevisionSteps) else out


def _max_patches(ratio: str) -> int:
    """vision_aspect_ratio "anyres_max_N" -> N (OneVision's processor and model read it so)."""
    if not ratio.startswith("anyres_max_") or not ratio[len("anyres_max_"):].isdigit():
        raise ValueError(f"vision_aspect_ratio {ratio!r} is not 'anyres_max_N'")
    return int(ratio[len("anyres_max_"):])


def _tile(ip: Any) -> ImageInput:
    """Each tile's own steps: the processor's do_resize / do_center_crop / do_rescale / do_normalize."""
    size, crop = ip.size, ip.crop_size
    resize = None
    if ip.do_resize:
        resize = [size.height, size.width] if size.height and size.width else {"shortest_edge": size.shortest_edge}
    final = [crop.height, crop.width] if ip.do_center_crop else resize if isinstance(resize, list) else None
    if final is None:  # a short-side resize of a square tile keeps it square
        edge = size.shortest_edge if resize else (crop.height if crop and crop.height else size.height)
        final = [edge, edge]
    norm = bool(ip.do_normalize)
    return image_input(3, tuple(final), {
        "size": final, "resize": resize, "crop": [crop.height, crop.width] if ip.do_center_crop else None,
        "interpolation": _RESAMPLE[int(ip.resample if ip.resample is not None else 2)],
        "rescale": float(ip.rescale_factor) if ip.do_rescale else 1.0,
        "mean": [float(v) for v in ip.image_mean] if norm else [0.0] * 3,
        "std": [float(v) for v in ip.image_std] if norm else [1.0] * 3})


def encoder(model: Any, steps: AnyresSteps) -> Any:
    """forward(pixel_values (tiles, 3, H, W), pack_index[, pack_weight]) -> (rows, hidden)."""
    _check_agrees(model.config, steps)
    return _encoder_class()(model, steps)


def _check_agrees(config: Any, steps: AnyresSteps) -> None:
    """The model packs by its own config; the runtime by the processor's: they must be one grid."""
    vision = config.vision_config
    pins = tuple((int(h), int(w)) for h, w in config.image_grid_pinpoints)
    found = {"grid_pinpoints": pins, "tile": vision.image_size, "side": vision.image_size // vision.patch_size,
             "strategy": config.vision_feature_select_strategy}
    want = {"grid_pinpoints": steps.grid_pinpoints, "tile": steps.tile_size, "side": steps.side(),
            "strategy": steps.strategy}
    if isinstance(steps, LlavaOnevisionSteps):
        found["max_patches"], want["max_patches"] = config.vision_aspect_ratio, f"anyres_max_{steps.max_patches}"
    bad = {k: (found[k], want[k]) for k in want if found[k] != want[k]}
    if bad:
        raise SourceError("the folder's processor and model disagree on the image grid",
                          found=", ".join(f"{k}: model {m}, processor {p}" for k, (m, p) in bad.items()),
                          fix="save the processor that belongs to this model (processor_config.json)")


def _encoder_class() -> type:
    import torch

    class AnyresEncoder(torch.nn.Module):
        def __init__(self, model: Any, steps: AnyresSteps) -> None:
            super().__init__()
            inner = model.model
            self.tower, self.projector = inner.vision_tower, inner.multi_modal_projector
            self.newline = inner.image_newline
            self.layer, self.drop_cls = model.config.vision_feature_layer, steps.strategy == "default"

        def forward(self, pixel_values: torch.Tensor, pack_index: torch.Tensor,
                    pack_weight: torch.Tensor | None = None) -> torch.Tensor:
            hidden = self.tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
            layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
            feats = torch.cat([hidden[i] for i in layers], dim=-1)
            feats = self.projector(feats[:, 1:] if self.drop_cls else feats).flatten(0, 1)  # (tiles * side^2, D)
            rows = torch.where((pack_index >= 0).unsqueeze(-1), feats[pack_index.clamp(min=0)],
                               self.newline.to(feats.dtype))
            return rows if pack_weight is None else (rows * pack_weight.unsqueeze(-1).to(rows.dtype)).sum(-2)

    return AnyresEncoder
