"""`recognize` with an audio-language model (Voxtral, Qwen3-ASR; edgekit/contract/audio_lm.py).

The waveform -> the family's log-mel (Voxtral: padded to whole 30 s windows, one spectrogram cut into
windows, as its processor computes it; Qwen3-ASR: the spectrogram of the waveform, padded with zero
frames to whole chunks, and the mask of the rows real frames make; VibeVoice-ASR: the waveform itself,
scaled to its RMS level and cut per hop) -> the "audio" graph's rows -> the transcription prompt with
one placeholder token per row -> greedy decoding through the slot-cache decoder (tasks/state_loop.py)
with the rows merged in the prompt call, as transformers' generate does.
Voxtral Realtime (its log-mel) and Kyutai STT (Mimi codes of the samples): the waveform padded with
silence both sides -> one row per token position, each added to its position's embedding; after the
prompt ([BOS] [STREAMING_PAD]..., or [BOS]) one token per row left.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.audio_lm import AUDIO_FEATURES, ROW_MASK, AudioLMSection
from edgekit.errors import ConfigError, InputError, UnsupportedError
from edgekit.preprocess.audio import log_mel, whisper_log_mel
from edgekit.preprocess.text import read_tokenizer
from edgekit.results import Segment, Transcript
from edgekit.tasks.audio_lm_segments import json_transcript
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
        if opts.language is not None and not self.contract.takes_language:
            given.append("language")
        if given:
            raise UnsupportedError(f"this {self.manifest.family} model takes no {', '.join(given)}",
                                   found="an audio-language model that writes the transcript greedily, without "
                                         "timestamp tokens" + ("" if self.contract.takes_language else " or a language"),
                                   fix="drop them (max_new_tokens is taken" +
                                       (", and language" if self.contract.takes_language else "") + ")")

    def features(self, wave: np.ndarray) -> np.ndarray:
        """(chunks, n_mels, chunk_frames) float32: the front end's log-mel cut into the graph's chunks."""
        return self._front_end(wave)[0]

    def _front_end(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The features, and for "qwen3-asr" the row mask (chunks, rows_per_chunk)."""
        c = self.contract
        if c.front_end == "waveform":
            return _hops(wave, c), None
        if c.front_end == "mimi":  # the codec takes samples: whole frames of the padded waveform, min_samples at least
            wave = np.pad(wave, (c.left_pad_samples, c.right_pad_samples))
            wave = np.pad(wave, (0, max(0, c.min_samples - len(wave))))
            frames = len(wave) // c.chunk_frames
            return np.ascontiguousarray(wave[: frames * c.chunk_frames].reshape(frames, 1, c.chunk_frames), np.float32), None
        if c.added:
            return self._realtime_features(wave), None
        if c.front_end == "whisper-windows":  # the processor pads to whole windows, extracts once, then cuts
            padded = max(1, -(-len(wave) // c.audio.window)) * c.audio.window
            mel = whisper_log_mel(wave, c.n_mels, padded, c.n_fft, c.hop_length, c.audio.sample_rate)
            return np.ascontiguousarray(mel.reshape(c.n_mels, -1, c.chunk_frames).transpose(1, 0, 2)), None
        wave = np.pad(wave, (0, max(0, c.min_samples - len(wave))))
        spec = log_mel(wave, c.audio.sample_rate, c.n_fft, c.hop_length, c.n_mels)[:, :-1]
        spec = (np.maximum(spec, spec.max() - 8.0) + 4.0) / 4.0  # Whisper's dynamic range and scale
        frames = spec.shape[1]
        chunks = -(-frames // c.chunk_frames)
        spec = np.pad(spec, ((0, 0), (0, chunks * c.chunk_frames - frames)))  # zero frames, as the extractor pads
        feats = np.ascontiguousarray(spec.reshape(c.n_mels, chunks, c.chunk_frames).transpose(1, 0, 2), np.float32)
        real = np.clip(frames - c.chunk_frames * np.arange(chunks), 0, c.chunk_frames)
        rows = np.array([conv_rows(int(n)) for n in real])
        return feats, (np.arange(c.rows_per_chunk)[None, :] < rows[:, None]).astype(np.int64)

    def _realtime_features(self, wave: np.ndarray) -> np.ndarray:
        """(tokens, n_mels, chunk_frames): VoxtralRealtimeFeatureExtractor (centred frames, the last
        dropped, a fixed ceiling) on the offline request's padded waveform, cut per token."""
        c = self.contract
        per_token = c.chunk_frames * c.hop_length
        right = -len(wave) % per_token + c.right_pad_tokens * per_token
        wave = np.pad(wave, (c.left_pad_samples, right))
        spec = log_mel(wave, c.audio.sample_rate, c.n_fft, c.hop_length, c.n_mels)[:, :-1]
        spec = np.maximum(spec, (spec.max() if c.log_mel_max is None else c.log_mel_max) - 8.0)
        tokens = spec.shape[1] // c.chunk_frames
        spec = ((spec[:, : tokens * c.chunk_frames] + 4.0) / 4.0).reshape(c.n_mels, tokens, c.chunk_frames)
        return np.ascontiguousarray(spec.transpose(1, 0, 2), np.float32)

    def audio_rows(self, wave: np.ndarray) -> np.ndarray:
        """The rows the audio placeholders take, in order (rows, hidden) float32."""
        c = self.contract
        feats, mask = self._front_end(wave)
        if len(feats) > c.max_chunks:
            raise InputError(f"the recording is {len(wave) / c.audio.sample_rate:.0f} s: {len(feats)} chunks of "
                             f"{c.chunk_frames * c.hop_length / c.audio.sample_rate:g} s, more than the "
                             f"{c.max_chunks} the context holds", fix="pass vad=True: each speech span is "
                                                                      "transcribed on its own")
        feeds = {"input_features": feats, **({} if mask is None else {ROW_MASK: mask})}
        rows = self.runners["audio"].run(feeds)[AUDIO_FEATURES]
        if c.front_end == "mimi":  # the BOS row and the real frames' (a causal codec: silence after changes none)
            rows = rows[: (len(wave) + c.left_pad_samples + c.right_pad_samples) // c.chunk_frames + 1]
        return np.ascontiguousarray(rows if mask is None else rows[mask.reshape(-1) > 0], np.float32)

    def prompt_ids(self, rows: int, language: str | None = None, seconds: float | None = None) -> list[int]:
        """The transcription request: prefix, one placeholder per audio row, the language (where asked),
        suffix (with `suffix_format`: the request naming the recording's `seconds`)."""
        c = self.contract
        if c.added:  # no placeholders: the rows are added to the prompt's own positions
            return list(c.prefix)
        audio = [*c.prefix, *[c.audio_token_id] * rows]
        if c.suffix_format:
            if language is not None:
                raise ConfigError(f"this {self.manifest.family} model's prompt takes no language", found=repr(language),
                                  fix="leave language out")
            if seconds is None:
                raise ConfigError(f"this {self.manifest.family} model's request names the recording's length",
                                  found="prompt_ids without seconds", fix="pass seconds=len(wave) / sample_rate")
            text = c.suffix_format.format(seconds=seconds)
            return [*audio, *self._tokenizer.encode(text, add_special_tokens=False).ids]
        if language is None:
            return [*audio, *c.suffix]
        if not isinstance(language, str) or not language.strip():
            raise ConfigError("recognize(language=...) takes a language code", found=repr(language),
                              fix='e.g. language="en"')
        if c.language_suffixes:
            if language not in c.language_suffixes:
                raise ConfigError(f"this model's prompt has no language {language!r}",
                                  found=f"languages {sorted(k for k in c.language_suffixes if len(k) <= 3)}",
                                  fix="pass one of those codes (or its English name), or leave language out")
            return [*audio, *c.language_suffixes[language]]
        lang = list(self._tokenizer.encode(c.language_format.format(language), add_special_tokens=False).ids)
        cut = len(c.suffix) - c.language_before
        return [*audio, *c.suffix[:cut], *lang, *c.suffix[cut:]]

    def decode_tokens(self, wave: np.ndarray, max_new_tokens: int | None = None,
                      language: str | None = None) -> list[int]:
        """The new tokens greedy decoding writes for one waveform (eos last where it came), as
        transformers' generate returns them after the prompt."""
        c = self.contract
        rows = self.audio_rows(wave)
        ids = np.asarray([self.prompt_ids(len(rows), language, len(wave) / c.audio.sample_rate)], np.int64)
        new = _new_tokens(max_new_tokens, c.max_new_tokens, c.max_context - ids.shape[1])
        if c.added:  # one token per row after the prompt, as transformers' generate (max_length: the rows)
            new = min(new if max_new_tokens is not None else len(rows), len(rows) - ids.shape[1])
        out: list[int] = []
        with StateLoop(self.runners["model"], c.cache, 1, ids.shape[1] + new - 1, features=rows, added=c.added) as loop:
            logits = loop.prefill(ids, np.ones_like(ids))
            while True:
                token = int(np.argmax(logits[0]))
                out.append(token)
                if token in c.eos_token_id or len(out) == new:
                    return out
                logits = loop.step(np.asarray([token], np.int64))

    def decode_text(self, tokens: list[int]) -> str:
        """The transcript of new tokens: the text after the family's marker where it writes one (Qwen3-ASR
        writes "language English<asr_text>" first unless the prompt named the language); VibeVoice-ASR's
        JSON segments' Contents."""
        text = str(self._tokenizer.decode(list(tokens), skip_special_tokens=True))
        if self.contract.transcript == "json-segments":
            return json_transcript(text, 0.0)[0]
        marker = self.contract.text_after
        return (text.split(marker, 1)[1] if marker and marker in text else text).strip()

    def _transcribe(self, wave: np.ndarray, opts: Options) -> Transcript:
        tokens = self.decode_tokens(wave, opts.max_new_tokens, opts.language)
        end = len(wave) / self.sample_rate
        if self.contract.transcript == "json-segments":  # the model times its own segments
            text, segments = json_transcript(str(self._tokenizer.decode(tokens, skip_special_tokens=True)), end)
            return Transcript(text=text, segments=segments, language=opts.language)
        text = self.decode_text(tokens)
        return Transcript(text=text, segments=[Segment(text, 0.0, end)] if text else [], language=opts.language)


def _new_tokens(asked: int | None, default: int | None, room: int) -> int:
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise ConfigError("max_new_tokens must be a positive integer", found=repr(asked))
    if asked is not None and asked > room:
        raise ConfigError(f"the prompt leaves room for {room} new tokens in the model's context",
                          found=f"max_new_tokens={asked}", fix=f"use max_new_tokens <= {room}")
    if asked is not None:
        return asked
    # The generation config's default, as transformers' generate takes it, held within the context
    # (generate would run past the position table); without one, until eos within the context.
    return max(1, min(default or room, room))


def _hops(wave: np.ndarray, c: AudioLMSection) -> np.ndarray:
    """(hops, 1, chunk_frames) float32: the waveform as VibeVoice's feature extractor prepares it (float32
    arithmetic as its torch code: scaled to target_dbfs RMS, divided by its peak past 1) zero-padded to
    whole hops (the processor's pad_to_multiple_of)."""
    x = np.asarray(wave, np.float32)
    if c.target_dbfs is not None:
        eps = np.float32(c.norm_eps)
        x = x * (np.float32(10 ** (c.target_dbfs / 20)) / (np.sqrt(np.mean(np.square(x))) + eps))
        peak = np.abs(x).max(initial=0.0)
        x = x / (peak + eps) if peak > 1.0 else x
    hops = max(1, -(-len(x) // c.chunk_frames))
    return np.ascontiguousarray(np.pad(x, (0, hops * c.chunk_frames - len(x))).reshape(hops, 1, c.chunk_frames))


def conv_rows(frames: int) -> int:
    """Rows three (k=3, s=2, p=1) convolutions make of `frames` real frames (0 stays 0): Qwen3-ASR's."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames
