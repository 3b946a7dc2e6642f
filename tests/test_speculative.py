"""Speculative decoding with prompt-lookup drafts on a tiny random GPT-2 (tests/reliability_models.py):
the drafts are transformers' PromptLookupCandidateGenerator's, the tokens are plain greedy's on both
decoder graphs (onnxruntime's fused attention and the portable slot graph), more than one token comes
per target call, and what it does not take is refused by name before the model runs. The GPU step loops
are checked with their real code on fake device memory (tests/trt_fakes.py, tests/test_steppers.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.contract.state import DecoderState
from edgekit.contract.state.kinds_attention import AttentionKV
from edgekit.contract.state.kinds_recurrent import ConvState
from edgekit.errors import ConfigError
from edgekit.results import Speculation
from edgekit.tasks.speculative import PromptLookup, refusal
from reliability_models import converted_gpt2

# Texts that repeat themselves, so that lookups find n-grams: six random tokens three times.
_RNG = np.random.default_rng(0)
PROMPTS = [np.tile(_RNG.integers(0, 300, size=(1, 6)), 3) for _ in range(6)]
PROMPT = np.array([[5, 6, 7, 8, 9, 10, 11, 5, 6, 7, 8, 9, 10, 11, 5, 6, 7]], np.int64)


@pytest.fixture(scope="module", params=[False, True], ids=["fused-attention", "portable-slots"])
def gen(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_gpt2(tmp_path_factory), device="cpu", portable=request.param)


@pytest.mark.parametrize("ngram", [1, 2, 3])
def test_drafts_are_transformers_prompt_lookup(ngram: int) -> None:
    torch = pytest.importorskip("torch")
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    rng = np.random.default_rng(ngram)
    for trial in range(40):
        seq = rng.integers(0, 6, size=int(rng.integers(2, 30)))  # a small alphabet: n-grams recur
        eos, tokens = (3,) if trial % 2 else (), int(rng.integers(1, 8))
        ref = PromptLookupCandidateGenerator(torch.tensor(eos) if eos else None, tokens, ngram, max_length=1000)
        made, _ = ref.get_candidates(torch.tensor(seq[None]))
        want = made[0, len(seq):].numpy()
        assert PromptLookup(tokens, ngram, eos).draft(seq, 1000).tolist() == want.tolist(), (seq, tokens, eos)


def test_greedy_tokens_identical_and_more_per_step(gen: Any) -> None:
    made = Speculation()
    for prompt in PROMPTS:
        plain = gen.generate(input_ids=prompt, max_new_tokens=64, return_dict_in_generate=True, output_scores=True)
        spec = gen.generate(input_ids=prompt, max_new_tokens=64, return_dict_in_generate=True, output_scores=True,
                            prompt_lookup_num_tokens=4)
        np.testing.assert_array_equal(spec.sequences, plain.sequences)
        assert len(spec.scores) == len(plain.scores)
        for a, b in zip(spec.scores, plain.scores):  # verify's row i is what plain greedy's step i chose from
            # One (k+1)-token call vs k+1 one-token calls: the same fp32 sums in another order, a few ulps of
            # the logits' scale (|x| <= 5 here; 1.8e-6 measured, the bound is 32 ulps of the largest logit).
            np.testing.assert_allclose(a, b, rtol=0, atol=32 * np.finfo(np.float32).eps * float(np.abs(b).max()))
        s = spec.speculation
        assert s.tokens == plain.sequences.shape[1] - prompt.shape[1] - 1  # all but the prompt call's token
        made = Speculation(made.steps + s.steps, made.tokens + s.tokens, made.drafted + s.drafted,
                           made.accepted + s.accepted)
    # A random model's greedy text repeats only in places: a few drafts are accepted, each one a call saved.
    assert made.accepted > 0 and made.tokens_per_step > 1.0, made
    assert made.tokens == made.steps + made.accepted


def test_text_prompt_and_eos_stop(gen: Any) -> None:
    text = "the cat sat on the mat. the cat sat on the mat. the cat"
    assert gen.generate(text, max_new_tokens=30, prompt_lookup_num_tokens=4) == gen.generate(text, max_new_tokens=30)
    # An eos that the loop hits: the drafted run stops at it as plain greedy does.
    plain = gen.generate(input_ids=PROMPT, max_new_tokens=40)
    eos = int(plain[0, PROMPT.shape[1] + 7])
    a = gen.generate(input_ids=PROMPT, max_new_tokens=40, eos_token_id=eos, prompt_lookup_num_tokens=6)
    np.testing.assert_array_equal(a, gen.generate(input_ids=PROMPT, max_new_tokens=40, eos_token_id=eos))


@pytest.mark.parametrize("bad", [{"num_beams": 2}, {"do_sample": True}, {"num_return_sequences": 2, "do_sample": True},
                                 {"stream": True}, {"max_matching_ngram_size": 0}, {"prompt_lookup_num_tokens": 0}])
def test_refused_by_name(gen: Any, bad: dict[str, Any]) -> None:
    given = {"prompt_lookup_num_tokens": 3, **bad}
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=name):
        gen.generate("the cat", max_new_tokens=4, **given)
    with pytest.raises(ConfigError, match="batch"):
        gen.generate(["the cat", "a dog"], max_new_tokens=4, prompt_lookup_num_tokens=3)
    with pytest.raises(ConfigError, match="max_matching_ngram_size goes with"):
        gen.generate("the cat", max_new_tokens=4, max_matching_ngram_size=2)


def test_recurrent_state_refused() -> None:
    kv = AttentionKV(layer=0, heads=2, key_dim=8, value_dim=8)
    assert refusal(DecoderState(entries=(kv,))) is None
    assert "recurrent" in (refusal(DecoderState(entries=(kv, ConvState(layer=1, index=0, shape=(4, 3))))) or "")
    assert "compact" in (refusal(DecoderState(entries=(AttentionKV(0, 2, 8, 8, compact=True),))) or "")


def test_assistant_drafts_keep_greedy_tokens(gen: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The same weights through the other graph draft (cheap: no second model to convert); a repetition
    # penalty on the target alone makes it reject drafts, so both caches roll back.
    other = edgekit.load(converted_gpt2(tmp_path_factory), device="cpu", portable=gen.decoder.kv_layout == "shared")
    for extra, rejected in (({}, False), ({"repetition_penalty": 1.5}, True)):
        plain = gen.generate(input_ids=PROMPTS[0], max_new_tokens=40, **extra)
        spec = gen.generate(input_ids=PROMPTS[0], max_new_tokens=40, assistant_model=other, num_assistant_tokens=6,
                            return_dict_in_generate=True, **extra)
        np.testing.assert_array_equal(spec.sequences, plain)
        s = spec.speculation
        assert s.tokens_per_step > 1.0 and s.tokens == s.steps + s.accepted, s
        assert (s.accepted < s.drafted) == rejected, s
    with pytest.raises(ConfigError, match="one kind of draft"):
        gen.generate("the cat", max_new_tokens=4, assistant_model=other, prompt_lookup_num_tokens=3)
    with pytest.raises(ConfigError, match="loaded edgekit text-generation artifact"):
        gen.generate("the cat", max_new_tokens=4, assistant_model="draft-folder")
    with pytest.raises(ConfigError, match="num_assistant_tokens goes with"):
        gen.generate("the cat", max_new_tokens=4, num_assistant_tokens=3)


def test_verify_through_the_cuda_step_loop(gen: Any) -> None:
    """onnxruntime's CUDA loop (DeviceMemory) with a cuda-python fake whose copies move host memory: the
    verify call's keys/values go into the resident cache at the next slots device-side (the slot graph),
    or the graph writes them itself (the fused-attention graph); the tokens are plain greedy's."""
    import trt_fakes as F
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper

    prompt = PROMPTS[4]
    plain = gen.generate(input_ids=prompt, max_new_tokens=40, return_dict_in_generate=True, output_scores=True)
    calls = F.Calls()
    cu, runner = F.make_cudart(calls), gen.decoder
    runner._stepper_impl = lambda spec: OrtStepper(runner._session, spec, DeviceMemory(cu, "cpu"))
    try:
        spec = gen.generate(input_ids=prompt, max_new_tokens=40, return_dict_in_generate=True, output_scores=True,
                            prompt_lookup_num_tokens=4)
    finally:
        del runner._stepper_impl  # the instance attribute; the module-scoped model goes back to its own loop
    np.testing.assert_array_equal(spec.sequences, plain.sequences)
    for a, b in zip(spec.scores, plain.scores):  # as in test_greedy_tokens_identical_and_more_per_step
        np.testing.assert_allclose(a, b, rtol=0, atol=32 * np.finfo(np.float32).eps * float(np.abs(b).max()))
    s = spec.speculation
    assert 0 < s.accepted < s.drafted, s  # drafts kept and drafts rolled back
    # Each slot-cache write is one strided copy of (tokens * head_dim) floats per row; a verify writes
    # its 2..5 tokens (the token and up to 4 drafts) at once. The fused-attention graph copies nothing.
    widths = {width for _, width, _ in calls.copies_2d}
    if runner.kv_layout == "shared":
        assert widths == set()
    else:
        row = min(widths)  # one token's keys (a decode step)
        assert {w // row for w in widths} >= {1, prompt.shape[1]} and {w // row for w in widths} & {2, 3, 4, 5}
