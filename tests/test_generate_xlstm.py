"""generate for xLSTM (converters/specs/xlstm.py): a tiny seeded xLSTMForCausalLM from a saved folder, its mLSTM
states (C, n, m per layer) through a one-token step graph, against transformers' greedy and beam tokens, batch 1
and a left-padded batch (each row as transformers answers it alone: tests/coverage_models.py ROWS_ALONE)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import TEXTS, _architecture, _transformers_generate, eos_off, tiny_config, tiny_tokenizer  # noqa: E402

import edgekit  # noqa: E402

NEW = 24
# transformers' beam search cannot reorder xLSTM's cache, so its reference reruns every row uncached at each
# step (tests/coverage_models.py UNCACHED_BEAMS): fewer new tokens keep that quadratic cost small.
CALLS = {"greedy": dict(do_sample=False, max_new_tokens=NEW),
         "beam": dict(do_sample=False, num_beams=3, max_new_tokens=NEW // 2)}
LAYERS = 2


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, fp32 artifact); the convert runs the parity gate."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("xlstm")
    tok = tiny_tokenizer()
    # hidden 128: xLSTM rounds its query / value widths (x 0.5, x 1.0) up to multiples of 64 (the sweep's
    # xlstm config says why); 2 heads of 32 / 64.
    config = tiny_config("xlstm", "generate", vocab=len(tok), num_hidden_layers=LAYERS, hidden_size=128,
                         num_heads=2)
    config.architectures = [_architecture("generate", "xlstm")]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", edgekit.convert(root / "hf", root / "fp32").path


def test_convert_declares_c_n_m_per_layer_and_passes_parity(built: tuple[Path, Path]) -> None:
    manifest = json.loads((built[1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["model"]["inputs"]}
    states = {f"ssm_state.{i}.{k}" for i in range(LAYERS) for k in range(3)}
    assert set(inputs) == {"input_ids"} | states
    for i in range(LAYERS):  # heads 2; qk head 128 * 0.5 / 2, v head 128 / 2
        assert [inputs[f"ssm_state.{i}.{k}"][1:] for k in range(3)] == [[2, 32, 64], [2, 32], [2, 1]]


@pytest.mark.parametrize("call", list(CALLS))
def test_tokens_match_transformers(built: tuple[Path, Path], call: str) -> None:
    src, art = built
    tok, model = eos_off(src, NEW)
    gen = edgekit.load(art, device="cpu")
    # Four prompts of different lengths, left-padded (the parity gate at convert compared batch 1).
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    want = _transformers_generate(model, enc["input_ids"], enc["attention_mask"], **CALLS[call])
    got = gen.generate(input_ids=enc["input_ids"].numpy(), attention_mask=enc["attention_mask"].numpy(),
                       eos_token_id=[], forced_eos_token_id=None, **CALLS[call])
    n = enc["input_ids"].shape[1]
    np.testing.assert_array_equal(np.asarray(got)[:, n:], want[:, n:], err_msg=call)
    assert all(len(set(row)) > 2 for row in want[:, n:].tolist())  # the tiny model does not repeat one token


def test_transformers_reads_pads_as_tokens(built: tuple[Path, Path]) -> None:
    """Why the reference runs rows alone: xLSTM's forward takes no attention_mask, so a left-padded row's
    logits in transformers differ from the row's own. Fails once transformers masks pads, and then "xlstm"
    in ROWS_ALONE (tests/coverage_models.py) and xlstm.py's RowsAloneReference should go."""
    import torch

    tok, model = eos_off(built[0], NEW)
    enc = tok(TEXTS[:2], return_tensors="pt", padding=True)
    short = int(enc["attention_mask"].sum(1).argmin())
    ids = enc["input_ids"][short][enc["attention_mask"][short].bool()][None]
    with torch.no_grad():
        padded = model(**enc).logits[short, -1]
        alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    assert not torch.allclose(padded, alone, rtol=1e-3, atol=1e-3)
