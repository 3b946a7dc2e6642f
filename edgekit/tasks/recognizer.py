"""`recognize`: audio in, `Transcript` out. The shared part of the CTC and Whisper recognizers.

`Recognizer.recognize` loads and checks the audio (any rate, resampled to the model's), skips
silence, and hands the waveform to the model family's `_transcribe` (tasks/ctc.py, tasks/whisper.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.contract.recognize import Chunking
from edgekit.preprocess import audio
from edgekit.results import Transcript
from edgekit.tasks.model import Model


@dataclass(frozen=True)
class Options:
    """What `recognize` was asked besides the audio (Whisper uses them all; CTC none)."""

    language: str | None = None
    task: str | None = None
    return_timestamps: bool = False
    max_new_tokens: int | None = None
    num_beams: int | None = None


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
                  max_new_tokens: int | None = None, num_beams: int | None = None) -> Transcript:
        """Transcribe a path (WAV/FLAC/OGG) or a float32/int16 array (mono or stereo, `sample_rate` Hz).

        `language`, `task` ("transcribe" | "translate"), `return_timestamps`, `max_new_tokens` and
        `num_beams` (beam search, as transformers and faster-whisper do it) are Whisper's; a CTC
        model has word timings in `segments` always and refuses the others.
        """
        opts = Options(language, task, return_timestamps, max_new_tokens, num_beams)
        self._check(opts)
        wave = audio.load_audio(audio_in, sample_rate, self.sample_rate)
        if audio.is_silence(wave):
            return Transcript(text="", segments=[], language=language)
        return self._transcribe(wave, opts)

    def chunks(self, wave: np.ndarray) -> list[audio.Chunk]:
        return audio.chunks(wave, self.chunking.window, self.chunking.stride)

    def _check(self, opts: Options) -> None:
        """Refuse options this family does not take, by name, before any audio is read."""

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        raise NotImplementedError


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
