"""Silero VAD on onnxruntime (edgekit/preprocess/vad.py) against the silero-vad package's own
`get_speech_timestamps` on its ONNX model, on espeak-ng speech (tests/data/speech) with silences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.real_speech import load_flac
from edgekit.errors import ConfigError
from edgekit.preprocess import vad

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    """The three utterances with a 0.3 s pause inside each pair and 1.5 s of silence between pairs,
    under -60 dBFS noise: short pauses the VAD must bridge, long ones it must cut at."""
    speech = [u.wave for u in load_flac(ROOT / "tests" / "data" / "speech")]
    gaps = (8_000, 4_800, 24_000, 4_800, 24_000, 4_800, 8_000)
    words = [speech[0], speech[0], speech[1], speech[1], speech[2], speech[2]]
    parts = [np.zeros(gaps[0], np.float32)]
    for w, g in zip(words, gaps[1:]):
        parts += [w, np.zeros(g, np.float32)]
    noise = np.random.default_rng(0).standard_normal(sum(map(len, parts))).astype(np.float32) * 1e-3
    return np.concatenate(parts) + noise


OPTIONS = [
    vad.VadOptions(),
    vad.VadOptions(threshold=0.3, min_silence_duration_ms=400, speech_pad_ms=200),  # bridges the 0.3 s pauses
    vad.VadOptions(max_speech_duration_s=3.0),  # long spans cut at their longest inner silence
    vad.VadOptions(max_speech_duration_s=3.0, use_max_poss_sil_at_max_speech=False),  # ... at the last one
    vad.VadOptions(max_speech_duration_s=0.8, min_speech_duration_ms=100),  # cut at the limit inside words
]


@pytest.fixture(scope="module")
def package_probs(wave: np.ndarray) -> list[float]:
    import torch
    from silero_vad import load_silero_vad

    # The same silero_vad.onnx through the package's OnnxWrapper, window by window as get_speech_timestamps runs it.
    return load_silero_vad(onnx=True).audio_forward(torch.from_numpy(wave), vad.RATE)[0].tolist()


def test_spans_equal_get_speech_timestamps(wave: np.ndarray) -> None:
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    ref = get_speech_timestamps(torch.from_numpy(wave), load_silero_vad(onnx=True))
    got = vad.detect(wave, vad.RATE, vad.VadOptions())
    assert [(s.start, s.end) for s in got] == [(d["start"], d["end"]) for d in ref]
    assert len(got) >= 3  # speech was found at all


def test_probabilities_equal_the_wrapper(wave: np.ndarray, package_probs: list[float]) -> None:
    assert vad.speech_probs(wave).tolist() == package_probs  # the same graph on the same inputs


@pytest.mark.parametrize("opts", OPTIONS[1:], ids=range(1, len(OPTIONS)))
def test_spans_equal_the_package_for_every_option(wave: np.ndarray, package_probs: list[float],
                                                  opts: vad.VadOptions) -> None:
    from silero_vad import get_speech_timestamps_from_probs

    # get_speech_timestamps is these probabilities through get_speech_timestamps_from_probs (utils_vad.py).
    ref = get_speech_timestamps_from_probs(package_probs, threshold=opts.threshold,
                                           min_speech_duration_ms=opts.min_speech_duration_ms,
                                           max_speech_duration_s=opts.max_speech_duration_s or float("inf"),
                                           min_silence_duration_ms=opts.min_silence_duration_ms,
                                           speech_pad_ms=opts.speech_pad_ms,
                                           min_silence_at_max_speech=opts.min_silence_at_max_speech_ms,
                                           use_max_poss_sil_at_max_speech=opts.use_max_poss_sil_at_max_speech,
                                           audio_length_samples=len(wave))
    got = vad.speech_spans(np.asarray(package_probs, np.float32), len(wave), opts)
    assert [(s.start, s.end) for s in got] == [(d["start"], d["end"]) for d in ref]
    assert len(got) >= 3


def test_default_spans_lie_on_the_speech(wave: np.ndarray) -> None:
    spans = vad.detect(wave, vad.RATE, vad.VadOptions())
    loud = np.flatnonzero(np.abs(wave) > 0.01)  # the speech; the noise is 1e-3 RMS
    inside = np.zeros(len(wave), bool)
    for s in spans:
        inside[s.start:s.end] = True
    assert inside[loud].mean() > 0.99 and inside.mean() < 0.9


def test_other_rates_map_back(wave: np.ndarray) -> None:
    from edgekit.preprocess.audio import resample

    at16 = vad.detect(wave, vad.RATE, vad.VadOptions())
    at8 = vad.detect(resample(wave, vad.RATE, 8_000), 8_000, vad.VadOptions())
    assert len(at8) == len(at16)
    # Resampling moves the probabilities a little; spans agree within a few 32 ms windows.
    assert all(abs(a.start * 2 - b.start) <= 4 * vad.WINDOW for a, b in zip(at8, at16))


def test_silence_has_no_spans() -> None:
    assert vad.detect(np.zeros(48_000, np.float32), vad.RATE, vad.VadOptions()) == []


@pytest.mark.parametrize("kw", [{"threshold": 1.5}, {"neg_threshold": 0.7}, {"speech_pad_ms": -1},
                                {"min_silence_duration_ms": 0.5}, {"max_speech_duration_s": 0.01}])
def test_bad_options_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        vad.VadOptions(**kw)  # type: ignore[arg-type]
