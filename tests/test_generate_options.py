"""Every generate option against `transformers.generate` on a decoder-only model, token for token.

One tiny random GPT-2 (converted once), batch 1 and a left-padded batch of three lengths, greedy
and beam search. The eos token is one the model actually emits, so that rows and beams finish at
different steps; each option is also checked to change the output of the same call without it (an
option that did nothing would pass a comparison for the wrong reason). Sampling draws use edgekit's
own seeded generator, so for the sampling warpers the processed scores of the first step are compared
instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
import generate_models as gm
from edgekit.errors import ConfigError, InputError
from tolerances import fp32_atol, transformer_stages

NEW = 14
PAD = 1  # gm's "<pad>"


@pytest.fixture(scope="module")
def tok() -> Any:
    return gm.train_tokenizer()


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory, tok: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    from reliability_models import converted_gpt2, gpt2_folder

    # The reliability tests' GPT-2 (gm.save_tiny with gm.train_tokenizer(), as `tok`), converted once per session.
    src = gpt2_folder(tmp_path_factory)
    return AutoModelForCausalLM.from_pretrained(src).eval(), edgekit.load(converted_gpt2(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def prompts(tok: Any) -> tuple[np.ndarray, np.ndarray]:
    rows = [tok.encode(t).ids for t in ("The class statement", "def f", "A")]
    width = max(map(len, rows))
    ids = np.array([[PAD] * (width - len(r)) + r for r in rows], np.int64)
    return ids, (np.arange(width)[None, :] >= width - np.array([len(r) for r in rows])[:, None]).astype(np.int64)


@pytest.fixture(scope="module")
def eos(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray]) -> int:
    """A token the model emits early in some rows and not in others: hypotheses end at different steps."""
    plain = gpt[1].generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW, eos_token_id=[])
    new = plain[:, prompts[0].shape[1]:]
    late = [t for t in new[:, 5:].ravel().tolist() if t not in set(new[:, :5].ravel().tolist())]
    return max(set(late), key=late.count)


def _both(gpt: tuple[Any, Any], ids: np.ndarray, mask: np.ndarray, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    hf, model = gpt
    kw.setdefault("max_new_tokens", NEW)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                          pad_token_id=PAD, **kw).numpy()
    got = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=PAD, **kw)
    return ref, got


OPTIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name -> (the call without the option, the option)
    "num_beams": ({}, dict(num_beams=4)),
    "length_penalty": (dict(num_beams=4), dict(length_penalty=-2.0)),
    "early_stopping_true": (dict(num_beams=4), dict(early_stopping=True)),
    # "never" differs from the default only where length_penalty > 0 and hypotheses end well before the
    # limit (transformers' _check_early_stop_heuristic): the model's most frequent token ends them
    "early_stopping_never": (dict(num_beams=2, length_penalty=1.0, eos_token_id="FREQUENT"),
                             dict(early_stopping="never")),
    "num_return_sequences": (dict(num_beams=4), dict(num_return_sequences=3)),
    "no_repeat_ngram_size": ({}, dict(no_repeat_ngram_size=1)),
    "no_repeat_ngram_size_beams": (dict(num_beams=3), dict(no_repeat_ngram_size=2)),
    "min_new_tokens": ({}, dict(min_new_tokens=NEW - 2)),
    "min_length": ({}, dict(min_length="PROMPT_PLUS_10")),
    # without max_length or max_new_tokens the length is the generation config's max_length (20)
    "max_length": (dict(max_new_tokens=None), dict(max_length=11)),
    "bad_words_ids": ({}, dict(bad_words_ids="FROM_OUTPUT")),
    "suppress_tokens": ({}, dict(suppress_tokens="FROM_OUTPUT")),
    "begin_suppress_tokens": ({}, dict(begin_suppress_tokens="FIRST_TOKENS")),
    "forced_bos_token_id": ({}, dict(forced_bos_token_id=7)),
    "forced_eos_token_id": (dict(max_length=12, max_new_tokens=None), dict(forced_eos_token_id=5)),
    "repetition_penalty": ({}, dict(repetition_penalty=1.5)),
    "repetition_penalty_beams": (dict(num_beams=2), dict(repetition_penalty=1.5)),
}


def _resolve(kw: dict[str, Any], plain: np.ndarray, start: int) -> dict[str, Any]:
    """Options whose tokens come from the plain (greedy) output, so that they bite."""
    new = plain[:, start:]
    out = dict(kw)
    if kw.get("bad_words_ids") == "FROM_OUTPUT":  # one single token and one pair the model makes
        out["bad_words_ids"] = [[int(new[0, 2])], [int(new[1, 0]), int(new[1, 1])]]
    if kw.get("suppress_tokens") == "FROM_OUTPUT":
        out["suppress_tokens"] = sorted({int(t) for t in new[:, :3].ravel()})
    if kw.get("min_length") == "PROMPT_PLUS_10":  # min_length counts the prompt
        out["min_length"] = start + 10
    if kw.get("eos_token_id") == "FREQUENT":
        made = new[new != PAD]
        out["eos_token_id"] = int(np.bincount(made).argmax())
    if kw.get("begin_suppress_tokens") == "FIRST_TOKENS":
        out["begin_suppress_tokens"] = sorted({int(t) for t in new[:, 0]})
    return {k: v for k, v in out.items() if v is not None or k == "max_new_tokens"}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_is_token_identical_to_transformers(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray],
                                                   eos: int, name: str) -> None:
    """Each option token for token; and against the same call without it (same beams, lengths), the
    output differs, so the option itself acted (not num_beams or a length that came with it)."""
    ids, mask = prompts
    plain = gpt[1].generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=PAD)
    without, option = (_resolve(kw, plain, ids.shape[1]) for kw in OPTIONS[name])
    without = {"max_new_tokens": NEW, "eos_token_id": eos, **without}
    changed = []
    for b in (slice(0, 1), slice(0, 3)):  # batch 1 (no padding), then the left-padded batch
        # forced_bos_token_id only acts on a one-token prompt (transformers forces the token at length 1)
        bi, bm = (ids[2:3], mask[2:3]) if name == "forced_bos_token_id" and b.stop == 1 else (ids[b], mask[b])
        if b.stop == 1:
            keep = bm[0].astype(bool)
            bi, bm = bi[:, keep], bm[:, keep]
        ref, got = _both(gpt, bi, bm, **without, **option)
        assert ref.shape == got.shape and np.array_equal(ref, got), (name, option, ref, got)
        base = gpt[1].generate(input_ids=bi, attention_mask=bm, pad_token_id=PAD, **without)
        changed.append(base.shape != got.shape or not np.array_equal(base, got))
    assert any(changed), f"{name} changed nothing against the same call without it: the comparison proves little"


@pytest.mark.parametrize("without, option", [
    ({}, dict(encoder_no_repeat_ngram_size=2)), (dict(num_beams=3), dict(encoder_no_repeat_ngram_size=2)),
    ({}, dict(encoder_repetition_penalty=3.0)), (dict(num_beams=2), dict(encoder_repetition_penalty=0.5)),
], ids=["ngram_greedy", "ngram_beams", "penalty_greedy", "penalty_beams"])
def test_encoder_options_on_a_decoder_only_model(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray],
                                                  without: dict[str, Any], option: dict[str, Any]) -> None:
    """transformers applies the encoder processors to a decoder-only model too, reading its prompt as
    passed (left padding included). The prompts end with the model's own greedy continuation, so
    their tokens and n-grams come up again and the option bites (on the plain prompts they never do)."""
    ids, mask = prompts
    more = 8
    grown = gpt[1].generate(input_ids=ids, attention_mask=mask, max_new_tokens=more, pad_token_id=PAD, eos_token_id=[])
    grown_mask = np.concatenate([mask, np.ones((len(ids), more), np.int64)], axis=1)
    ref, got = _both(gpt, grown, grown_mask, **without, **option)
    assert ref.shape == got.shape and np.array_equal(ref, got), (option, ref, got)
    base = gpt[1].generate(input_ids=grown, attention_mask=grown_mask, pad_token_id=PAD, max_new_tokens=NEW, **without)
    assert base.shape != got.shape or not np.array_equal(base, got), f"{option} changed nothing"


def _fp32_atol(hf: Any, reference: np.ndarray) -> float:
    """fp32 onnxruntime against fp32 torch on this GPT-2: round-off only (tests/tolerances.py)."""
    c = hf.config
    return fp32_atol(reference, c.n_inner or 4 * c.n_embd, transformer_stages(c.n_layer))


def test_return_dict_scores_match_transformers(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray],
                                               eos: int) -> None:
    import torch

    ids, mask = prompts
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2), dict(repetition_penalty=1.3, no_repeat_ngram_size=3)):
        with torch.no_grad():
            ref = gpt[0].generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                  max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=PAD,
                                  return_dict_in_generate=True, output_scores=True, output_logits=True, **kw)
        got = gpt[1].generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos,
                              pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                              output_logits=True, **kw)
        np.testing.assert_array_equal(got.sequences, ref.sequences.numpy())
        assert got["sequences"] is got.sequences and len(got.scores) == len(ref.scores) == len(got.logits)
        atol = 0.0
        for mine, theirs in zip(got.scores, ref.scores):
            t = theirs.numpy()
            assert np.array_equal(np.isinf(mine), np.isinf(t))
            step = _fp32_atol(gpt[0], t)
            atol = max(atol, step)
            np.testing.assert_allclose(mine[np.isfinite(mine)], t[np.isfinite(t)], atol=step, rtol=0)
        if "num_beams" in kw:  # a sum of one score per step: the steps' errors add
            np.testing.assert_allclose(got.sequences_scores, ref.sequences_scores.numpy(), atol=len(got.scores) * atol,
                                       rtol=0)
            np.testing.assert_array_equal(got.beam_indices, ref.beam_indices.numpy())
    plain = gpt[1].generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True)
    assert plain.scores is None and plain.keys() == ["sequences"]


@pytest.mark.parametrize("kw", [dict(top_k=7), dict(top_p=0.6), dict(min_p=0.2), dict(typical_p=0.5),
                                dict(temperature=0.5, top_k=20, top_p=0.9, min_p=0.05)],
                         ids=["top_k", "top_p", "min_p", "typical_p", "all"])
def test_sampling_warpers_keep_transformers_tokens(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray],
                                                   kw: dict[str, Any]) -> None:
    """The first step's processed scores (same prompt on both sides) equal transformers' warped scores."""
    import torch

    ids, mask = prompts
    torch.manual_seed(0)
    with torch.no_grad():
        ref = gpt[0].generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=1,
                              do_sample=True, pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, **kw)
    got = gpt[1].generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=True, seed=0,
                          return_dict_in_generate=True, output_scores=True, **kw)
    mine, theirs = got.scores[0], ref.scores[0].numpy()
    assert np.array_equal(np.isfinite(mine), np.isfinite(theirs)), kw
    np.testing.assert_allclose(mine[np.isfinite(mine)], theirs[np.isfinite(theirs)], atol=_fp32_atol(gpt[0], theirs),
                               rtol=0)
    assert np.isfinite(mine).sum(axis=1).max() < mine.shape[1]  # the warper removed tokens
    kept = np.take_along_axis(np.isfinite(mine), got.sequences[:, -1:], axis=1)
    assert kept.all()  # the draws come from the kept tokens


def test_beam_sampling_draws_distinct_kept_tokens(gpt: tuple[Any, Any], prompts: tuple[np.ndarray, np.ndarray]) -> None:
    ids, mask = prompts
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=True, num_beams=3, top_k=20,
              num_return_sequences=2, seed=5, eos_token_id=[])
    a, b = gpt[1].generate(**kw), gpt[1].generate(**kw)
    assert a.shape == (6, ids.shape[1] + 6) and np.array_equal(a, b)
    assert not np.array_equal(a, gpt[1].generate(**{**kw, "seed": 6}))


@pytest.mark.parametrize("kw, match", [
    (dict(num_beam_groups=2, diversity_penalty=0.5), "num_beam_groups"), (dict(penalty_alpha=0.6, top_k=4), "penalty_alpha"),
    (dict(guidance_scale=1.5), "guidance_scale"), (dict(renormalize_logits=True), "renormalize_logits"),
    (dict(epsilon_cutoff=0.1), "epsilon_cutoff"), (dict(constraints=["x"]), "constraints"),
    (dict(output_attentions=True), "output_attentions"), (dict(sequence_bias={(5,): 1.0}), "sequence_bias"),
    (dict(num_return_sequences=2), "greedy"), (dict(num_beams=2, num_return_sequences=3), "at most num_beams"),
    (dict(early_stopping="soon"), "early_stopping"), (dict(bad_words_ids=[5]), "bad_words_ids"),
    (dict(bad_words_ids=[[10**6]]), "outside the vocabulary"), (dict(forced_bos_token_id=3, suppress_tokens=[3]),
                                                                 "suppressed"),
    (dict(max_length=2), "no room"),
])
def test_options_edgekit_does_not_do_are_refused_by_name(gpt: tuple[Any, Any], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        gpt[1].generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=None if "max_length" in kw else 4, **kw)
    gpt[1].generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=2, num_beam_groups=1, use_cache=False,
                    renormalize_logits=False)  # their no-op values are accepted


def test_generation_config_defaults_are_used_and_checked(tmp_path: Path, tok: Any) -> None:
    """The model's generation_config.json decides what the caller leaves out, as in transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    src = gm.save_tiny("gpt2", tmp_path / "hf", tok, seed=1)
    cfg = json.loads((src / "generation_config.json").read_text())
    cfg.update(num_beams=3, no_repeat_ngram_size=2, max_new_tokens=9, length_penalty=0.5, forced_eos_token_id=5)
    (src / "generation_config.json").write_text(json.dumps(cfg))
    model = edgekit.load(edgekit.convert(src, tmp_path / "art").path, device="cpu")
    assert model.contract.generation.num_beams == 3 and model.contract.generation.no_repeat_ngram_size == 2
    ids = np.array([tok.encode("The if statement").ids])
    hf = AutoModelForCausalLM.from_pretrained(src).eval()
    got = {}
    # An explicit None switches the model's own setting off, in transformers and here alike.
    for name, kw in (("defaults", {}), ("switched off", dict(forced_eos_token_id=None, no_repeat_ngram_size=None))):
        with torch.no_grad():
            ref = hf.generate(input_ids=torch.from_numpy(ids), **kw).numpy()
        got[name] = model.generate(input_ids=ids, **kw)
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
    assert got["defaults"][0, -1] == 5 and got["switched off"][0, -1] != 5
    cfg["num_beam_groups"] = 3
    (src / "generation_config.json").write_text(json.dumps(cfg))
    with pytest.raises(edgekit.EdgekitError, match="num_beam_groups"):
        edgekit.convert(src, tmp_path / "refused")


def test_stream_refuses_beams_and_bad_kinds(gpt: tuple[Any, Any]) -> None:
    with pytest.raises(ConfigError, match="stream"):
        gpt[1].generate("The", max_new_tokens=4, num_beams=2, stream=True)
    with pytest.raises(InputError):
        gpt[1].generate(messages="hello")
    with pytest.raises(ConfigError, match="one of"):
        gpt[1].generate("a", input_ids=np.array([[1, 2]]))
