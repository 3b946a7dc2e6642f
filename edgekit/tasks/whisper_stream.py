"""Streaming Whisper recognition with the LocalAgreement-2 policy (Macháček et al., 2023, "Turning
Whisper into Real-Time Transcription System"; ufal/whisper_streaming's OnlineASRProcessor).

Whisper reads 30 s windows, not a stream, so the stream keeps a buffer of audio and re-decodes it
every `step_s` of new audio. Tokens two successive hypotheses agree on (their longest common prefix
of text tokens, cut back to a whole word) are committed: they never change again. The committed
tokens still inside the buffer are forced as the decoder's prefix, so every hypothesis starts with
them and only the rest is searched. Once the buffer is longer than `trim_s`, it is cut at the end of
the last segment (a closing timestamp token) inside the committed tokens; a buffer that would not
fit Whisper's window otherwise is cut where the last hypothesis closes a segment, its text committed
unconfirmed (logged). At the stream's end the last hypothesis is committed whole.

Decode steps fall every `step_s` of audio received, whatever size the chunks have, so the same audio
gives the same text however it is cut into chunks.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.contract.recognize import WhisperSection
from edgekit.errors import ConfigError, InputError
from edgekit.preprocess import audio
from edgekit.results import Segment, StreamUpdate
from edgekit.tasks.streaming import _Reader, _updates

if TYPE_CHECKING:
    from edgekit.tasks.whisper import WhisperRecognizer

log = logging.getLogger("edgekit")

# New tokens a decode step may make per second of buffer, by default. Fast English speech is about 3
# words/s (180 words a minute) and GPT-2's BPE, Whisper's, about 1.3 tokens a word: 4 tokens/s and a
# timestamp pair per segment. 10/s leaves room for both, and a decode caught in a repetition loop
# (one "a-a-a-..." step of Whisper base ran to 435 tokens, 7x a normal step's time) stops there.
_TOKENS_PER_S = 10


def local_agreement(previous: list[int], current: list[int], text_end: int, ts_begin: int,
                    starts_word: Callable[[int], bool]) -> int:
    """How many tokens of `current` to commit: through the last text token of the longest common
    prefix of both hypotheses' text tokens (ids below `text_end`), cut back to the end of a word in
    `current` (its next token is a timestamp, id >= `ts_begin`, or a text token that `starts_word`).

    >>> local_agreement([5, 6, 7], [5, 6, 8], 100, 200, lambda t: True)  # 5 and 6 agree, 6 ends a word
    2
    >>> local_agreement([5, 6, 7], [5, 6, 8], 100, 200, lambda t: t != 8)  # 8 continues 6's word
    1
    """
    mine = [i for i, t in enumerate(current) if t < text_end]
    theirs = [t for t in previous if t < text_end]
    k = 0
    while k < min(len(mine), len(theirs)) and current[mine[k]] == theirs[k]:
        k += 1
    while k > 0:
        after = mine[k - 1] + 1
        if after < len(current) and (current[after] >= ts_begin or (current[after] < text_end and
                                                                    starts_word(current[after]))):
            return after
        k -= 1
    return 0


@dataclass
class WhisperStream:
    """The state of one stream: the audio buffer, the committed tokens in it, the last hypothesis.

    Token lists hold what the decoder produced after the prompt: text, timestamps (times from the
    buffer's start) and the odd special token; `forced + tail` is the last hypothesis."""

    model: WhisperRecognizer
    task: str | None
    language: str | None
    step: int  # samples of new audio between decodes
    trim: int  # buffer samples past which it is cut at a committed segment end
    max_new_tokens: int | None
    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    origin: int = 0  # stream sample index of buf[0]
    decoded: int = 0  # stream sample index up to which the last hypothesis heard
    prompt: list[int] | None = None  # fixed at the first decode (a detected language stays)
    forced: list[int] = field(default_factory=list)  # committed tokens in the buffer: the decoder's prefix
    tail: list[int] = field(default_factory=list)  # the rest of the last hypothesis (eos dropped)
    said: list[int] = field(default_factory=list)  # every committed token, the whole stream
    unconfirmed_cuts: int = 0  # buffers cut before their text was agreed (each one logged)
    starts: dict[int, bool] = field(default_factory=dict)  # token -> its text starts with a space

    @property
    def c(self) -> WhisperSection:
        return self.model.contract

    @property
    def ts_begin(self) -> int:
        return self.c.no_timestamps_token_id + 1

    @property
    def unit(self) -> int:
        """Samples per timestamp step (0.02 s at 16 kHz: 320)."""
        return int(round(self.c.time_precision * self.model.sample_rate))

    @property
    def received(self) -> int:
        return self.origin + len(self.buf)

    def push(self, wave: np.ndarray, end: bool = False) -> StreamUpdate:
        self.buf = np.concatenate([self.buf, wave]) if len(wave) else self.buf
        words: list[Segment] = []
        while self.received - self.decoded >= self.step:
            words += self._decode_step(self.decoded + self.step, end=False)
        if end and self.received > self.decoded:
            words += self._decode_step(self.received, end=True)
        elif end:
            words += self._commit(len(self.tail))
        return StreamUpdate(self.model.decode_text(self.said), self.model.decode_text(self.tail), tuple(words),
                            self.received / self.model.sample_rate, end)

    def _decode_step(self, upto: int, end: bool) -> list[Segment]:
        """Decode the buffer up to stream sample `upto`; commit what the last two hypotheses agree
        on (all of it at the stream's end); cut a long buffer at a committed segment end."""
        words = self._make_room(upto)
        new = self._continuation(self.buf[:upto - self.origin])
        self.decoded = upto
        agreed = len(new) if end else local_agreement(self.tail, new, self.c.eos_token_id, self.ts_begin,
                                                     self._starts_word)
        if agreed and self.model.decode_text(self.said + new[:agreed]).endswith("\ufffd"):
            agreed = 0  # a character's bytes split across tokens: wait for the rest, so final text never changes
        self.tail = new
        words += self._commit(agreed)
        if len(self.buf) > self.trim:
            closing = [i for i in self._closings() if i <= len(self.forced)]
            if closing:
                self._cut_at(closing[-1])
        return words

    def _continuation(self, wave: np.ndarray) -> list[int]:
        """Greedy search with timestamps on `wave`, the committed tokens forced: the tokens after them."""
        m, c = self.model, self.c
        if audio.is_silence(wave):  # as offline recognize: no decode, so no text, from silence
            return []
        cross = m.encode(m.features(wave)[None].astype(np.float32))
        if self.prompt is None:
            self.prompt = m.prompt(self.language, self.task, True, cross)
        ids = self.prompt + self.forced
        new = self.max_new_tokens or min(c.max_length, _TOKENS_PER_S * max(1, len(wave) // m.sample_rate))
        limit = min(len(ids) + new, c.max_target_positions)
        if limit <= len(ids):  # the forced tokens fill the decoder's positions: _make_room cuts next step
            return []
        out = m._greedy_rows(cross, [ids], limit, True, begin=len(self.prompt))[0][len(ids):]
        return out[:-1] if out and out[-1] == c.eos_token_id else out

    def _commit(self, n: int) -> list[Segment]:
        """Move the first `n` tokens of the tail to the committed ones; their text as segments."""
        hyp, first = self.forced + self.tail, len(self.forced)
        self.forced, self.tail = self.forced + self.tail[:n], self.tail[n:]
        self.said += hyp[first:first + n]
        return self._segments(hyp, first, first + n)

    def _segments(self, hyp: list[int], lo: int, hi: int) -> list[Segment]:
        """The text of hyp[lo:hi] split at its timestamps; each piece from the timestamp before it to
        the one after it (the audio heard so far where there is none), in the stream's time."""
        rate = self.model.sample_rate
        start_s, heard_s = self.origin / rate, self.decoded / rate
        stamps = {k: start_s + (t - self.ts_begin) * self.unit / rate for k, t in enumerate(hyp) if t >= self.ts_begin}
        out, i = [], lo
        while i < hi:
            if i in stamps:
                i += 1
                continue
            j = next((k for k in range(i, hi) if k in stamps), hi)
            text = self.model.decode_text(hyp[i:j])
            if text:
                end = min(heard_s, next((stamps[k] for k in range(j, len(hyp)) if k in stamps), heard_s))
                begin = next((stamps[k] for k in range(i - 1, -1, -1) if k in stamps), start_s)
                out.append(Segment(text, min(begin, end), end))
            i = j
        return out

    def _closings(self) -> list[int]:
        """Indices in forced + tail of timestamps that close a segment (text before them)."""
        hyp = self.forced + self.tail
        return [i for i in range(1, len(hyp)) if hyp[i] >= self.ts_begin and hyp[i - 1] < self.ts_begin]

    def _cut_at(self, i: int) -> None:
        """Drop the buffer's audio before closing timestamp forced+tail[i] and the tokens through it;
        the timestamps after it now count from the new buffer start."""
        hyp = self.forced + self.tail
        heard = (self.decoded - self.origin) // self.unit
        steps = min(hyp[i] - self.ts_begin, heard)  # a random model may stamp past the audio heard
        rest = [t - steps if t >= self.ts_begin else t for t in hyp[i + 1:]]
        keep = max(0, len(self.forced) - (i + 1))
        self.forced, self.tail = rest[:keep], rest[keep:]
        self.buf, self.origin = self.buf[steps * self.unit:], self.origin + steps * self.unit
        log.debug("whisper stream: buffer cut at %.2f s of the stream", self.origin / self.model.sample_rate)

    def _make_room(self, upto: int) -> list[Segment]:
        """Before decoding a buffer longer than Whisper's window: commit the last hypothesis through
        the last segment end that leaves room, unconfirmed, and cut there (everything heard if none)."""
        if upto - self.origin <= self.c.n_samples:
            return []
        hyp = self.forced + self.tail
        fits = [i for i in self._closings()
                if upto - self.origin - min(hyp[i] - self.ts_begin, (self.decoded - self.origin) // self.unit)
                * self.unit <= self.c.n_samples]
        n = max(0, fits[-1] - len(self.forced)) if fits else len(self.tail)
        if any(t < self.c.eos_token_id for t in self.tail[:n]):
            self.unconfirmed_cuts += 1
            log.warning("whisper stream: no committed segment end to cut the %.1f s buffer at; committing %d "
                        "tokens of the last hypothesis unconfirmed (cut %d of this stream)",
                        (upto - self.origin) / self.model.sample_rate, n, self.unconfirmed_cuts)
        words = self._commit(n)
        if fits:
            self._cut_at(fits[-1])
        else:
            self.forced, self.tail = [], []
            self.buf, self.origin = self.buf[self.decoded - self.origin:], self.decoded
        return words

    def _starts_word(self, token: int) -> bool:
        if token not in self.starts:
            self.starts[token] = self.model._decode_piece([token]).startswith(" ")
        return self.starts[token]


def stream_whisper(model: WhisperRecognizer, chunks: Iterable[Any], sample_rate: int | None, language: str | None,
                   task: str | None, step_s: float, trim_s: float, max_new_tokens: int | None) -> Iterator[StreamUpdate]:
    """`WhisperRecognizer.recognize_stream`: the options are checked now, the chunks read as they are iterated."""
    rate, window_s = model.sample_rate, model.contract.n_samples / model.sample_rate
    reader = _Reader(audio._check_rate(sample_rate, rate), rate)
    # The buffer holds up to trim_s of audio, then a step's more before it is decoded: both in the window.
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (step_s, trim_s))
    if not (numbers and 0 < step_s and 0 < trim_s and trim_s + step_s <= window_s):
        raise ConfigError("step_s and trim_s must be > 0 with trim_s + step_s inside Whisper's window",
                          found=f"step_s={step_s!r}, trim_s={trim_s!r}, window {window_s:g} s",
                          fix="e.g. step_s=1.0, trim_s=20.0")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):
        raise ConfigError("max_new_tokens must be a positive integer", found=repr(max_new_tokens))
    _check_prompt(model, language, task)
    state = WhisperStream(model, task, language, int(step_s * rate), int(trim_s * rate), max_new_tokens)
    return _updates(state, reader, chunks)


def _check_prompt(model: WhisperRecognizer, language: str | None, task: str | None) -> None:
    """Refuse an unknown language or task by name at the call, before any audio is read."""
    if language is not None:
        model._language_id(language, {})  # a given language needs no audio
    if task is not None and task not in model.contract.task_to_id:
        raise InputError(f"unknown Whisper task '{task}'", found=f"tasks {sorted(model.contract.task_to_id)}")
