"""recognize with Whisper: encoder + cached decoder graphs, greedy tokens identical to transformers."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.recognize import hf_whisper_tokens, synthetic_audio
from edgekit.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "speech"))
from tiny_whisper import make_tiny_whisper  # noqa: E402


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="session")
def whisper_fp32(whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("art") / "whisper-fp32"
    edgekit.convert(whisper_dir, out)
    return out


@pytest.fixture(scope="session")
def hf_model(whisper_dir: Path) -> Any:
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()


def test_fp32_convert_gate_is_exact_token_parity(whisper_fp32: Path) -> None:
    m = edgekit.load(whisper_fp32, device="cpu")
    r = m.manifest.parity
    assert r["passed"] and r["token_agreement"] == 1.0 and r["identical_sequences"] == r["samples"]
    assert set(m.runners) == {"encoder", "decoder"}
    names = [t.name for t in m.runners["decoder"].inputs]
    assert names[0] == "input_ids" and "past_key_0" in names and "cross_value_1" in names
    # Cross-attention K/V come from the encoder graph, once per utterance; the decoder has no encoder input.
    assert "input_features" not in names


@pytest.mark.parametrize("language,timestamps", [("de", True), (None, False)])  # ("en", False): the convert gate
def test_tokens_identical_to_transformers_generate(whisper_fp32: Path, hf_model: Any, language: str | None,
                                                   timestamps: bool) -> None:
    import torch

    m = edgekit.load(whisper_fp32, device="cpu")
    feats = m.features(synthetic_audio(2.4, 16000, 21))
    kw = {"language": language} if language else {}
    ref = hf_whisper_tokens(hf_model, torch.from_numpy(feats)[None], return_timestamps=timestamps, **kw)
    got = m.greedy_tokens(feats, language=language, timestamps=timestamps)
    assert got == ref  # the whole output, up to max_length (448) or <|endoftext|>
    assert len(got) > 20


def test_recognize_transcript_fields(whisper_fp32: Path) -> None:
    m = edgekit.load(whisper_fp32, device="cpu")
    t = m.recognize(synthetic_audio(3.0, 16000, 4), language="en", max_new_tokens=20)
    assert t.language == "en" and t.text and t.segments[0].start == 0.0
    ts = m.recognize(synthetic_audio(3.0, 16000, 4), language="en", return_timestamps=True, max_new_tokens=40)
    assert all(0.0 <= s.start <= s.end for s in ts.segments)
    detected = m.recognize(synthetic_audio(3.0, 16000, 4), max_new_tokens=4)
    assert detected.language in ("en", "de", "fr")
    assert m.recognize(np.zeros(16000 * 2, np.float32)).text == ""  # silence: empty, not an error
    with pytest.raises(InputError, match="unknown language"):
        m.recognize(synthetic_audio(1.0, 16000, 1), language="xx")
    with pytest.raises(InputError, match="unknown Whisper task"):
        m.recognize(synthetic_audio(1.0, 16000, 1), language="en", task="summarize")


def test_long_audio_chunks_have_offsets(whisper_fp32: Path) -> None:
    m = edgekit.load(whisper_fp32, device="cpu")
    wave = synthetic_audio(45.0, 16000, 8)  # longer than the 30 s window: windows at 0, 15 and 35 s
    t = m.recognize(wave, language="en", max_new_tokens=6)
    # Without timestamps, one segment per window over the span it owns (overlaps are context only).
    assert [(s.start, s.end) for s in t.segments] == [(0.0, 20.0), (20.0, 40.0), (40.0, 45.0)]
    assert t.text.split()[: len(t.segments[0].text.split())] == t.segments[0].text.split()


def test_int8_reports_token_agreement_and_wer(whisper_dir: Path, tmp_path: Path) -> None:
    art = edgekit.convert(whisper_dir, tmp_path / "int8", precision="int8", strict=False)
    r = art.manifest.parity
    assert art.manifest.precision["method"] == "dynamic"
    assert 0.0 <= r["token_agreement"] <= 1.0 and r["wer_vs_pytorch"] >= 0.0
    assert "WER vs PyTorch" in r["summary"]
    m = edgekit.load(art.path, device="cpu")
    assert isinstance(m.recognize(synthetic_audio(2.0, 16000, 3), language="en", max_new_tokens=8).text, str)
