"""encoder_no_repeat_ngram_size and encoder_repetition_penalty against transformers.

The numpy processors against transformers' own (EncoderNoRepeatNGramLogitsProcessor,
EncoderRepetitionPenaltyLogitsProcessor) on random scores and ids, beams included; then a tiny
random Blenderbot whose generation_config.json sets encoder_no_repeat_ngram_size=3 (as
facebook/blenderbot-400M-distill's does), converted, loaded and decoded token for token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
import seq2seq_models as sm
from edgekit.tasks.processors import encoder_repetition_penalty, no_repeat_ngram

VOCAB = 12  # few ids, so that random n-grams of the input recur in the rows


def _random(seed: int, inputs: int, beams: int, width: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (inputs, width), rows (inputs * beams, length) and scores of both signs."""
    rng = np.random.default_rng(seed)
    source = rng.integers(0, VOCAB, (inputs, width))
    seqs = rng.integers(0, VOCAB, (inputs * beams, length))
    return source, seqs, rng.normal(0, 3, (inputs * beams, VOCAB)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 3, 6])
@pytest.mark.parametrize("beams", [1, 3])
def test_encoder_ngram_ban_equals_transformers(n: int, length: int, beams: int) -> None:
    import torch
    from transformers.generation.logits_process import EncoderNoRepeatNGramLogitsProcessor

    banned_any = False
    for seed in range(5):
        source, seqs, scores = _random(seed, 2, beams, 7, length)
        tail = min(n - 1, length)
        for r in range(0, len(seqs), 2):  # every other row ends with (the end of) a prefix of an input n-gram
            start = (seed + r) % (7 - n + 1)
            seqs[r, length - tail:] = source[r // beams, start + n - 1 - tail:start + n - 1]
        ref = EncoderNoRepeatNGramLogitsProcessor(n, torch.from_numpy(source))(torch.from_numpy(seqs),
                                                                               torch.from_numpy(scores)).numpy()
        got = no_repeat_ngram(seqs, scores, n, np.repeat(source, beams, axis=0))  # each beam's row: its input
        np.testing.assert_array_equal(got, ref)
        banned_any |= bool(np.isinf(got).any())
    assert banned_any or length < n - 1  # the rows are long enough to match: something was banned


@pytest.mark.parametrize("penalty", [0.4, 1.7, 3.0])
@pytest.mark.parametrize("beams", [1, 2])
def test_encoder_repetition_penalty_equals_transformers(penalty: float, beams: int) -> None:
    import torch
    from transformers.generation.logits_process import EncoderRepetitionPenaltyLogitsProcessor

    source, seqs, scores = _random(7, 3, beams, 9, 4)  # 9 draws from 12 ids: repeats in a row, and misses
    ref = EncoderRepetitionPenaltyLogitsProcessor(penalty, torch.from_numpy(source))(torch.from_numpy(seqs),
                                                                                   torch.from_numpy(scores)).numpy()
    got = encoder_repetition_penalty(np.repeat(source, beams, axis=0), scores, penalty)
    np.testing.assert_array_equal(got, ref)  # the same float32 operations: the same bits
    changed = got != scores
    assert changed.any() and not changed.all()


_BLENDERBOT = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                   init_std=1.0)  # a scale at which greedy output varies
FAMILIES = ["blenderbot", "bart"]  # edgekit converts Blenderbot as its decoder (BlenderbotForCausalLM)
NEW = 16


@pytest.fixture(scope="module", params=FAMILIES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, bool]:
    """A random model whose generation config has blenderbot-400M-distill's encoder_no_repeat_ngram_size=3:
    Blenderbot's decoder-only LM, and a BART encoder-decoder (the encoder's input per beam). Returns
    transformers' model, edgekit's, and whether the inputs are an encoder's (right-padded)."""
    import torch
    from transformers import BlenderbotConfig, BlenderbotForCausalLM

    tok = sm.train_tokenizer()
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    if request.param == "bart":
        sm.save_tiny("bart", folder, tok, encoder_no_repeat_ngram_size=3)
        from transformers import AutoModelForSeq2SeqLM as Auto
    else:
        config = BlenderbotConfig(vocab_size=tok.get_vocab_size(), pad_token_id=sm.PAD, eos_token_id=sm.EOS,
                                  bos_token_id=sm.BOS, **_BLENDERBOT)
        torch.manual_seed(0)
        hf = BlenderbotForCausalLM(config).eval()
        hf.generation_config.encoder_no_repeat_ngram_size = 3
        hf.save_pretrained(folder)
        tok.save(str(folder / "tokenizer.json"))
        from transformers import AutoModelForCausalLM as Auto
    art = edgekit.convert(folder, folder.parent / "fp32")
    return Auto.from_pretrained(folder).eval(), edgekit.load(art.path, device="cpu"), request.param == "bart"


OFF = dict(encoder_no_repeat_ngram_size=0, encoder_repetition_penalty=1.0)


@pytest.fixture(scope="module")
def inputs(built: tuple[Any, Any, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs whose tokens and n-grams the model's output comes back to, so that the options bite (on
    plain text they rarely do): an encoder's input is the model's own output for three texts
    (right-padded); a decoder's prompt is the texts followed by its continuation (left-padded)."""
    _, model, encoder = built
    tok = sm.train_tokenizer()
    ids, mask = _padded([tok.encode(t).ids for t in ("the list of the list of the list", "def f(x): return x", "A")],
                        encoder)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, pad_token_id=sm.PAD, **OFF)
    return _padded([[int(t) for t in o[1:] if t not in (sm.PAD, sm.EOS)] + [sm.EOS] for o in out] if encoder else
                   [[int(t) for t in o if t != sm.PAD] for o in out], encoder)


def _padded(rows: list[list[int]], encoder: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded on the side their model wants (an encoder's on the right, a decoder's on the left)."""
    width = max(map(len, rows))
    pad = [[sm.PAD] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * len(p) if encoder else [0] * len(p) + [1] * len(r) for r, p in zip(rows, pad)]
    return np.array([r + p if encoder else p + r for r, p in zip(rows, pad)], np.int64), np.array(mask, np.int64)


@pytest.mark.parametrize("kw", [dict(), dict(num_beams=3), dict(num_beams=3, num_return_sequences=2),
                                dict(encoder_no_repeat_ngram_size=1), dict(encoder_repetition_penalty=2.5),
                                dict(encoder_repetition_penalty=0.5, num_beams=2)],
                         ids=["greedy", "beams", "beams_returned", "ngram_1", "penalty", "penalty_beams"])
def test_encoder_options_token_identical(built: tuple[Any, Any, bool], inputs: tuple[np.ndarray, np.ndarray],
                                         kw: dict[str, Any]) -> None:
    """Greedy and beam tokens equal transformers' with the model's own encoder_no_repeat_ngram_size=3,
    batch 1 and the padded batch; the options change the output of the same call without them. (The
    decoder-only Blenderbot never comes back to a trigram of its prompt, so there n=3 alone is checked
    for parity only; the n-gram ban itself is checked against transformers' processor above.)"""
    import torch

    hf, model, encoder = built
    assert model.contract.generation.encoder_no_repeat_ngram_size == 3
    ids, mask = inputs
    changed = []
    for b in (slice(0, 1), slice(0, 3)):
        bi, bm = ids[b], mask[b]
        if b.stop == 1:
            bi, bm = bi[:, bm[0].astype(bool)], bm[:, bm[0].astype(bool)]
        with torch.no_grad():
            ref = hf.generate(input_ids=torch.from_numpy(bi), attention_mask=torch.from_numpy(bm), max_new_tokens=NEW,
                              do_sample=False, pad_token_id=sm.PAD, **kw).numpy()
        got = model.generate(input_ids=bi, attention_mask=bm, max_new_tokens=NEW, pad_token_id=sm.PAD, **kw)
        assert ref.shape == got.shape and np.array_equal(ref, got), (kw, ref, got)
        off = model.generate(input_ids=bi, attention_mask=bm, max_new_tokens=NEW, pad_token_id=sm.PAD, **{**kw, **OFF})
        changed.append(off.shape != got.shape or not np.array_equal(off, got))
    if encoder or set(kw) & set(OFF):
        assert any(changed), f"{kw}: the encoder options changed nothing; the comparison proves little"
