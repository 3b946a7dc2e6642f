"""Filterbank front ends of CTC models that take features, not the waveform: numpy only.

Each returns (features (frames, width) float32, valid frames): the frames past `valid` are the
extractor's padding, masked by its attention mask (the graph is fed the same mask).

- `parakeet_fbank`: transformers.ParakeetFeatureExtractor (pre-emphasis, centered zero-padded STFT
  with a symmetric Hann window inside the FFT, Slaney mel, log(x + 2^-24), per-mel normalization over
  the valid frames with the unbiased variance; the last frame is padding).
- `lasr_fbank`: transformers.LasrFeatureExtractor (float64 frames of `win_length` every hop, a
  symmetric Hann window, FFT of `n_fft` points, Kaldi-scale mel 125-7500 Hz without the DC bin,
  log of max(x, 1e-5)).
- `kaldi_fbank_stacked`: transformers.SeamlessM4TFeatureExtractor (wav2vec2-BERT): 16-bit scaled
  samples, per frame DC removal, pre-emphasis, Povey window, Kaldi mel triangles in mel space, log of
  max(x, float32 epsilon), per-mel normalization, an odd frame count padded with one zero frame, then
  `stride` frames stacked into one (its mask keeps the stacked frames whose second source frame is real).
- `speech2text_fbank`: transformers.Speech2TextFeatureExtractor's numpy path (the same Kaldi log mel,
  then utterance CMVN).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgekit.errors import InputError
from edgekit.preprocess.audio import mel_filters


def _kaldi_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _frames(wave: np.ndarray, length: int, hop: int) -> np.ndarray:
    if len(wave) < length:
        raise InputError("the audio is shorter than one analysis frame", found=f"{len(wave)} samples, frames of {length}",
                         fix="pass at least 0.1 s of audio")
    count = 1 + (len(wave) - length) // hop
    return wave[np.arange(length)[None, :] + hop * np.arange(count)[:, None]]


def _normalize(x: np.ndarray, valid: int, eps: float) -> np.ndarray:
    """Per-mel zero mean, unit (unbiased) standard deviation over the first `valid` frames."""
    mean = x[:valid].mean(0, keepdims=True)
    std = np.sqrt(((x[:valid] - mean) ** 2).sum(0, keepdims=True) / max(valid - 1, 1))
    return (x - mean) / (std + eps)


def parakeet_fbank(wave: np.ndarray, rate: int, n_fft: int, win_length: int, hop: int, n_mels: int,
                   preemphasis: float) -> tuple[np.ndarray, int]:
    x = wave.astype(np.float32)
    if preemphasis:
        x = np.concatenate([x[:1], x[1:] - np.float32(preemphasis) * x[:-1]])
    # float32 throughout, as torch.stft computes it: float64 differs by up to 1.6e-4 after normalization.
    padded = np.pad(x, n_fft // 2)  # torch.stft(center=True, pad_mode="constant")
    window = np.zeros(n_fft, np.float32)
    left = (n_fft - win_length) // 2
    window[left:left + win_length] = np.hanning(win_length)  # hann_window(periodic=False), centered
    spec = np.fft.rfft(_frames(padded, n_fft, hop) * window, axis=1)
    power = np.sqrt(spec.real ** 2 + spec.imag ** 2) ** 2
    feats = np.log(power @ mel_filters(n_fft, n_mels, rate).astype(np.float32) + np.float32(2.0 ** -24))
    valid = (len(wave) + n_fft // 2 * 2 - n_fft) // hop
    feats = _normalize(feats, valid, 1e-5)
    feats[valid:] = 0.0
    return feats.astype(np.float32), valid


@lru_cache(maxsize=4)
def _lasr_filters(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)[1:]  # the DC bin gets no weight
    mel = _kaldi_mel(bins)[:, None]
    edges = np.linspace(_kaldi_mel(125.0), _kaldi_mel(7500.0), n_mels + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    weights = np.maximum(0.0, np.minimum((mel - lower) / (center - lower), (upper - mel) / (upper - center)))
    return np.pad(weights, ((1, 0), (0, 0)))


def lasr_fbank(wave: np.ndarray, rate: int, n_fft: int, win_length: int, hop: int,
               n_mels: int) -> tuple[np.ndarray, int]:
    frames = _frames(wave.astype(np.float32).astype(np.float64), win_length, hop)
    power = np.abs(np.fft.rfft(frames * np.hanning(win_length), n=n_fft, axis=1)) ** 2
    feats = np.log(np.maximum(power @ _lasr_filters(n_fft, n_mels, rate), 1e-5))
    return feats.astype(np.float32), len(feats)


@lru_cache(maxsize=4)
def _kaldi_filters(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    edges = np.linspace(_kaldi_mel(20.0), _kaldi_mel(rate // 2), n_mels + 2)
    bins = _kaldi_mel(rate / n_fft * np.arange(n_fft // 2 + 1))
    slopes = edges[None, :] - bins[:, None]
    down, up = -slopes[:, :-2] / np.diff(edges)[:-1], slopes[:, 2:] / np.diff(edges)[1:]
    return np.maximum(0.0, np.minimum(down, up))


def kaldi_log_mel(wave: np.ndarray, rate: int, n_mels: int) -> np.ndarray:
    """(frames, n_mels) float32: transformers' numpy Kaldi fbank (spectrogram(..., remove_dc_offset=True,
    preemphasis=0.97, povey window, 512-point FFT, log mel floored at float32 epsilon)), unnormalized."""
    frames = _frames(wave.astype(np.float32).astype(np.float64) * 2 ** 15, 400, 160)
    frames = frames - frames.mean(1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    window = np.hanning(400) ** 0.85  # Povey
    spec = np.fft.rfft(frames * window, n=512, axis=1).astype(np.complex64)  # as transformers stores it
    power = np.abs(spec, dtype=np.float64) ** 2
    return np.log(np.maximum(power @ _kaldi_filters(512, n_mels, rate), 1.192092955078125e-07)).astype(np.float32)


def speech2text_fbank(wave: np.ndarray, rate: int, n_mels: int) -> np.ndarray:
    """transformers.Speech2TextFeatureExtractor without torchaudio: Kaldi log mel, then utterance CMVN
    (per-mel zero mean and unit population standard deviation over the utterance)."""
    feats = kaldi_log_mel(wave, rate, n_mels)
    feats = feats - feats.mean(0)
    return (feats / feats.std(0)).astype(np.float32)


def kaldi_fbank_stacked(wave: np.ndarray, rate: int, n_mels: int, stride: int) -> tuple[np.ndarray, int]:
    feats = kaldi_log_mel(wave, rate, n_mels)
    count = len(feats)
    feats = (feats - feats.mean(0, keepdims=True)) / np.sqrt(feats.var(0, ddof=1, keepdims=True) + 1e-7)
    feats = np.concatenate([feats, np.zeros((count % 2, n_mels), np.float32)])  # pad_to_multiple_of=2
    feats = feats[: len(feats) - len(feats) % stride]
    # The extractor keeps mask[i] for i % stride == 1: stacked frame j counts when frame j*stride + 1 is real.
    return feats.reshape(-1, n_mels * stride), -(-(count - 1) // stride)
