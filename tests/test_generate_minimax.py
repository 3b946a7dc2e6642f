"""generate for MiniMax (converters/specs/minimax.py): a tiny seeded MiniMaxForCausalLM from a saved folder
(lightning, attention, lightning layers: layer 0 a lightning layer, as MiniMax-Text-01 lays them out), the
lightning states and the attention layer's keys/values through a one-token step graph, against transformers'
greedy and beam tokens, batch 1 and a left-padded batch (each row as transformers answers it alone)."""
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

NEW = 16
CALLS = {"greedy": dict(do_sample=False, max_new_tokens=NEW),
         "beam": dict(do_sample=False, num_beams=3, max_new_tokens=8)}
LAYERS = ["linear_attention", "full_attention", "linear_attention"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, fp32 artifact); the convert runs the parity gate (batch 1 and a left-padded batch)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("minimax")
    tok = tiny_tokenizer()
    config = tiny_config("minimax", "generate", vocab=len(tok), num_hidden_layers=len(LAYERS), layer_types=LAYERS)
    config.architectures = [_architecture("generate", "minimax")]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", edgekit.convert(root / "hf", root / "fp32").path


def _rows_alone(model: Any, ids: Any, mask: Any, **kw: Any) -> np.ndarray:
    """transformers on each row alone, unpadded (beams uncached: tests/coverage_models.py UNCACHED_BEAMS)."""
    import torch

    new = [_transformers_generate(model, row[m.bool()][None], torch.ones_like(row[m.bool()][None]), **kw)
           [:, int(m.sum()):] for row, m in zip(ids, mask)]
    return np.concatenate([ids.numpy(), np.concatenate(new)], axis=1)


def test_convert_declares_states_and_passes_parity(built: tuple[Path, Path]) -> None:
    manifest = json.loads((built[1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    config = json.loads((built[0] / "config.json").read_text())
    heads, dim = config["num_attention_heads"], config["head_dim"]
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["model"]["inputs"]}
    want = {f"ssm_state.{i}.0": [heads, dim, dim] for i in (0, 2)}
    want |= {f"past_key_values.1.{k}": [config["num_key_value_heads"], "past_sequence", dim] for k in ("key", "value")}
    assert set(inputs) == {"input_ids", "attention_mask", "position_ids"} | set(want)
    assert {n: inputs[n][1:] for n in want} == want


@pytest.mark.parametrize("call", list(CALLS))
def test_tokens_match_transformers(built: tuple[Path, Path], call: str) -> None:
    src, art = built
    tok, model = eos_off(src, NEW)
    gen = edgekit.load(art, device="cpu")
    # batch 1, then four prompts of different lengths, left-padded
    assert_generate_equal(gen, tok, lambda ids, mask: _rows_alone(model, ids, mask, **CALLS[call]), call,
                          **CALLS[call])


def test_transformers_padded_decode_masks_every_key(built: tuple[Path, Path]) -> None:
    """Why the parity reference runs a left-padded batch's rows alone when layer 0 is a lightning layer:
    transformers 5.23's decode step sizes the mask from MiniMaxCache's layer 0 (no keys), so a padded
    row's step differs from its uncached logits by far more than fp32 rounding. Fails once fixed."""
    import torch

    tok, model = eos_off(built[0], NEW)
    enc = tok([TEXTS[0], TEXTS[2]], return_tensors="pt", padding=True)  # row 1 is left-padded
    ids, mask = enc["input_ids"], enc["attention_mask"]
    step_ids, step_mask = torch.cat([ids, ids[:, -1:]], 1), torch.cat([mask, mask[:, -1:]], 1)
    with torch.no_grad():
        past = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
        pos = (step_mask.cumsum(1) - 1)[:, -1:]
        cached = model(input_ids=ids[:, -1:], attention_mask=step_mask, position_ids=pos,
                       past_key_values=past, use_cache=True).logits[:, -1]
        full = model(input_ids=step_ids, attention_mask=step_mask, use_cache=False).logits[:, -1]
    scale = full.abs().max()
    assert (cached[0] - full[0]).abs().max() < 1e-4 * scale  # the unpadded row: the step is the model
    assert (cached[1] - full[1]).abs().max() > 1e-2 * scale


def test_transformers_beam_reorder_skips_lightning_states(built: tuple[Path, Path]) -> None:
    """Why the reference beam search runs uncached: MiniMaxCache.reorder_cache (DynamicCache's) reorders
    the attention layers' keys/values, not the lightning states in its `linear_cache` list. Fails once
    transformers reorders them too, and then UNCACHED_BEAMS (tests/coverage_models.py) should drop minimax."""
    import torch

    _, model = eos_off(built[0], NEW)
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([[1, 7, 8], [1, 9, 10]]), use_cache=True).past_key_values
    keys, state = cache.layers[1].keys.clone(), cache.linear_cache[0].clone()
    cache.reorder_cache(torch.tensor([1, 0]))
    assert torch.equal(cache.layers[1].keys, keys[[1, 0]]) and not torch.equal(keys[0], keys[1])
    assert torch.equal(cache.linear_cache[0], state) and not torch.equal(state[0], state[1])
