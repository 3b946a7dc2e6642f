"""PyTorch eager vs edgekit (onnxruntime CPU) on a ResNet-18-shaped network, same run, same threads.

    python benchmarks/bench_classify.py [--size 224] [--threads 2] [--repeat 10] [--out /tmp/bench-resnet]

Times the raw forward (pre-processed float32 batches) at batch 1 and 32, fp32 and int8 (static
Q/DQ calibrated on 32 random images), median of `--repeat` runs after warm-up, and prints the
ratio PyTorch time / edgekit time (> 1: edgekit is faster). Weights are random: this measures
speed only; the parity figures of each artifact are printed beside it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-resnet18"))
    ap.add_argument("--reuse", action="store_true", help="time the artifacts already in --out (same seed)")
    args = ap.parse_args(argv)
    os.environ["EDGEKIT_THREADS"] = str(args.threads)  # the onnxruntime runner's intra-op threads

    import torch

    import edgekit
    from examples.models import resnet18

    torch.set_num_threads(args.threads)
    model = resnet18(1000, 64)
    rng = np.random.default_rng(0)
    calib = list(rng.integers(0, 256, size=(32, args.size, args.size, 3), dtype=np.uint8))
    rows = []
    for precision in ("fp32", "int8"):
        t = time.perf_counter()
        if args.reuse and (args.out / precision / "edgekit.json").is_file():
            from edgekit.artifact import open_artifact

            art = open_artifact(args.out / precision)
        else:
            art = edgekit.convert(model, args.out / precision, example_inputs=torch.rand(1, 3, args.size, args.size),
                                  labels=[str(i) for i in range(1000)], precision=precision,
                                  calibration=calib if precision == "int8" else None, overwrite=True, strict=False)
        convert_s = time.perf_counter() - t
        clf = edgekit.load(art.path, device="cpu")
        par = art.manifest.parity.outputs["logits"]
        kept = art.manifest.precision.details.get("kept_float_nodes", {}).get("model", [])
        print(f"{precision}: convert {convert_s:.1f} s, parity cosine {par['cosine']:.5f} max_rel {par['max_rel']:.4f} "
              f"top1 {par['top1']:.3f} (passed: {art.manifest.parity.passed}), kept float: {len(kept)}", flush=True)
        for b in args.batches:
            x = rng.random((b, 3, args.size, args.size), dtype=np.float32)
            xt = torch.from_numpy(x)

            def torch_run() -> object:
                with torch.inference_mode():
                    return model(xt)

            def edge_run() -> object:
                return clf(pixel_values=x)

            reps = max(3, args.repeat // (4 if b > 8 else 1))
            pt, ek = median_ms(torch_run, reps), median_ms(edge_run, reps)
            rows.append((precision, b, pt, ek))
            print(f"  batch {b:3d}: PyTorch eager fp32 {pt:8.1f} ms   edgekit {precision} {ek:8.1f} ms   "
                  f"ratio {pt / ek:5.2f}x", flush=True)
    print(f"\nResNet-18-shaped, {args.size}x{args.size}, {args.threads} threads, median of runs")
    print("| precision | batch | PyTorch eager ms | edgekit ms | speed-up |")
    print("|---|---|---|---|---|")
    for precision, b, pt, ek in rows:
        print(f"| {precision} | {b} | {pt:.1f} | {ek:.1f} | {pt / ek:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
