"""CTC families beyond the plain waveform ones, each from the sweep's tiny saved folder.

The filterbank front ends (edgekit/preprocess/filterbank.py, numpy only) against transformers' own
extractors on waveforms of odd lengths, features and frame mask; then one family end to end (raw
waveform -> transcript equal to transformers' pipeline). SEW-D: its encoder pads an odd frame count
back after upsampling (converters/squeezed_encoders.py); the graph must answer lengths whose frame
count is odd and even, neither traced with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.contract.recognize import Chunking, CtcSection
from edgekit.converters.specs.ctc import PREPROCESS_MAX_ABS, front_end, synthetic_audio
from edgekit.tasks.ctc import ctc_inputs

LENGTHS = (1601, 4001, 17123, 36811)  # odd sample counts: odd and even frame counts, partial hops


def _extractor(kind: str) -> Any:
    import transformers

    return {"ParakeetFeatureExtractor": lambda: transformers.ParakeetFeatureExtractor(feature_size=80),
            "LasrFeatureExtractor": lambda: transformers.LasrFeatureExtractor(feature_size=128),
            "SeamlessM4TFeatureExtractor": lambda: transformers.SeamlessM4TFeatureExtractor()}[kind]()


@pytest.mark.parametrize("kind", ["ParakeetFeatureExtractor", "LasrFeatureExtractor", "SeamlessM4TFeatureExtractor"])
def test_filterbank_front_ends_match_the_extractors(kind: str) -> None:
    fe = _extractor(kind)
    front = front_end(kind, fe.to_dict())
    c = CtcSection(audio=Chunking(16000, 20.0, 2.0), vocabulary=("<pad>", "a"), blank_id=0, word_delimiter="|",
                   skip=(), **front.section_fields())
    for i, n in enumerate(LENGTHS):
        wave = synthetic_audio(n / 16000, 16000, seed=n) * np.float32((0.01, 4.0)[i % 2])  # quiet and loud
        theirs = fe(wave, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
        mine = ctc_inputs(wave, c)
        assert mine[c.input].shape == theirs["input_features"].shape
        assert np.abs(mine[c.input] - theirs["input_features"]).max() <= PREPROCESS_MAX_ABS[c.features]
        assert c.mask is not None and (mine[c.mask].astype(bool) == theirs["attention_mask"].astype(bool)).all()


def test_parakeet_from_waveform_to_the_pipelines_transcript(tmp_path: Path) -> None:
    """Parakeet: its last frame is padding, masked in the graph as the extractor masks it."""
    from coverage_models import _check_ctc, save_folder

    folder = save_folder("recognize", "parakeet_ctc", tmp_path / "hf")
    edgekit.convert(folder, tmp_path / "art")
    report = edgekit.load(tmp_path / "art", device="cpu").manifest.parity
    assert report.passed and report.measures["frame_agreement"] == 1.0
    assert report.end_to_end is not None and report.end_to_end.preprocess is not None
    assert "ParakeetFeatureExtractor" in report.end_to_end.preprocess.summary
    assert edgekit.load(tmp_path / "art", device="cpu").contract.mask == "attention_mask"
    assert _check_ctc(folder, tmp_path / "art", "fp32") == ""


@pytest.fixture(scope="module")
def sew_d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from coverage_models import save_folder

    folder = save_folder("recognize", "sew-d", tmp_path_factory.mktemp("hf") / "sew-d")
    out = tmp_path_factory.mktemp("art") / "sew-d"
    edgekit.convert(folder, out)
    return folder, out


def _frames(samples: int) -> int:
    # The sweep's tiny feature encoder: kernels (10, 8, 8), strides (5, 4, 4).
    for kernel, stride in ((10, 5), (8, 4), (8, 4)):
        samples = (samples - kernel) // stride + 1
    return samples


def test_sew_d_answers_odd_and_even_frame_counts(sew_d: tuple[Path, Path]) -> None:
    import torch
    from transformers import AutoModelForCTC

    folder, art = sew_d
    model = AutoModelForCTC.from_pretrained(folder).eval()
    asr = edgekit.load(art, device="cpu")
    lengths = (16100, 16180, 23999)  # 199, 200 and 298 frames; traced with 16000
    assert {_frames(n) % 2 for n in lengths} == {0, 1}
    for n in lengths:
        wave = synthetic_audio(n / 16000, 16000, seed=n)[None]
        wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        with torch.inference_mode():
            want = model(torch.from_numpy(wave)).logits.numpy()
        got = asr.runners["model"].run({"input_values": wave})["logits"]
        assert got.shape == want.shape
        # fp32: onnxruntime's and PyTorch's kernels round differently, ~1e-5 of the largest logit
        # through the 3 convolutions and 2 layers (float32 epsilon 1.2e-7 per operation).
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
        assert (got.argmax(-1) == want.argmax(-1)).all()
