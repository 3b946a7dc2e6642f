"""CTC speech recognition: numpy front end, one graph, greedy CTC decoding with word timings."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.recognize import CtcSection
from edgekit.errors import UnsupportedError
from edgekit.preprocess import audio, filterbank
from edgekit.results import Segment, StreamUpdate, Transcript, Word
from edgekit.tasks.recognizer import Options, Recognizer


Features = tuple[np.ndarray, int]  # one chunk's graph input without the batch axis, and its real frames


def _waveform(wave: np.ndarray, c: CtcSection) -> Features:
    return (audio.normalize_wave(wave) if c.normalize else wave.astype(np.float32)), len(wave)


def _log_mel(wave: np.ndarray, c: CtcSection) -> Features:
    feats = audio.log_mel(wave, c.audio.sample_rate, c.n_fft, c.hop_length, c.n_mels).astype(np.float32)
    return feats, feats.shape[1]


def _parakeet(wave: np.ndarray, c: CtcSection) -> Features:
    return filterbank.parakeet_fbank(wave, c.audio.sample_rate, c.n_fft, c.win_length or c.n_fft, c.hop_length,
                                     c.n_mels, c.preemphasis)


def _lasr(wave: np.ndarray, c: CtcSection) -> Features:
    return filterbank.lasr_fbank(wave, c.audio.sample_rate, c.n_fft, c.win_length or c.n_fft, c.hop_length, c.n_mels)


def _kaldi(wave: np.ndarray, c: CtcSection) -> Features:
    return filterbank.kaldi_fbank_stacked(wave, c.audio.sample_rate, c.n_mels, c.stack)


# The contract's `features` -> numpy front end; a model with a new front end adds an entry here
# and to CtcSection.features.
FRONT_ENDS: dict[str, Callable[[np.ndarray, CtcSection], Features]] = {
    "waveform": _waveform, "log-mel": _log_mel, "parakeet-fbank": _parakeet, "lasr-fbank": _lasr, "kaldi-fbank": _kaldi}


def ctc_features(wave: np.ndarray, c: CtcSection) -> np.ndarray:
    """One chunk's graph input without the batch axis."""
    return FRONT_ENDS[c.features](wave, c)[0]


def ctc_inputs(wave: np.ndarray, c: CtcSection) -> dict[str, np.ndarray]:
    """One chunk's graph feeds (batch of 1): its features, and their frame mask where the graph takes one."""
    feats, valid = FRONT_ENDS[c.features](wave, c)
    feeds = {c.input: feats[None]}
    if c.mask:
        frames = feats.shape[1] if c.features == "log-mel" else feats.shape[0]
        feeds[c.mask] = (np.arange(frames) < valid).astype(np.int64)[None]
    return feeds


def ctc_words(ids: np.ndarray, vocabulary: Sequence[str], blank_id: int, word_delimiter: str = " ",
              skip: Iterable[str] = ()) -> list[tuple[str, int, int]]:
    """Greedy CTC: collapse repeats, drop blanks -> words with their first and (exclusive) last frame.

    `skip`: tokens never printed (<s>, </s>, ...); `word_delimiter` (and " ") ends a word.
    """
    vocab, blank, delim, skip = vocabulary, blank_id, word_delimiter, set(skip)
    words: list[tuple[str, int, int]] = []
    current, start, end, prev = "", 0, 0, -1
    for frame, i in enumerate(int(x) for x in ids):
        is_char = i != blank and i < len(vocab) and vocab[i] not in skip and vocab[i] not in (delim, " ")
        if i == prev:
            end = frame + 1 if is_char else end  # a held character: the word lasts longer
            continue
        prev = i
        if is_char:
            start = frame if not current else start
            current += vocab[i]
            end = frame + 1
        elif i < len(vocab) and vocab[i] in (delim, " ") and current:
            words.append((current, start, end))
            current = ""
    if current:
        words.append((current, start, end))
    return words


def ctc_decode(ids: np.ndarray, vocabulary: Sequence[str], blank_id: int, word_delimiter: str = " ",
               skip: Iterable[str] = ()) -> str:
    """Greedy CTC decoding of frame ids to text, words joined by spaces.

    >>> ctc_decode(np.array([2, 2, 0, 2, 1, 3, 3, 0, 1]), ["_", "|", "a", "b"], blank_id=0, word_delimiter="|")
    'aa b'
    """
    return " ".join(w for w, _, _ in ctc_words(ids, vocabulary, blank_id, word_delimiter, skip))


def decode_with(c: CtcSection, ids: np.ndarray) -> str:
    """`ctc_decode` with an artifact's vocabulary and conventions."""
    return ctc_decode(ids, c.vocabulary, c.blank_id, c.word_delimiter, c.skip)


class CtcRecognizer(Recognizer):
    """A CTC model (wav2vec2-style on waveforms, or any model on log-mel features).

    >>> import tempfile, edgekit, numpy as np, torch
    >>> class Frames(torch.nn.Module):  # waveform (batch, samples) -> logits (batch, frames, 3 labels)
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv1d(1, 3, 400, stride=320)
    ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
    ...         return self.conv(x[:, None]).transpose(1, 2)
    >>> out = tempfile.mkdtemp() + "/ctc"
    >>> _ = edgekit.convert(Frames(), out, task="recognize", labels=["_", " ", "a"])
    >>> asr = edgekit.load(out, device="cpu")
    >>> t = asr.recognize(np.sin(np.arange(8000, dtype=np.float32) / 5), sample_rate=8000)  # resampled to 16 kHz
    >>> type(asr).__name__, type(t.text), all(s.end > s.start for s in t.segments)
    ('CtcRecognizer', <class 'str'>, True)
    """

    contract: CtcSection

    def _check(self, opts: Options) -> None:
        given = [k for k in ("language", "task", "max_new_tokens", "num_beams", "long_form")
                 if getattr(opts, k) is not None]
        if given:
            raise UnsupportedError(f"a CTC model takes no {', '.join(given)}",
                                   found=f"recognize({', '.join(f'{k}=...' for k in given)}) on a CTC artifact",
                                   fix="drop them (word timings are always in .segments)")

    def recognize_stream(self, chunks: Iterable[Any], sample_rate: int | None = None, lookahead_s: float = 0.5,
                         left_context_s: float | None = None) -> Iterator[StreamUpdate]:
        """Transcribe audio as it arrives: one `StreamUpdate` per chunk, then a last one (`is_final`).

        `chunks`: float32/int16 arrays of any length (mono or multi-channel) at `sample_rate` Hz
        (default: the model's). A frame is final once `lookahead_s` of audio after it has been
        heard; each window also carries `left_context_s` (default: the artifact's chunk overlap)
        before the unsettled audio. See tasks/streaming.py.
        """
        from edgekit.tasks.streaming import stream_ctc  # here: streaming.py imports this module

        return stream_ctc(self, chunks, sample_rate, lookahead_s, left_context_s)

    @cached_property
    def _frame_stride(self) -> int:
        from edgekit.tasks.streaming import frame_stride  # here: streaming.py imports this module

        return frame_stride(self)

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        """Greedy CTC per chunk; every word a segment, frame f of a chunk at f * (the chunk's samples
        per frame). With `word_timestamps` each segment holds its word timed as transformers' pipeline
        times it: frame f at f * the model's frame stride (its inputs_to_logits_ratio, measured on the
        graph); the segment's own times (and so subtitles) stay as they were."""
        c = self.contract
        rate = self.sample_rate
        stride = self._frame_stride if opts.word_timestamps else 0
        ids: list[np.ndarray] = []
        probs: list[np.ndarray] = []  # the chosen label's softmax probability per kept frame
        times: list[np.ndarray] = []  # start time (s) of every kept frame
        word_times: list[np.ndarray] = []  # the same by the model's stride
        hop = 0.0
        for chunk in self.chunks(wave):
            logits = self.runners["model"].run(ctc_inputs(chunk.wave, c), outputs=[c.output])[c.output][0]
            hop = len(chunk.wave) / logits.shape[0]  # samples per frame (the model's total stride)
            # Keep only this chunk's own span: the overlap gave context, its frames belong to a neighbour.
            lo, hi = int(round(chunk.keep_start / hop)), int(round(chunk.keep_end / hop))
            ids.append(logits[lo:hi].argmax(-1))
            probs.append(_chosen_probability(logits[lo:hi]))
            frames = np.arange(lo, lo + len(ids[-1]))
            times.append((chunk.start + frames * hop) / rate)
            word_times.append((chunk.start + frames * stride) / rate)
        frame_times, frame_probs, at = np.concatenate(times), np.concatenate(probs), np.concatenate(word_times)
        words = ctc_words(np.concatenate(ids), c.vocabulary, c.blank_id, c.word_delimiter, c.skip)
        segments = []
        for w, s, e in words:
            timed = None
            if opts.word_timestamps:
                timed = [Word(float(at[s]), float(at[e - 1]) + stride / rate, w, float(frame_probs[s:e].mean()))]
            segments.append(Segment(w, float(frame_times[s]), float(frame_times[e - 1]) + hop / rate, timed))
        return Transcript(text=" ".join(w for w, _, _ in words), segments=segments)


def _chosen_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of each frame's best label (frames, vocabulary) -> (frames,)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return 1.0 / z.sum(-1)
