"""`edgekit export triton`: a standard model repository that the bundled `tritonserver
--model-repository REPO` loads and serves as it is, with answers equal to the in-process calls."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import edgekit
from reliability_models import converted, converted_gpt2
from serve_support import free_ports, png_bytes, serving_or_skip


@contextlib.contextmanager
def _printed_server(run: str) -> Iterator[tuple[int, int]]:
    """The command the export printed, as a user would paste it, on loopback ports; yields (http, grpc)
    once ready, and stops the server with SIGTERM after."""
    http, grpc, metrics = free_ports(3)
    cmd = run.split() + ["--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1", "--metrics-address",
                         "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
                         "--metrics-port", str(metrics), "--allow-gpu-metrics", "false"]
    assert Path(cmd[0]).name == "tritonserver"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "tritonserver was not ready in time"
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        yield http, grpc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def tensor_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain tensor classifier (TENSOR input: one float32 sample of 10 values)."""
    import torch

    out = tmp_path_factory.getbasetemp() / "serve-tensor-clf"
    if not (out / "edgekit.json").is_file():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).eval()
        edgekit.convert(net, out, example_inputs=torch.rand(1, 10), labels=["a", "b", "c", "d"])
    return out


def export(args: list[str]) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "export", "triton", *args, "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_bundled_tritonserver_serves_the_exported_repository(tmp_path: Path, tensor_art: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    from edgekit.serving.client import Client

    serving_or_skip()
    image, gpt = converted(tmp_path_factory, "image"), converted_gpt2(tmp_path_factory)
    repo = tmp_path / "repo"
    out = export([str(image), str(tensor_art), str(gpt), "-o", str(repo), "--name", "cnn", "--name", "vec", "--name", "gpt",
                  "--device", "cpu", "--bundled"])
    assert out["models"] == ["cnn", "vec", "gpt", "gpt_stream"]
    with _printed_server(out["run"]) as (http, grpc):
        c = Client(f"127.0.0.1:{grpc}", "grpc")
        img = tmp_path / "x.png"
        img.write_bytes(png_bytes(7))
        want = edgekit.load(image, device="cpu").classify(img, top_k=2)
        assert [(p.label, np.float32(p.score)) for p in c.classify("cnn", img, top_k=2)] == \
               [(p.label, np.float32(p.score)) for p in want]
        x = np.random.default_rng(0).random((3, 10), dtype=np.float32)
        got, ref = c.classify("vec", list(x), top_k=4), edgekit.load(tensor_art, device="cpu").classify(list(x), top_k=4)
        assert [[p.label for p in r] for r in got] == [[p.label for p in r] for r in ref]
        np.testing.assert_allclose([[p.score for p in r] for r in got], [[p.score for p in r] for r in ref], atol=1e-6)
        gen = edgekit.load(gpt, device="cpu")
        assert c.generate("gpt", "the cat", max_new_tokens=8) == gen.generate("the cat", max_new_tokens=8)
        assert "".join(c.stream("gpt", "the cat", max_new_tokens=8)) == gen.generate("the cat", max_new_tokens=8)


def test_portable_repository_layout(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Without --bundled the repository names no path of this machine: the artifact is copied in,
    and the stream twin reaches it relatively; every config.pbtxt parses as Triton's ModelConfig."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from edgekit.artifact import open_artifact
    from reliability_models import converted_w2v, converted_whisper

    f = tmp_path_factory
    arts = [converted(f, "image"), converted(f, "text"), converted_gpt2(f), converted_w2v(f), converted_whisper(f)]
    repo = tmp_path / "repo"
    names = ["img", "txt", "lm", "ctc", "asr"]
    models = edgekit.serving.export_repository(arts, repo, names=names, options=edgekit.serving.ServeOptions(
        max_batch=16, batch_delay_us=500, instances=2, device="cpu"))
    assert [m.name for m in models] == ["img", "txt", "lm", "lm_stream", "ctc", "ctc_stream", "asr", "asr_stream"]
    for m in models:
        text = (repo / m.name / "config.pbtxt").read_text()
        cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert cfg.name == m.name and cfg.backend == "python" and cfg.instance_group[0].count == 2
        assert "EXECUTION_ENV_PATH" not in cfg.parameters and str(tmp_path) not in text
        assert "edgekit.serving.backend import TritonPythonModel" in (repo / m.name / "1" / "model.py").read_text()
        art = (repo / m.name / cfg.parameters["EDGEKIT_ARTIFACT"].string_value).resolve()
        assert open_artifact(art).manifest.task == m.task  # the copy verifies (checksums)
    img = text_format.Parse((repo / "img" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert img.max_batch_size == 16 and img.dynamic_batching.max_queue_delay_microseconds == 500
    lm_stream = text_format.Parse((repo / "lm_stream" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert lm_stream.model_transaction_policy.decoupled and not (repo / "lm_stream" / "1" / "artifact").exists()
    with pytest.raises(edgekit.OutputExistsError):
        edgekit.serving.export_repository(arts[:1], repo)


_STAND_IN = '''
import numpy as np, onnxruntime as ort, triton_python_backend_utils as pb


class TritonPythonModel:
    """Test stand-in for Triton's onnxruntime backend (the bundled server has only the Python one)."""

    def initialize(self, args):
        folder = args["model_repository"] + "/" + args["model_version"]
        self.session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        out = []
        for r in requests:
            values = self.session.run(None, {t.name(): t.as_numpy() for t in r.inputs()})
            out.append(pb.InferenceResponse([pb.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return out
'''


def test_plain_onnxruntime_model_with_edgekit_pre_and_post(tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """--plain onnxruntime: NAME_model is a standard onnxruntime_onnx model and NAME calls it through BLS.

    The bundled server has no onnxruntime backend, so NAME_model's platform is swapped for a
    Python stand-in that runs the same model.onnx with the same declared tensors: this checks the
    exported config and files, the BLS wiring and the answers; Triton's onnxruntime backend itself
    (and --plain tensorrt) run only in NVIDIA's container."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from edgekit.serving.client import Client

    serving_or_skip()
    image, text = converted(tmp_path_factory, "image"), converted(tmp_path_factory, "text")
    repo = tmp_path / "repo"
    out = export([str(image), str(text), "-o", str(repo), "--name", "cnn", "--name", "txt", "--device", "cpu",
                  "--plain", "onnxruntime", "--bundled", "--max-batch", "4"])
    assert out["models"] == ["cnn", "txt"]
    for name in ("cnn", "txt"):
        cfg = text_format.Parse((repo / f"{name}_model" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4
        assert (repo / f"{name}_model" / "1" / "model.onnx").is_file()
        cfg_text = (repo / f"{name}_model" / "config.pbtxt").read_text()
        env = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()).parameters
        assert env["EDGEKIT_PLAIN_MODEL"].string_value == f"{name}_model"
        (repo / f"{name}_model" / "config.pbtxt").write_text(
            cfg_text.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
            + f'parameters: {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: '
              f'"{env["EXECUTION_ENV_PATH"].string_value}" }} }}\n')
        (repo / f"{name}_model" / "1" / "model.py").write_text(_STAND_IN)
    with _printed_server(out["run"]) as (http, grpc):
        c = Client(f"127.0.0.1:{http}", "http")
        imgs = [tmp_path / f"{i}.png" for i in range(3)]
        for i, p in enumerate(imgs):
            p.write_bytes(png_bytes(20 + i, size=(16 + 4 * i, 20)))
        got, want = c.classify("cnn", imgs, top_k=3), edgekit.load(image, device="cpu").classify(imgs, top_k=3)
        assert [[p.label for p in r] for r in got] == [[p.label for p in r] for r in want]
        np.testing.assert_allclose([[p.score for p in r] for r in got], [[p.score for p in r] for r in want], atol=1e-6)
        texts = ["the cat sat", "sad owl"]
        got, want = c.classify("txt", texts, top_k=2), edgekit.load(text, device="cpu").classify(texts, top_k=2)
        assert [[p.label for p in r] for r in got] == [[p.label for p in r] for r in want]
    with pytest.raises(edgekit.UnsupportedError, match="needs exactly one TensorRT engine"):
        edgekit.serving.export_repository([image], tmp_path / "trt", plain="tensorrt")
    with pytest.raises(edgekit.UnsupportedError, match="serves classifiers only"):
        edgekit.serving.export_repository([converted_gpt2(tmp_path_factory)], tmp_path / "gen", plain="onnxruntime")
