"""Streaming CTC recognition: waveform pieces in (a microphone's), settled and tentative text out.

Each step runs the model on a window: `left_context_s` of audio already settled, the audio not
yet settled, and everything received after it. A frame is settled (final) once `lookahead_s` of
audio after it has been heard; the frames after it are decoded as a tentative tail. Settled frame
ids are decoded by the same greedy CTC as offline `recognize` (tasks/ctc.py `ctc_words`), and a
word is settled only when a word delimiter has been settled after it, so it is never changed.

Windows start on a multiple of the model's frame stride (measured on the artifact's graph), so a
window's frame i is frame `start / stride + i` of the whole stream, as offline. For a model whose
receptive field fits in the left context and the lookahead (a convolutional front end), settled
frames equal offline's exactly; a model with attention over its whole input (wav2vec2) sees less
context than an offline chunk, and `lookahead_s` trades latency against agreement. Unlike offline
`recognize`, which returns "" for a clip that is silent throughout, a stream runs every window.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.contract.recognize import CtcSection
from edgekit.errors import ConfigError, InputError, UnsupportedError
from edgekit.preprocess import audio
from edgekit.results import Segment, StreamUpdate
from edgekit.tasks.ctc import ctc_inputs, ctc_words

if TYPE_CHECKING:
    from edgekit.tasks.ctc import CtcRecognizer

# The shortest window a CTC graph is called with (contract/recognize.py CtcSection.call_shapes).
_MIN_WINDOW = 1600


def logits_of(model: CtcRecognizer, wave: np.ndarray) -> np.ndarray:
    """(frames, vocabulary) logits of one window (its features, and the frame mask where the front end has one)."""
    c = model.contract
    return model.runners["model"].run(ctc_inputs(wave, c), outputs=[c.output])[c.output][0]


def frame_stride(model: CtcRecognizer) -> int:
    """Samples per output frame, measured on the graph: frames added by up to four more seconds of audio.

    A convolutional front end emits floor((n - field) / stride) + 1 frames for n samples, so the
    difference between n and n + k * rate samples is k * rate / stride frames whatever the field.
    Four seconds, not one: 80 ms frames (Parakeet's 8x subsampled 10 ms hop, 12.5 per second) are a
    whole number of samples apart but not a whole number per second. The longer call stays inside
    the longest the graph was built for (chunk_length_s).
    """
    rate, first = model.sample_rate, model.sample_rate
    span = min(4 * rate, model.chunking.window - first)
    counts = [logits_of(model, np.zeros(n, np.float32)).shape[0] for n in (first, first + span)]
    added = counts[1] - counts[0]
    if added <= 0 or span % added:
        raise UnsupportedError("this CTC model's frames are not a whole number of samples apart",
                               found=f"{added} frames in {span / rate:g} s of {rate} Hz audio",
                               fix="use recognize() on the whole audio instead of recognize_stream()")
    return span // added


class _Reader:
    """Chunks of any length, dtype and rate -> float32 mono at the model's rate (soxr's streaming resampler)."""

    def __init__(self, rate: int, target: int) -> None:
        import soxr

        self.resampler = None if rate == target else soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")

    def read(self, chunk: Any) -> np.ndarray:
        if not isinstance(chunk, np.ndarray):
            raise InputError(f"recognize_stream takes numpy arrays as chunks, found a {type(chunk).__name__}",
                             fix="yield float32 samples in [-1, 1] or int16 PCM arrays, one per piece of audio")
        wave = np.zeros(0, np.float32) if chunk.size == 0 else audio.to_mono_float(chunk)
        return wave if self.resampler is None else self.resampler.resample_chunk(wave)

    def flush(self) -> np.ndarray:
        return np.zeros(0, np.float32) if self.resampler is None else self.resampler.resample_chunk(
            np.zeros(0, np.float32), last=True)


@dataclass
class CtcStream:
    """The state of one stream: audio kept for context, settled frames, words not yet settled."""

    model: CtcRecognizer
    stride: int  # samples per frame
    left: int  # left context, samples
    lookahead: int  # samples heard after a frame before it is settled
    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    origin: int = 0  # stream sample index of buf[0]
    done: int = 0  # frames settled
    pending: list[int] = field(default_factory=list)  # settled ids after the last settled word
    pending_at: int = 0  # frame index of pending[0]
    text: str = ""
    tail: list[int] = field(default_factory=list)  # tentative ids after the settled frames

    @property
    def c(self) -> CtcSection:
        return self.model.contract

    @property
    def received(self) -> int:
        return self.origin + len(self.buf)

    def push(self, wave: np.ndarray, end: bool = False) -> StreamUpdate:
        self.buf = np.concatenate([self.buf, wave]) if len(wave) else self.buf
        self._advance(end)
        words = self._settle_words(end)
        self.text = " ".join(x for x in [self.text, *(w.text for w in words)] if x)
        partial = ctc_words(np.array(self.pending + self.tail, np.int64), self.c.vocabulary, self.c.blank_id,
                            self.c.word_delimiter, self.c.skip)
        return StreamUpdate(self.text, " ".join(w for w, _, _ in partial), tuple(words),
                            self.received / self.model.sample_rate, end)

    def _advance(self, end: bool) -> None:
        """Run windows until nothing more can be settled (all of it at the stream's end)."""
        while True:
            start = self._aligned(self.done * self.stride - self.left)
            stop = min(self.received, start + self.model.chunking.window)
            whole = end and stop == self.received
            if whole and stop - start < _MIN_WINDOW:  # the stream's last sliver: widen to the left
                start = self._aligned(stop - _MIN_WINDOW)
            if stop <= start or (stop - start < _MIN_WINDOW and not whole):
                return
            logits = logits_of(self.model, self.buf[start - self.origin:stop - self.origin])
            first, before = start // self.stride, self.done
            last = first + len(logits) if whole else min(first + len(logits), (stop - self.lookahead) // self.stride)
            ids = logits.argmax(-1)
            if last > self.done:
                self.pending += ids[self.done - first:last - first].tolist()
                self.done = last
            self.tail = ids[max(0, last - first):].tolist() if stop == self.received else []
            # Drop audio no window will read again (a last sliver may reach _MIN_WINDOW back).
            keep = self._aligned(min(self.done * self.stride - self.left, self.received - _MIN_WINDOW))
            self.buf, self.origin = self.buf[keep - self.origin:], keep
            if stop == self.received or self.done == before:
                return

    def _aligned(self, sample: int) -> int:
        """The frame boundary at or before `sample` (not before the stream's start)."""
        return max(0, sample) // self.stride * self.stride

    def _settle_words(self, end: bool) -> list[Segment]:
        """Words of the settled ids followed by a settled delimiter (all of them at the end)."""
        c = self.c
        words = ctc_words(np.array(self.pending, np.int64), c.vocabulary, c.blank_id, c.word_delimiter, c.skip)
        if words and not end:
            delims = {i for i, t in enumerate(c.vocabulary) if t in (c.word_delimiter, " ")}
            if not any(i in delims for i in self.pending[words[-1][2]:]):
                words = words[:-1]  # the last word may still grow
        if not words:
            return []
        cut = len(self.pending) if end else words[-1][2]  # ids from here hold no settled character
        to_s = self.stride / self.model.sample_rate
        out = [Segment(w, (self.pending_at + s) * to_s, (self.pending_at + e) * to_s) for w, s, e in words]
        self.pending, self.pending_at = self.pending[cut:], self.pending_at + cut
        return out


def stream_ctc(model: CtcRecognizer, chunks: Iterable[Any], sample_rate: int | None,
               lookahead_s: float, left_context_s: float | None) -> Iterator[StreamUpdate]:
    """`CtcRecognizer.recognize_stream`: the options are checked now, the chunks read as they are iterated."""
    rate = model.sample_rate
    left_s = model.chunking.stride_length_s if left_context_s is None else left_context_s
    reader = _Reader(audio._check_rate(sample_rate, rate), rate)
    stride = frame_stride(model)
    left, lookahead = int(left_s * rate), int(lookahead_s * rate)
    # A window (at most chunk_length_s, the longest call the graph was built for) holds the left
    # context, the lookahead and new frames: at least two strides, as its start is rounded down to one.
    if min(left, lookahead) < 0 or left + lookahead + 2 * stride > model.chunking.window:
        raise ConfigError("lookahead_s and left_context_s must be >= 0 and leave room for new audio in the "
                          "model's window", found=f"lookahead_s={lookahead_s}, left_context_s={left_s}, window "
                          f"{model.chunking.chunk_length_s} s, frames {stride / rate} s apart",
                          fix=f"e.g. lookahead_s=0.5, left_context_s={model.chunking.stride_length_s}")
    state = CtcStream(model, stride, left, lookahead)
    return _updates(state, reader, chunks)


class _Stream(Protocol):
    def push(self, wave: np.ndarray, end: bool = False) -> StreamUpdate: ...


def _updates(state: _Stream, reader: _Reader, chunks: Iterable[Any]) -> Iterator[StreamUpdate]:
    """One update per chunk, then the last one (`is_final`) when the chunks end."""
    for chunk in chunks:
        yield state.push(reader.read(chunk))
    yield state.push(reader.flush(), end=True)
