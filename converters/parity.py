"""Numbers that say whether a converted graph's outputs match PyTorch's on the same feeds.

`max_rel` is the max abs diff divided by the largest reference magnitude (logit scales differ
between models); `cosine` is per sample, minimum over samples; `top1` is the share of samples
whose argmax agrees. `OUTPUT_GATES` are the limits per precision, applied to every output; the
int8 accuracy budget (sensitivity.py) holds the quantized graph to the same int8 gate.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgekit.converters.spec import Gate, Limit, gate_failures
from edgekit.parity_report import ParityReport
from edgekit.runtimes.base import Runner

ALL_WITHIN = "all outputs within tolerance"  # the summary of a graph check that passed

# Measured on this project's test models (trained digits CNNs, ResNet-18/MobileNet shapes, tiny
# ViT/BERT; see tests/test_classify_*.py): fp32 max_rel ~1e-6, fp16 ~1e-3 (cosine > 0.99999),
# static int8 max_rel 0.01-0.095 and cosine 0.992-0.9999 once within the accuracy budget. The
# gates leave a margin of 2.5-4x over those; top-1 is only meaningful on representative inputs
# (the calibration data, stored in the artifact), not random pixels where logits are near ties.
OUTPUT_GATES: dict[str, Gate] = {
    "fp32": {"max_rel": Limit(max=1e-3), "cosine": Limit(min=0.99999), "top1": Limit(min=1.0)},
    "fp16": {"max_rel": Limit(max=3e-2), "cosine": Limit(min=0.999), "top1": Limit(min=0.98)},
    "int8": {"max_rel": Limit(max=0.25), "cosine": Limit(min=0.98), "top1": Limit(min=0.9)},
    "int4": {"max_rel": Limit(max=1.0), "cosine": Limit(min=0.95), "top1": Limit(min=0.8)},
}


def compare_outputs(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref = np.asarray(ref, dtype=np.float64).reshape(ref.shape[0], -1) if ref.ndim > 1 else ref[None].astype(np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    diff = np.abs(ref - got)
    num = (ref * got).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        "cosine": float(cos.min()),
    }


def graph_parity(
    reference: Runner, candidate: Runner, feeds: Iterable[dict[str, np.ndarray]], precision: str,
    argmax_output: str | None = None,
) -> ParityReport:
    """Run both runners on the same feeds; report per output and pass/fail against OUTPUT_GATES."""
    refs: dict[str, list[np.ndarray]] = {}
    gots: dict[str, list[np.ndarray]] = {}
    n = 0
    for f in feeds:
        r = reference.run(f)
        g = candidate.run(f, outputs=list(r))
        for k in r:
            refs.setdefault(k, []).append(r[k].reshape(r[k].shape[0], -1))
            gots.setdefault(k, []).append(g[k].astype(np.float32).reshape(r[k].shape[0], -1))
        n += 1
    gate = OUTPUT_GATES[precision]
    outputs: dict[str, dict[str, float]] = {}
    failures = []
    for k in refs:
        ref, got = np.concatenate(refs[k]), np.concatenate(gots[k])
        stats = compare_outputs(ref, got)
        if k == argmax_output:
            stats["top1"] = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
        outputs[k] = stats
        failures += gate_failures(stats, gate, prefix=f"{k}.")
    return ParityReport(passed=not failures, summary="; ".join(failures) if failures else ALL_WITHIN,
                        precision=precision, tolerances={k: str(v) for k, v in gate.items()}, samples=n,
                        outputs=outputs)
