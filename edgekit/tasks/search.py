"""The decode loops of `generate`: greedy/sampling and beam search, over any decode-loop state.

A state (a KV slot cache, a recurrent state, an encoder-decoder's cache with its resident encoder
output, ...) implements the loop contract:
    prefill(ids, mask) -> logits of the last position (rows, vocab)
    step(tokens)       -> logits (rows, vocab) after feeding one token per row
    reorder(rows)      -> keep rows `rows` in that order (possibly repeated; before the first
                          step the number of rows may change: a prompt row becomes its beams)
    close()
The loops follow `GenerationMixin._sample` and `_beam_search` of transformers 5 step for step
(same candidate counts, the same -1e9 masking in float32, the same stopping tests), so that fp32
artifacts give transformers' tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgekit.errors import InputError
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.processors import LogitsPipeline
from edgekit.tasks.sampling import TokenChooser, log_softmax
from edgekit.tasks.structured import GrammarRows

F32 = np.float32
BIG = F32(-1.0e9)


class Processors(Protocol):
    """The logits processors of one call (tasks/processors.py, or Whisper's rules) and their chooser."""

    chooser: TokenChooser

    def __call__(self, seqs: np.ndarray, scores: np.ndarray) -> np.ndarray: ...


class DecodeState(Protocol):
    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def step(self, tokens: np.ndarray) -> np.ndarray: ...

    def reorder(self, rows: np.ndarray) -> None: ...

    def close(self) -> None: ...


@dataclass
class Searched:
    """What a loop made: the sequences (prompt included) and, when asked, per-step scores/logits."""

    sequences: np.ndarray
    scores: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    sequences_scores: np.ndarray | None = None
    beam_indices: np.ndarray | None = None


class Stopper:
    """transformers' stopping criteria: max length, an eos token last, a stop string in the new text."""

    def __init__(self, max_length: int, eos: tuple[int, ...], prompt: int,
                 stops: list[str] | None = None, decode: Callable[[list[int]], str] | None = None) -> None:
        self.max_length, self.eos, self.prompt = max_length, np.asarray(eos, np.int64), prompt
        self.stops, self.decode = stops or [], decode
        self.tail = max((len(s) for s in self.stops), default=0) + 8  # tokens enough to hold any stop string

    def __call__(self, seqs: np.ndarray) -> np.ndarray:
        if seqs.shape[1] >= self.max_length:
            return np.ones(seqs.shape[0], bool)
        hit = np.isin(seqs[:, -1], self.eos)
        if self.stops and self.decode is not None:
            for r in np.nonzero(~hit)[0]:
                text = self.decode(seqs[r, max(self.prompt, seqs.shape[1] - self.tail):].tolist())
                hit[r] = any(s in text for s in self.stops)
        return hit


def _check(logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, F32)
    if not np.all(np.isfinite(x[rows])):
        raise InputError("the model produced non-finite logits", fix="check the artifact with `edgekit parity`")
    return x


def sample(state: DecodeState, logits: np.ndarray, seqs: np.ndarray, pipeline: LogitsPipeline, stop: Stopper,
           pad: int, out: Searched, record: tuple[bool, bool]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Greedy search or multinomial sampling (`_sample`): yields (token, unfinished) per step.

    Finished rows get `pad` (transformers does the same); `out.sequences` grows as tokens come. With
    structured output the pipeline masked what the grammar refuses, and the grammar takes each token.
    """
    grammar = pipeline.grammar
    unfinished = np.ones(seqs.shape[0], bool)
    out.sequences = seqs
    while True:
        x = _check(logits, unfinished)
        scores = pipeline(out.sequences, x)
        if record[0]:
            out.scores.append(scores)
        if record[1]:
            out.logits.append(x)
        if grammar is not None:
            grammar.check_choice(scores, unfinished)
        token = np.where(unfinished, pipeline.chooser.choose(scores), pad)
        if grammar is not None:
            grammar.advance(token, unfinished)
        out.sequences = np.concatenate([out.sequences, token[:, None]], axis=1)
        unfinished &= ~stop(out.sequences)
        yield token, unfinished
        if not unfinished.any():
            return
        logits = state.step(token)


def beam_search(state: DecodeState, logits: np.ndarray, seqs: np.ndarray, o: GenerateOptions,
                pipeline: Processors, stop: Stopper, fill: int, record: tuple[bool, bool],
                grammar: GrammarRows | None = None) -> Searched:
    """Beam search (and beam sampling) as `GenerationMixin._beam_search`, on rows already expanded
    to batch * num_beams (beam k of input b is row b * num_beams + k); the state reorders its
    cache rows after every step, and `grammar` (whose mask the pipeline applied) its matchers. A
    candidate the grammar refused scores -inf: it runs on only when fewer live candidates remain,
    and its matcher is then dead (its row masked whole), so it never beats a valid hypothesis."""
    k, rows_in = o.num_beams, seqs.shape[0]
    b, prompt = rows_in // k, seqs.shape[1]
    max_length = stop.max_length
    keep = max(2, 1 + len(stop.eos)) * k  # candidates per input: enough to survive k eos hits
    top_k_mask = np.arange(keep) < k
    running = np.full((b, k, max_length), fill, np.int64)
    running[:, :, :prompt] = seqs.reshape(b, k, prompt)
    sequences = running.copy()
    running_scores = np.zeros((b, k), F32)
    running_scores[:, 1:] = BIG
    beam_scores = np.full((b, k), BIG, F32)
    finished = np.zeros((b, k), bool)
    unsatisfied = np.ones((b, 1), bool)
    running_idx = np.full((b, k, max_length - prompt), -1, np.int32)
    beam_idx = running_idx.copy()
    out = Searched(seqs)
    cur = prompt
    while True:
        flat = running[:, :, :cur].reshape(b * k, cur)
        x = _check(logits, np.ones(b * k, bool))
        log_probs = pipeline(flat, log_softmax(x))
        if record[0]:
            out.scores.append(log_probs)
        if record[1]:
            out.logits.append(x)
        vocab = log_probs.shape[1]
        acc = (log_probs.reshape(b, k, vocab) + running_scores[:, :, None]).reshape(b, k * vocab)
        top = pipeline.chooser.choose_many(acc, keep) if o.do_sample else top_k(acc, keep)
        top_scores = np.take_along_axis(acc, top, axis=1)
        from_beam = top // vocab
        cand = np.take_along_axis(running, from_beam[:, :, None], axis=1)
        cand_idx = np.take_along_axis(running_idx, from_beam[:, :, None], axis=1)
        cand[:, :, cur] = top % vocab
        cand_idx[:, :, cur - prompt] = from_beam + np.arange(b)[:, None] * k
        hits = stop(cand[:, :, : cur + 1].reshape(b * keep, cur + 1)).reshape(b, keep)
        # The next running beams: the best candidates that did not stop.
        live = top_scores + hits.astype(F32) * BIG
        nxt = top_k(live, k)
        running = np.take_along_axis(cand, nxt[:, :, None], axis=1)
        running_scores = np.take_along_axis(live, nxt, axis=1)
        running_idx = np.take_along_axis(cand_idx, nxt[:, :, None], axis=1)
        # Finished hypotheses: the candidates among the top k that stopped, length-penalized.
        done_now = hits & top_k_mask[None, :]
        scored = top_scores / F32((cur + 1 - prompt) ** o.length_penalty)
        full = finished.all(axis=-1, keepdims=True) & (o.early_stopping is True)
        scored = scored + full.astype(F32) * BIG
        scored = scored + (~unsatisfied).astype(F32) * BIG
        scored = scored + (~done_now).astype(F32) * BIG
        merged = np.concatenate([beam_scores, scored], axis=1)
        best = top_k(merged, k)
        sequences = np.take_along_axis(np.concatenate([sequences, cand], axis=1), best[:, :, None], axis=1)
        beam_scores = np.take_along_axis(merged, best, axis=1)
        beam_idx = np.take_along_axis(np.concatenate([beam_idx, cand_idx], axis=1), best[:, :, None], axis=1)
        finished = np.take_along_axis(np.concatenate([finished, done_now], axis=1), best, axis=1)
        reorder = running_idx[:, :, cur - prompt].reshape(-1).astype(np.int64)
        cur += 1
        unsatisfied = _improvable(unsatisfied, running_scores, beam_scores, finished, cur - prompt,
                                  max_length - prompt, o)
        more = unsatisfied.any() and not (finished.all() and o.early_stopping is True) and not hits.all()
        if not more:
            break
        if grammar is not None:
            grammar.reorder(reorder)
            grammar.advance(running[:, :, cur - 1].reshape(-1), np.ones(b * k, bool))
        state.reorder(reorder)
        logits = state.step(running[:, :, cur - 1].reshape(-1))
    r = o.num_return_sequences
    seq = sequences[:, :r].reshape(b * r, max_length)
    idx = beam_idx[:, :r].reshape(b * r, -1)
    made = int((idx != -1).sum(axis=1).max())
    out.sequences, out.beam_indices = seq[:, : prompt + made], idx[:, :made]
    out.sequences_scores = beam_scores[:, :r].reshape(-1)
    return out


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k largest values, largest first, equal values by lower index (a
    stable sort's order), without sorting the row: beam search ranks num_beams * vocab candidates."""
    if k >= x.shape[1]:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-x, k - 1, axis=1)[:, k - 1]  # the k-th largest value of each row
    out = np.empty((x.shape[0], k), np.int64)
    for r, (row, v) in enumerate(zip(x, kth)):
        above = np.flatnonzero(row > v)
        picked = np.concatenate([above, np.flatnonzero(row == v)[: k - len(above)]])
        out[r] = picked[np.argsort(-row[picked], kind="stable")]
    return out


def _improvable(unsatisfied: np.ndarray, running_scores: np.ndarray, beam_scores: np.ndarray, finished: np.ndarray,
                length: int, longest: int, o: GenerateOptions) -> np.ndarray:
    """transformers' early-stop heuristic: can the best running beam still beat the worst finished one?"""
    best_length = longest if o.early_stopping == "never" and o.length_penalty > 0.0 else length
    best = running_scores[:, :1] / F32(best_length ** o.length_penalty)
    worst = np.where(finished, beam_scores.min(axis=1, keepdims=True), BIG)
    return unsatisfied & (best > worst).any(axis=-1, keepdims=True)
