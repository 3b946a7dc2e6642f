"""edgekit's CTC waveform front end against transformers' Wav2Vec2FeatureExtractor on synthetic audio.

Normalization on and off, odd lengths, quiet and loud signals; the extractor's attention mask is all
ones for the unpadded single chunks edgekit runs (so the graph sees the same values). A folder whose
extractor edgekit has no numpy port of is refused at convert (the filterbank ones:
tests/test_recognize_families.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract.recognize import Chunking, CtcSection
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.tasks.ctc import ctc_features


def _section(normalize: bool) -> CtcSection:
    return CtcSection(audio=Chunking(16000, 20.0, 2.0), features="waveform", normalize=normalize, n_fft=400,
                      hop_length=160, n_mels=80, input="input_values", vocabulary=("<pad>", "a"), blank_id=0,
                      word_delimiter="|", skip=())


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("seconds", "gain"), [(0.37, 1.0), (1.0, 0.001), (2.71, 30.0)])
def test_waveform_front_end_matches_the_extractor(normalize: bool, seconds: float, gain: float) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=True)
    wave = synthetic_audio(seconds, 16000, seed=int(seconds * 100)) * np.float32(gain)
    out = fe(wave, sampling_rate=16000, return_tensors="np")
    assert out["attention_mask"].all()  # unpadded: the mask changes nothing for the graph
    mine = ctc_features(wave, _section(normalize))
    assert mine.shape == out["input_values"][0].shape
    assert np.abs(mine - out["input_values"][0]).max() <= 1e-4


def test_other_feature_extractors_are_refused(tmp_path: Path) -> None:
    import edgekit
    from edgekit.errors import UnsupportedError

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2"}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "SpeechT5FeatureExtractor", "sampling_rate": 16000}))
    with pytest.raises(UnsupportedError, match="SpeechT5FeatureExtractor"):
        edgekit.convert(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(("seconds", "gain", "mels"), [(0.37, 1.0, 80), (2.71, 30.0, 40)])
def test_speech2text_fbank_matches_the_extractor(seconds: float, gain: float, mels: int) -> None:
    from transformers import Speech2TextFeatureExtractor

    from edgekit.preprocess.filterbank import speech2text_fbank

    fe = Speech2TextFeatureExtractor(feature_size=mels, num_mel_bins=mels)
    wave = synthetic_audio(seconds, 16000, seed=int(seconds * 100)) * np.float32(gain)
    theirs = fe(wave, sampling_rate=16000, return_tensors="np")["input_features"][0]
    mine = speech2text_fbank(wave, 16000, mels)
    assert mine.shape == theirs.shape and np.abs(mine - theirs).max() <= 1e-4
