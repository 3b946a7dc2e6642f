"""Real TensorRT and onnxruntime-CUDA runs: classify against the CPU, generate token for token
against transformers on CUDA. Skipped, with the reason, where the backend is absent (every CI
machine and the build machines: see docs/gpu.md); run them on a GPU host or a Jetson
(scripts/gpu_check.sh runs them with the rest of the GPU check)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgekit.runtimes.select import probe as _probe

TRT_OK, TRT_WHY = _probe("tensorrt")
CUDA_OK, CUDA_WHY = _probe("cuda")
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT, cuda-python and an NVIDIA GPU: {TRT_WHY}")
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason=f"needs onnxruntime-gpu with a working CUDA provider: {CUDA_WHY}")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import edgekit

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    out = tmp_path_factory.mktemp("gpu") / "cnn"
    edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 32, 32), labels=list("abcd"))
    return out


def _compare(art: Path, device: str) -> None:
    import edgekit

    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    with edgekit.load(art, device=device) as gpu, edgekit.load(art, device="cpu") as cpu:
        want = cpu(pixel_values=x)["logits"]
        got = gpu(pixel_values=x)["logits"]
        # TF32 tensor cores may be used for fp32 math on Ampere+: 1e-2 relative, argmax identical.
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
        assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.gpu
@needs_trt
def test_tensorrt_engine_builds_runs_and_is_reused(cnn: Path, tmp_path: Path) -> None:
    from edgekit.runtimes.tensorrt.build import BuildOptions, build_engines
    from edgekit.manifest import Manifest

    art = tmp_path / "cnn"
    shutil.copytree(cnn, art)
    first = build_engines(art, Manifest.load(art), BuildOptions(workspace_mb=1024))["model"]
    again = build_engines(art, Manifest.load(art), BuildOptions(workspace_mb=1024))["model"]
    assert again == first and (art / "engines" / "timing.cache").stat().st_size > 0
    _compare(art, "tensorrt")


@pytest.mark.gpu
@needs_trt
def test_tensorrt_refuses_an_engine_from_another_version(cnn: Path, tmp_path: Path) -> None:
    import edgekit
    from edgekit.runtimes.tensorrt.build import build_engines
    from edgekit.manifest import Manifest

    art = tmp_path / "cnn"
    shutil.copytree(cnn, art)
    m = Manifest.load(art)
    build_engines(art, m)
    for key, record in m.engines.items():
        m.engines[key] = replace(record, fingerprint=replace(record.fingerprint, trt="9.0.0"))
    m.save(art)
    with pytest.raises(edgekit.EngineError, match="TensorRT 9.0.0 \\(built\\)"):
        edgekit.load(art, device="tensorrt")


@pytest.mark.gpu
@needs_cuda
def test_onnxruntime_cuda_matches_cpu(cnn: Path) -> None:
    import edgekit

    assert edgekit.load(cnn, device="cuda").device == "onnxruntime-cuda"
    _compare(cnn, "cuda")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import generate_models as gm

    import edgekit

    root = tmp_path_factory.mktemp("gpu-gen")
    src = gm.save_tiny("gpt2", root / "hf", gm.train_tokenizer())
    return src, edgekit.convert(src, root / "fp32").path


def _generate_matches_transformers(src: Path, art: Path, device: str) -> None:
    """Greedy tokens on `device` (decode loop: cache resident on the GPU) equal transformers on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    import edgekit

    ids = np.array([[0, 0, 5, 9, 13], [7, 8, 9, 10, 11]], np.int64)
    mask = (ids != 0).astype(np.int64)
    hf = AutoModelForCausalLM.from_pretrained(src).eval().to("cuda")
    with torch.inference_mode():
        want = hf.generate(input_ids=torch.from_numpy(ids).cuda(), attention_mask=torch.from_numpy(mask).cuda(),
                           max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0).cpu().numpy()
    with edgekit.load(art, device=device) as m:
        got = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, eos_token_id=[])
    np.testing.assert_array_equal(got[:, ids.shape[1]:], want[:, ids.shape[1]:])


@pytest.mark.gpu
@needs_cuda
def test_onnxruntime_cuda_generate_is_token_exact(gpt2: tuple[Path, Path]) -> None:
    _generate_matches_transformers(*gpt2, device="cuda")


@pytest.mark.gpu
@needs_trt
def test_tensorrt_generate_is_token_exact(gpt2: tuple[Path, Path], tmp_path: Path) -> None:
    _generate_matches_transformers(gpt2[0], _with_engines(gpt2[1], tmp_path), device="tensorrt")


def _with_engines(artifact: Path, tmp_path: Path) -> Path:
    """A copy of the artifact with TensorRT engines built for this machine."""
    from edgekit.runtimes.tensorrt.build import build_engines
    from edgekit.manifest import Manifest

    art = tmp_path / artifact.name
    shutil.copytree(artifact, art)
    build_engines(art, Manifest.load(art))
    return art


def _speculative_is_plain_greedy(art: Path, device: str, portable: bool = False) -> None:
    """Prompt-lookup drafts, each batch checked in one verify call over the resident GPU cache (on
    TensorRT: the "verify" profile, between decode steps replayed as a CUDA graph): plain greedy's tokens."""
    import edgekit

    prompt = np.tile(np.array([[118, 257, 166, 10, 229, 218]], np.int64), 3)  # tests/test_steppers.py's SPEC_PROMPT
    with edgekit.load(art, device=device, portable=portable) as m:
        plain = m.generate(input_ids=prompt, max_new_tokens=40)
        spec = m.generate(input_ids=prompt, max_new_tokens=40, prompt_lookup_num_tokens=4, return_dict_in_generate=True)
    np.testing.assert_array_equal(spec.sequences, plain)
    assert 0 < spec.speculation.accepted < spec.speculation.drafted, spec.speculation  # kept and rolled back


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("portable", [False, True], ids=["fused-attention", "portable-slots"])
def test_onnxruntime_cuda_speculative_greedy_is_plain_greedy(gpt2: tuple[Path, Path], portable: bool) -> None:
    _speculative_is_plain_greedy(gpt2[1], "cuda", portable)


@pytest.mark.gpu
@needs_trt
def test_tensorrt_speculative_greedy_is_plain_greedy(gpt2: tuple[Path, Path], tmp_path: Path) -> None:
    _speculative_is_plain_greedy(_with_engines(gpt2[1], tmp_path), "tensorrt")
