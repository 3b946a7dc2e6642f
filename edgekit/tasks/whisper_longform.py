"""Whisper's sequential long-form transcription, ported from transformers' generation_whisper.py.

`WhisperGenerationMixin.generate` on more than one window (3000 mel frames) of features runs
OpenAI's algorithm: decode the 30 s window at `seek` (with timestamps), cut its tokens into
segments at timestamp pairs, and move `seek` to the last closed timestamp (or past the window
when the window ends in a single timestamp or has no pair). Per window, a decode whose compression
ratio or average log-probability fails its threshold is run again at the next temperature
(`generate_with_fallback`); a window whose <|nospeech|> probability is high and whose average
log-probability is low is skipped; with `condition_on_prev_tokens`, the text so far follows
<|startofprev|> in front of the next window's prompt. This module holds the options and the rules
(pure functions on token lists); tasks/whisper.py runs the windows on the artifact's graphs.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekit.contract.recognize import WhisperSection
from edgekit.errors import ConfigError

# The encoder's two convolutions have strides 1 and 2 (WhisperEncoder): a timestamp step (20 ms)
# is two mel frames, and transformers moves `seek` by `timestamp index * input_stride` frames.
INPUT_STRIDE = 2
# transformers' global sampling default (GenerationConfig._get_default_generation_params): a
# Whisper generation config sets no top_k, so the fallback's sampling keeps the 50 likeliest tokens.
FALLBACK_TOP_K = 50


@dataclass(frozen=True)
class LongForm:
    """Options of Whisper's sequential long-form mode, named as transformers' `generate` names them.

    Defaults are transformers' (greedy, no thresholds, no conditioning; temperature (0.0,) is its
    greedy temperature=0.0, and recognize's num_beams > 1 its beam search at 0). OpenAI's / faster-whisper's
    recommended values: condition_on_prev_tokens=True, temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold=2.4 (faster-whisper's name too), logprob_threshold=-1.0
    (faster-whisper: log_prob_threshold), no_speech_threshold=0.6.
    `seed`: the sampling draws of the temperature fallback (edgekit's RNG: not torch's tokens).
    """

    condition_on_prev_tokens: bool = False
    temperature: tuple[float, ...] = (0.0,)
    compression_ratio_threshold: float | None = None
    logprob_threshold: float | None = None
    no_speech_threshold: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.condition_on_prev_tokens, bool):
            raise ConfigError("LongForm.condition_on_prev_tokens takes True or False",
                              found=repr(self.condition_on_prev_tokens))
        temps = self.temperature
        if not isinstance(temps, tuple) or not temps or not all(_real(t) and 0 <= t < math.inf for t in temps):
            raise ConfigError("LongForm.temperature must be a non-empty tuple of finite numbers >= 0",
                              found=repr(temps), fix="e.g. (0.0,) or (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)")
        for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
            value = getattr(self, name)
            if value is not None and not (_real(value) and math.isfinite(value)):
                raise ConfigError(f"LongForm.{name} must be a finite number or None", found=repr(value))
        if self.no_speech_threshold is not None and self.logprob_threshold is None:
            # transformers skips a window on both together (`_need_fallback`): no probability alone decides.
            raise ConfigError("LongForm.no_speech_threshold needs a logprob_threshold",
                              found=f"no_speech_threshold={self.no_speech_threshold}, logprob_threshold=None",
                              fix="add logprob_threshold=-1.0, or drop no_speech_threshold")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError("LongForm.seed must be a non-negative integer or None", found=repr(self.seed))


def _real(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@dataclass(frozen=True)
class LongSegment:
    """One segment of the long-form output: seconds in the whole audio and its tokens (timestamps
    included), as transformers' `segments` entries (`start`, `end`, `tokens`)."""

    start: float
    end: float
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Decoded:
    """One decode of one window: the new tokens (eos included when reached), each one's
    log-probability as `_retrieve_avg_logprobs` reads it, and P(<|nospeech|>) at <|startoftranscript|>."""

    tokens: list[int]
    logprobs: list[float]
    no_speech: float


def compression_ratio(tokens: list[int], vocab_size: int) -> float:
    """`_retrieve_compression_ratio`: raw token bytes over their zlib-compressed length."""
    width = int(math.log2(vocab_size) / 8) + 1
    raw = b"".join(t.to_bytes(width, "little") for t in tokens)
    return len(raw) / len(zlib.compress(raw))


def judge(d: Decoded, vocab_size: int, opts: LongForm) -> tuple[bool, bool]:
    """`_need_fallback`: (decode again at the next temperature, skip the window as no speech)."""
    again = skip = False
    if opts.compression_ratio_threshold is not None:
        again = compression_ratio(d.tokens, vocab_size) > opts.compression_ratio_threshold
    if opts.logprob_threshold is not None:
        # The eos token's log-probability counts (as in OpenAI's implementation).
        avg = sum(d.logprobs) / len(d.tokens) if d.tokens else 0.0
        again = again or avg < opts.logprob_threshold
        if opts.no_speech_threshold is not None and avg < opts.logprob_threshold \
                and d.no_speech > opts.no_speech_threshold:
            again, skip = False, True
    return again, skip


def split(seq: list[int], offset: float, frames: int, c: WhisperSection) -> tuple[list[LongSegment], int]:
    """`_retrieve_segment`: a window's tokens (eos removed) -> its segments and how many frames
    `seek` moves. `offset`: the window's start in seconds; `frames`: its mel frames of audio."""
    ts = c.no_timestamps_token_id + 1
    is_ts = [t >= ts for t in seq]
    single_end = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(is_ts) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:  # no pair closed a segment: the whole window is one
        stamps = [t for t in seq if t >= ts]
        end = float(int(frames * (c.hop_length / c.audio.sample_rate) / c.time_precision))
        if stamps and stamps[-1] != ts:
            end = float(stamps[-1] - ts)
        return [LongSegment(offset, offset + end * c.time_precision, tuple(seq))], frames
    if single_end:
        cuts.append(len(seq))
    else:
        cuts[-1] += 1  # the last segment keeps both timestamps of its closing pair
    out, last = [], 0
    for i, cut in enumerate(cuts):
        piece = seq[last:cut]
        close = -1 if i < len(cuts) - 1 or single_end else -2
        out.append(LongSegment(offset + (piece[0] - ts) * c.time_precision,
                               offset + (piece[close] - ts) * c.time_precision, tuple(piece)))
        last = cut
    # A single timestamp at the end: no speech after it. Otherwise the text after the last pair
    # is cut mid-speech: it is dropped and the next window starts at that pair.
    return out, frames if single_end else (seq[last - 2] - ts) * INPUT_STRIDE


def previous_text(segments: list[LongSegment], startofprev: tuple[int, ...], c: WhisperSection) -> list[int]:
    """`_prepare_decoder_input_ids` with condition_on_prev_tokens: <|startofprev|> and the last
    max_target_positions // 2 - 1 tokens so far, a segment ending in two timestamps giving only
    the first of them (`_pad_to_max_length(skip_ending_double_timestamps=True)`)."""
    ts = c.no_timestamps_token_id + 1
    tokens: list[int] = []
    for s in segments:
        tokens += s.tokens[:-1] if len(s.tokens) > 2 and s.tokens[-2] >= ts else s.tokens
    return [*startofprev, *tokens[-(c.max_target_positions // 2 - 1):]]


def sequential(features: np.ndarray, c: WhisperSection, opts: LongForm, init: list[int],
               startofprev: tuple[int, ...], max_new_tokens: int | None,
               window: Callable[[np.ndarray, list[int], int, int, float, int], Decoded],
               vocab_size: int, num_beams: int = 1) -> list[LongSegment]:
    """The seek loop of `WhisperGenerationMixin.generate` for one audio (batch 1).

    `features`: (n_mels, frames) of the whole audio; `init`: <|startoftranscript|> ... (the same
    every window); `window(features_30s, prompt, sot_index, max_total_length, temperature, beams)`
    decodes one window: beam search at temperature 0 when beams > 1, else greedy or sampling.
    """
    size = c.n_samples // c.hop_length
    total, seek = features.shape[-1], 0
    segments: list[LongSegment] = []
    condition = opts.condition_on_prev_tokens
    max_length = c.max_length  # transformers grows generation_config.max_length window after window
    while seek < total:
        offset = seek * c.time_precision / INPUT_STRIDE
        frames = min(total - seek, size)
        piece = features[:, seek:seek + frames]
        piece = np.pad(piece, ((0, 0), (0, size - frames)))  # zeros, as `_get_input_segment` pads
        prev = previous_text(segments, startofprev, c) if condition and segments else []
        prompt = prev + init
        max_length = _max_length(max_length, len(prompt), max_new_tokens, c)
        for k, temperature in enumerate(opts.temperature):
            if temperature > 0:
                # transformers sets generation_config.num_beams = 1 to sample, and that config
                # serves every later window: after a first fallback, no window runs beams again.
                num_beams = 1
            d = window(piece, prompt, len(prev), max_length, temperature, num_beams)
            again, skip = judge(d, vocab_size, opts)
            condition = opts.condition_on_prev_tokens and temperature < 0.5
            if not again or k == len(opts.temperature) - 1:
                break
        if skip:
            seek += frames
            continue
        seq = d.tokens[:-1] if d.tokens and d.tokens[-1] == c.eos_token_id else d.tokens
        found, advance = split(seq, offset, frames, c)
        segments += found
        seek += advance
    return segments


def _max_length(current: int, prompt: int, max_new_tokens: int | None, c: WhisperSection) -> int:
    """`_set_max_new_tokens_and_length`: the longest the sequence (prompt included) may grow."""
    if max_new_tokens is not None:
        # The longest prompt: <|startofprev|>, the kept previous tokens, <|startoftranscript|> <|lang|> <|task|>.
        longest = c.max_target_positions // 2 + 3
        if max_new_tokens + prompt > c.max_target_positions:
            raise ConfigError(f"max_new_tokens={max_new_tokens} after a {prompt}-token prompt passes the decoder's "
                              f"{c.max_target_positions} positions",
                              found="the previous text in front of this window",
                              fix=f"max_new_tokens <= {c.max_target_positions - longest}, "
                                  "or condition_on_prev_tokens=False")
        return prompt + max_new_tokens
    # transformers stores the grown value back in the generation config, so it compounds across windows.
    return min(current + min(c.max_target_positions // 2 - 1, prompt), c.max_target_positions)
