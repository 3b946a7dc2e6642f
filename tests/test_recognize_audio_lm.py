"""recognize with an audio-language model (a tiny Voxtral folder): the convert's parity, then the raw
waveform through edgekit's log-mel, audio graph, transcription prompt and cached decoder against
transformers' generate on the folder's feature extractor's features, and clear refusals."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import edgekit
from audio_lm_models import check, save
from coverage_models import speech
from edgekit.errors import InputError, SourceError, UnsupportedError

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
    bare = voxtral[0].parent / "no-tokenizer"
    shutil.copytree(voxtral[0], bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(SourceError, match="no tokenizer.json"):
        edgekit.convert(bare, bare.parent / "no-tokenizer-art")
    c = asr.contract
    too_long = np.tile(wave, int((c.max_chunks + 1) * c.audio.chunk_length_s / 1.1) + 1)
    with pytest.raises(InputError, match="vad=True"):
        asr.recognize(too_long, sample_rate=16000, max_new_tokens=2)


def test_other_audio_language_models_are_refused_as_what_they_are(tmp_path: Path) -> None:
    from edgekit.converters.sources import Source
    from edgekit.converters.spec import ConvertOptions
    from edgekit.converters.specs import match

    config = {"model_type": "granite_speech", "architectures": ["GraniteSpeechForConditionalGeneration"],
              "audio_token_index": 5}
    src = Source("hf-folder", str(tmp_path), None, hf_dir=tmp_path, config=config)
    with pytest.raises(UnsupportedError, match="granite_speech audio-language model") as e:
        match(src, ConvertOptions())
    assert "'VoxtralForConditionalGeneration'" in str(e.value).split("Fix")[1]


def test_qwen3_asr_windowed_encoder_rewrite_equals_transformers(tmp_path: Path) -> None:
    """Qwen3-ASR's encoder packs real frames with a data-dependent shape and attends per window; the
    traceable rewrite keeps every chunk's positions and masks: its kept rows equal transformers' on
    recordings of one partial chunk, whole windows, and several windows with a partial last chunk."""
    import torch
    from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

    from edgekit.converters.audio_lm_encoders import Qwen3AsrWindows
    from edgekit.tasks.audio_lm import conv_rows

    folder = save("qwen3_asr", tmp_path / "hf")
    proc = AutoProcessor.from_pretrained(folder)
    hf = Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    ours = Qwen3AsrWindows(hf).eval()
    rng = np.random.default_rng(0)
    for seconds in (0.3, 2.0, 5.7):  # tiny windows are 2 chunks of 1 s: 1 partial, 1 whole, 3 windows
        inputs = proc.apply_transcription_request(rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1)
        feats, real = inputs["input_features"], int(inputs["input_features_mask"].sum())
        chunks = feats.shape[-1] // 100
        rows = [conv_rows(min(max(real - 100 * c, 0), 100)) for c in range(chunks)]
        mask = torch.tensor([[int(t < n) for t in range(conv_rows(100))] for n in rows])
        with torch.no_grad():
            want = hf.get_audio_features(feats, inputs["input_features_mask"]).pooler_output
            got = ours(feats[0].reshape(128, chunks, 100).permute(1, 0, 2), mask)[mask.reshape(-1) > 0]
        assert got.shape == want.shape == (int((inputs["input_ids"] == hf.config.audio_token_id).sum()), want.shape[1])
        # Same float32 arithmetic in another order (one masked attention per window vs one call each):
        # measured 2e-9 on outputs of scale ~1.
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
