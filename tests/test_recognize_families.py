"""CTC families beyond the plain waveform ones, each from the sweep's tiny saved folder.

SEW-D: its encoder pads an odd frame count back after upsampling (converters/squeezed_encoders.py);
the graph must answer lengths whose frame count is odd and even, neither traced with.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio


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
