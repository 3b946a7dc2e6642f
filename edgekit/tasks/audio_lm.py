"""`recognize` with an audio-language model (Voxtral; edgekit/contract/audio_lm.py).

The waveform padded to whole 30 s windows -> Whisper's log-mel over it (as the family's processor
computes it: one spectrogram of the padded recording, cut into windows) -> the "audio" graph's rows ->
the transcription prompt with one placeholder token per row -> greedy decoding through the slot-cache
decoder (tasks/state_loop.py) with the rows merged in the prompt call, as transformers' generate does.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.audio_lm import AUDIO_FEATURES, AudioLMSection
from edgekit.errors import ConfigError, InputError, UnsupportedError
from edgekit.preprocess.audio import whisper_log_mel
from edgekit.preprocess.text import read_tokenizer
from edgekit.results import Segment, Transcript
from edgekit.tasks.recognizer import Options, Recognizer
from edgekit.tasks.state_loop import StateLoop


class AudioLMRecognizer(Recognizer):
    """An encoder + projector graph ("audio") and the language model's cached decoder ("model")."""

    contract: AudioLMSection  # type: ignore[assignment]

    @cached_property
    def _tokenizer(self) -> Any:
        return read_tokenizer(self.artifact.path, self.contract.tokenizer)

    def _check(self, opts: Options) -> None:
        given = [k for k in ("task",) if getattr(opts, k) is not None]
        given += [k for k in ("return_timestamps", "word_timestamps") if getattr(opts, k)]
        given += ["num_beams"] if opts.num_beams not in (None, 1) else []
        if opts.language is not None and not self.contract.language_format:
            given.append("language")
        if given:
            raise UnsupportedError(f"this {self.manifest.family} model takes no {', '.join(given)}",
                                   found="an audio-language model that writes the transcript greedily, without "
                                         "timestamp tokens" + ("" if self.contract.language_format else " or a language"),
                                   fix="drop them (max_new_tokens is taken" +
                                       (", and language" if self.contract.language_format else "") + ")")

    def features(self, wave: np.ndarray) -> np.ndarray:
        """(windows, n_mels, frames): one log-mel of the waveform padded to whole windows, cut per window
        (transformers' processor pads to a multiple of the window, extracts once, then reshapes)."""
        c = self.contract
        window = c.audio.window
        padded = max(1, -(-len(wave) // window)) * window
        mel = whisper_log_mel(wave, c.n_mels, padded, c.n_fft, c.hop_length, c.audio.sample_rate)
        return np.ascontiguousarray(mel.reshape(c.n_mels, -1, c.chunk_frames).transpose(1, 0, 2))

    def prompt_ids(self, rows: int, language: str | None = None) -> list[int]:
        """The transcription request: prefix, one placeholder per audio row, the language (where asked), suffix."""
        c = self.contract
        lang: list[int] = []
        if language is not None:
            if not isinstance(language, str) or not language.strip():
                raise ConfigError("recognize(language=...) takes a language code", found=repr(language),
                                  fix='e.g. language="en"')
            lang = list(self._tokenizer.encode(c.language_format.format(language), add_special_tokens=False).ids)
        cut = len(c.suffix) - c.language_before
        return [*c.prefix, *[c.audio_token_id] * rows, *c.suffix[:cut], *lang, *c.suffix[cut:]]

    def decode_tokens(self, wave: np.ndarray, max_new_tokens: int | None = None,
                      language: str | None = None) -> list[int]:
        """The new tokens greedy decoding writes for one waveform (eos last where it came), as
        transformers' generate returns them after the prompt."""
        c = self.contract
        feats = self.features(wave)
        if len(feats) > c.max_chunks:
            raise InputError(f"the recording is {len(wave) / c.audio.sample_rate:.0f} s: {len(feats)} windows of "
                             f"{c.audio.chunk_length_s:g} s, more than the {c.max_chunks} the context holds",
                             fix="pass vad=True: each speech span is transcribed on its own")
        rows = self.runners["audio"].run({"input_features": feats})[AUDIO_FEATURES]
        ids = np.asarray([self.prompt_ids(len(rows), language)], np.int64)
        new = _new_tokens(max_new_tokens, c.max_new_tokens, c.max_context - ids.shape[1])
        out: list[int] = []
        with StateLoop(self.runners["model"], c.cache, 1, ids.shape[1] + new - 1,
                       features=np.ascontiguousarray(rows, np.float32)) as loop:
            logits = loop.prefill(ids, np.ones_like(ids))
            while True:
                token = int(np.argmax(logits[0]))
                out.append(token)
                if token in c.eos_token_id or len(out) == new:
                    return out
                logits = loop.step(np.asarray([token], np.int64))

    def decode_text(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True)).strip()

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        text = self.decode_text(self.decode_tokens(wave, opts.max_new_tokens, opts.language))
        end = len(wave) / self.sample_rate
        return Transcript(text=text, segments=[Segment(text, 0.0, end)] if text else [], language=opts.language)


def _new_tokens(asked: int | None, default: int, room: int) -> int:
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise ConfigError("max_new_tokens must be a positive integer", found=repr(asked))
    new = default if asked is None else asked
    if new > room:
        if asked is not None:
            raise ConfigError(f"the prompt leaves room for {room} new tokens in the model's context",
                              found=f"max_new_tokens={asked}", fix=f"use max_new_tokens <= {room}")
        new = room  # the default is at most what the context leaves (contract: max_new_tokens)
    return max(new, 1)
