"""`generate` for Hugging Face causal LMs that transformers runs without a cache (converters/specs/
full_sequence_lm.py): a tiny OpenAI-GPT folder converts to a full-sequence graph whose greedy tokens are
transformers' own, on one prompt and on a left-padded batch; the spec claims only such models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.contract.generate import FullSequence
from edgekit.converters.sources import Source
from edgekit.converters.specs.causal_lm import HFCausalLM
from edgekit.converters.specs.full_sequence_lm import HFFullSequenceLM
from edgekit.converters.specs.xlnet import HFXLNetLM

VOCAB = 40
NEW = 12


def _openai_gpt(folder: Path) -> torch.nn.Module:
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    # Untied: with the output layer tied to the embeddings a tiny random GPT repeats the last prompt token
    # (every answer alike, a weak comparison); untied, its greedy tokens vary.
    config = OpenAIGPTConfig(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                             tie_word_embeddings=False)
    model = OpenAIGPTLMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def test_openai_gpt_tokens_equal_transformers(tmp_path: Path) -> None:
    model = _openai_gpt(tmp_path / "hf")
    edgekit.convert(tmp_path / "hf", tmp_path / "art")
    gen = edgekit.load(tmp_path / "art", device="cpu")
    assert isinstance(gen.contract.cache, FullSequence)
    assert [t.name for t in gen.decoder.inputs] == ["input_ids"]
    ids = np.array([[0, 0, 0, 5, 9, 3], [7, 1, 8, 2, 6, 4]], np.int64)  # row 0 left-padded
    mask = np.array([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int64)
    # One prompt, then the padded batch; greedy, then beam search (the loop reorders its rows).
    for rows, beams in ((slice(1, 2), 1), (slice(0, 2), 1), (slice(1, 2), 3), (slice(0, 2), 3)):
        with torch.no_grad():
            want = model.generate(input_ids=torch.from_numpy(ids[rows]), attention_mask=torch.from_numpy(mask[rows]),
                                  max_new_tokens=NEW, do_sample=False, num_beams=beams, eos_token_id=None,
                                  pad_token_id=0).numpy()
        got = gen.generate(input_ids=ids[rows], attention_mask=mask[rows], max_new_tokens=NEW, do_sample=False,
                           num_beams=beams, eos_token_id=[])
        assert len(set(want[:, 6:].ravel().tolist())) > 2  # not one repeated token
        np.testing.assert_array_equal(got[:, 6:], want[:, 6:])


def _source(arch: str) -> Source:
    return Source("hf-folder", arch, None, config={"architectures": [arch]})


@pytest.mark.parametrize("arch", ["OpenAIGPTLMHeadModel", "XLMWithLMHeadModel", "XLNetLMHeadModel"])
def test_claims_causal_lms_without_a_cache(arch: str) -> None:
    assert HFFullSequenceLM.matches(_source(arch), "generate")


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "LlamaForCausalLM", "MambaForCausalLM", "RwkvForCausalLM",
                                  "Gemma4AssistantForCausalLM", "NotInTransformersForCausalLM"])
def test_leaves_cached_and_unknown_models(arch: str) -> None:
    assert not HFFullSequenceLM.matches(_source(arch), "generate")
    assert not HFFullSequenceLM.matches(_source("OpenAIGPTLMHeadModel"), "classify")


@pytest.mark.parametrize("mems", [True, False])
def test_xlnet_is_full_sequence_only_with_mems_off(tmp_path: Path, mems: bool) -> None:
    """generate keeps XLNet's mems when use_mems_eval is true (its default, then specs/xlnet.py's); with them
    off it runs the whole sequence each step, as this spec's graph does."""
    config = {"architectures": ["XLNetLMHeadModel"], "model_type": "xlnet"} | ({} if mems else {"use_mems_eval": False})
    src = Source("hf-folder", "xlnet", None, hf_dir=tmp_path, config=config)
    assert HFFullSequenceLM.matches(src, "generate") is not mems
    assert HFXLNetLM.matches(src, "generate") is mems
