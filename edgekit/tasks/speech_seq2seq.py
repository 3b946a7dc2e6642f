"""Speech encoder-decoders other than Whisper (Moonshine, Speech2Text, SeamlessM4T, SpeechT5, Canary...):
the encoder once per chunk, then Whisper's decoder loop (tasks/whisper.py: greedy rows, beam search, the
cross keys/values resident on the backend) from the one start token, without Whisper's language, task and
timestamp tokens."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgekit.contract.generate import ENCODER_MASK
from edgekit.contract.recognize import SpeechSeq2SeqSection
from edgekit.errors import InputError, UnsupportedError
from edgekit.preprocess import audio, filterbank
from edgekit.preprocess.vad import Span
from edgekit.results import StreamUpdate, Transcript
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


def encoder_feeds(features: np.ndarray, c: SpeechSeq2SeqSection) -> dict[str, np.ndarray]:
    """The encoder graph's inputs for a batch of unpadded features, for the recognizer and for the
    transformers reference alike: a waveform padded with zeros to `pad_to_multiple_of`, and where the
    graph takes one (`mask`), the mask of real frames: parakeet-fbank's all but the last (the extractor
    counts samples // hop frames, its centered STFT makes one more), a waveform's samples before the
    padding."""
    real = features.shape[1]
    padded = -(-real // c.pad_to_multiple_of) * c.pad_to_multiple_of
    feeds = {c.input: features if padded == real else np.pad(features, ((0, 0), (0, padded - real)))}
    if c.mask:
        real -= int(c.features == "parakeet-fbank")
        feeds[c.mask] = np.repeat((np.arange(padded) < real)[None], features.shape[0], 0).astype(np.int64)
    return feeds


class SpeechSeq2SeqRecognizer(WhisperRecognizer):
    """An encoder graph on the front end's features and a cached decoder graph."""

    contract: SpeechSeq2SeqSection  # type: ignore[assignment]

    def _check(self, opts: Options) -> None:
        given = [k for k in ("language", "task", "long_form") if getattr(opts, k) is not None]
        given = [k for k in given if k != "language" or not self.contract.lang_to_id]
        given += ["return_timestamps"] if opts.return_timestamps else []
        if given:
            raise UnsupportedError(f"this {self.manifest.family} model takes no {', '.join(given)}",
                                   found="a speech encoder-decoder without these tokens",
                                   fix="drop them (max_new_tokens and num_beams are taken"
                                       f"{', language too' if self.contract.lang_to_id else ''})")

    def recognize_stream(self, chunks: Iterable[Any], sample_rate: int | None = None, language: str | None = None,
                         task: str | None = None, step_s: float = 1.0, trim_s: float = 20.0,
                         max_new_tokens: int | None = None) -> Iterator[StreamUpdate]:
        """Refused: Whisper's stream cuts its buffer at timestamp tokens, and these models have none."""
        raise UnsupportedError(f"recognize_stream needs timestamp tokens to cut its audio buffer, and this "
                               f"{self.manifest.family} model has none",
                               fix="recognize() the whole recording, with vad=True for long audio")

    def features(self, wave: np.ndarray) -> np.ndarray:
        return features(wave, self.contract)

    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        cross = self.runners["encoder"].run(encoder_feeds(features, self.contract))
        if self.contract.mask:  # the encoder's own mask of its frames (it subsamples the frame mask)
            return cross
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
