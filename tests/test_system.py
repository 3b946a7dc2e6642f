"""`edgekit doctor`, smoke-run provider checks, and the `edgekit build` command (fakes for TensorRT)."""
from __future__ import annotations

import json
import logging
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import trt_fakes as F
from edgekit.runtimes import onnxruntime as ort_backend
from edgekit.runtimes import probe as system
from edgekit.cli import cli


@pytest.fixture(autouse=True)
def _fresh_smoke_cache() -> None:
    ort_backend.smoke_once.cache_clear()


def test_smoke_graph_is_what_it_says() -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "smoke", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgekit")
    model.ir_version = 7
    assert model.SerializeToString() == ort_backend.SMOKE_ONNX


def test_cpu_provider_passes_its_smoke_run() -> None:
    r = ort_backend.smoke("CPUExecutionProvider")
    assert r["ok"] is True and r["detail"] == "smoke run passed" and r["ms"] >= 0


class _FallbackSession:
    """What onnxruntime-gpu does without CUDA libraries: accepts CUDA, runs on the CPU."""

    def __init__(self, model: bytes, sess_options: object = None, providers: list[str] | None = None) -> None:
        self.providers = ["CPUExecutionProvider"]

    def get_providers(self) -> list[str]:
        return self.providers

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [feeds["x"] * 2]


def test_listed_gpu_provider_that_falls_back_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from edgekit.runtimes.select import probe as _probe

    monkeypatch.setattr(ort, "InferenceSession", _FallbackSession)
    r = ort_backend.smoke("CUDAExecutionProvider")
    assert r["ok"] is False and "fell back to ['CPUExecutionProvider']" in r["detail"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ok, why = _probe("cuda")
    assert not ok and "listed but failed a smoke run" in why


def test_provider_that_raises_reports_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("libcublasLt.so.13: cannot open shared object file")

    monkeypatch.setattr(ort, "InferenceSession", boom)
    r = ort_backend.smoke("CUDAExecutionProvider")
    assert r["ok"] is False and "libcublasLt.so.13" in r["detail"]


def _script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "nvidia-smi"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_gpus_from_nvidia_smi(tmp_path: Path) -> None:
    smi = _script(tmp_path, 'echo "NVIDIA H100 80GB HBM3, 580.65.06, 81559, 9.0"\n')
    assert system.gpus(smi) == {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "580.65.06",
                                          "memory.total": "81559", "compute_cap": "9.0"}], "reason": ""}
    bad = _script(tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate with the driver" >&2; exit 9\n')
    r = system.gpus(bad)
    assert r["gpus"] == [] and "could not communicate with the driver" in r["reason"]


def test_gpu_stack_through_fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls, dla_cores=2), F.make_cudart(calls))
    assert system.cuda() == {"runtime": "12.6", "driver": "13.0", "devices": 1}
    t = system.tensorrt()
    assert t["available"] and t["version"] == "10.3.0" and t["dla_cores"] == 2
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(system, "TEGRA_RELEASE", release)
    assert system.tegra().startswith("R36 (release), REVISION: 4.3")


def test_doctor_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    F.install(monkeypatch, None, None)
    monkeypatch.setattr(system.shutil, "which", lambda name: None)
    res = CliRunner().invoke(cli, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["auto"] == "cpu" and r["tensorrt"]["available"] is False
    assert "tensorrt is not installed" in r["tensorrt"]["detail"] and "cuda-python" in r["cuda"]["error"]
    cpu = next(p for p in r["onnxruntime"]["providers"] if p["provider"] == "CPUExecutionProvider")
    assert cpu["ok"] is True
    text = CliRunner().invoke(cli, ["doctor"]).output
    assert "device='auto' uses: cpu" in text and "ok   CPUExecutionProvider" in text


# ---------------------------------------------------------------- edgekit build

@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import edgekit

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    out = tmp_path_factory.mktemp("build") / "lin"
    edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 2, 2), labels=["a", "b", "c"])
    return out


def test_build_command(tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       caplog: pytest.LogCaptureFixture) -> None:
    import edgekit

    art = tmp_path / "lin"
    shutil.copytree(tiny_artifact, art)
    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls, dla_cores=2), F.make_cudart(calls))
    res = CliRunner().invoke(cli, ["build", str(art), "--device", "tensorrt", "--workspace", "256",
                                   "--shape", "batch=1,2,8", "--contexts", "3", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.output)["model"]
    assert (art / record["file"]).is_file() and calls.config["pool:WORKSPACE"] == 256 << 20
    assert record["fingerprint"]["profiles"] == [{"name": "all", "dims": {"batch": [1, 2, 8]}}]
    assert record["fingerprint"]["contexts"] == 3 and len(calls.profiles) == 3
    again = CliRunner().invoke(cli, ["build", str(art), "--shape", "batch=1,2,8", "--contexts", "3"])
    assert again.exit_code == 0 and calls.builds == 1  # reused
    assert CliRunner().invoke(cli, ["build", str(art), "--shape", "batch=1,2,8", "--rebuild"]).exit_code == 0
    assert calls.builds == 2
    bad = CliRunner().invoke(cli, ["build", str(art), "--dla-core", "5"])
    assert bad.exit_code == 2 and "DLA core 5 was asked for" in bad.output
    assert CliRunner().invoke(cli, ["build", str(art), "--shape", "batch=8,2,1"]).exit_code == 2
    typo = CliRunner().invoke(cli, ["build", str(art), "--shape", "bacth=1,2,8"])
    assert typo.exit_code == 2 and "dynamic dims ['batch']" in typo.output
    x = np.random.default_rng(0).random((2, 3, 2, 2), dtype=np.float32)
    with edgekit.load(art, device="tensorrt") as gpu, edgekit.load(art, device="cpu") as cpu:
        name = cpu.runners["model"].inputs[0].name
        np.testing.assert_allclose(gpu(**{name: x})["logits"], cpu(**{name: x})["logits"], rtol=1e-6)


def test_build_without_tensorrt_exits_2(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    F.install(monkeypatch, None, None)
    res = CliRunner().invoke(cli, ["build", str(tiny_artifact)])
    assert res.exit_code == 2 and "pip install 'edgekit[tensorrt]'" in res.output


def test_auto_skips_tensorrt_without_an_engine(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import edgekit

    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    with caplog.at_level(logging.INFO, logger="edgekit"):
        model = edgekit.load(tiny_artifact, device="auto")
    assert model.device == "onnxruntime-cpu"
    assert any("not using TensorRT" in r.message and "no engine was built" in r.message for r in caplog.records)
    with pytest.raises(edgekit.EngineError):
        edgekit.load(tiny_artifact, device="tensorrt")  # asked for explicitly: refused, never replaced


def test_cuda_device_needs_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    import trt_fakes as F
    from edgekit.runtimes.select import probe as _probe

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "smoke_once", lambda provider: {"ok": True, "detail": ""})
    F.install(monkeypatch, None, None)
    ok, why = _probe("cuda")
    assert not ok and "needs cuda-python" in why
    F.install(monkeypatch, None, F.make_cudart(F.Calls()))
    assert _probe("cuda") == (True, "")


def test_load_sets_onnxruntime_threads_per_session(tiny_artifact: Path) -> None:
    """`threads=` reaches every session as its intra-op pool; load's backend options are arguments, checked
    (they were environment variables)."""
    import edgekit
    from edgekit.errors import ConfigError

    model = edgekit.load(tiny_artifact, device="cpu", threads=1)
    for runner in model.runners.values():
        assert runner._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="threads"):
        edgekit.load(tiny_artifact, device="cpu", threads=0)
    for bad in ({"dla_core": -1}, {"cuda_graphs": "no"}, {"context_wait_s": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            edgekit.TensorRTOptions(**bad)
    with pytest.raises(ConfigError, match="TensorRTOptions"):
        edgekit.load(tiny_artifact, device="cpu", tensorrt={"dla_core": 0})
