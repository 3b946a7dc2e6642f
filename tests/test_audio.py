"""edgekit.audio: loading, checks, resampling, chunking and features against transformers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekit.preprocess.audio import (chunks, is_silence, join_words, load_audio, normalize_wave, resample,
                           whisper_log_mel)
from edgekit.errors import InputError


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_load_file_formats_stereo_to_mono_and_resample(tmp_path: Path, fmt: str, subtype: str) -> None:
    left = _tone(0.5, 22050)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, stereo, 22050, format=fmt, subtype=subtype)
    wave = load_audio(path, None, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 8000) <= 2
    # A 440 Hz tone stays a 440 Hz tone after resampling.
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 5


def test_int16_and_channels_first_arrays() -> None:
    tone = _tone(0.25, 16000)
    as_int = (tone * 32767).astype(np.int16)
    got = load_audio(as_int, 16000, 16000)
    assert np.abs(got - tone).max() < 1e-3
    channels_first = np.stack([tone, tone])  # (2, n)
    assert load_audio(channels_first, 16000, 16000).shape == tone.shape


def test_resample_matches_length_and_tone() -> None:
    wave = resample(_tone(1.0, 48000), 48000, 16000)
    assert len(wave) == 16000
    assert abs(np.argmax(np.abs(np.fft.rfft(wave))) - 440) <= 1


@pytest.mark.parametrize("bad,match", [
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.0, np.nan], np.float32), "NaN"),
    (np.zeros((2, 2, 2), np.float32), "mono"),
    (np.array(["a"]), "float or int16"),
])
def test_bad_arrays_raise_input_error(bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_audio(bad, 16000, 16000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16k", True])
def test_bad_sample_rate(rate: object) -> None:
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32), rate, 16000)  # type: ignore[arg-type]


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio")
    with pytest.raises(InputError, match="cannot read"):
        load_audio(junk, None, 16000)
    with pytest.raises(InputError, match="no audio file"):
        load_audio(tmp_path / "missing.wav", None, 16000)
    with pytest.raises(InputError, match="sample_rate is only for arrays"):
        load_audio(junk, 8000, 16000)


def test_whisper_log_mel_matches_transformers() -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    for seconds in (0.7, 7.0, 31.0):  # shorter than, and longer than, the 30 s window
        wave = (_tone(seconds, 16000, 300) * 0.5 + rng.standard_normal(int(seconds * 16000)) * 0.05).astype(np.float32)
        ref = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000, return_tensors="np").input_features[0]
        got = whisper_log_mel(wave)
        assert got.shape == ref.shape == (80, 3000)
        assert np.abs(got - ref).max() < 1e-4  # the stated tolerance (measured: ~6e-6)


def test_wav2vec2_normalization_matches_transformers() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    wave = _tone(0.5, 16000) + 0.1
    ref = Wav2Vec2FeatureExtractor(do_normalize=True)(wave, sampling_rate=16000, return_tensors="np").input_values[0]
    assert np.abs(normalize_wave(wave) - ref).max() < 1e-5


def test_chunks_cover_every_sample_once() -> None:
    wave = np.arange(100_000, dtype=np.float32)
    parts = chunks(wave, window=30_000, stride=5_000)
    kept = np.concatenate([c.wave[c.keep_start : c.keep_end] for c in parts])
    assert np.array_equal(kept, wave)
    assert all(len(c.wave) <= 30_000 for c in parts)
    assert len(chunks(wave[:1000], 30_000, 5_000)) == 1


def test_join_words_drops_overlap_duplicates() -> None:
    assert join_words(["one two three four", "three four five six", "six seven"]) == \
        "one two three four five six seven"
    assert join_words(["a b", "c d"]) == "a b c d"
    assert join_words(["", "x"]) == "x"


def test_silence_detection() -> None:
    assert is_silence(np.zeros(16000, np.float32))
    assert is_silence(np.full(16000, 1e-5, np.float32))
    assert not is_silence(_tone(0.1, 16000))
