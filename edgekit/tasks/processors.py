"""The logits processors of `transformers.generate`, in numpy, in its order (`_get_logits_processor`).

    encoder repetition penalty -> repetition penalty -> no-repeat n-grams -> encoder no-repeat n-grams ->
    bad words -> min length / min new tokens ->
    forced BOS -> forced EOS -> suppress tokens -> begin-suppress tokens -> (sampling) warpers
Each takes the sequences so far (rows, length: the prompt, padding included, then the new tokens;
an encoder-decoder's decoder tokens) and one step's scores (rows, vocab, float32, as transformers
keeps them), and returns new scores. `LogitsPipeline` is built once per generate call. The encoder
processors read each row's input as transformers passes it (`encoder_input_ids`: the caller's ids,
padding included; a decoder-only model's prompt, as transformers applies them there too).
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import ConfigError
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.sampling import SamplingConfig, TokenChooser, repetition_penalty
from edgekit.tasks.structured import GrammarRows

NEG = -np.inf


def no_repeat_ngram(seqs: np.ndarray, scores: np.ndarray, n: int, source: np.ndarray | None = None) -> np.ndarray:
    """Ban every token that would complete an n-gram of `source` (NoRepeatNGramLogitsProcessor: the row
    itself; EncoderNoRepeatNGramLogitsProcessor: the row's input) that starts with the row's last n - 1 tokens."""
    src = seqs if source is None else source
    length = seqs.shape[1]
    if n <= 0 or length < n - 1 or src.shape[1] < n:  # no prefix to match, or no n-gram to match it in
        return scores
    out = scores.copy()
    prefix = seqs[:, length + 1 - n:]  # n = 1: empty, so every token of `source` is banned
    windows = np.lib.stride_tricks.sliding_window_view(src, n, axis=1)  # (rows, src length - n + 1, n)
    matches = (windows[..., :-1] == prefix[:, None]).all(axis=-1)
    for r in range(seqs.shape[0]):
        banned = windows[r, matches[r], -1]
        out[r, banned[banned < scores.shape[1]]] = NEG
    return out


def encoder_repetition_penalty(source: np.ndarray, scores: np.ndarray, penalty: float) -> np.ndarray:
    """The repetition penalty inverted, on the tokens of each row's input (EncoderRepetitionPenaltyLogitsProcessor):
    penalty > 1 makes them likelier. transformers keeps 1 / penalty and applies it to float32 scores
    (negative times it, positive divided by it): the same float32 reciprocal here, for the same bits."""
    return repetition_penalty(scores, source, np.float32(1.0 / penalty))


def bad_words(seqs: np.ndarray, scores: np.ndarray, words: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """-inf on a banned word's last token where the row ends with the word's other tokens."""
    out = scores.copy()
    for w in words:
        *head, last = w
        if not head:
            out[:, last] = NEG
        elif len(head) <= seqs.shape[1]:
            hit = (seqs[:, seqs.shape[1] - len(head):] == np.asarray(head)).all(axis=1)
            out[hit, last] = NEG
    return out


def only(scores: np.ndarray, tokens: tuple[int, ...]) -> np.ndarray:
    """Every score -inf except `tokens`, which get 0 (a forced token)."""
    out = np.full_like(scores, NEG)
    out[:, list(tokens)] = 0
    return out


def banned(scores: np.ndarray, tokens: tuple[int, ...]) -> np.ndarray:
    ids = [t for t in tokens if t < scores.shape[1]]
    out = scores.copy()
    out[:, ids] = NEG
    return out


class LogitsPipeline:
    """transformers' processor list for one call.

    `prompt` is the length of the sequences the loop starts from (the padded prompt, or the
    decoder's start tokens); `ignore` is, per row, the count of leading positions the repetition
    penalty skips (left padding, as transformers reads it from the attention mask); `source` is, per
    row, the input the encoder processors read. `grammar` (structured output, set after the rows are
    expanded) masks what the grammar refuses last, before the warpers.
    """

    grammar: GrammarRows | None = None

    def __init__(self, opts: GenerateOptions, prompt: int, max_length: int, vocab: int, eos: tuple[int, ...],
                 ignore: np.ndarray | None, source: np.ndarray, seed: int | None) -> None:
        self.o, self.prompt, self.max_length, self.eos, self.ignore = opts, prompt, max_length, eos, ignore
        self.source = source
        words = None
        if opts.bad_words_ids is not None:
            words = tuple(w for w in opts.bad_words_ids if not (len(w) == 1 and w[0] in eos))
            out = sorted({t for w in words for t in w if t >= vocab})
            if out:
                raise ConfigError(f"bad_words_ids name tokens outside the vocabulary of {vocab}", found=f"{out[:8]}")
        self.words = words
        for name, tokens in (("forced_bos_token_id", (opts.forced_bos_token_id,)),
                             ("forced_eos_token_id", opts.forced_eos_token_id)):
            if tokens and tokens[0] is not None and max(tokens) >= vocab:
                raise ConfigError(f"{name} is outside the vocabulary of {vocab}", found=f"{list(tokens)}")
        self.min_total = opts.min_total(prompt)
        # transformers moves the begin index one on when a forced BOS takes the first free position.
        self.begin = prompt if prompt > 1 or opts.forced_bos_token_id is None else prompt + 1
        keep = len(eos) + 1 if opts.num_beams > 1 else 1  # beam sampling keeps a non-eos candidate
        self.chooser = TokenChooser(SamplingConfig.make(
            do_sample=opts.do_sample, temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
            repetition_penalty=opts.repetition_penalty, seed=seed, min_p=opts.min_p, typical_p=opts.typical_p,
            min_tokens_to_keep=keep))

    def expand(self, rows: np.ndarray) -> None:
        """The batch was expanded (beams, return sequences): row i is now a copy of row rows[i]."""
        if self.ignore is not None:
            self.ignore = self.ignore[rows]
        self.source = self.source[rows]

    def __call__(self, seqs: np.ndarray, scores: np.ndarray) -> np.ndarray:
        o, length, x = self.o, seqs.shape[1], scores
        if o.encoder_repetition_penalty != 1.0:
            x = encoder_repetition_penalty(self.source, x, o.encoder_repetition_penalty)
        if o.repetition_penalty != 1.0:
            seen = seqs
            if self.ignore is not None:  # skipped positions point past the vocabulary, then are dropped
                seen = np.where(np.arange(length)[None, :] < self.ignore[:, None], x.shape[1], seqs)
            x = repetition_penalty(x, seen, o.repetition_penalty)
        x = no_repeat_ngram(seqs, x, o.no_repeat_ngram_size)
        x = no_repeat_ngram(seqs, x, o.encoder_no_repeat_ngram_size, self.source)
        if self.words:
            x = bad_words(seqs, x, self.words)
        if self.eos and self.min_total > 0 and length < self.min_total:
            x = banned(x, self.eos)
        if o.forced_bos_token_id is not None and length == 1:
            x = only(x, (o.forced_bos_token_id,))
        if o.forced_eos_token_id is not None and length == self.max_length - 1:
            x = only(x, o.forced_eos_token_id)
        if o.suppress_tokens is not None:
            x = banned(x, o.suppress_tokens)
        if o.begin_suppress_tokens is not None and length == self.begin:
            x = banned(x, o.begin_suppress_tokens)
        if self.grammar is not None:
            x = self.grammar.mask(x)
        return self.chooser.warp(x)
