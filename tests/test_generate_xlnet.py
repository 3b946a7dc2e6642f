"""generate for XLNet with mems (converters/specs/xlnet.py): a tiny seeded XLNetLMHeadModel from a saved folder,
its hidden-state memories and last embedding through one graph, against transformers' greedy and beam tokens,
batch 1 and a left-padded batch (each row as transformers answers it alone: generate pops XLNet's mask)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import (TEXTS, _architecture, assert_generate_equal, _transformers_generate,  # noqa: E402
                             eos_off, tiny_config, tiny_tokenizer)

import edgekit  # noqa: E402

NEW = 16
CALLS = {"greedy": dict(do_sample=False), "beam": dict(do_sample=False, num_beams=3)}
LAYERS = 2
# The sweep's tiny shape (d_model 32, weights of std 0.2) repeats one token in most rows; wider, with weights
# of std 1, every row's greedy and beam answer has several distinct tokens, so a wrong memory shows.
WIDTH = dict(d_model=64, n_head=4, d_inner=128, initializer_range=1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF folder, fp32 artifact); the convert runs the parity gate (prompt and decode-step logits too)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("xlnet")
    tok = tiny_tokenizer()
    config = tiny_config("xlnet", "generate", vocab=len(tok), n_layer=LAYERS, **WIDTH)
    config.architectures = [_architecture("generate", "xlnet")]
    assert config.use_mems_eval  # XLNetConfig's default: generate keeps mems
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", edgekit.convert(root / "hf", root / "fp32").path


def test_convert_declares_memories_and_passes_parity(built: tuple[Path, Path]) -> None:
    manifest = json.loads((built[1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    d = WIDTH["d_model"]
    entries = manifest["contract"]["cache"]["entries"]
    assert entries == [{"type": "token_embedding", "dim": d}] + [
        {"type": "hidden_memory", "layer": i, "dim": d} for i in range(LAYERS)]
    assert manifest["contract"]["max_context"] == 512  # XLNetConfig's mem_len: mems never truncated
    inputs = {t["name"]: t["shape"] for t in manifest["graphs"]["model"]["inputs"]}
    assert set(inputs) == {"input_ids", "attention_mask", "last_embedding"} | {f"mems.{i}" for i in range(LAYERS)}


@pytest.mark.parametrize("call", list(CALLS))
def test_tokens_match_transformers(built: tuple[Path, Path], call: str) -> None:
    src, art = built
    tok, model = eos_off(src, NEW)
    gen = edgekit.load(art, device="cpu")
    # batch 1, then four prompts of different lengths, left-padded
    assert_generate_equal(gen, tok, lambda ids, mask: _transformers_generate(model, ids, mask, **CALLS[call]), call,
                          max_new_tokens=NEW, **CALLS[call])


def test_mems_make_tokens_depend_on_where_the_prompt_ended(built: tuple[Path, Path]) -> None:
    """Why XLNet needs its memories: the same ids give other decode-step logits than as a longer prompt
    (frozen hidden states), and the artifact's steps give transformers' decode-step logits, not those."""
    from edgekit.converters.specs.xlnet import decode_logits

    src, art = built
    tok, model = eos_off(src, NEW)
    ids = tok([TEXTS[3]], return_tensors="np")["input_ids"]
    steps, prompt = decode_logits(model, ids, 4), decode_logits(model, ids, 0)
    got = edgekit.load(art, device="cpu").logits(ids, decode_steps=4)
    scale = float(np.abs(steps).max())
    # fp32 through 2 layers of width 64: rounding moves logits by ~1e-6 of their scale; the frozen memory, by far more
    assert np.abs(steps[:, -1] - prompt[:, -1]).max() > 1e-2 * scale
    np.testing.assert_allclose(got, steps, rtol=0, atol=1e-4 * scale)
