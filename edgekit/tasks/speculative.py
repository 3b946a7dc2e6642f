"""Speculative decoding: a drafter proposes tokens, the target checks them all in one call.

transformers' assisted generation (`GenerationMixin._assisted_decoding`) with two of its candidate
generators: `prompt_lookup_num_tokens=N` (PromptLookupCandidateGenerator: the continuation of the
last n-gram's earlier occurrence in the prompt and the text so far) and `assistant_model=` (a
smaller model of the same tokenizer drafting with its own cache, AssistedCandidateGenerator). The
target feeds its last token and the k drafts in one call (`verify`: k + 1 logits rows through the
same resident cache); tasks/speculative_rule.py judges the positions in order (greedy: the target's
argmax; sampling: its own draw, or, for an assistant's sampled drafts, speculative sampling), the
m drafts kept and the target's token after them are the step's tokens, and the k - m rejected slots
are rolled back (masked; later writes overwrite them). Greedy keeps plain greedy's tokens, sampling
plain sampling's distribution. Structured output: drafts are cut before the first token the grammar
refuses, and an assistant drafts through the grammar's mask (its matcher advanced through the drafts
and rolled back after).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgekit.errors import ConfigError
from edgekit.results import Speculation
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.processors import LogitsPipeline
from edgekit.tasks.sampling import softmax
from edgekit.tasks.search import Searched, Stopper, _check
from edgekit.tasks.speculative_rule import Drafts, judge, target_scores
from edgekit.tasks.structured import GrammarRows


class Verifier(Protocol):
    """A decode-loop state that can feed several tokens at once and forget the last ones."""

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def step(self, tokens: np.ndarray) -> np.ndarray: ...

    def verify(self, tokens: np.ndarray) -> np.ndarray: ...

    def rollback(self, n: int) -> None: ...

    def close(self) -> None: ...


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    return int(np.argmin(np.append(a[:n] == b[:n], False)))


def catch_up(state: Verifier, fed: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Make a cache that holds `fed` hold `ids`: roll it back to their longest common prefix and feed
    the rest in one call, at least the last token (its logits come next). Returns those logits
    (1, vocab) and how many tokens were kept. A conversation's new turn and an assistant's view of the
    target's text both come this way."""
    same = min(common_prefix(fed, ids), len(ids) - 1)
    state.rollback(len(fed) - same)
    new = ids[same:]
    if same == 0:  # nothing kept: the prompt runs as generate runs it
        logits = state.prefill(new[None], np.ones((1, len(new)), np.int64))
    elif len(new) == 1:
        logits = state.step(new)
    else:
        logits = state.verify(new[None])[:, -1]
    return logits, same


class Drafter(Protocol):
    def draft(self, seq: np.ndarray, room: int) -> Drafts:
        """At most `room` proposed next tokens after `seq` (1-d int64), possibly none."""
        ...


@dataclass(frozen=True)
class PromptLookup:
    """PromptLookupCandidateGenerator.get_candidates (transformers 5), for one row: the longest
    n-gram (max_matching_ngram_size down to 1) ending the text, its first earlier occurrence
    that is followed by tokens, up to `tokens` of those, cut before the first eos."""

    tokens: int
    max_ngram: int
    eos: tuple[int, ...]

    def draft(self, seq: np.ndarray, room: int) -> Drafts:
        n = len(seq)
        for size in range(min(self.max_ngram, n - 1), 0, -1):
            hits = np.flatnonzero((sliding_window_view(seq, size) == seq[n - size:]).all(axis=1))
            for idx in hits:
                start = int(idx) + size
                end = min(start + self.tokens, n)
                if start < end:
                    chosen = seq[start:end]
                    cut = np.flatnonzero(np.isin(chosen, self.eos))
                    chosen = chosen[: int(cut[0])] if len(cut) else chosen
                    return Drafts(chosen[:room])  # transformers stops at the first match, even one cut to nothing
        return Drafts(seq[:0])


def speculative_decode(state: Verifier, logits: np.ndarray, seqs: np.ndarray, pipeline: LogitsPipeline,
                       stop: Stopper, drafter: Drafter, out: Searched, stats: Speculation,
                       record: tuple[bool, bool]) -> Iterator[int]:
    """Greedy search or sampling of one row (`seqs` (1, prompt)) with drafts checked by `state.verify`
    (tasks/speculative_rule.py judges each position); yields each new token. `stats` counts target
    calls and accepted drafts. With structured output the drafts are cut before the first token the
    grammar refuses, and each position is masked with the grammar after the kept tokens before it."""
    grammar = pipeline.grammar
    out.sequences = seqs
    token, _ = judge(pipeline.chooser, target_scores(pipeline, out, logits, record), None, None)
    while True:
        done = _emit(out, token, stop, grammar)
        yield token
        if done:
            return
        room = stop.max_length - out.sequences.shape[1] - 1  # the target adds one token of its own
        drafts = drafter.draft(out.sequences[0], room) if room > 0 else Drafts(seqs[0, :0])
        if grammar is not None:
            drafts = drafts.cut(grammar.valid_prefix(drafts.tokens))
        k = len(drafts.tokens)
        stats.steps += 1
        stats.tokens += 1  # the target's own next token, below
        if not k:
            token, _ = judge(pipeline.chooser, target_scores(pipeline, out, state.step(np.array([token])), record),
                             None, None)
            continue
        rows = state.verify(np.array([[token, *drafts.tokens]], np.int64))[0]
        stats.drafted += k
        m = 0
        while True:  # positions 0..k: the drafts, then the one past them
            draft = int(drafts.tokens[m]) if m < k else None
            q = drafts.q[m] if drafts.q is not None and m < k else None
            token, kept = judge(pipeline.chooser, target_scores(pipeline, out, rows[None, m], record), draft, q)
            if not kept:
                break
            m += 1
            done = _emit(out, token, stop, grammar)
            yield token
            if done:
                stats.tokens -= 1  # the step ends on a draft: no token of the target's own follows
                break
        stats.accepted += m
        stats.tokens += m
        if done:
            return
        state.rollback(k - m)


def _emit(out: Searched, token: int, stop: Stopper, grammar: GrammarRows | None) -> bool:
    """Append the token (the grammar takes it); whether the sequence is then done."""
    if grammar is not None:
        grammar.advance(np.array([token]), np.ones(1, bool))
    out.sequences = np.concatenate([out.sequences, np.array([[token]], np.int64)], axis=1)
    return bool(stop(out.sequences)[0])


@dataclass(frozen=True)
class Speculate:
    """What drafts: `prompt_lookup_num_tokens` (with `max_matching_ngram_size`) or `assistant_model`
    (with `num_assistant_tokens`, `num_assistant_tokens_schedule`, `assistant_confidence_threshold`),
    checked, with transformers' defaults (2; 20, "constant", 0.4: GenerationConfig's global defaults)."""

    tokens: int
    max_ngram: int
    assistant: Any = None  # a loaded edgekit Generator of the target's tokenizer, or its artifact's path
    schedule: str = "constant"
    confidence: float | None = None

    @property
    def name(self) -> str:
        return "prompt_lookup_num_tokens" if self.assistant is None else "assistant_model"

    @staticmethod
    def make(tokens: int | None, max_ngram: int | None, assistant: Any = None,
             assistant_tokens: int | None = None, schedule: str | None = None,
             confidence: float | None = None) -> Speculate | None:
        if tokens is not None and assistant is not None:
            raise ConfigError("pass one kind of draft: prompt_lookup_num_tokens or assistant_model",
                              found=f"prompt_lookup_num_tokens={tokens!r} and an assistant_model")
        lone = (("max_matching_ngram_size", max_ngram, tokens, "prompt_lookup_num_tokens"),
                ("num_assistant_tokens", assistant_tokens, assistant, "assistant_model"),
                ("num_assistant_tokens_schedule", schedule, assistant, "assistant_model"),
                ("assistant_confidence_threshold", confidence, assistant, "assistant_model"))
        for name, v, needs, needed in lone:
            if v is not None and needs is None:
                raise ConfigError(f"{name} goes with {needed}", found=f"{name}={v!r} alone",
                                  fix=f"pass {needed} too, or leave {name} out")
        if tokens is None and assistant is None:
            return None
        if assistant is None:
            name, n = "prompt_lookup_num_tokens", tokens
        else:  # transformers' GenerationConfig default for num_assistant_tokens
            name, n = "num_assistant_tokens", 20 if assistant_tokens is None else assistant_tokens
        ngram = 2 if max_ngram is None else max_ngram  # PromptLookupCandidateGenerator's default
        for label, v in ((name, n), ("max_matching_ngram_size", ngram)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{label} must be an integer >= 1", found=repr(v))
        if schedule is not None and schedule not in SCHEDULES:
            raise ConfigError("num_assistant_tokens_schedule is one of transformers' schedules",
                              found=repr(schedule), fix=f"pass one of {list(SCHEDULES)}")
        given = isinstance(confidence, (int, float, np.floating)) and not isinstance(confidence, bool)
        if confidence is not None and not (given and 0 <= confidence <= 1):
            raise ConfigError("assistant_confidence_threshold is a probability in [0, 1] (0 turns it off)",
                              found=repr(confidence))
        if assistant is None:
            return Speculate(int(n), int(ngram))
        return Speculate(int(n), int(ngram), assistant, schedule or "constant",
                         0.4 if confidence is None else float(confidence))

    def check(self, opts: GenerateOptions, rows: int) -> None:
        """Refuse by name what speculative decoding does not do (before any model time): transformers'
        assisted generation is greedy search or sampling of one sequence of one prompt (its generation
        config refuses beams, `_assisted_decoding` a batch)."""
        bad = {"num_beams": opts.num_beams > 1, "num_return_sequences": opts.num_return_sequences > 1,
               "batch": rows > 1}
        found = [k for k, v in bad.items() if v]
        if found:
            raise ConfigError(f"{self.name} decodes one sequence of one prompt, greedily or by sampling; it does "
                              f"not take {found}", found=f"num_beams={opts.num_beams}, prompts={rows}, "
                                                      f"num_return_sequences={opts.num_return_sequences}",
                              fix=f"leave {self.name} out for these, or decode one prompt with num_beams=1 "
                                  "(transformers' assisted generation is batch-1 greedy search or sampling too)")


SCHEDULES = ("constant", "heuristic", "heuristic_transient")


def next_draft_length(schedule: str, n: int, drafted: int, matched: int) -> int:
    """AssistedCandidateGenerator.update_candidate_strategy's draft length after one target step:
    the heuristic schedules add 2 when every draft was accepted (`matched` is transformers'
    num_matches: the step's new tokens less one, so an eos among them counts as the target's own)
    and take 1 away otherwise, down to 1; "constant" keeps `n`."""
    if schedule == "constant":
        return n
    return n + 2 if matched == drafted else max(1, n - 1)


def roc_threshold(probs: list[float], matches: list[int]) -> float:
    """update_candidate_strategy's confidence threshold: the one of sklearn's `roc_curve(matches,
    probs)` (its thresholds: +inf, then each distinct probability, high to low) at which
    fpr + 3 * fnr is least, the first such. sklearn drops collinear points from the curve; the cost
    is linear along such a run, so its least value is at a kept end and the choice is the same."""
    p, y = np.asarray(probs, np.float64), np.asarray(matches, np.int64)
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    last = np.append(np.flatnonzero(np.diff(p)), len(p) - 1)  # each distinct probability's last row
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    costs = np.append(0, fps) / fps[-1] + 3 * (1 - np.append(0, tps) / tps[-1])
    return float(np.append(np.inf, p[last])[int(np.argmin(costs))])


class AssistantDraft:
    """Drafts from a smaller model of the same tokenizer (transformers' AssistedCandidateGenerator):
    its own tokens through its own cache, kept in step with the target's text.

    Each call finds where the target's text parts from what the assistant has fed (its rejected
    drafts), rolls its cache back to there, feeds the target's tokens since in one call and drafts
    from its logits; the last draft is never fed (the next call may reject it). Greedy drafts are
    the raw argmax (the target's processors decide what is kept: they change acceptance, never
    tokens); sampled drafts are draws from q, the target's pipeline on the assistant's logits, kept
    with them for the accept test. Under a grammar both go through its mask, the matcher advanced
    through the drafts and rolled back after, so every draft is one the grammar takes.

    Draft length and early stop as transformers: `tokens` drafts at most, changed after every target
    step by `schedule` (next_draft_length); drafting stops after a draft whose probability (softmax
    of the raw logits; q when sampling) is below `confidence` (ConfidenceCriteria), the threshold
    re-fitted after every step to the probabilities of the drafts judged so far (roc_threshold;
    transformers does so where scikit-learn is installed). What a step accepted is read from the
    target's text at the next call (or `finish`): the accepted drafts are the ones it starts with.
    """

    def __init__(self, state: Verifier, tokens: int, eos: tuple[int, ...], pipeline: LogitsPipeline | None = None,
                 schedule: str = "constant", confidence: float | None = None) -> None:
        """`pipeline`: the target's processors (sampling draws from them, a grammar masks); None drafts
        the raw argmax."""
        self.state, self.tokens, self.eos, self.pipeline = state, tokens, eos, pipeline
        self.sample = pipeline is not None and pipeline.chooser.cfg.do_sample
        self.grammar = None if pipeline is None else pipeline.grammar
        self.schedule, self.confidence = schedule, confidence
        self.fed = np.zeros(0, np.int64)  # the tokens in the assistant's cache
        self.last: tuple[int, np.ndarray] | None = None  # (text length, drafts) of the last draft not yet judged
        self.probs: list[float] = []  # each judged draft's probability, and whether it was accepted
        self.matches: list[int] = []

    def draft(self, seq: np.ndarray, room: int) -> Drafts:
        self.finish(seq)
        logits, _ = catch_up(self.state, self.fed, seq)
        self.fed = seq.copy()
        grammar, n = self.grammar, min(self.tokens, room)
        out: list[int] = []
        q: list[np.ndarray] = []
        while len(out) < n:
            x = _check(logits, np.ones(1, bool))
            picked = self._pick(np.append(seq, out), x)
            if picked is None:
                break
            out.append(picked[0])
            if picked[1] is not None:
                q.append(picked[1])
            unsure = False
            if self.confidence:  # ConfidenceCriteria; the probability kept for the threshold's re-fit
                probs = picked[1] if picked[1] is not None else softmax(x[0].astype(np.float64))
                self.probs.append(float(probs[out[-1]]))
                unsure = self.probs[-1] < self.confidence
            if out[-1] in self.eos or len(out) == n or unsure:
                break
            if grammar is not None:
                grammar.advance(np.array(out[-1:]), np.ones(1, bool))
            logits = self.state.step(np.array(out[-1:], np.int64))
            self.fed = np.append(self.fed, out[-1])
        if grammar is not None:
            grammar.rollback(len(self.fed) - len(seq))  # the drafts it took, all fed but the last
        drafts = Drafts(np.asarray(out, np.int64), np.stack(q) if q else None)
        self.last = (len(seq), drafts.tokens)
        return drafts

    def _pick(self, seq: np.ndarray, logits: np.ndarray) -> tuple[int, np.ndarray | None] | None:
        """The next draft after `seq` and its probabilities (sampling), or None where the processors
        leave no token (the target would find none there either: it refuses that by name)."""
        if not self.sample:
            scores = logits if self.grammar is None else self.grammar.mask(logits)
            return (int(np.argmax(scores[0])), None) if np.isfinite(scores).any() else None
        assert self.pipeline is not None  # sampling needs the target's processors
        scores = self.pipeline(seq[None], logits)
        if not np.isfinite(scores).any():
            return None
        probs = softmax(scores[0].astype(np.float64))
        return int(self.pipeline.chooser.draw(probs[None])[0]), probs

    def finish(self, seq: np.ndarray) -> None:
        """Judge the last drafts against the target's text `seq`: the schedule's and the threshold's
        updates for the target steps since (that step, and a last one without drafts when no room
        was left for any: transformers counts it as 0 of 0 matched)."""
        if self.last is None:
            return
        start, drafts = self.last
        self.last = None
        new = seq[start:]
        tokens = min(common_prefix(new, drafts) + 1, len(new))  # the accepted drafts and the target's own token, if it came
        self._update(len(drafts), tokens - 1)
        if len(new) > tokens:
            self._update(0, 0)

    def _update(self, drafted: int, matched: int) -> None:
        self.tokens = next_draft_length(self.schedule, self.tokens, drafted, matched)
        if not self.confidence:
            return
        # update_candidate_strategy's bookkeeping: the matched drafts and the first rejected one are
        # judged; the probabilities of the drafts after it are dropped.
        self.matches.extend([1] * matched)
        if len(self.probs) > len(self.matches):
            self.matches.append(0)
        del self.probs[len(self.matches):]
        if len(self.probs) > 5 and {0, 1} <= set(self.matches):
            self.confidence = roc_threshold(self.probs, self.matches)
