"""Speech encoder-decoders other than Whisper (Moonshine, Speech2Text, SeamlessM4T...): the encoder once per chunk, then
Whisper's decoder loop (tasks/whisper.py: greedy rows, beam search, the cross keys/values resident on
the backend) from the one start token, without Whisper's language, task and timestamp tokens."""
from __future__ import annotations

import numpy as np

from edgekit.contract.generate import ENCODER_MASK
from edgekit.contract.recognize import FRAME_MASK, SpeechSeq2SeqSection
from edgekit.errors import InputError, UnsupportedError
from edgekit.preprocess import audio, filterbank
from edgekit.preprocess.vad import Span
from edgekit.results import Transcript
from edgekit.tasks.recognizer import Options, Recognizer
from edgekit.tasks.whisper import WhisperRecognizer


def features(wave: np.ndarray, c: SpeechSeq2SeqSection) -> np.ndarray:
    """One chunk's encoder input without the batch axis."""
    if c.features == "speech2text-fbank":
        return filterbank.speech2text_fbank(wave, c.audio.sample_rate, c.n_mels)
    if c.features == "kaldi-fbank":  # one unpadded input: every stacked row is real, so no mask
        return filterbank.kaldi_fbank_stacked(wave, c.audio.sample_rate, c.n_mels, c.stack)[0]
    if c.features == "parakeet-fbank":
        return filterbank.parakeet_fbank(wave, c.audio.sample_rate, c.n_fft, c.win_length, c.hop_length, c.n_mels,
                                         c.preemphasis)[0]
    return audio.normalize_wave(wave) if c.normalize else wave.astype(np.float32)


def frame_mask(features: np.ndarray) -> np.ndarray:
    """(batch, frames) int64: the real frames of unpadded parakeet-fbank features. The extractor counts
    samples // hop frames (filterbank.parakeet_fbank's `valid`); its centered STFT makes one more, padding."""
    mask = np.ones(features.shape[:2], np.int64)
    mask[:, -1] = 0
    return mask


class SpeechSeq2SeqRecognizer(WhisperRecognizer):
    """An encoder graph on the front end's features and a cached decoder graph."""

    contract: SpeechSeq2SeqSection  # type: ignore[assignment]

    def _check(self, opts: Options) -> None:
        given = [k for k in ("language", "task") if getattr(opts, k) is not None]
        given = [k for k in given if k != "language" or not self.contract.lang_to_id]
        given += ["return_timestamps"] if opts.return_timestamps else []
        if given:
            raise UnsupportedError(f"this {self.manifest.family} model takes no {', '.join(given)}",
                                   found="a speech encoder-decoder without these tokens",
                                   fix="drop them (max_new_tokens and num_beams are taken"
                                       f"{', language too' if self.contract.lang_to_id else ''})")

    def features(self, wave: np.ndarray) -> np.ndarray:
        return features(wave, self.contract)

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        if self.contract.encoder_mask:  # the encoder returns its frames' mask with the cross keys/values
            return self.runners["encoder"].run({self.contract.input: features, FRAME_MASK: frame_mask(features)})
        cross = self.runners["encoder"].run({self.contract.input: features})
        frames = next(iter(cross.values())).shape[2]
        return {**cross, ENCODER_MASK: np.ones((features.shape[0], frames), np.int64)}

    def prompt(self, language: str | None, task: str | None, timestamps: bool, cross: dict[str, np.ndarray]) -> list[int]:
        """The start token, then the target language's where one is given (transformers' generate(tgt_lang=)
        accepts "eng" and "__eng__")."""
        c = self.contract
        if language is None:
            return [c.decoder_start_token_id]
        key = language.replace("__", "")
        if key not in c.lang_to_id:
            raise InputError(f"unknown target language '{language}' for this {self.manifest.family} model",
                             found=f"languages {sorted(c.lang_to_id)}" if c.lang_to_id else "no language tokens",
                             fix="pass one of them" if c.lang_to_id else "leave language unset")
        return [c.decoder_start_token_id, c.lang_to_id[key]]

    def forced_eos_token_id(self) -> int | None:
        return self.contract.forced_eos_token_id

    def _language_of(self, tokens: list[int]) -> str | None:
        return None

    def decode_text(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True)).strip()

    def _transcribe_spans(self, wave: np.ndarray, spans: list[Span], opts: Options) -> Transcript:
        # Spans differ in length and the encoder takes the unpadded waveform: one span at a time.
        return Recognizer._transcribe_spans(self, wave, spans, opts)
