"""One loaded model, many threads: every result equals the single-threaded one."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from reliability_models import WORDS, converted

THREADS = 8
CALLS = 200


def _hammer(work: Callable[[int], Any], n_inputs: int) -> list[list[tuple[int, Any]]]:
    """THREADS threads x CALLS calls, all released at once; thread t's call i uses input (7t + i) % n."""
    start = threading.Barrier(THREADS)

    def worker(t: int) -> list[tuple[int, Any]]:
        start.wait()
        out = []
        for i in range(CALLS):
            k = (7 * t + i) % n_inputs
            out.append((k, work(k)))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(worker, range(THREADS)))


def _same(a: list[Any], b: list[Any]) -> bool:
    return [p.label for p in a] == [p.label for p in b] and np.allclose(
        [p.score for p in a], [p.score for p in b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_classify_from_8_threads_matches_single_thread(tmp_path_factory: pytest.TempPathFactory, kind: str) -> None:
    model = edgekit.load(converted(tmp_path_factory, kind), device="cpu")
    rng = np.random.default_rng(1)
    if kind == "image":
        # Different sizes, so each call resizes on its own (PIL) before the shared session.
        inputs: list[Any] = [rng.integers(0, 256, (20 + i, 30 - i, 3), dtype=np.uint8) for i in range(16)]
    else:
        inputs = [" ".join(rng.choice(WORDS, size=3 + i)) for i in range(16)]
    expected = [model.classify(x, top_k=3) for x in inputs]
    assert len({(e[0].label, round(e[0].score, 6)) for e in expected}) > 8  # the inputs really differ
    results = _hammer(lambda k: model.classify(inputs[k], top_k=3), len(inputs))
    assert sum(len(r) for r in results) == THREADS * CALLS
    wrong = [(k, got) for thread in results for k, got in thread if not _same(got, expected[k])]
    assert wrong == []


def test_raw_forward_from_8_threads_matches_single_thread(tmp_path_factory: pytest.TempPathFactory) -> None:
    model = edgekit.load(converted(tmp_path_factory, "image"), device="cpu")
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((1 + i % 3, 3, 24, 24)).astype(np.float32) for i in range(12)]
    expected = [model(pixel_values=b)["logits"] for b in batches]
    results = _hammer(lambda k: model(pixel_values=batches[k])["logits"], len(batches))
    assert all(np.array_equal(got, expected[k]) for thread in results for k, got in thread)


def test_8_concurrent_generate_streams_match_single_thread(tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_gpt2

    model = edgekit.load(converted_gpt2(tmp_path_factory), device="cpu")
    prompts = ["def main(", "The module", "import os", "class A:", "Return the", "for x in", "if not", "with open("]
    kinds = [{}, {"do_sample": True, "temperature": 0.9, "top_k": 20, "seed": 7}]

    def stream(k: int) -> str:
        return "".join(model.generate(prompts[k % 8], max_new_tokens=24, stream=True, **kinds[k // 8]))

    expected = [stream(k) for k in range(16)]
    assert len(set(expected)) > 8 and all(expected)

    start = threading.Barrier(8)

    def worker(t: int) -> list[tuple[int, str]]:
        start.wait()
        return [(k, stream(k)) for k in [(t + i) % 16 for i in range(6)]]

    with ThreadPoolExecutor(8) as pool:
        results = [pair for thread in pool.map(worker, range(8)) for pair in thread]
    assert len(results) == 48
    assert [k for k, got in results if got != expected[k]] == []
