"""generate for Recurrent Gemma (converters/specs/recurrent_gemma.py): a tiny seeded RecurrentGemmaForCausalLM
from a saved folder (recurrent, attention, recurrent blocks), the recurrent blocks' module-held conv and
RG-LRU states and the attention block's keys/values through a one-token step graph, against transformers'
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

NEW = 24
# Fewer beam tokens (as the sweep's BEAM_TOKENS): transformers' reference beam search reruns whole rows.
CALLS = {"greedy": dict(do_sample=False, max_new_tokens=NEW),
         "beam": dict(do_sample=False, num_beams=3, max_new_tokens=12)}
BLOCKS = ["recurrent", "attention", "recurrent"]  # a recurrent block after attention too
# Wider than the sweep's tiny shape (hidden 32), whose seeded model repeats a few tokens in some rows: at 64
# every row's greedy and beam answer has several distinct tokens, so a wrong state shows.
WIDTH = dict(hidden_size=64, lru_width=64, intermediate_size=128)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, fp32 artifact); the convert runs the parity gate (batch 1 and a left-padded batch).

    `linear_x.bias` is drawn at random (transformers initializes it to zero; a trained one is not): a
    pad's convolution input is then not zero, so transformers' padded batch is not each row's answer
    (test_transformers_padded_prefill_reads_the_pads) and the parity gate's reference must be the rows alone."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("recurrent_gemma")
    tok = tiny_tokenizer()
    config = tiny_config("recurrent_gemma", "generate", vocab=len(tok), num_hidden_layers=len(BLOCKS),
                         block_types=BLOCKS, **WIDTH)
    config.architectures = [_architecture("generate", "recurrent_gemma")]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(layer.temporal_block, "linear_x"):
                layer.temporal_block.linear_x.bias.normal_(0.0, 1.0)
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", edgekit.convert(root / "hf", root / "fp32").path


def _rows_alone(model: Any, ids: Any, mask: Any, **kw: Any) -> np.ndarray:
    """transformers on each row alone, unpadded (beams uncached: tests/coverage_models.py UNCACHED_BEAMS)."""
    import torch

    new = [_transformers_generate(model, row[m.bool()][None], torch.ones_like(row[m.bool()][None]), **kw)
           [:, int(m.sum()):] for row, m in zip(ids, mask)]
    return np.concatenate([ids.numpy(), np.concatenate(new)], axis=1)


def test_convert_declares_module_states_and_passes_parity(built: tuple[Path, Path]) -> None:
    manifest = json.loads((built[1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    config = json.loads((built[0] / "config.json").read_text())
    lru, kernel, heads = config["lru_width"], config["conv1d_width"], config["num_key_value_heads"]
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["model"]["inputs"]}
    want = {f"conv_state.{i}.0": [lru, kernel - 1] for i in (0, 2)}
    want |= {f"ssm_state.{i}.0": [lru] for i in (0, 2)}
    want |= {f"past_key_values.1.{k}": [heads, "past_sequence", config["head_dim"]] for k in ("key", "value")}
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


def test_transformers_padded_prefill_reads_the_pads(built: tuple[Path, Path]) -> None:
    """Why the reference runs rows alone: transformers 5.23 runs a left-padded row's pads through the
    recurrent blocks' convolution, so the row's last logits differ from the row's own (by far more
    than fp32 rounding: the pads' linear_x bias enters the window). Fails once transformers masks them."""
    import torch

    tok, model = eos_off(built[0], NEW)
    enc = tok([TEXTS[0], TEXTS[2]], return_tensors="pt", padding=True)  # row 1 is left-padded
    alone = tok([TEXTS[2]], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        padded = model(**enc, use_cache=False).logits[1, -1]
        own = model(input_ids=alone, use_cache=False).logits[0, -1]
    assert (padded - own).abs().max() > 1e-2 * own.abs().max()


def test_transformers_beam_reorder_skips_module_states(built: tuple[Path, Path]) -> None:
    """Why the reference beam search runs uncached: transformers' beam search reorders the cache it passes
    (DynamicCache.reorder_cache), which holds the attention keys/values but not the recurrent blocks'
    states (module attributes). Fails once transformers reorders them too, and then UNCACHED_BEAMS
    (tests/coverage_models.py) should drop recurrent_gemma."""
    import torch
    from transformers.cache_utils import DynamicCache

    _, model = eos_off(built[0], NEW)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 7, 8], [1, 9, 10]]), past_key_values=cache, use_cache=True)
    block = model.model.layers[0].temporal_block
    keys, conv, lru = cache.layers[1].keys.clone(), block.conv1d_state.clone(), block.rg_lru.recurrent_states.clone()
    cache.reorder_cache(torch.tensor([1, 0]))
    assert torch.equal(cache.layers[1].keys, keys[[1, 0]]) and not torch.equal(keys[0], keys[1])
    assert torch.equal(block.conv1d_state, conv) and torch.equal(block.rg_lru.recurrent_states, lru)
    assert not torch.equal(conv[0], conv[1])
