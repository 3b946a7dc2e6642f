"""recognize with speech encoder-decoders other than Whisper: tiny random Moonshine (the waveform in,
rotary decoder) and Speech2Text (Kaldi fbank features in, sinusoidal positions) folders, converted,
their tokens against transformers' generate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.errors import UnsupportedError


def _built(factory: pytest.TempPathFactory, family: str) -> tuple[Path, Path]:
    from coverage_models import save_folder

    root = factory.mktemp(family)
    folder = save_folder("recognize", family, root / "hf")
    edgekit.convert(folder, root / "art")
    return folder, root / "art"


@pytest.fixture(scope="module")
def moonshine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _built(tmp_path_factory, "moonshine")


def test_speech2text_tokens_equal_transformers_generate(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = _built(tmp_path_factory, "speech_to_text")
    m = edgekit.load(art, device="cpu")
    assert m.manifest.parity.passed and m.manifest.parity.measures["identical_share"] == 1.0
    assert m.manifest.parity.end_to_end.preprocess.passed and m.contract.features == "speech2text-fbank"
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"]
    for beams in (1, 3):
        with torch.inference_mode():
            want = hf.generate(x, max_new_tokens=16, num_beams=beams, do_sample=False)[0].tolist()
        assert m.decode_tokens(m.features(wave), max_new_tokens=16, num_beams=beams) == want
        assert len(set(want)) > 2


def _hf(folder: Path) -> Any:
    from transformers import AutoModelForSpeechSeq2Seq

    return AutoModelForSpeechSeq2Seq.from_pretrained(folder).eval()


def test_moonshine_convert_gate_is_exact(moonshine: tuple[Path, Path]) -> None:
    m = edgekit.load(moonshine[1], device="cpu")
    r = m.manifest.parity
    assert r.passed and r.measures["identical_share"] == 1.0 and r.measures["token_agreement"] == 1.0
    assert r.end_to_end.preprocess.passed and m.manifest.family == "moonshine"
    assert type(m).__name__ == "SpeechSeq2SeqRecognizer" and set(m.runners) == {"encoder", "decoder"}


@pytest.mark.parametrize("beams", [1, 3])
def test_moonshine_tokens_equal_transformers_generate(moonshine: tuple[Path, Path], beams: int) -> None:
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    m = edgekit.load(art, device="cpu")
    wave = synthetic_audio(1.7, 16000, 9)  # a length not traced with
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        want = hf.generate(x, max_new_tokens=16, num_beams=beams, do_sample=False)[0].tolist()
    got = m.decode_tokens(m.features(wave), max_new_tokens=16, num_beams=beams)
    assert got == want and len(set(want)) > 2  # a model that repeats one token could not tell two apart
    if beams == 1:
        assert m.recognize(wave, max_new_tokens=16).text == m.decode_text(want) != ""


def test_moonshine_refuses_whisper_options(moonshine: tuple[Path, Path]) -> None:
    m = edgekit.load(moonshine[1], device="cpu")
    with pytest.raises(UnsupportedError, match="language"):
        m.recognize(np.zeros(16000, np.float32) + 0.1, language="en")
    with pytest.raises(UnsupportedError, match="recognize_stream needs timestamp tokens"):
        m.recognize_stream([np.zeros(16000, np.float32)])
