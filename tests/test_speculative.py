"""Speculative decoding with prompt-lookup drafts on a tiny random GPT-2 (tests/reliability_models.py):
the drafts are transformers' PromptLookupCandidateGenerator's, the tokens are plain greedy's on both
decoder graphs (onnxruntime's fused attention and the portable slot graph), more than one token comes
per target call, and what it does not take is refused by name before the model runs."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.contract.state import DecoderState
from edgekit.contract.state.kinds_attention import AttentionKV
from edgekit.contract.state.kinds_recurrent import ConvState
from edgekit.errors import ArtifactError, ConfigError
from edgekit.results import Speculation
from edgekit.tasks.speculative import AssistantDraft, PromptLookup, refusal
from reliability_models import converted, converted_gpt2

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
    for lone in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"):
        with pytest.raises(ConfigError, match=f"{lone} goes with"):
            gen.generate("the cat", max_new_tokens=4, **{lone: 3})
    for bad in ({"num_assistant_tokens_schedule": "linear"}, {"assistant_confidence_threshold": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            gen.generate("the cat", max_new_tokens=4, assistant_model=other, **bad)


def test_assistant_from_its_path(gen: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The artifact's folder, as str or Path: loaded for the call on the target's device, tokens plain greedy's.
    path = converted_gpt2(tmp_path_factory)
    plain = gen.generate(input_ids=PROMPTS[1], max_new_tokens=24)
    for given in (str(path), path):
        spec = gen.generate(input_ids=PROMPTS[1], max_new_tokens=24, assistant_model=given, return_dict_in_generate=True)
        np.testing.assert_array_equal(spec.sequences, plain)
        assert spec.speculation.accepted > 0, spec.speculation
    with pytest.raises(ConfigError, match=r"assistant_model takes .* or its path.*Found: int"):
        gen.generate("the cat", max_new_tokens=4, assistant_model=3)
    with pytest.raises(ArtifactError, match="no artifact folder"):
        gen.generate("the cat", max_new_tokens=4, assistant_model=path.parent / "no-such-draft")
    with pytest.raises(ConfigError, match="must be a text-generation artifact"):
        gen.generate("the cat", max_new_tokens=4, assistant_model=converted(tmp_path_factory, "tensor"))


class _Scripted:
    """A stand-in assistant cache whose every call returns fresh random logits (a spread of draft
    probabilities), each row kept so the test can compute what transformers would see."""

    def __init__(self, seed: int, vocab: int = 12) -> None:
        self.rng, self.vocab, self.rows = np.random.default_rng(seed), vocab, []

    def _rows(self, n: int) -> np.ndarray:
        x = (3 * self.rng.standard_normal((n, self.vocab))).astype(np.float32)
        self.rows.append(x[-1])
        return x

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._rows(1)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self._rows(1)

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        return self._rows(tokens.shape[1])[None]

    def rollback(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("schedule", "threshold"), [("constant", 0.4), ("heuristic", 0.0), ("heuristic", 0.4),
                                                     ("heuristic_transient", 0.4)])
def test_draft_length_and_threshold_are_transformers(schedule: str, threshold: float) -> None:
    # AssistantDraft against AssistedCandidateGenerator.update_candidate_strategy on a scripted accept
    # pattern: the same drafts and accepted counts in, the same draft length and confidence threshold out
    # after every target step (the threshold re-fitted by scikit-learn's roc_curve there).
    torch = pytest.importorskip("torch")
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    assistant = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=12, n_positions=64))
    assistant.generation_config.update(num_assistant_tokens=5, num_assistant_tokens_schedule=schedule,
                                       assistant_confidence_threshold=threshold)
    ids = torch.tensor([[1, 2, 3]])
    ref = AssistedCandidateGenerator(ids, assistant, GenerationConfig(max_length=1000), {})
    state, rng = _Scripted(int(threshold * 10) + len(schedule)), np.random.default_rng(1)
    drafter = AssistantDraft(state, 5, eos=(), schedule=schedule, confidence=threshold)
    seq, judged = np.array([1, 2, 3]), 0
    for _ in range(30):
        drafts = drafter.draft(seq, room=1000)
        assert drafter.tokens == ref.num_assistant_tokens
        assert drafter.confidence == pytest.approx(ref.assistant_generation_config.assistant_confidence_threshold)
        probs = torch.softmax(torch.from_numpy(np.stack(state.rows[-len(drafts):])), -1)[range(len(drafts)), drafts]
        # ConfidenceCriteria: drafting stops after the first draft below the threshold, or at the length
        below = np.flatnonzero(probs.numpy() < (drafter.confidence or 0.0))
        assert len(drafts) == (below[0] + 1 if len(below) else drafter.tokens), (drafts, probs)
        if threshold:
            ref.probs.extend(probs.tolist())  # what its _generate_candidates records
        matched = int(rng.integers(0, len(drafts) + 1))
        judged += matched < len(drafts)
        seq = np.concatenate([seq, drafts[:matched], [(drafts[matched] + 1) % 12 if matched < len(drafts) else 0]])
        ref.update_candidate_strategy(ids, torch.zeros(1, len(drafts) + 1, 12), matched)
    drafter.finish(seq)
    assert drafter.tokens == ref.num_assistant_tokens
    assert judged > 5 and (schedule == "constant") == (ref.num_assistant_tokens == 5)
    if threshold:  # the threshold was re-fitted: it is one of the judged drafts' probabilities
        assert drafter.confidence != threshold and drafter.confidence in drafter.probs


def test_heuristic_schedule_in_generate(gen: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The same weights draft (every draft accepted): each step drafts 2 more than the last, "heuristic"
    # keeps the last length on the assistant for its next call, "heuristic_transient" does not.
    other = edgekit.load(converted_gpt2(tmp_path_factory), device="cpu", portable=gen.decoder.kv_layout == "shared")
    plain = gen.generate(input_ids=PROMPTS[2], max_new_tokens=40)

    def expected(n: int) -> tuple[int, int]:  # (drafted, length after): the prompt call makes the first token
        made, drafted = 1, 0
        while made < 40:
            k = min(n, 40 - made - 1)
            drafted, made, n = drafted + k, made + k + 1, n + 2  # a step with no room drafts 0 of 0: +2 too
        return drafted, n

    # transient from 3; heuristic from the default 20 (nothing kept yet); heuristic from what that kept
    starts = {"heuristic_transient": 3, "heuristic": 20}
    for schedule, given in (("heuristic_transient", 3), ("heuristic", None), ("heuristic", None)):
        spec = gen.generate(input_ids=PROMPTS[2], max_new_tokens=40, assistant_model=other, return_dict_in_generate=True,
                            num_assistant_tokens=given, num_assistant_tokens_schedule=schedule,
                            assistant_confidence_threshold=0)
        np.testing.assert_array_equal(spec.sequences, plain)
        drafted, after = expected(starts[schedule])
        assert (spec.speculation.drafted, spec.speculation.accepted) == (drafted, drafted), spec.speculation
        assert other.num_assistant_tokens == (None if schedule == "heuristic_transient" else after)
        starts["heuristic"] = after if schedule == "heuristic" else 20
