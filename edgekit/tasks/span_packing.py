"""VAD spans packed into shared 30 s encoder windows, and a packed window's segments mapped back per span.

faster-whisper's BatchedInferencePipeline does the same: `merge_segments` joins consecutive VAD chunks
while they fit in `chunk_length`, `collect_chunks` concatenates their audio (the silence between them
dropped) and `SpeechTimestampsMap` maps the window's times back to the recording's. It bounds a merge
by the recording time from the first chunk's start to the last one's end; here the bound is the
window's own audio (the spans' samples added up), since that is what the encoder reads.

A Whisper segment (text between two timestamp tokens) normally ends in the pause between two spans
(each span carries the VAD's pad, 400 ms with `vad=True`, so spans meet with twice that of near
silence). One that reaches over a span boundary is cut there: each word goes to the span holding the
middle of its DTW time, so no text is attributed to another span's audio. Without word times (a
Whisper without alignment heads) the whole segment goes to the span it overlaps most.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.preprocess.vad import Span
from edgekit.results import Word


@dataclass(frozen=True)
class Window:
    """Spans `members` (indices into the span list, in order) laid end to end: member k's audio starts
    at sample `offsets[k]` of the window and is `lengths[k]` samples long."""

    members: tuple[int, ...]
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def samples(self) -> int:
        return self.offsets[-1] + self.lengths[-1]

    def audio(self, wave: np.ndarray, spans: Sequence[Span]) -> np.ndarray:
        return np.concatenate([wave[spans[i].start:spans[i].end] for i in self.members])


def pack(spans: Sequence[Span], indices: Sequence[int], limit: int, share: bool = True) -> list[Window]:
    """The spans `indices` (each at most `limit` samples), in order, into windows of at most `limit`
    samples; a span joins the window before it while the sum fits. `share=False`: one span a window."""
    out: list[Window] = []
    members: list[int] = []
    lengths: list[int] = []
    for i in indices:
        n = spans[i].end - spans[i].start
        if members and (not share or sum(lengths) + n > limit):
            out.append(_window(members, lengths))
            members, lengths = [], []
        members.append(i)
        lengths.append(n)
    if members:
        out.append(_window(members, lengths))
    return out


def _window(members: list[int], lengths: list[int]) -> Window:
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return Window(tuple(members), tuple(int(o) for o in offsets), tuple(lengths))


@dataclass(frozen=True)
class Piece:
    """A Whisper segment of a window: the indices of its text tokens in the window's token list and
    its timestamps (seconds from the window's start)."""

    tokens: list[int]
    start: float
    end: float


def pieces(tokens: Sequence[int], ts_begin: int, eos: int, precision: float, end: float) -> list[Piece]:
    """The segments between timestamp token pairs, as `WhisperRecognizer._segments` reads them (a
    repeat of the opening timestamp keeps it open); a last segment left open (the token limit reached)
    ends at `end`, the window's audio, so its text is kept."""
    out: list[Piece] = []
    open_at: float | None = None
    piece: list[int] = []
    for i, t in enumerate(tokens):
        if t >= ts_begin:
            at = (t - ts_begin) * precision
            if open_at is None:
                open_at, piece = at, []
            elif at != open_at:
                out.append(Piece(piece, open_at, at))
                open_at = None
        elif open_at is not None and t < eos:
            piece.append(i)
    if open_at is not None and piece:
        out.append(Piece(piece, open_at, max(open_at, end)))
    return out


@dataclass(frozen=True)
class Part:
    """What of a window's segment belongs to one member span: its token indices, its start and end
    and its words (seconds from the span's start, inside the span)."""

    member: int
    tokens: list[int]
    start: float
    end: float
    words: list[Word] | None


def split(piece: Piece, window: Window, rate: int, words: list[tuple[Word, list[int]]] | None) -> list[Part]:
    """`piece` cut at the window's span boundaries. `words`: its words in window time, each with the
    positions (in `piece.tokens`) of its tokens; None when there are no word times."""
    bounds = [(o / rate, (o + n) / rate) for o, n in zip(window.offsets, window.lengths)]
    overlap = [min(piece.end, b) - max(piece.start, a) for a, b in bounds]
    touched = [k for k, (a, b) in enumerate(bounds) if piece.start < b and piece.end > a]
    if len(touched) <= 1 or words is None:
        k = int(np.argmax(overlap))
        owners = [k] * len(words or [])
        return [_part(piece, window, rate, k, list(range(len(piece.tokens))), words, owners)]
    owners = [_holder(bounds, (w.start + w.end) / 2) for w, _ in words]
    parts = []
    for k in sorted(set(owners)):
        positions = [p for (_, idx), o in zip(words, owners) if o == k for p in idx]
        parts.append(_part(piece, window, rate, k, positions, words, owners))
    return parts


def _holder(bounds: list[tuple[float, float]], at: float) -> int:
    """The span holding time `at`, else the nearest one."""
    return int(np.argmin([0.0 if a <= at < b else min(abs(at - a), abs(at - b)) for a, b in bounds]))


def _part(piece: Piece, window: Window, rate: int, k: int, positions: list[int],
          words: list[tuple[Word, list[int]]] | None, owners: list[int]) -> Part:
    lo, n = window.offsets[k] / rate, window.lengths[k] / rate

    def inside(t: float) -> float:
        return min(n, max(0.0, t - lo))

    start = inside(piece.start)
    kept = None if words is None else [Word(inside(w.start), inside(w.end), w.word, w.probability)
                                       for (w, _), o in zip(words, owners) if o == k]
    return Part(window.members[k], [piece.tokens[p] for p in positions], start, max(start, inside(piece.end)), kept)
