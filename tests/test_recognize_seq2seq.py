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


@pytest.mark.parametrize("beams", [1, 3])
def test_forced_eos_ends_a_full_length_decode_as_transformers(moonshine: tuple[Path, Path], beams: int,
                                                             tmp_path: Path) -> None:
    """generation_config.forced_eos_token_id (mBART decoders of SpeechEncoderDecoderModel checkpoints):
    transformers makes it the only token at the last position; the artifact's contract carries it."""
    import torch
    from transformers import AutoFeatureExtractor

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    if beams == 1:  # the decode reaches its length without eos of its own
        m = edgekit.load(art, device="cpu")
        free = m.decode_tokens(m.features(wave), max_new_tokens=6)
        assert len(free) == 7 and free[-1] != 2
    m = edgekit.load(_with_contract(art, tmp_path, forced_eos_token_id=2), device="cpu")  # as an mBART decoder's
    with torch.inference_mode():
        want = hf.generate(x, max_new_tokens=6, num_beams=beams, do_sample=False, forced_eos_token_id=2)[0].tolist()
    assert m.decode_tokens(m.features(wave), max_new_tokens=6, num_beams=beams) == want and want[-1] == 2


def test_target_language_prompt_as_transformers(moonshine: tuple[Path, Path], tmp_path: Path) -> None:
    """SeamlessM4T's text_decoder_lang_to_code_id: language="eng" (or "__eng__") decodes from [start, eng],
    as generate(tgt_lang="eng") feeds [[eng]] and transformers puts the start token before it."""
    import torch
    from transformers import AutoFeatureExtractor

    from edgekit.errors import InputError

    folder, art = moonshine
    hf, fe = _hf(folder), AutoFeatureExtractor.from_pretrained(folder)
    m = edgekit.load(_with_contract(art, tmp_path, lang_to_id={"eng": 20, "fra": 21}), device="cpu")  # a Seamless's
    wave = synthetic_audio(1.7, 16000, 9)
    x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        want = hf.generate(x, decoder_input_ids=torch.tensor([[20]]), max_new_tokens=8, do_sample=False)[0].tolist()
    assert want[:2] == [1, 20] and m.decode_tokens(m.features(wave), "__eng__", max_new_tokens=8) == want
    assert m.recognize(wave, language="eng", max_new_tokens=8).text == m.decode_text(want)
    with pytest.raises(InputError, match="fra"):
        m.recognize(wave, language="deu")


def _with_contract(art: Path, tmp: Path, **changes: Any) -> Path:
    """A copy of the artifact whose contract differs by `changes` (what a folder with those generation
    settings converts to; the graphs are the same)."""
    import dataclasses
    import shutil

    from edgekit.manifest import Manifest

    out = tmp / "art"
    shutil.copytree(art, out)
    man = Manifest.load(out)
    dataclasses.replace(man, contract=dataclasses.replace(man.contract, **changes)).save(out)
    return out


def test_cohere_front_end_is_its_extractor_without_dither() -> None:
    """edgekit's convention for CohereAsrFeatureExtractor: its features and frame mask at dither=0.0 (the
    extractor's 1e-5 dither is seeded noise from torch's generator; edgekit's front end adds none)."""
    from transformers import CohereAsrFeatureExtractor

    from edgekit.converters.specs.speech_seq2seq import _front_end
    from edgekit.preprocess.filterbank import parakeet_fbank

    saved = {"feature_extractor_type": "CohereAsrFeatureExtractor", "dither": 1e-5}  # as checkpoints ship it
    assert _front_end("folder", "cohere_asr", saved)[2] == "parakeet-fbank"
    wave = synthetic_audio(1.37, 16000, 4)  # not a whole number of hops
    mine, valid = parakeet_fbank(wave, 16000, 512, 400, 160, 32, 0.97)
    for dither, limit in ((0.0, 1e-3), (1e-5, None)):
        out = CohereAsrFeatureExtractor(feature_size=32, dither=dither)(wave, sampling_rate=16000, return_tensors="np")
        assert ((np.arange(len(mine)) < valid) == out["attention_mask"][0]).all() and valid == len(mine) - 1
        # PREPROCESS_MAX_ABS["parakeet-fbank"]: torch.stft's float32 rounding in the quietest bands.
        worst = float(np.abs(out["input_features"][0] - mine).max())
        assert worst <= limit if limit is not None else worst > 1e-3  # the dither moves the quiet bands
