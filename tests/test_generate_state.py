"""generate for decoders that keep recurrent state: a tiny seeded Mamba (state only) and Bamba (Mamba-2
layers beside an attention layer), from saved folders, against transformers' greedy and beam tokens,
batch 1 and a left-padded batch (converters/specs/state_space.py: the step graph, prompts fed stepwise)."""
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

from coverage_models import TEXTS, _architecture, eos_off, tiny_config, tiny_tokenizer  # noqa: E402

import edgekit  # noqa: E402

# The sweep's small configs (Bamba: a Mamba-2 layer, then an attention layer whose keys/values the graph
# carries beside layer 0's state). Bamba's chunk of 4 tokens (default 256) makes transformers' prefill a
# multi-chunk scan on these prompts (up to 13 tokens) and on the parity rows, the path the stepwise feed
# must equal.
FAMILIES: dict[str, dict[str, Any]] = {"mamba": {}, "bamba": dict(mamba_chunk_size=4)}
NEW = 24
CALLS = {"greedy": dict(do_sample=False), "beam": dict(do_sample=False, num_beams=3)}


def _save(family: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    config = tiny_config(family, "generate", vocab=len(tok), **FAMILIES[family])
    config.architectures = [_architecture("generate", family)]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (HF folder, fp32 artifact); the convert runs the parity gate."""
    root = tmp_path_factory.mktemp("state")
    out = {}
    for family in FAMILIES:
        src = _save(family, root / f"{family}-hf")
        out[family] = (src, edgekit.convert(src, root / f"{family}-fp32").path)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_convert_declares_the_state_and_passes_parity(built: dict[str, tuple[Path, Path]], family: str) -> None:
    manifest = json.loads((built[family][1] / "edgekit.json").read_text())
    p = manifest["parity"]
    assert p["passed"], p
    assert p["rows"]["greedy_rows"] == [1.0, 1.0, 1.0]  # batch 1, then both rows of a left-padded batch
    names = {t["name"] for t in manifest["graphs"]["model"]["inputs"]}
    assert {"conv_state.0.0", "ssm_state.0.0"} <= names
    assert ("past_key_values.1.key" in names) == (family == "bamba")


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_tokens_match_transformers(built: dict[str, tuple[Path, Path]], family: str, call: str) -> None:
    import torch

    src, art = built[family]
    tok, model = eos_off(src, NEW)
    gen = edgekit.load(art, device="cpu")
    for prompts in ([TEXTS[0]], TEXTS):  # batch 1, then four prompts of different lengths, left-padded
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            want = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                  **CALLS[call]).numpy()
        got = gen.generate(input_ids=enc["input_ids"].numpy(), attention_mask=enc["attention_mask"].numpy(),
                           max_new_tokens=NEW, eos_token_id=[], forced_eos_token_id=None, **CALLS[call])
        n = enc["input_ids"].shape[1]
        np.testing.assert_array_equal(np.asarray(got)[:, n:], want[:, n:], err_msg=f"{family} {call} {len(prompts)}")
        assert all(len(set(row)) > 2 for row in want[:, n:].tolist())  # the tiny model does not repeat one token
