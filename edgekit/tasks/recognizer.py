"""`recognize`: audio in, `Transcript` out. The shared part of the CTC and Whisper recognizers.

`Recognizer.recognize` loads and checks the audio (any rate, resampled to the model's), skips
silence, and hands the waveform to the model family's `_transcribe` (tasks/ctc.py, tasks/whisper.py);
with `vad`, Silero VAD (preprocess/vad.py) finds the speech first and the family's `_transcribe_spans`
transcribes only those spans, so no text can come from a silence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.contract.recognize import Chunking
from edgekit.errors import ConfigError
from edgekit.preprocess import audio
from edgekit.preprocess.vad import FOR_RECOGNITION, Span, VadOptions, detect
from edgekit.results import Segment, Transcript, Word
from edgekit.tasks.model import Model
from edgekit.tasks.whisper_longform import LongForm


@dataclass(frozen=True)
class Options:
    """What `recognize` was asked besides the audio (Whisper uses them all; CTC word_timestamps only)."""

    language: str | None = None
    task: str | None = None
    return_timestamps: bool = False
    max_new_tokens: int | None = None
    num_beams: int | None = None
    word_timestamps: bool = False
    long_form: LongForm | None = None  # Whisper's sequential long-form mode; None: chunked
    pack: bool = False  # with vad: short spans share encoder windows (VadOptions.pack)


class Recognizer(Model):
    """A loaded speech recognition artifact; `recognize` is the same call for every family."""

    @property
    def chunking(self) -> Chunking:
        return self.contract.audio  # type: ignore[attr-defined, no-any-return]

    @property
    def sample_rate(self) -> int:
        return self.chunking.sample_rate

    def recognize(self, audio_in: Any, sample_rate: int | None = None, language: str | None = None,
                  task: str | None = None, return_timestamps: bool = False,
                  max_new_tokens: int | None = None, num_beams: int | None = None,
                  vad: bool | VadOptions = False, word_timestamps: bool = False,
                  long_form: bool | LongForm = False) -> Transcript:
        """Transcribe a path (WAV/FLAC/OGG) or a float32/int16 array (mono or stereo, `sample_rate` Hz).

        `language`, `task` ("transcribe" | "translate"), `return_timestamps`, `max_new_tokens` and
        `num_beams` (beam search, as transformers and faster-whisper do it) are Whisper's; a CTC
        model has word timings in `segments` always and refuses the others.
        `vad=True` (`preprocess.vad.FOR_RECOGNITION`) or a `VadOptions`: transcribe only the speech
        Silero VAD finds, each span at most one chunk long (unless `max_speech_duration_s` says
        otherwise); `segments` are in the whole audio's time and lie inside the speech spans;
        silence gives no segments. Whisper lays short spans end to end in shared 30 s windows, as
        faster-whisper's batched pipeline does, unless `word_timestamps` (`VadOptions.pack` decides).
        `word_timestamps=True`: every segment gets `words` (`Word(start, end, word, probability)`,
        seconds in the whole audio's time); Whisper then decodes with timestamp tokens, as
        transformers' pipeline(return_timestamps="word") does.
        `long_form=True` or a `LongForm` (Whisper): audio past one window is transcribed as
        transformers' `generate` does on long features (sequential windows, each starting where the
        last one's segments ended; temperature fallback, no-speech skip, conditioning on the text so
        far as `LongForm` says) instead of overlapping chunks; segments always carry timestamps.
        """
        if not isinstance(word_timestamps, bool):
            raise ConfigError("recognize(word_timestamps=...) takes True or False", found=repr(word_timestamps))
        speech = _vad_options(vad)
        pack = speech is not None and (not word_timestamps if speech.pack is None else speech.pack)
        opts = Options(language, task, return_timestamps, max_new_tokens, num_beams, word_timestamps,
                       _long_form(long_form), pack=pack)
        self._check(opts)
        if speech is not None and opts.long_form is not None:
            raise ConfigError("recognize takes vad or long_form, not both",
                              found=f"vad={vad!r}, long_form={long_form!r}",
                              fix="long_form reads the whole audio itself (and skips silent windows with "
                                  "LongForm(no_speech_threshold=...)); drop one of them")
        wave = audio.load_audio(audio_in, sample_rate, self.sample_rate)
        if audio.is_silence(wave):
            return Transcript(text="", segments=[], language=language)
        if speech is None:
            return self._transcribe(wave, opts)
        spans = detect(wave, self.sample_rate, speech.capped(self.chunking.chunk_length_s))
        return self._transcribe_spans(wave, spans, opts) if spans else Transcript("", [], language)

    def chunks(self, wave: np.ndarray) -> list[audio.Chunk]:
        return audio.chunks(wave, self.chunking.window, self.chunking.stride)

    def _check(self, opts: Options) -> None:
        """Refuse options this family does not take, by name, before any audio is read."""

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        raise NotImplementedError

    def _transcribe_spans(self, wave: np.ndarray, spans: list[Span], opts: Options) -> Transcript:
        """Each speech span on its own (a family that batches spans overrides this)."""
        return stitch([self._transcribe(wave[s.start:s.end], opts) for s in spans], spans, self.sample_rate,
                      opts.language)


def _vad_options(vad: object) -> VadOptions | None:
    if vad is False:
        return None
    if vad is True:
        return FOR_RECOGNITION
    if isinstance(vad, VadOptions):
        return vad
    raise ConfigError("recognize(vad=...) takes True, False or a VadOptions", found=repr(vad),
                      fix="vad=True, or vad=edgekit.VadOptions(threshold=..., ...)")


def _long_form(value: object) -> LongForm | None:
    if value is False:
        return None
    if value is True:
        return LongForm()
    if isinstance(value, LongForm):
        return value
    raise ConfigError("recognize(long_form=...) takes True, False or a LongForm", found=repr(value),
                      fix="long_form=True, or long_form=edgekit.LongForm(condition_on_prev_tokens=True, ...)")


def stitch(parts: list[Transcript], spans: list[Span], rate: int, language: str | None) -> Transcript:
    """Per-span transcripts -> one, segment times moved from span time into the whole audio's time
    and held inside their span (Whisper's timestamps may point into the padding past a span's end)."""
    segments: list[Segment] = []
    for part, span in zip(parts, spans):
        lo, hi = span.start / rate, span.end / rate
        segments += [Segment(s.text, min(hi, lo + s.start), min(hi, lo + s.end), _shifted(s.words, lo, hi))
                     for s in part.segments]
    detected = language or next((p.language for p in parts if p.language), None)
    return Transcript(text=" ".join(p.text for p in parts if p.text), segments=segments, language=detected)


def _shifted(words: list[Word] | None, lo: float, hi: float) -> list[Word] | None:
    """Words moved by `lo` seconds and held inside [lo, hi], as their segment is."""
    if words is None:
        return None
    return [Word(min(hi, lo + w.start), min(hi, lo + w.end), w.word, w.probability) for w in words]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words (1.0 per word when the reference is empty)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return float(len(hyp) > 0)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
