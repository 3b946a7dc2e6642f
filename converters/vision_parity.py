"""Vision-language parity from the raw image and text: the artifact's numpy pre-processing against the
processor (pixels, expanded prompt ids), and its generate against transformers' on the same inputs,
greedy and beam, one image and a left-padded batch of two prompts with images of different sizes."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch

from edgekit.converters.spec import Limit
from edgekit.converters.specs.generate import prefix_share
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck

NEW_TOKENS = 16
BEAMS, BEAM_TOKENS = 3, 12
PROMPTS = ("describe the picture", "what is on the left side of it")
# Pixels: the same PIL resize on 8-bit values, then rescale and normalise in float32 on both sides:
# only float32 rounding may differ (a few ulp of values of order 1-3).
PIXEL_GATE = Limit(max=1e-5)
IMAGE_GATES = {"image_logits_max_rel": Limit(max=1e-3), "image_greedy_agreement": Limit(min=1.0), "image_beam_agreement": Limit(min=1.0),
               "image_prompt_ids_equal": Limit(min=1.0)}


def images() -> list[Any]:
    """Two photos-like images of different sizes and aspect ratios (gradients and a disc; seeded noise)."""
    from PIL import Image

    out = []
    for h, w, seed in ((48, 64, 0), (90, 40, 1)):
        y, x = np.mgrid[0:h, 0:w]
        rng = np.random.default_rng(seed)
        disc = ((y - h / 2) ** 2 + (x - w / 3) ** 2 < (min(h, w) / 3) ** 2)[..., None]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], axis=-1)
        img = np.where(disc, [220, 40, 40], base) + rng.normal(0, 8, (h, w, 3))
        out.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    return out


def image_parity(spec: Any, model: Any, precision: str, text: ParityReport) -> ParityReport:
    """The text report with the image measures added, gated by the spec's gates."""
    prep = model.vision.prep
    trigger = spec.steps.trigger if hasattr(spec.steps, "trigger") else spec.image_token
    pics = images()
    prompts = [f"{trigger} {p}" for p in PROMPTS]
    pixels, ids_equal = 0.0, []
    for pic, prompt in zip(pics, prompts):
        mine = prep.prepare(pic)
        theirs = _processor(spec, [prompt], [pic])
        # The inputs the processor also makes (a family's own, such as the anyres pack_index, are checked
        # by the rows and tokens they give); the processor's batch axis of one image dropped.
        for name in set(mine.feeds) & set(theirs):
            want = np.asarray(theirs[name].numpy() if hasattr(theirs[name], "numpy") else theirs[name])
            arr = mine.feeds[name]
            if want.shape != arr.shape and want.shape[:1] == (1,):
                want = want[0]
            pixels = max(pixels, _diff(arr, want))
        ours = model.encode([prep.expand(prompt, [mine])], special=None)[0]
        ids_equal.append(float(ours == theirs["input_ids"][0].tolist()))
    greedy, beams = [], []
    err, scale = 0.0, 1e-12
    for batch in ([0], [0, 1]):
        ps, ims = [prompts[i] for i in batch], [[pics[i]] for i in batch]
        want = _hf_generate(spec, ps, ims, NEW_TOKENS, 1)
        got, first = _ours(model, ps, ims, NEW_TOKENS, 1)
        greedy += [prefix_share(w, g) for w, g in zip(want, got)]
        # The prompt's last logits with its images (the image rows, the merge and the masks at work).
        with torch.no_grad():
            ref = spec.model(**_processor(spec, ps, ims)).logits[:, -1].float().numpy()
        err, scale = max(err, float(np.abs(ref - first).max())), max(scale, float(np.abs(ref).max()))
    ps, ims = list(prompts), [[p] for p in pics]
    want, got = _hf_generate(spec, ps, ims, BEAM_TOKENS, BEAMS), _ours(model, ps, ims, BEAM_TOKENS, BEAMS)[0]
    beams += [prefix_share(w, g) for w, g in zip(want, got)]
    measures = {"image_logits_max_rel": err / scale, "image_pixels_max_abs": pixels, "image_prompt_ids_equal": float(np.mean(ids_equal)),
                "image_greedy_agreement": float(np.mean(greedy)), "image_beam_agreement": float(np.mean(beams))}
    what = (f"images: pixels max abs diff {pixels:.2g} vs the processor, prompt ids equal "
            f"{int(sum(ids_equal))}/{len(ids_equal)}, prompt logits max rel diff {err / scale:.2g}, greedy agreement {measures['image_greedy_agreement']:.3f}, "
            f"{BEAMS}-beam agreement {measures['image_beam_agreement']:.3f}")
    values: dict[str, Any] = {**text.measures, **measures, "samples": text.samples, **text.notes,
                              **{k: list(v) for k, v in text.rows.items()}, **text.outputs}
    report = spec.report(values, precision, f"{_what(text)}; {what}")
    ok = pixels <= (PIXEL_GATE.max or 0.0) and all(ids_equal)
    pre = PreprocessCheck(ok, f"{'PASS' if ok else 'FAIL'} - numpy + Pillow against {type(spec.processor).__name__} on "
                              f"{len(pics)} images: pixels max abs diff {pixels:.2g}, expanded prompt ids equal "
                              f"{int(sum(ids_equal))}/{len(ids_equal)}", max_abs=pixels,
                          tokens_differ=len(ids_equal) - int(sum(ids_equal)))
    e2e = EndToEnd(samples=len(pics), preprocess=pre,
                   reference=f"{type(spec.processor).__name__} and transformers' generate")
    return dataclasses.replace(report, end_to_end=e2e)


def _what(report: ParityReport) -> str:
    """The text report's summary without its own gate failures (the combined report states them again)."""
    return report.summary.split("; ")[-1]


def _processor(spec: Any, texts: list[str], pics: list[list[Any]] | list[Any]) -> Any:
    proc = spec.processor
    proc.tokenizer.padding_side = "left"
    return proc(text=texts, images=pics, padding=True, return_tensors="pt")


def _hf_generate(spec: Any, texts: list[str], pics: list[list[Any]], new: int, beams: int) -> np.ndarray:
    # Every new token compared: eos off in the model's own generation config for the call (as HFReference).
    enc = _processor(spec, texts, pics)
    saved = spec.model.generation_config
    cfg = copy.deepcopy(saved)
    cfg.eos_token_id = cfg.forced_eos_token_id = None
    cfg.pad_token_id, cfg.max_new_tokens, cfg.do_sample, cfg.num_beams = 0, new, False, beams
    spec.model.generation_config = cfg
    try:
        with torch.no_grad():
            out = spec.model.generate(**enc)
    finally:
        spec.model.generation_config = saved
    return out[:, enc["input_ids"].shape[1]:].numpy()


def _ours(model: Any, texts: list[str], pics: list[list[Any]], new: int, beams: int) -> tuple[np.ndarray, np.ndarray]:
    """The new tokens, and the first step's raw logits (the prompt's last position)."""
    out = model.generate(texts, images=pics, max_new_tokens=new, do_sample=False, num_beams=beams, eos_token_id=[],
                         forced_eos_token_id=None, return_dict_in_generate=True, output_logits=True)
    return out.sequences[:, -new:], np.asarray(out.logits[0])


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0
