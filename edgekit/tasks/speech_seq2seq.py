"""Speech encoder-decoders other than Whisper (Moonshine, Speech2Text): the encoder once per chunk, then
Whisper's decoder loop (tasks/whisper.py: greedy rows, beam search, the cross keys/values resident on
the backend) from the one start token, without Whisper's language, task and timestamp tokens."""
from __future__ import annotations

import numpy as np

from edgekit.contract.generate import ENCODER_MASK
from edgekit.contract.recognize import SpeechSeq2SeqSection
from edgekit.errors import UnsupportedError
from edgekit.preprocess import audio, filterbank
from edgekit.preprocess.vad import Span
from edgekit.results import Transcript
from edgekit.tasks.recognizer import Options, Recognizer
from edgekit.tasks.whisper import WhisperRecognizer


def features(wave: np.ndarray, c: SpeechSeq2SeqSection) -> np.ndarray:
    """One chunk's encoder input without the batch axis."""
    if c.features == "speech2text-fbank":
        return filterbank.speech2text_fbank(wave, c.audio.sample_rate, c.n_mels)
    return audio.normalize_wave(wave) if c.normalize else wave.astype(np.float32)


class SpeechSeq2SeqRecognizer(WhisperRecognizer):
    """An encoder graph on the front end's features and a cached decoder graph."""

    contract: SpeechSeq2SeqSection  # type: ignore[assignment]

    def _check(self, opts: Options) -> None:
        given = [k for k in ("language", "task", "long_form") if getattr(opts, k) is not None]
        given += ["return_timestamps"] if opts.return_timestamps else []
        if given:
            raise UnsupportedError(f"this {self.manifest.family} model takes no {', '.join(given)}",
                                   found="a speech encoder-decoder without language, task or timestamp tokens",
                                   fix="drop them (max_new_tokens and num_beams are taken)")

    def features(self, wave: np.ndarray) -> np.ndarray:
        return features(wave, self.contract)

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        cross = self.runners["encoder"].run({self.contract.input: features})
        frames = next(iter(cross.values())).shape[2]
        return {**cross, ENCODER_MASK: np.ones((features.shape[0], frames), np.int64)}

    def prompt(self, language: str | None, task: str | None, timestamps: bool, cross: dict[str, np.ndarray]) -> list[int]:
        return [self.contract.decoder_start_token_id]

    def _language_of(self, tokens: list[int]) -> str | None:
        return None

    def decode_text(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True)).strip()

    def _transcribe_spans(self, wave: np.ndarray, spans: list[Span], opts: Options) -> Transcript:
        # Spans differ in length and the encoder takes the unpadded waveform: one span at a time.
        return Recognizer._transcribe_spans(self, wave, spans, opts)
