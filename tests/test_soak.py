"""A short soak: after warm-up, resident memory and open files stop growing over many calls.

The long version (10,000 classify and 1,000 generate calls, with the curve) is
`benchmarks/soak.py`; this one keeps the suite fast and still catches a leak of a few KB per call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil  # edgekit[dev]
import pytest
from PIL import Image

import edgekit
from reliability_models import WORDS, converted


WARMUP = 200
CALLS = 2000
BOUND_MB = 4.0  # 2 KB per call would already be 4 MB


@pytest.mark.parametrize("kind", ["image", "text"])
def test_rss_and_open_files_stay_flat(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, kind: str) -> None:
    model = edgekit.load(converted(tmp_path_factory, kind), device="cpu")
    rng = np.random.default_rng(0)
    if kind == "image":
        inputs: list[object] = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(4)]
        for i in range(4):  # file paths too: every call opens and must close a file
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
            inputs.append(str(tmp_path / f"{i}.png"))
    else:
        inputs = [" ".join(rng.choice(WORDS, size=n)) for n in range(1, 9)]
    proc = psutil.Process()
    for i in range(WARMUP):
        model.classify(inputs[i % len(inputs)], top_k=2)
    base_rss, base_fds = proc.memory_info().rss, proc.num_fds()
    curve = []
    for i in range(CALLS):
        model.classify(inputs[i % len(inputs)], top_k=2)
        if i % 500 == 499:
            curve.append((proc.memory_info().rss - base_rss) / 2**20)
    assert max(curve) < BOUND_MB, f"RSS grew by {curve} MB after warm-up"
    assert proc.num_fds() <= base_fds
