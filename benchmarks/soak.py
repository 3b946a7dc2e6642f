"""Soak: 10,000 sequential classify calls and 1,000 generate calls; prints the resident-memory curve.

    .venv/bin/python benchmarks/soak.py [--classify ARTIFACT] [--generate ARTIFACT] [--classify-calls N] ...

Without artifact paths it converts small seeded ones first (needs edgekit[export]). Memory must
stop growing after warm-up: the script prints RSS every `--every` calls, the growth after warm-up,
and exits 1 if that growth exceeds `--bound-mb`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _default_classifier(work: Path) -> Path:
    import torch

    import edgekit
    from examples.models import small_cnn

    out = work / "soak-cnn"
    edgekit.convert(small_cnn(channels=3, size=32), out, example_inputs=torch.rand(1, 3, 32, 32),
                    labels=[f"c{i}" for i in range(10)], overwrite=True)
    return out


def _default_generator(work: Path) -> Path:
    import edgekit
    from benchmarks.models import gpt2_folder

    out = work / "soak-gpt2"
    edgekit.convert(gpt2_folder(work / "gpt2"), out, overwrite=True)
    return out


def soak(name: str, call: Callable[[int], Any], calls: int, warmup: int, every: int) -> float:
    """Run `call(i)` `calls` times; print RSS along the way; return growth (MB) after warm-up."""
    import psutil

    proc = psutil.Process()
    base = 0.0
    t0 = time.perf_counter()
    print(f"{name}: {calls} calls, warm-up {warmup}")
    print(f"{'calls':>8} {'RSS MB':>9} {'vs warm-up':>11} {'calls/s':>9}")
    peak_growth = 0.0
    for i in range(1, calls + 1):
        call(i)
        if i == warmup:
            base = proc.memory_info().rss / 2**20
        if i % every == 0 or i == calls:
            rss = proc.memory_info().rss / 2**20
            growth = rss - base if i >= warmup else float("nan")
            if i >= warmup:
                peak_growth = max(peak_growth, growth)
            print(f"{i:>8} {rss:>9.1f} {growth:>+11.2f} {i / (time.perf_counter() - t0):>9.1f}", flush=True)
    return peak_growth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classify", type=Path, help="classify artifact (default: convert a small CNN)")
    ap.add_argument("--generate", type=Path, help="generate artifact (default: convert a small GPT-2)")
    ap.add_argument("--classify-calls", type=int, default=10_000)
    ap.add_argument("--generate-calls", type=int, default=1_000)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--bound-mb", type=float, default=8.0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import edgekit

    work = Path(tempfile.mkdtemp(prefix="edgekit-soak-"))
    growth: dict[str, float] = {}
    clf = edgekit.load(args.classify or _default_classifier(work), device="cpu")
    rng = np.random.default_rng(0)
    h, w = clf.contract.input.size
    images = [rng.integers(0, 256, (h + k, w + k, 3), dtype=np.uint8) for k in range(8)]
    growth["classify"] = soak("classify", lambda i: clf.classify(images[i % 8], top_k=3), args.classify_calls,
                              warmup=min(500, args.classify_calls), every=args.every)
    gen = edgekit.load(args.generate or _default_generator(work), device="cpu")
    prompts = ["def main(", "The module", "import os", "class A:"]
    growth["generate"] = soak(
        "generate", lambda i: gen.generate(prompts[i % 4], max_new_tokens=args.max_new_tokens, do_sample=i % 2 == 1,
                                           seed=i), args.generate_calls, warmup=min(100, args.generate_calls),
        every=max(1, args.every // 10))
    print("growth after warm-up (MB): " + ", ".join(f"{k} {v:+.2f}" for k, v in growth.items()))
    if any(v > args.bound_mb for v in growth.values()):
        print(f"FAIL: resident memory grew more than {args.bound_mb} MB after warm-up")
        sys.exit(1)
    print(f"OK: resident memory flat within {args.bound_mb} MB after warm-up")


if __name__ == "__main__":
    main()
