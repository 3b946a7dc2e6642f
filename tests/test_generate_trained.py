"""generate on models trained on real text (pydoc topics): perplexity and agreement per precision.

Runs examples/train_char_gpt.py with a small step count (EDGEKIT_TEST_TRAIN_STEPS, default 40):
the models are weak but real, which is what int8/int4 agreement needs (random weights say little).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import train_char_gpt

    steps = int(os.environ.get("EDGEKIT_TEST_TRAIN_STEPS", "40"))
    return train_char_gpt.main(steps, tmp_path_factory.mktemp("char"), eval_windows=16)


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1)


def test_char_gpt_perplexity_by_precision(trained: dict[str, Any]) -> None:
    r = trained["gpt"]
    assert r["pytorch"]["perplexity"] < 40  # learnt something: uniform over the alphabet is ~100
    assert _rel(r["fp32"]["perplexity"], r["pytorch"]["perplexity"]) < 1e-3 and r["fp32"]["top1_agreement"] > 0.999
    assert _rel(r["int8"]["perplexity"], r["fp32"]["perplexity"]) < 0.03 and r["int8"]["top1_agreement"] > 0.9
    assert _rel(r["int4"]["perplexity"], r["fp32"]["perplexity"]) < 0.10 and r["int4"]["top1_agreement"] > 0.8
    # A tiny model: position embeddings and norms (left in fp32) weigh a lot; measured 0.61x and 0.55x.
    assert r["int4"]["size_mb"] < 0.7 * r["fp32"]["size_mb"] and r["int8"]["size_mb"] < 0.7 * r["fp32"]["size_mb"]


def test_char_gpt_int4_quantizes_its_tied_matrix(trained: dict[str, Any]) -> None:
    """GPT-2 ties its output projection to the token table: at int4 both read one quantized copy (the
    perplexity and agreement above are measured through it), and no float weight matrix is left."""
    import onnx

    from test_int4_tied import assert_no_float_weights

    path = Path(trained["gpt_artifacts"]["int4"])
    details = json.loads((path / "edgekit.json").read_text())["precision"]["details"]
    assert details["tied_head"]["tables"] == 1 and details["int8_row_tables"] == 1  # wte shared; wpe int8 rows
    graphs = sorted(path.rglob("*.onnx"))
    assert len(graphs) == 2, graphs  # the portable graph and onnxruntime's stand-in, both quantized so
    for g in graphs:
        assert_no_float_weights(onnx.load(str(g)))


def test_char_gpt_artifacts_report_parity(trained: dict[str, Any]) -> None:
    for precision, path in trained["gpt_artifacts"].items():
        m = json.loads((Path(path) / "edgekit.json").read_text())
        assert m["precision"]["produced"] == precision
        assert m["parity"]["notes"]["held_out"] == "texts"
        assert m["parity"]["passed"], m["parity"]
    fp32 = json.loads((Path(trained["gpt_artifacts"]["fp32"]) / "edgekit.json").read_text())["parity"]
    assert fp32["measures"]["greedy_agreement"] == 1.0


def test_lstm_generator(trained: dict[str, Any]) -> None:
    import numpy as np

    import edgekit

    r = trained["lstm"]
    assert _rel(r["fp32"]["perplexity"], r["pytorch"]["perplexity"]) < 1e-3 and r["fp32"]["top1_agreement"] > 0.999
    assert _rel(r["int8"]["perplexity"], r["fp32"]["perplexity"]) < 0.03
    path = trained["lstm_artifacts"]["fp32"]
    m = json.loads((Path(path) / "edgekit.json").read_text())
    assert [e["type"] for e in m["contract"]["cache"]["entries"]] == ["lstm_state"] and m["parity"]["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]
    model = edgekit.load(path, device="cpu")
    texts = model.generate(["The if", "A"], max_new_tokens=20)
    assert all(0 < len(t) <= 20 for t in texts)  # one character per token
    assert texts[0] == model.generate("The if", max_new_tokens=20)  # left padding does not leak into the state
    assert "".join(model.generate("The if", max_new_tokens=20, stream=True)) == texts[0]
    ids = model.generate(input_ids=np.array([[40, 41]]), max_new_tokens=3)
    assert ids.shape == (1, 5)
