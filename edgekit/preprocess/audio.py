"""Audio in, model features out: loading, checking, resampling, chunking and feature extraction.

numpy + soundfile + soxr only (no torch at run time). `whisper_log_mel` reproduces
`transformers.WhisperFeatureExtractor` (same Slaney mel filters, periodic Hann window, reflect
padding, log10, 8-decade clamp, (x + 4) / 4); tests/test_audio.py holds it to max abs diff < 1e-4.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError

_MAX_RATE = 384_000


# ---------------------------------------------------------------- loading and checking


def load_audio(audio: Any, sample_rate: int | None, target_rate: int) -> np.ndarray:
    """A path or an array (+ its rate) -> float32 mono waveform at `target_rate`, checked."""
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise InputError("sample_rate is only for arrays; a file carries its own rate",
                             found=f"sample_rate={sample_rate!r} with path '{audio}'", fix="drop sample_rate")
        wave, rate = _read_file(Path(audio))
    elif isinstance(audio, np.ndarray):
        wave, rate = audio, _check_rate(sample_rate, target_rate)
    else:
        raise InputError(f"recognize cannot take a {type(audio).__name__}",
                         fix="pass a WAV/FLAC/OGG path, or a float32/int16 numpy array with sample_rate")
    return resample(to_mono_float(wave), rate, target_rate)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file():
        raise InputError(f"no audio file at '{path}'", fix="check the path")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError for unreadable data
        raise InputError(f"cannot read '{path}' as audio: {e}",
                         fix="pass a WAV, FLAC or OGG file (anything libsndfile reads)") from None
    return wave, int(rate)


def _check_rate(sample_rate: Any, target_rate: int) -> int:
    if sample_rate is None:
        return target_rate  # an array without a rate is taken to be at the model's rate
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not 0 < sample_rate <= _MAX_RATE:
        raise InputError("sample_rate must be a positive integer number of Hz",
                         found=repr(sample_rate), fix=f"pass the array's rate, e.g. sample_rate={target_rate}")
    return int(sample_rate)


def to_mono_float(wave: np.ndarray) -> np.ndarray:
    """int16/float arrays, mono (n,) or stereo (n, channels) / (channels, n) -> float32 (n,)."""
    wave = np.asarray(wave)
    if wave.dtype == np.int16:
        wave = wave.astype(np.float32) / 32768.0
    elif wave.dtype == np.int32:
        wave = wave.astype(np.float32) / 2147483648.0
    elif not np.issubdtype(wave.dtype, np.floating):
        raise InputError("audio arrays must be float or int16", found=str(wave.dtype),
                         fix="pass float32 samples in [-1, 1] or int16 PCM")
    if wave.ndim == 2:
        # Channels are the short axis: (n, 2) from soundfile, (2, n) from other libraries.
        wave = wave.mean(axis=1 if wave.shape[1] <= wave.shape[0] else 0)
    if wave.ndim != 1:
        raise InputError("audio must be mono (n,) or multi-channel (n, channels)", found=f"shape {list(wave.shape)}")
    if wave.size == 0:
        raise InputError("the audio is empty", found="0 samples", fix="pass at least a few milliseconds of audio")
    if not np.all(np.isfinite(wave)):
        raise InputError("the audio contains NaN or infinite samples", fix="clean the waveform (np.nan_to_num)")
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample with soxr (high quality, the resampler of librosa and others)."""
    if rate == target:
        return wave
    import soxr

    return np.ascontiguousarray(soxr.resample(wave, rate, target, quality="HQ"), dtype=np.float32)


# ---------------------------------------------------------------- chunking and joining


@dataclass(frozen=True)
class Chunk:
    """A window of the waveform; `keep` is the span (seconds) this chunk is responsible for."""

    start: int  # sample index of the window in the whole waveform
    wave: np.ndarray
    keep_start: int  # samples into the window where its own (non-overlap) part starts
    keep_end: int


def chunks(wave: np.ndarray, window: int, stride: int) -> list[Chunk]:
    """Split into windows of `window` samples overlapping by `stride` on each inner side.

    Each sample belongs to exactly one chunk's keep span, so results joined by keep spans hold
    every word once.
    """
    if len(wave) <= window:
        return [Chunk(0, wave, 0, len(wave))]
    if not 0 <= 2 * stride < window:
        raise InputError("chunk overlap must be less than half the window", found=f"window {window}, stride {stride}")
    step = window - 2 * stride
    out = []
    for start in range(0, len(wave), step):
        lo = max(0, start - stride)
        hi = min(len(wave), start + step + stride)
        out.append(Chunk(lo, wave[lo:hi], start - lo, min(start + step, len(wave)) - lo))
        if start + step >= len(wave):
            break
    return out


def join_words(pieces: list[str], max_overlap: int = 16) -> str:
    """Join chunk transcripts, dropping the words repeated across an overlap.

    The longest suffix of the text so far equal to a prefix of the next piece (up to
    `max_overlap` words) is counted once.
    """
    words: list[str] = []
    for piece in pieces:
        new = piece.split()
        best = 0
        for k in range(min(max_overlap, len(words), len(new)), 0, -1):
            if [w.lower() for w in words[-k:]] == [w.lower() for w in new[:k]]:
                best = k
                break
        words.extend(new[best:])
    return " ".join(words)


# ---------------------------------------------------------------- features


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """wav2vec2's per-utterance zero mean, unit variance (Wav2Vec2FeatureExtractor, do_normalize)."""
    w = wave.astype(np.float32)
    return ((w - w.mean()) / np.sqrt(w.var() + 1e-7)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney: linear below 1 kHz, logarithmic above (librosa / transformers "slaney" scale).
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), f)


@lru_cache(maxsize=8)
def mel_filters(n_fft: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_fft//2+1, n_mels) Slaney-normalized triangular filters from 0 Hz to Nyquist."""
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]


def log_mel(wave: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """log10 mel power spectrogram (n_mels, frames), centered frames with reflect padding."""
    if len(wave) <= n_fft // 2:
        wave = np.pad(wave, (0, n_fft // 2 + 1 - len(wave)))  # reflect padding needs a few samples
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as torch.hann_window / transformers
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    mel = power @ mel_filters(n_fft, n_mels, sample_rate)
    return np.log10(np.maximum(mel, 1e-10)).T


def whisper_log_mel(wave: np.ndarray, n_mels: int = 80, n_samples: int = 480_000, n_fft: int = 400,
                    hop: int = 160, sample_rate: int = 16_000) -> np.ndarray:
    """WhisperFeatureExtractor on one waveform: pad/trim to 30 s -> (n_mels, n_samples // hop) float32."""
    wave = wave[:n_samples]
    wave = np.pad(wave, (0, n_samples - len(wave)))
    spec = log_mel(wave, sample_rate, n_fft, hop, n_mels)[:, :-1]
    spec = np.maximum(spec, spec.max() - 8.0)
    return ((spec + 4.0) / 4.0).astype(np.float32)


def is_silence(wave: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below `threshold_db` dBFS: nothing to transcribe."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return rms <= 10 ** (threshold_db / 20)
