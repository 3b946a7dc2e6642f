"""End-to-end parity for `classify`: from raw inputs to the scores, against the source's own pipeline.

The graph check (parity.py) feeds the same tensors to both sides; this one starts from raw inputs —
the user's calibration images / texts, else photos of odd sizes and modes (of the model's size where
the declared pre-processing does not resize) or sample texts — and runs
  edgekit:  its numpy + PIL pre-processing (or tokenizer.json) -> the graph -> `Classifier.scores`
  source:   the folder's own image processor / tokenizer (transformers, for Hugging Face folders;
            the declared `preprocess=` steps for plain modules) -> the PyTorch model -> the scores
            its user reads (transformers pipelines' softmax / sigmoid / none)
and reports the pre-processing difference on its own line (max abs pixel difference, or tokens
that differ) and the largest score difference. Both are gated: pre-processing must match at every
precision; scores within `SCORE_GATES` for fp32 and fp16 (int8/int4 are gated on the graph check's
top-1 and cosine, their scores reported).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekit.contract.classify import ImageInput, TextInput
from edgekit.converters.parity import ALL_WITHIN
from edgekit.converters.spec import Limit, gate_failures
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck

PREPROCESS_MAX_ABS = 1e-4  # transformers' arithmetic is reproduced: measured 0 to 1e-6 (README)
SCORE_GATES = {"fp32": Limit(max=1e-4), "fp16": Limit(max=2e-2)}
SAMPLE_TEXTS = ["The quick brown fox jumps over the lazy dog.", "I loved this film, the acting was superb!",
                "Terrible service; we waited an hour and left.", "ok", "Ünïcödé text, numbers 12345 and symbols #@!"]


@dataclass
class Reference:
    """The source's side: what its pre-processing made (for the pre-processing line) and its scores."""

    feeds: dict[str, np.ndarray] | None  # the source pre-processing's graph feeds; None: not separate
    scores: np.ndarray  # (batch, classes), float64
    preprocess: PreprocessCheck | None  # measured difference, or None to compare `feeds` here
    note: str = ""


PHOTO_SHAPES = [((45, 61), "RGB"), ((70, 37), "RGB"), ((13, 9), "RGB"), ((33, 33), "L"), ((50, 80), "RGBA"),
                ((300, 200), "P")]  # (height, width): wide, tall, tiny, grayscale, RGBA, palette


def photos(n: int = 6, seed: int = 0, size: tuple[int, int] | None = None) -> list[Any]:
    """Photo-like images of odd sizes and modes; all of `size` (height, width) when given."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for (h, w), mode in PHOTO_SHAPES[:n]:
        h, w = size or (h, w)
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([xx * 255 // w, yy * 255 // h, ((xx + yy) * 7) % 256], -1) + rng.integers(0, 40, (h, w, 3))
        out.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert(mode))
    return out


def raw_inputs(x: Any, given: list[Any]) -> list[Any]:
    """The user's raw inputs when given; else inputs the declared pipeline accepts: odd-size photos
    where it maps every size to the model's, photos of the model's size where it does not (no resize)."""
    if given:
        return given[:16]
    if isinstance(x, ImageInput):
        if all(pipeline_size(x, h, w) == tuple(x.size) for (h, w), _ in PHOTO_SHAPES):
            return photos()
        return photos(size=tuple(x.size))
    if isinstance(x, TextInput):
        return list(SAMPLE_TEXTS)
    return []


def pipeline_size(x: ImageInput, height: int, width: int) -> tuple[int, int]:
    """(height, width) the declared pre-processing makes of an image of that size."""
    from edgekit.preprocess.image import resized_size

    if x.crop is not None:  # the center crop zero-pads smaller images: always the crop's size
        return tuple(x.crop)  # type: ignore[return-value]
    if x.resize is not None:
        width, height = resized_size(width, height, x.resize)
    return height, width


def end_to_end(spec: Any, model: Any, report: ParityReport, given: list[Any]) -> ParityReport:
    """The graph parity `report` with the end-to-end measures added, and their gates."""
    raw = raw_inputs(model.contract.input, given)
    if not raw:  # a plain tensor model: its raw input is the tensor the graph check fed
        return replace(report, notes={**report.notes,
                                      "end_to_end": "the inputs are tensors: the graph check above is end to end"})
    try:
        ref = spec.reference(model, raw)
    except Exception as e:  # the source's own pipeline failed on these inputs: said, and the gate fails
        error = f"{type(e).__name__}: {str(e)[:300]}"
        return replace(report, passed=False, end_to_end=EndToEnd(samples=len(raw), error=error),
                       summary=f"{report.summary}; end to end: the source's pipeline failed ({error[:200]})")
    got = np.concatenate([model.scores(model.logits(raw[i : i + 8])) for i in range(0, len(raw), 8)]).astype(np.float64)
    pre = ref.preprocess if ref.preprocess is not None else preprocess_difference(model.prepare(raw), ref.feeds)
    diff = float(np.abs(got - ref.scores).max()) if got.shape == ref.scores.shape else float("inf")
    top1 = float((got.argmax(-1) == ref.scores.argmax(-1)).mean()) if np.isfinite(diff) else 0.0
    failures = [f"pre-processing differs from the source's: {pre.summary}"] if not pre.passed else []
    gate = SCORE_GATES.get(report.precision)
    if gate is not None:
        failures += gate_failures({"scores_max_abs": diff}, {"scores_max_abs": gate}, prefix="end_to_end.")
    line = f"end to end ({len(raw)} raw inputs): scores max abs diff {diff:.3g}; pre-processing {pre.summary}"
    summary = "; ".join([*(f for f in [report.summary] if f != ALL_WITHIN), *failures, line] if failures
                        else [report.summary, line])
    # A shape mismatch (inf) is stored as None: JSON has no infinity, and the failure is in the summary.
    e2e = EndToEnd(samples=len(raw), scores_max_abs=diff if np.isfinite(diff) else None, top1=top1,
                   preprocess=pre, reference=ref.note)
    return replace(report, passed=report.passed and not failures, summary=summary, end_to_end=e2e)


def preprocess_difference(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray] | None) -> PreprocessCheck:
    """Max abs difference of float feeds (pixels), or count of differing integer feeds (tokens)."""
    if theirs is None:
        return PreprocessCheck(passed=True, summary="same steps (declared)")
    worst, tokens, problems = 0.0, 0, []
    for name, a in mine.items():
        b = theirs.get(name)
        if b is None:
            continue
        if a.shape != b.shape:
            problems.append(f"'{name}' shape {list(a.shape)} vs the source's {list(b.shape)}")
        elif np.issubdtype(a.dtype, np.integer):
            tokens += int((a != b).sum())
        else:
            worst = max(worst, float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()))
    passed = not problems and tokens == 0 and worst <= PREPROCESS_MAX_ABS
    summary = "; ".join(problems) if problems else (f"{tokens} token ids differ" if tokens else
                                                    f"max abs difference {worst:.3g} (limit {PREPROCESS_MAX_ABS:g})")
    return PreprocessCheck(passed=passed, summary=summary, max_abs=worst, tokens_differ=tokens)
