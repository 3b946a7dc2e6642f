"""generate for RWKV (converters/specs/rwkv.py): a tiny seeded RwkvForCausalLM from a saved folder, its five
state tensors per layer through a one-token step graph, against transformers' greedy and beam tokens, batch 1
and a left-padded batch (each row as transformers answers it alone: tests/coverage_models.py ROWS_ALONE)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import (TEXTS, _architecture, assert_generate_equal, _transformers_generate,  # noqa: E402
                             eos_off, tiny_config, tiny_tokenizer)

import edgekit  # noqa: E402

NEW = 24
CALLS = {"greedy": dict(do_sample=False), "beam": dict(do_sample=False, num_beams=3)}
LAYERS = 2
# Wider than the sweep's tiny shape (hidden 32), whose seeded model repeats one token in some rows: at 64
# every row's greedy and beam answer has several distinct tokens, so a wrong state shows.
WIDTH = dict(hidden_size=64, attention_hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, fp32 artifact); the convert runs the parity gate."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("rwkv")
    tok = tiny_tokenizer()
    config = tiny_config("rwkv", "generate", vocab=len(tok), num_hidden_layers=LAYERS, **WIDTH)
    config.architectures = [_architecture("generate", "rwkv")]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", edgekit.convert(root / "hf", root / "fp32").path


def _model(src: Path) -> tuple[Any, Any]:
    return eos_off(src, NEW)


def test_convert_declares_five_states_per_layer_and_passes_parity(built: tuple[Path, Path]) -> None:
    manifest = json.loads((built[1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    hidden = json.loads((built[0] / "config.json").read_text())["hidden_size"]
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["model"]["inputs"]}
    states = {f"ssm_state.{i}.{k}" for i in range(LAYERS) for k in range(5)}
    assert set(inputs) == {"input_ids"} | states
    assert all(inputs[n][1:] == [hidden] for n in states)


@pytest.mark.parametrize("call", list(CALLS))
def test_tokens_match_transformers(built: tuple[Path, Path], call: str) -> None:
    src, art = built
    tok, model = _model(src)
    gen = edgekit.load(art, device="cpu")
    # batch 1, then four prompts of different lengths, left-padded
    assert_generate_equal(gen, tok, lambda ids, mask: _transformers_generate(model, ids, mask, **CALLS[call]), call,
                          max_new_tokens=NEW, **CALLS[call])


def test_transformers_batched_step_mixes_rows(built: tuple[Path, Path]) -> None:
    """Why the reference runs rows alone: transformers 5.23's one-token RWKV step at batch 3 returns
    logits (3, 3, vocab) (every row's step over all rows). Fails once transformers fixes it, and then
    "rwkv" in ROWS_ALONE (tests/coverage_models.py) and rwkv.py's RowsAloneReference should go."""
    import torch

    _, model = _model(built[0])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[3], [4], [5]]), use_cache=True).logits
    assert tuple(logits.shape[:2]) == (3, 3)


def test_batch_rows_are_each_rows_own_answer(built: tuple[Path, Path]) -> None:
    """edgekit's left-padded batch gives each row what that row alone gives (pads never enter a state)."""
    tok, _ = _model(built[0])
    gen = edgekit.load(built[1], device="cpu")
    enc = tok(TEXTS, return_tensors="np", padding=True)
    got = gen.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=NEW,
                       eos_token_id=[], do_sample=False)[:, enc["input_ids"].shape[1]:]
    for r, text in enumerate(TEXTS):
        ids = tok([text], return_tensors="np")["input_ids"]  # the mask given: eos off, none is inferred from pads
        alone = gen.generate(input_ids=ids, attention_mask=np.ones_like(ids), max_new_tokens=NEW, eos_token_id=[],
                             do_sample=False)[:, ids.shape[1]:]
        np.testing.assert_array_equal(got[r], alone[0], err_msg=f"row {r}")
