"""Speculative decoding on a tiny random GPT-2 (tests/reliability_models.py): the drafts are transformers'
PromptLookupCandidateGenerator's, greedy tokens are plain greedy's on both decoder graphs (onnxruntime's fused
attention and the portable slot graph), sampling keeps the target's distribution (prompt lookup and a tiny
random Llama of the same vocabulary as the assistant), structured output and streaming work with both, more
than one token comes per target call, and what it does not take is refused by name before the model runs. The GPU step loops
are checked with their real code on fake device memory (tests/trt_fakes.py, tests/test_steppers.py)."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

import jsonschema
import numpy as np
import pytest

import edgekit
from edgekit.contract.state import DecoderState
from edgekit.contract.state.kinds_attention import AttentionKV
from edgekit.contract.state.kinds_recurrent import ConvState
from edgekit.errors import ArtifactError, ConfigError
from edgekit.results import Speculation
from edgekit.tasks.sampling import softmax
from edgekit.contract.generate import verify_refusal as refusal
from edgekit.tasks.speculative import AssistantDraft, PromptLookup
from reliability_models import converted, converted_gpt2, converted_llama

# Texts that repeat themselves, so that lookups find n-grams: six random tokens three times.
_RNG = np.random.default_rng(0)
PROMPTS = [np.tile(_RNG.integers(0, 300, size=(1, 6)), 3) for _ in range(6)]
PROMPT = np.array([[5, 6, 7, 8, 9, 10, 11, 5, 6, 7, 8, 9, 10, 11, 5, 6, 7]], np.int64)


@pytest.fixture(scope="module", params=[False, True], ids=["fused-attention", "portable-slots"])
def gen(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_gpt2(tmp_path_factory), device="cpu", portable=request.param)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_gpt2(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A different random model of the GPT-2's tokenizer: its drafts are often not the target's."""
    return edgekit.load(converted_llama(tmp_path_factory), device="cpu")


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
        assert PromptLookup(tokens, ngram, eos).draft(seq, 1000).tokens.tolist() == want.tolist(), (seq, tokens, eos)


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


@pytest.mark.parametrize("bad", [{"num_beams": 2}, {"num_return_sequences": 2, "do_sample": True},
                                 {"max_matching_ngram_size": 0}, {"prompt_lookup_num_tokens": 0}])
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


# Sampling: suppress_tokens bans all but S in p and q alike (a logits processor before the warpers), so
# the first NEW tokens have 2**4 outcomes whose exact probabilities teacher-forced logits give, and two
# random models of the vocabulary give p and q that overlap but differ (drafts kept and rejected).
S = (5, 6)
NEW = 4  # t1 from the prompt call, t2 and t3 drafted and checked in one call, t4 the one past the drafts
SAMPLING = {"max_new_tokens": NEW, "do_sample": True, "temperature": 1.3,
            "suppress_tokens": [t for t in range(320) if t not in S]}
BIGRAMS = np.array([[5, 6, 6, 5, 5, 6, 5, 6, 6, 6, 5, 5]])  # every bigram of S: a lookup always drafts


def _exact(model: Any, prompt: np.ndarray) -> dict[tuple[int, ...], float]:
    """The target's probability of each NEW-token continuation: products of its processed
    next-token probabilities (S only, temperature) along it, from teacher-forced logits."""
    dist: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(NEW):
        keys = list(dist)
        rows = model.logits(np.array([[*prompt[0], *k] for k in keys]))[:, -1, list(S)]
        probs = softmax(rows.astype(np.float64) / SAMPLING["temperature"])
        dist = {k + (t,): dist[k] * float(q) for k, row in zip(keys, probs) for t, q in zip(S, row)}
    return dist


def _chi_square(counts: Counter[tuple[int, ...]], p: dict[tuple[int, ...], float], n: int) -> tuple[float, int]:
    """Pearson's statistic and its degrees of freedom, the cells expected fewer than 5 times pooled
    (so that the chi-square law holds; pooling keeps the test valid, only coarser)."""
    cells, pool = [], [0.0, 0.0]  # (expected, seen)
    for k in sorted(p, key=p.get):
        if pool[0] < 5:
            pool = [pool[0] + n * p[k], pool[1] + counts[k]]
        else:
            cells.append((n * p[k], counts[k]))
    cells.append(tuple(pool))
    assert sum(counts.values()) == sum(c[1] for c in cells) == n  # no draw outside the support
    return sum((seen - e) ** 2 / e for e, seen in cells), len(cells) - 1


def _chi2_sf(x: float, df: int) -> float:
    """P(chi-square >= x), closed form for an even number of degrees of freedom; an odd df is raised
    by one, which only raises the tail (fewer false alarms)."""
    m = (df + 1) // 2
    return math.exp(-x / 2) * sum((x / 2) ** j / math.factorial(j) for j in range(m))


@pytest.mark.parametrize("kind", ["prompt_lookup", "assistant"])
def test_sampling_keeps_the_target_distribution(target: Any, assistant: Any, kind: str) -> None:
    # n seeded draws against the exact distribution: chi-square, false alarm 1e-4 per kind (the bound
    # is 42.6 at its 14 degrees of freedom; the right rule measured 25.1 with the assistant, 14.7 with
    # lookups). Wrong rules fail by far (measured swapping speculative_rule.judge): keeping every
    # assistant draft 468 (TV 0.59), drawing from p instead of normalize(max(0, p - q)) after a
    # rejection 72 (TV 0.23), accepting with q/p instead of p/q 467, keeping every lookup draft 266.
    n = 200
    draft = ({"prompt_lookup_num_tokens": 2} if kind == "prompt_lookup" else
             {"assistant_model": assistant, "num_assistant_tokens": 2})
    counts: Counter[tuple[int, ...]] = Counter()
    drafted = accepted = 0
    for seed in range(n):
        out = target.generate(input_ids=BIGRAMS, seed=seed, return_dict_in_generate=True, **SAMPLING, **draft)
        counts[tuple(out.sequences[0, BIGRAMS.shape[1]:].tolist())] += 1
        drafted, accepted = drafted + out.speculation.drafted, accepted + out.speculation.accepted
    stat, df = _chi_square(counts, _exact(target, BIGRAMS), n)
    assert _chi2_sf(stat, df) > 1e-4, (stat, df, counts)
    assert 0 < accepted < drafted, (accepted, drafted)  # drafts were both kept and rejected
    again = target.generate(input_ids=BIGRAMS, seed=n - 1, return_dict_in_generate=True, **SAMPLING, **draft)
    np.testing.assert_array_equal(again.sequences, out.sequences)  # a seed repeats the call
    assert again.speculation == out.speculation


def test_prompt_lookup_sampling_is_plain_sampling_per_seed(target: Any) -> None:
    # The target draws one uniform per kept token, in order, as plain sampling does: a seed gives plain
    # sampling's tokens (verify's logits are step's to a few ulps, far below a draw's resolution here).
    # A text prompt streams the same text.
    made = 0
    opts = {**SAMPLING, "max_new_tokens": 40, "suppress_tokens": [t for t in range(320) if t not in (5, 6, 7)]}
    for seed in range(3):
        plain = target.generate(input_ids=BIGRAMS, seed=seed, **opts)
        spec = target.generate(input_ids=BIGRAMS, seed=seed, prompt_lookup_num_tokens=3, return_dict_in_generate=True,
                               **opts)
        np.testing.assert_array_equal(spec.sequences, plain)
        made += spec.speculation.accepted
    assert made > 0
    text = "the cat sat on the mat. the cat sat on the mat. the cat"
    for kw in ({"do_sample": True, "seed": 4}, {}):
        want = target.generate(text, max_new_tokens=30, prompt_lookup_num_tokens=4, **kw)
        assert "".join(target.generate(text, max_new_tokens=30, prompt_lookup_num_tokens=4, stream=True, **kw)) == want


def test_structured_output_with_drafts(target: Any, assistant: Any) -> None:
    # A regex repeating the prompt's pattern: lookups draft what the grammar then forces. The assistant
    # drafts through the grammar's mask: all kept under the regex, some rejected under the JSON schema
    # (its matcher rolled back then). Greedy keeps plain structured greedy's tokens; all output parses.
    schema = {"type": "object", "properties": {"status": {"enum": ["open", "paid"]},
                                               "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
              "required": ["status", "qty"], "additionalProperties": False}
    lookup, helped = {"prompt_lookup_num_tokens": 4}, {"assistant_model": assistant, "num_assistant_tokens": 4}
    for prompt, fmt, drafts in (
            ("id: ab-12 ab-12 ab-12 ", {"regex": r"(ab-12 ){1,5}"}, (lookup, helped)),
            ("The order:", {"response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}},
             (helped,))):
        plain = target.generate(prompt, max_new_tokens=40, return_dict_in_generate=True, **fmt)
        for draft in drafts:
            spec = target.generate(prompt, max_new_tokens=40, return_dict_in_generate=True, **fmt, **draft)
            np.testing.assert_array_equal(spec.sequences, plain.sequences)
            s = spec.speculation
            assert _parses(fmt, spec.texts[0]) and 0 < s.accepted <= s.drafted, (draft, s)
            if draft is helped:  # masked drafts: a random Llama's own text is never this pattern
                assert (s.accepted < s.drafted) == ("response_format" in fmt), s
            for seed in range(2):
                assert _parses(fmt, target.generate(prompt, max_new_tokens=40, do_sample=True, seed=seed, **fmt,
                                                    **draft))


def _parses(fmt: dict[str, Any], text: str) -> bool:
    if "regex" in fmt:
        return re.fullmatch(fmt["regex"], text) is not None
    jsonschema.validate(json.loads(text), fmt["response_format"]["json_schema"]["schema"])
    return True


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
        drafts = drafter.draft(seq, room=1000).tokens
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
