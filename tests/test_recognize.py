"""recognize with CTC models: a Hugging Face Wav2Vec2ForCTC folder and a plain nn.Module."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.errors import ConfigError, InputError
from edgekit.tasks.ctc import ctc_decode
from edgekit.tasks.recognizer import word_error_rate
from edgekit.results import Transcript

@pytest.fixture(scope="session")
def w2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reliability_models import w2v_folder

    return w2v_folder(tmp_path_factory)  # the tiny random Wav2Vec2-CTC folder the reliability tests share


@pytest.fixture(scope="session")
def w2v_fp32(w2v_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reliability_models import converted_w2v

    return converted_w2v(tmp_path_factory)  # w2v_dir at fp32, converted once per session (bench, fuzz)


def test_hf_ctc_fp32_parity_is_exact(w2v_fp32: Path) -> None:
    m = edgekit.load(w2v_fp32, device="cpu")
    report = m.manifest.parity
    assert report.passed and report.measures["frame_agreement"] == 1.0
    assert report.outputs["logits"]["max_abs"] < 1e-3
    assert m.manifest.family == "wav2vec2" and set(m.runners) == {"model"}
    # No per-layer mask select over (batch, heads, frames, frames): the export uses eager attention.
    import onnx

    graph = onnx.load(str(w2v_fp32 / m.manifest.graphs["model"].file), load_external_data=False).graph
    assert sum(n.op_type == "Where" for n in graph.node) <= 1


def test_hf_ctc_ids_and_text_match_transformers(w2v_dir: Path, w2v_fp32: Path) -> None:
    import torch
    from transformers import AutoProcessor, Wav2Vec2ForCTC

    hf = Wav2Vec2ForCTC.from_pretrained(w2v_dir).eval()
    proc = AutoProcessor.from_pretrained(w2v_dir)
    m = edgekit.load(w2v_fp32, device="cpu")
    wave = synthetic_audio(2.7, 16000, 7)  # a length not traced with
    inputs = proc(wave, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        ref_ids = hf(inputs.input_values).logits.argmax(-1)[0].numpy()
    feats = m.runners["model"].run({"input_values": inputs.input_values.numpy()})
    assert np.array_equal(feats["logits"].argmax(-1)[0], ref_ids)
    text = m.recognize(wave).text
    ref_text = proc.batch_decode(ref_ids[None])[0]
    assert text == " ".join(ref_text.split())


def test_recognize_inputs(w2v_fp32: Path, tmp_path: Path) -> None:
    m = edgekit.load(w2v_fp32, device="cpu")
    wave = synthetic_audio(1.5, 16000, 3)
    t = m.recognize(wave)
    assert isinstance(t, Transcript)
    # Same audio as a 44.1 kHz stereo file and as int16 at 8 kHz: resampled, then transcribed.
    import soxr

    stereo = np.stack([soxr.resample(wave, 16000, 44100)] * 2, axis=1)
    sf.write(tmp_path / "a.flac", stereo, 44100)
    from_file = m.recognize(tmp_path / "a.flac")
    # The file's two channels mixed and brought back to 16 kHz (soxr, high quality), then the model:
    # the same transcript exactly. (Its WER against `t` says nothing: a random model's transcript is
    # one long "word" that any resampling difference changes.)
    mono = sf.read(tmp_path / "a.flac", dtype="float32")[0].mean(axis=1)
    assert from_file.text == m.recognize(soxr.resample(mono, 44100, 16000, quality="HQ")).text
    assert m.recognize(np.zeros(16000, np.float32)).text == ""  # silence: empty, not an error
    for bad in (np.zeros(0, np.float32), np.full(100, np.nan, np.float32)):
        with pytest.raises(InputError):
            m.recognize(bad)
    with pytest.raises(InputError, match="sample_rate"):
        m.recognize(wave, sample_rate=-5)
    with pytest.raises(edgekit.EdgekitError, match="num_beams"):  # Whisper's option, refused by name
        m.recognize(wave, num_beams=3)


class _BurstCTC:
    """A hand-made CTC model: 'a' while the frame is loud, a word break while it is quiet."""

    def __new__(cls) -> Any:
        import torch

        class Burst(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                level = torch.nn.functional.avg_pool1d(x.abs()[:, None], 400, stride=160)[:, 0]
                return torch.stack([torch.zeros_like(level), 10 * (0.02 - level), 10 * (level - 0.05)], -1)

        return Burst().eval()


def _bursts(n: int, rate: int = 16000) -> tuple[np.ndarray, list[float]]:
    t = np.arange(int(0.3 * rate)) / rate
    burst = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    gap = np.zeros(int(0.35 * rate), np.float32)
    starts = [0.35 + i * 0.65 for i in range(n)]
    return np.concatenate([gap] + [np.concatenate([burst, gap]) for _ in range(n)]), starts


def test_long_audio_is_chunked_without_duplicates(tmp_path: Path) -> None:
    art = edgekit.convert(_BurstCTC(), tmp_path / "burst", task="recognize", labels=["_", " ", "a"],
                          preprocess={"chunk_length_s": 3.0, "stride_length_s": 0.5})
    m = edgekit.load(art.path, device="cpu")
    wave, starts = _bursts(12)  # 8.15 s: four overlapping 3 s windows
    t = m.recognize(wave)
    assert t.text == " ".join(["a"] * 12)  # every burst once: none lost or doubled at the seams
    assert len(t.segments) == 12
    assert all(abs(s.start - want) < 0.05 for s, want in zip(t.segments, starts))
    assert all(abs(s.end - s.start - 0.3) < 0.06 for s in t.segments)


def test_hf_ctc_int8_reports_agreement_and_wer(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from reliability_models import w2v_exported

    art = w2v_exported(tmp_path_factory).convert(tmp_path / "int8", precision="int8", strict=False)  # w2v_dir, exported once
    r = art.manifest.parity
    assert art.manifest.precision.method == "dynamic"
    # Measured on this seeded random model: 53 of 73 frames (0.726). The bound leaves 2.4 binomial
    # standard deviations (sqrt(0.73 * 0.27 / 73) = 0.052) for int8 kernels that round differently
    # on another CPU; a broken int8 path agrees on far fewer frames.
    m = r.measures
    assert m["frame_agreement"] >= 0.6, r
    assert r.passed == (m["frame_agreement"] >= 0.7) and r.tolerances == {"frame_agreement": ">= 0.7"}
    assert f"agree on {100 * m['frame_agreement']:.2f}% of frames; WER vs PyTorch {m['wer_vs_pytorch']:.3f}" \
        in r.summary


# ---------------------------------------------------------------- plain nn.Module


def _tiny_module() -> Any:
    import torch
    from torch import nn

    class WaveCTC(nn.Module):
        """Strided conv front end on the raw waveform, then a linear over characters."""

        def __init__(self) -> None:
            super().__init__()
            self.front = nn.Sequential(nn.Conv1d(1, 16, 400, stride=160), nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1))
            self.out = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.front(x[:, None]).transpose(1, 2))

    torch.manual_seed(0)
    return WaveCTC().eval()


def test_plain_module_ctc_fp32_and_fp16(tmp_path: Path) -> None:
    labels = ["_", " ", "a", "b", "c"]
    net = _tiny_module()
    art = edgekit.convert(net, tmp_path / "m32", task="recognize", labels=labels)
    assert art.manifest.parity.passed and art.manifest.parity.measures["frame_agreement"] == 1.0
    m = edgekit.load(art.path, device="cpu")
    wave = synthetic_audio(1.9, 16000, 11)
    import torch

    with torch.inference_mode():
        ids = net(torch.from_numpy(wave)[None])[0].argmax(-1).numpy()
    post = {"vocabulary": labels, "blank_id": 0, "word_delimiter": " "}
    assert m.recognize(wave).text == ctc_decode(ids, **post)
    art16 = edgekit.convert(net, tmp_path / "m16", task="recognize", labels=labels, precision="fp16", strict=False)
    assert art16.manifest.parity.measures["frame_agreement"] >= 0.9


def test_plain_module_needs_labels_and_known_preprocess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocabulary"):
        edgekit.convert(_tiny_module(), tmp_path / "x", task="recognize")
    with pytest.raises(ConfigError, match="unknown preprocess"):
        edgekit.convert(_tiny_module(), tmp_path / "x", task="recognize", labels=list("_ abc"),
                        preprocess={"sampling": 8000})


def test_ctc_decode_and_wer() -> None:
    post = {"vocabulary": ["_", "|", "a", "b"], "blank_id": 0, "word_delimiter": "|"}
    assert ctc_decode(np.array([2, 2, 0, 2, 1, 3, 3, 0, 1]), **post) == "aa b"
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert word_error_rate("", "") == 0.0


def test_cli_run_and_parity(w2v_dir: Path, w2v_fp32: Path, tmp_path: Path) -> None:
    wav = tmp_path / "s.wav"
    sf.write(wav, synthetic_audio(1.2, 16000, 2), 16000)
    cli = [sys.executable, "-m", "edgekit.cli"]
    run = subprocess.run([*cli, "run", str(w2v_fp32), str(wav), "--device", "cpu", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["results"][0]["input"] == str(wav) and isinstance(data["results"][0]["text"], str)
    bad = subprocess.run([*cli, "run", str(w2v_fp32), str(tmp_path / "missing.wav")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no audio file" in bad.stderr
    par = subprocess.run([*cli, "parity", str(w2v_fp32), "--against", str(w2v_dir), "--json"],
                         capture_output=True, text=True)
    assert par.returncode == 0, par.stderr
    assert json.loads(par.stdout)["measures"]["frame_agreement"] == 1.0



def _tied_module() -> Any:
    """Waveform -> logits whose ids 1 and 2 are equal but for 1e-6 of their own size (a near tie:
    which wins at a frame is down to rounding), id 0 and 3 clearly apart."""
    import torch

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.front = torch.nn.Conv1d(1, 2, 400, stride=320)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.front(x[:, None]).transpose(1, 2)
            a, b = h[..., :1], h[..., 1:]
            return torch.cat([b, a, a * (1 + 1e-6), -a], dim=-1)

    torch.manual_seed(0)
    return Tied().eval()


class _Swapped:
    """A runner over another one whose logits at `frame` have ids `i` and `j` exchanged: the artifact
    picking the other id of a pair at that one frame, as a different summation order may."""

    def __init__(self, inner: Any, frame: int, i: int, j: int) -> None:
        self.inner, self.frame, self.i, self.j = inner, frame, i, j
        self.name = inner.name

    def run(self, feeds: Any, outputs: Any = None) -> dict[str, np.ndarray]:
        out = dict(self.inner.run(feeds, outputs))
        x = out["logits"].copy()
        x[:, self.frame, [self.i, self.j]] = x[:, self.frame, [self.j, self.i]]
        out["logits"] = x
        return out

    def close(self) -> None:
        self.inner.close()


def _parity_with_swap(tmp_path: Path, pair: tuple[int, int]) -> Any:
    """The fp32 parity of the tied module's artifact whose runner swaps `pair` at one frame where
    PyTorch's top id is one of the pair."""
    import torch

    from edgekit.api import open_model
    from edgekit.artifact import open_artifact
    from edgekit.converters.pipeline import reference_spec
    from edgekit.runtimes.onnxruntime import open_runners

    labels = ["_", " ", "a", "b"]
    net = _tied_module()
    art = edgekit.convert(net, tmp_path / "m", task="recognize", labels=labels)
    wave = synthetic_audio(1.3, 16000, 0)  # the first parity signal
    with torch.inference_mode():
        logits = net(torch.from_numpy(wave)[None])[0].numpy()
    # The frame of the pair's largest top logit: a swap of (2, 3) there moves the answer by the most.
    frame = int(np.argmax(np.where(np.isin(logits.argmax(-1), pair), logits.max(-1), -np.inf)))
    runners = open_runners(open_artifact(art.path), "cpu")
    runners["model"] = _Swapped(runners["model"], frame, *pair)
    spec = reference_spec(net, art, labels=labels)
    with open_model(art, runners) as model:
        return spec.parity(model, "fp32")


def test_ctc_parity_counts_a_near_tie_as_agreeing(tmp_path: Path) -> None:
    # Ids 1 and 2 are 1e-6 of their size apart (under fp32's 2e-4 tie share): the swapped frame agrees.
    r = _parity_with_swap(tmp_path, (1, 2))
    assert r.passed, r.summary
    assert r.measures["frame_agreement"] == 1.0 and r.measures["tied_frames"] == 1
    assert r.measures["wer_determined"] == 0.0


def test_ctc_parity_fails_a_real_disagreement(tmp_path: Path) -> None:
    # Ids 2 and 3 (a and -a): as far apart as the logits are large; swapping them is a real error.
    r = _parity_with_swap(tmp_path, (2, 3))
    assert not r.passed and r.measures["tied_frames"] == 0
    assert r.measures["frame_agreement"] < 1.0 and "frame_agreement" in r.summary
