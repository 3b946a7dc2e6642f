"""Voice activity detection: where in a waveform someone speaks, with Silero VAD on onnxruntime.

The model is `silero_vad.onnx` from the `silero-vad` wheel (MIT; pinned by scripts/setup.sh, installed
without its dependencies): the file is found with `importlib.util.find_spec`, which locates the package
without running its `__init__` (that imports torch). This is a numpy port of the package's
`OnnxWrapper.__call__` and `get_speech_timestamps` (silero_vad/utils_vad.py, 6.2.3) at 16 kHz:
512-sample windows, each fed with the previous window's last 64 samples as context and the LSTM state
(2, 1, 128) carried over; the window probabilities then go through the same hysteresis state machine
(`speech_spans`), so the sample boundaries equal the package's (tests/test_vad.py).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendUnavailableError, ConfigError
from edgekit.preprocess.audio import resample

RATE = 16_000  # the rate the VAD runs at (the model also takes 8 kHz; 16 kHz is what the recognizers use)
WINDOW = 512  # samples per probability at 16 kHz
CONTEXT = 64  # samples of the previous window prepended to each window


@dataclass(frozen=True)
class VadOptions:
    """Silero VAD's `get_speech_timestamps` parameters, with its defaults (`FOR_RECOGNITION`: those
    `recognize(vad=True)` uses).

    `max_speech_duration_s` None: no limit for `speech_spans`; `recognize(vad=...)` then caps a
    span at the model's chunk length (30 s for Whisper), so each span is one encoder window.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: max(threshold - 0.15, 0.01), as the package
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_duration_s: float | None = None
    min_silence_at_max_speech_ms: int = 98
    use_max_poss_sil_at_max_speech: bool = True
    # Not Silero's: whether Whisper lays short spans end to end in shared 30 s encoder windows
    # (tasks/span_packing.py) instead of giving each span a window of its own. None: packed unless
    # word timestamps are asked (a packed window's DTW moves word times by up to 0.41 s from those of
    # the span alone, which transformers gives: benchmarks/bench_vad_words.py).
    pack: bool | None = None

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError("VadOptions.threshold must be in (0, 1)", found=repr(self.threshold), fix="e.g. 0.5")
        if self.neg_threshold is not None and not 0 < self.neg_threshold <= self.threshold:
            raise ConfigError("VadOptions.neg_threshold must be in (0, threshold]",
                              found=f"neg_threshold={self.neg_threshold!r}, threshold={self.threshold!r}",
                              fix="leave it None (threshold - 0.15)")
        durations = ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms",
                     "min_silence_at_max_speech_ms")
        bad = [f"{k}={getattr(self, k)!r}" for k in durations if not isinstance(getattr(self, k), int)
               or isinstance(getattr(self, k), bool) or getattr(self, k) < 0]
        if bad:
            raise ConfigError("VadOptions durations must be integers >= 0 (milliseconds)", found=", ".join(bad))
        if self.pack is not None and not isinstance(self.pack, bool):
            raise ConfigError("VadOptions.pack takes True, False or None", found=repr(self.pack),
                              fix="None (the default): packed unless word_timestamps=True")
        if self.max_speech_duration_s is not None and self.max_speech_duration_s * RATE <= self.overhead:
            raise ConfigError("VadOptions.max_speech_duration_s is shorter than one window plus both pads",
                              found=f"{self.max_speech_duration_s!r} s",
                              fix=f"give more than {self.overhead / RATE:.3f} s, or None for no limit")

    @property
    def overhead(self) -> float:
        """Samples a span may exceed its speech by: the last window and a pad on each side."""
        return WINDOW + 2 * RATE * self.speech_pad_ms / 1000

    def capped(self, seconds: float) -> VadOptions:
        """These options with `max_speech_duration_s` set to `seconds` when it was None."""
        if self.max_speech_duration_s is not None:
            return self
        return replace(self, max_speech_duration_s=seconds)


# What `recognize(vad=True)` uses: faster-whisper's transcription settings (its VadOptions): 2 s of silence
# before a span ends, so a sentence's pauses stay inside one span and the recognizer hears it whole, and
# 400 ms of padding, so soft onsets under the threshold ("we" before a stressed word) are not cut off.
FOR_RECOGNITION = VadOptions(min_silence_duration_ms=2000, speech_pad_ms=400)


@dataclass(frozen=True)
class Span:
    """Speech from sample `start` to `end` (exclusive) of the waveform given."""

    start: int
    end: int


def model_path() -> Path:
    """silero_vad.onnx inside the installed `silero-vad` package (not imported: its __init__ imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise BackendUnavailableError(
        "voice activity detection (vad=...) needs Silero VAD's ONNX model",
        found="no silero_vad/data/silero_vad.onnx in this environment" if not folders
        else f"a silero_vad package at {folders[0]} without data/silero_vad.onnx",
        fix="pip install --no-deps silero-vad==6.2.3 (only its ONNX file is read; --no-deps keeps torch out)")


@lru_cache(maxsize=1)
def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread each, as the package's OnnxWrapper: a 512-sample window is too small to share out.
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def speech_probs(wave: np.ndarray) -> np.ndarray:
    """Speech probability of every 512-sample window of a 16 kHz waveform (the last one zero-padded)."""
    session = _session(model_path())
    count = math.ceil(len(wave) / WINDOW)
    padded = np.zeros(count * WINDOW, np.float32)
    padded[:len(wave)] = wave
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    rate = np.array(RATE, np.int64)
    probs = np.empty(count, np.float32)
    for i in range(count):
        x = np.concatenate([context, padded[None, i * WINDOW:(i + 1) * WINDOW]], axis=1)
        out, state = session.run(None, {"input": x, "state": state, "sr": rate})
        context = x[:, -CONTEXT:]
        probs[i] = out[0, 0]
    return probs


def detect(wave: np.ndarray, rate: int, opts: VadOptions) -> list[Span]:
    """Speech spans of a float32 mono waveform at `rate` Hz, in samples of that rate."""
    at16k = resample(wave, rate, RATE)
    spans = speech_spans(speech_probs(at16k), len(at16k), opts)
    if rate == RATE:
        return spans
    scale = rate / RATE
    return [Span(min(len(wave), round(s.start * scale)), min(len(wave), round(s.end * scale))) for s in spans]


def speech_spans(probs: np.ndarray, length: int, opts: VadOptions) -> list[Span]:
    """Window probabilities of a `length`-sample 16 kHz waveform -> padded speech spans.

    `get_speech_timestamps_from_probs` (silero_vad/utils_vad.py) step for step: speech starts at a
    window >= threshold, ends after `min_silence_duration_ms` below neg_threshold, is dropped when not
    longer than `min_speech_duration_ms`, is cut at its longest inner silence (or at the limit) past
    `max_speech_duration_s`; then each span is padded by `speech_pad_ms`, or by half the gap between
    neighbours closer than two pads.
    """
    machine = _Machine(opts)
    for i, p in enumerate(probs.tolist()):
        machine.feed(WINDOW * i, p)
    return _pad(machine.finish(length), length, RATE * opts.speech_pad_ms / 1000)


class _Machine:
    """The hysteresis state machine of `get_speech_timestamps_from_probs`, over raw (start, end) samples."""

    def __init__(self, o: VadOptions) -> None:
        self.o = o
        self.neg = o.neg_threshold if o.neg_threshold is not None else max(o.threshold - 0.15, 0.01)
        self.min_speech = RATE * o.min_speech_duration_ms / 1000
        limit = math.inf if o.max_speech_duration_s is None else o.max_speech_duration_s
        self.max_speech = RATE * limit - WINDOW - 2 * RATE * o.speech_pad_ms / 1000
        self.min_silence = RATE * o.min_silence_duration_ms / 1000
        self.min_silence_at_max = RATE * o.min_silence_at_max_speech_ms / 1000
        self.spans: list[list[int]] = []
        self.start: int | None = None  # the open span's start (the package's current_speech['start'])
        self.triggered = False
        self.temp_end = self.prev_end = self.next_start = 0
        self.possible_ends: list[tuple[int, int]] = []

    def _close(self, end: int) -> None:
        assert self.start is not None
        self.spans.append([self.start, end])
        self.start = None

    def feed(self, at: int, p: float) -> None:
        if p >= self.o.threshold and self.temp_end:
            silence = at - self.temp_end
            if silence > self.min_silence_at_max:
                self.possible_ends.append((self.temp_end, silence))
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if p >= self.o.threshold and not self.triggered:
            self.triggered, self.start = True, at
            return
        if self.triggered and self.start is not None and at - self.start > self.max_speech:
            if self._cut_at_limit(at):
                return
        if p < self.neg and self.triggered:
            self._silence(at)

    def _cut_at_limit(self, at: int) -> bool:
        """A span past max_speech: cut it; True when the package `continue`s past the silence check."""
        if self.o.use_max_poss_sil_at_max_speech and self.possible_ends:
            self.prev_end, silence = max(self.possible_ends, key=lambda x: x[1])  # the longest inner silence
            self._close(self.prev_end)
            self.next_start = self.prev_end + silence
            if self.next_start < self.prev_end + at:  # as the package compares (always true past sample 0)
                self.start = self.next_start
            else:
                self.triggered = False
        elif self.prev_end:
            self._close(self.prev_end)
            if self.next_start < self.prev_end:
                self.triggered = False
            else:
                self.start = self.next_start
        else:
            self._close(at)
            self.triggered = False
            self.prev_end = self.next_start = self.temp_end = 0
            self.possible_ends = []
            return True
        self.prev_end = self.next_start = self.temp_end = 0
        self.possible_ends = []
        return False

    def _silence(self, at: int) -> None:
        if not self.temp_end:
            self.temp_end = at
        silence = at - self.temp_end
        if not self.o.use_max_poss_sil_at_max_speech and silence > self.min_silence_at_max:
            self.prev_end = self.temp_end
        if silence < self.min_silence:
            return
        assert self.start is not None
        if self.temp_end - self.start > self.min_speech:
            self._close(self.temp_end)
        self.start = None
        self.prev_end = self.next_start = self.temp_end = 0
        self.triggered = False
        self.possible_ends = []

    def finish(self, length: int) -> list[list[int]]:
        if self.start is not None and length - self.start > self.min_speech:
            self._close(length)
        return self.spans


def _pad(spans: list[list[int]], length: int, pad: float) -> list[Span]:
    """The package's padding: `pad` samples each side, or half the gap to a neighbour closer than 2 pads."""
    for i, s in enumerate(spans):
        if i == 0:
            s[0] = int(max(0, s[0] - pad))
        if i != len(spans) - 1:
            gap = spans[i + 1][0] - s[1]
            if gap < 2 * pad:
                s[1] += int(gap // 2)
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - gap // 2))
            else:
                s[1] = int(min(length, s[1] + pad))
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - pad))
        else:
            s[1] = int(min(length, s[1] + pad))
    return [Span(a, b) for a, b in spans]
