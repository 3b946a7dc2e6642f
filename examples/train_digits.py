"""Train the seed's MNIST-style CNN on scikit-learn's handwritten digits, convert it, compare.

    python examples/train_digits.py [--epochs 15] [--out models/digits]

The 8x8 digits bundled with scikit-learn (no download) are upscaled to 28x28. The script trains
in PyTorch, converts to an fp32 and an int8 artifact (int8 calibrated on training images), and
prints the held-out accuracy of PyTorch, edgekit fp32 and edgekit int8 side by side. The held-out
images go through the artifact's own pre-processing as uint8 pictures, the way a user calls
`classify`, so the comparison includes pre-processing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `examples.models` when run as a script


def digits_pictures(size: int = 28, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits as uint8 pictures (N, size, size[, 3]) and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pics = []
    for img in d.images:  # 0..16 grey levels, 8x8
        pil = Image.fromarray((img * (255.0 / 16.0)).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        if channels == 3:
            pil = pil.convert("RGB")
        pics.append(np.asarray(pil))
    return np.stack(pics), d.target.astype(np.int64)


def to_tensor(pics: np.ndarray) -> Any:
    """uint8 pictures -> float NCHW in [0, 1]: the same as edgekit's default image pre-processing."""
    import torch

    x = torch.from_numpy(pics.astype(np.float32) / 255.0)
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def split(n: int, held_out: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    k = int(n * held_out)
    return order[k:], order[:k]


def train(model: Any, x: Any, y: np.ndarray, epochs: int, seed: int = 0, lr: float = 2e-3) -> Any:
    """Plain Adam on cross-entropy, batch 64."""
    import torch

    torch.manual_seed(seed)
    target = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(target))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), target[idx])
            loss.backward()
            opt.step()
    _recompute_batchnorm(model, x)
    return model.eval()


def _recompute_batchnorm(model: Any, x: Any) -> None:
    """Set batch-norm running statistics to the exact training-set statistics.

    After a short training the running averages (momentum 0.1) still remember the initial
    values, and the model in eval mode answers far worse than it trained; one pass over the data
    with a cumulative average fixes that.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the passes below
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(x[i : i + 256])
    for m in bns:
        m.momentum = 0.1


def torch_accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def edgekit_accuracy(folder: Path, pics: np.ndarray, y: np.ndarray) -> float:
    import edgekit

    clf = edgekit.load(folder, device="cpu")
    preds = clf.classify(list(pics), top_k=1)
    return float(np.mean([int(p[0].label) == t for p, t in zip(preds, y)]))


def run(epochs: int, out: Path, calibration_size: int = 200) -> dict[str, float]:
    import torch

    import edgekit
    from examples.models import small_cnn

    pics, labels = digits_pictures(28, 1)
    train_idx, test_idx = split(len(labels))
    x = to_tensor(pics)
    model = train(small_cnn(1, 28, 10), x[train_idx], labels[train_idx], epochs)
    names = [str(i) for i in range(10)]
    calibration = list(pics[train_idx[:calibration_size]])  # uint8 pictures, pre-processed by edgekit
    results = {"pytorch": torch_accuracy(model, x[test_idx], labels[test_idx])}
    for precision in ("fp32", "int8"):
        t = time.perf_counter()
        art = edgekit.convert(model, out / precision, example_inputs=torch.rand(1, 1, 28, 28), labels=names,
                              precision=precision, calibration=calibration if precision == "int8" else None,
                              overwrite=True)
        results[f"edgekit_{precision}"] = edgekit_accuracy(art.path, pics[test_idx], labels[test_idx])
        results[f"convert_s_{precision}"] = time.perf_counter() - t
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("models/digits"))
    args = ap.parse_args(argv)
    r = run(args.epochs, args.out)
    print(f"held-out accuracy on {int(1797 * 0.25)} digits (28x28, trained {args.epochs} epochs)")
    print(f"  PyTorch        {r['pytorch'] * 100:6.2f} %")
    print(f"  edgekit fp32   {r['edgekit_fp32'] * 100:6.2f} %   (convert {r['convert_s_fp32']:.1f} s)")
    print(f"  edgekit int8   {r['edgekit_int8'] * 100:6.2f} %   (convert {r['convert_s_int8']:.1f} s)")
    gap = (r["edgekit_int8"] - r["pytorch"]) * 100 + 0.0  # + 0.0: no "-0.00"
    print(f"  int8 - PyTorch {gap:+.2f} points (target: within 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
