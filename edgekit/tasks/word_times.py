"""Whisper's word timestamps in numpy: the alignment heads' cross-attention -> token times -> words.

A port of transformers' `WhisperGenerationMixin._extract_token_timestamps` (the weights cropped to
the audio's encoder frames, the prompt's rows dropped, normalized over the tokens, median-filtered
along the frames, averaged over the heads, then `_dynamic_time_warping`) and of the tokenizer's
word grouping for `pipeline(..., return_timestamps="word")` (`_combine_tokens_into_words`:
split where the text is whole unicode, join pieces without a leading space, merge punctuation).
Token k's time is the encoder frame (20 ms) at which the DTW path reaches the row where token k was
fed; a text token spans from the previous token's time to its own, as the pipeline's `_decode_asr`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.results import Word

# transformers' _combine_tokens_into_words defaults (OpenAI's word-timing punctuation).
PREPEND = "\"'“¡¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# Languages written without spaces between words: their words are whole unicode pieces.
UNSPACED = {"zh", "ja", "th", "lo", "my", "yue"}


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median of `width` (odd) values along the last axis, edges reflected (transformers' `_median_filter`)."""
    if width <= 0 or width % 2 != 1:
        raise ValueError(f"the median filter's width must be odd and positive, found {width}")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.sort(windows, axis=-1)[..., pad]


def dynamic_time_warping(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `matrix` (tokens, frames): (token index, frame index) per step.

    transformers' `_dynamic_time_warping`, its cost in float32 and its tie-breaking (diagonal, then
    up, then left); a cell's cost needs only the two previous anti-diagonals, so each anti-diagonal
    is one vectorized step.
    """
    n, m = matrix.shape
    cost = np.full((n + 1, m + 1), np.inf, np.float32)
    trace = -np.ones((n + 1, m + 1), np.int8)
    cost[0, 0] = 0
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        diag = (c0 < c1) & (c0 < c2)
        up = ~diag & (c1 < c0) & (c1 < c2)
        step = np.where(diag, 0, np.where(up, 1, 2)).astype(np.int8)
        best = np.where(diag, c0, np.where(up, c1, c2))
        cost[i, j] = (matrix[i - 1, j - 1] + best.astype(np.float64)).astype(np.float32)
        trace[i, j] = step
    trace[0, :], trace[:, 0] = 2, 1
    i, j = n, m
    text, time = [], []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    return np.array(text[::-1]), np.array(time[::-1])


def token_times(weights: np.ndarray, prompt: int, generated: int, frames: int, width: int,
                precision: float) -> np.ndarray:
    """Seconds from the window's start at which each of `generated` tokens lies (the prompt's excluded).

    `weights` (heads, prompt + generated - 1, encoder frames): the alignment heads' cross-attention
    on every token fed (the last generated one never is); `frames`: encoder frames holding audio
    (the feature extractor's real mel frames // 2). The last token repeats the time before it.
    """
    w = weights[:, prompt:, :frames].astype(np.float32)
    if w.shape[1] == 0:
        return np.zeros(generated)
    with np.errstate(invalid="ignore", divide="ignore"):  # one row: std 0, as transformers (NaN)
        w = (w - w.mean(axis=-2, keepdims=True)) / w.std(axis=-2, keepdims=True)
    matrix = median_filter(w, width).mean(axis=0)
    text, time = dynamic_time_warping(-matrix.astype(np.float64))
    jumps = np.pad(np.diff(text), (1, 0), constant_values=1).astype(bool)
    jump_times = time[jumps] * precision
    return np.concatenate([jump_times, jump_times[-1:]])[:generated]


def _split_on_unicode(decode: Callable[[list[int]], str], tokens: Sequence[int]) -> list[tuple[str, list[int]]]:
    """(text, token indices) pieces, cut wherever the text so far is whole unicode characters."""
    full = decode(list(tokens))
    out: list[tuple[str, list[int]]] = []
    current: list[int] = []
    offset = 0
    for idx in range(len(tokens)):
        current.append(idx)
        text = decode([tokens[i] for i in current])
        bad = text.find("\ufffd")
        if bad < 0 or offset + bad >= len(full) or full[offset + bad] == "\ufffd":
            out.append((text, current))
            current = []
            offset += len(text)
    return out


def _split_on_spaces(decode: Callable[[list[int]], str], tokens: Sequence[int]) -> list[tuple[str, list[int]]]:
    words: list[tuple[str, list[int]]] = []
    for text, idx in _split_on_unicode(decode, tokens):
        if text.startswith(" ") or text.strip() in PUNCTUATION or not words:
            words.append((text, idx))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + idx)
    return words


def _merge_punctuation(words: list[tuple[str, list[int]]]) -> list[tuple[str, list[int]]]:
    """Opening punctuation joins the word after it, closing punctuation the word before it."""
    w = [list(x) for x in words]
    i, j = len(w) - 2, len(w) - 1
    while i >= 0:
        if w[i][0].startswith(" ") and w[i][0].strip() in PREPEND:
            w[j] = [w[i][0] + w[j][0], w[i][1] + w[j][1]]
            w[i] = ["", []]
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(w):
        if not w[i][0].endswith(" ") and w[j][0] in APPEND:
            w[i] = [w[i][0] + w[j][0], w[i][1] + w[j][1]]
            w[j] = ["", []]
        else:
            i = j
        j += 1
    return [(text, idx) for text, idx in w if text]


def group_words(decode: Callable[[list[int]], str], tokens: Sequence[int],
                language: str | None) -> list[tuple[str, list[int]]]:
    """Text tokens -> words (text as decoded, with its leading space) and the indices of their tokens."""
    split = _split_on_unicode if language in UNSPACED else _split_on_spaces
    return _merge_punctuation(split(decode, tokens))


@dataclass(frozen=True)
class TokenTiming:
    """One window's decoded `tokens` (prompt first, `begin` of them), the time of each generated
    token (`times`, seconds from the window's start) and its probability under the decoder's logits."""

    tokens: list[int]
    begin: int
    times: np.ndarray
    probs: np.ndarray
    decode: Callable[[list[int]], str]
    language: str | None

    def words(self, piece: list[int], offset: float) -> list[Word]:
        """The words of the text tokens at indices `piece` of `tokens` (one segment's), `offset`
        seconds added. A token spans from the previous token's time to its own, each rounded to
        10 ms (the pipeline's `round(..., 2)`); a word from its first token's start to its last's end."""
        return [w for w, _ in self.grouped(piece, offset)]

    def grouped(self, piece: list[int], offset: float) -> list[tuple[Word, list[int]]]:
        """`words`, each with the positions in `piece` of its tokens."""
        k = np.asarray(piece) - self.begin
        ends = np.round(self.times[k], 2)
        starts = np.where(k > 0, np.round(self.times[np.maximum(k - 1, 0)], 2), 0.0)
        out = []
        for text, idx in group_words(self.decode, [self.tokens[i] for i in piece], self.language):
            out.append((Word(offset + float(starts[idx[0]]), offset + float(ends[idx[-1]]), text,
                             float(self.probs[k[idx]].mean())), idx))
        return out
