"""recognize with an audio-language model (a tiny Voxtral folder): the convert's parity, then the raw
waveform through edgekit's log-mel, audio graph, transcription prompt and cached decoder against
transformers' generate on the folder's feature extractor's features, and clear refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgekit
from audio_lm_models import check, save
from coverage_models import speech
from edgekit.errors import InputError, UnsupportedError

NEW = 12  # new tokens compared (the tiny model never writes eos)


@pytest.fixture(scope="module")
def voxtral(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("voxtral")
    folder = save("voxtral", root / "hf")
    edgekit.convert(folder, root / "art", strict=True)  # strict: fails unless parity holds
    return folder, root / "art"


def test_tokens_and_text_equal_transformers_from_the_waveform(voxtral: tuple[Path, Path]) -> None:
    folder, art = voxtral
    m = edgekit.load(art, device="cpu").artifact.manifest
    assert m.parity.passed and set(m.graphs) == {"audio", "model"} and m.parity.end_to_end.preprocess.passed
    assert m.parity.measures["identical_share"] == 1.0 and m.parity.measures["preprocess_max_abs"] <= 1e-4
    # 2.3 s: two of the tiny folder's 2 s windows, so two windows' rows merge in order; with and
    # without a language; recognize's text is that of transformers' tokens.
    assert check(folder, art, "fp32", NEW, [speech()[1]]) == ""


def test_refuses_what_it_cannot_do(voxtral: tuple[Path, Path]) -> None:
    asr = edgekit.load(voxtral[1], device="cpu")
    wave = speech()[0]
    for kw in ({"num_beams": 2}, {"return_timestamps": True}, {"task": "translate"}, {"word_timestamps": True}):
        with pytest.raises(UnsupportedError, match="takes no"):
            asr.recognize(wave, sample_rate=16000, **kw)
    c = asr.contract
    too_long = np.tile(wave, int((c.max_chunks + 1) * c.audio.chunk_length_s / 1.1) + 1)
    with pytest.raises(InputError, match="vad=True"):
        asr.recognize(too_long, sample_rate=16000, max_new_tokens=2)


def test_other_audio_language_models_are_refused_as_what_they_are(tmp_path: Path) -> None:
    from edgekit.converters.sources import Source
    from edgekit.converters.spec import ConvertOptions
    from edgekit.converters.specs import match

    config = {"model_type": "qwen3_asr", "architectures": ["Qwen3ASRForConditionalGeneration"], "audio_token_id": 5}
    src = Source("hf-folder", str(tmp_path), None, hf_dir=tmp_path, config=config)
    with pytest.raises(UnsupportedError, match="qwen3_asr audio-language model") as e:
        match(src, ConvertOptions())
    assert "voxtral" not in str(e.value).split("Fix")[0] and "['VoxtralForConditionalGeneration']" in str(e.value)
