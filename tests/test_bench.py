"""`edgekit bench`: the report's figures are consistent, --against replays the same graph calls on
PyTorch, --json is pure, and missing optional packages give errors that name the install."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.bench import bench
from edgekit.bench_report import BenchReport, ClassifyWork, GenerateWork, RecognizeWork
from edgekit.cli import cli
from edgekit.contract.codec import decode, encode
from edgekit.errors import ConfigError, EdgekitError
from reliability_models import converted


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted(tmp_path_factory, "image")


@pytest.fixture(scope="module")
def report(cnn: Path) -> BenchReport:
    return bench(cnn, against="reliability_models:image_net", device="cpu", runs=12, warmup=2, threads=2)


def test_latency_figures_are_consistent(report: BenchReport) -> None:
    lat = report.latency_ms
    assert len(report.latencies_ms) == report.runs == 12
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert lat.p50 == pytest.approx(float(np.median(report.latencies_ms)))
    # throughput = items over the time the timed calls took, batch 1 here
    assert report.throughput.value == pytest.approx(12 / (sum(report.latencies_ms) / 1000), rel=1e-9)
    assert report.task == "classify" and report.device == "onnxruntime-cpu" and report.threads == 2
    assert report.memory_mb.peak_rss >= report.memory_mb.rss_before_load > 0
    assert report.parity_at_convert is not None and report.parity_at_convert.passed is True


def test_against_replays_the_same_graph_calls(report: BenchReport) -> None:
    a = report.against
    assert a is not None and a.graph_calls_per_run == 1 and a.torch_threads == 2
    assert len(a.pytorch_latencies_ms) == len(a.edgekit_latencies_ms) == 12
    assert a.speedup_p50 == pytest.approx(a.pytorch_ms.p50 / a.edgekit_ms.p50)


def test_report_round_trips_through_its_json(report: BenchReport) -> None:
    """What `--json` prints is the codec's encode: it decodes back to the same report."""
    assert decode(BenchReport, json.loads(json.dumps(encode(report))), "bench") == report


def test_batches_over_the_chunk_size_make_two_graph_calls(cnn: Path) -> None:
    r = bench(cnn, against="reliability_models:image_net", device="cpu", runs=2, warmup=0, batch=40)
    assert isinstance(r.work, ClassifyWork) and r.work.batch == 40
    assert r.against is not None and r.against.graph_calls_per_run == 2  # classify runs 32 at a time
    assert r.throughput.value == pytest.approx(80 / (sum(r.latencies_ms) / 1000), rel=1e-9)


def test_against_a_source_of_another_shape_is_an_edgekit_error(cnn: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wrong_factory.py").write_text(
        "import torch\n"
        "def net():\n"
        "    return {'model': torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 3)),"
        " 'example_inputs': torch.rand(1, 5), 'labels': ['a', 'b', 'c']}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EdgekitError):
        bench(cnn, against="wrong_factory:net", device="cpu", runs=1, warmup=0)


def test_cli_json_is_one_document_and_progress_goes_to_stderr(cnn: Path) -> None:
    r = CliRunner().invoke(cli, ["bench", str(cnn), "--json", "--runs", "3", "--warmup", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["runs"] == 3 and data["against"] is None and data["work"]["type"] == "classify"
    assert "3 calls done" in r.stderr


def test_cli_text_report_and_quiet(cnn: Path) -> None:
    r = CliRunner().invoke(cli, ["-q", "bench", str(cnn), "--runs", "2", "--batch", "3",
                                 "--against", "reliability_models:image_net"])
    assert r.exit_code == 0, r.output
    assert "p50" in r.stdout and "items/s" in r.stdout and "vs PyTorch" in r.stdout and "peak RSS" in r.stdout
    assert r.stderr == ""


def test_cli_bad_input_exits_2(cnn: Path, tmp_path: Path) -> None:
    assert CliRunner().invoke(cli, ["bench", str(tmp_path / "nope")]).exit_code == 2
    assert CliRunner().invoke(cli, ["bench", str(cnn), "--runs", "0"]).exit_code == 2


def test_bad_options_are_config_errors(cnn: Path) -> None:
    for kwargs in ({"runs": 0}, {"batch": -1}, {"warmup": 1.5}, {"audio_seconds": 0}):
        with pytest.raises(ConfigError):
            bench(cnn, device="cpu", **kwargs)


def test_plot_draws_latency_and_the_pytorch_comparison(cnn: Path, tmp_path: Path) -> None:
    from PIL import Image

    alone, against = tmp_path / "alone.png", tmp_path / "against.png"
    r = CliRunner().invoke(cli, ["bench", str(cnn), "--runs", "2", "--plot", str(alone)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["bench", str(cnn), "--runs", "2", "--against", "reliability_models:image_net",
                                 "--plot", str(against)])
    assert r.exit_code == 0, r.output
    one, three = Image.open(alone), Image.open(against)
    assert one.format == three.format == "PNG" and one.size == (600, 400) and three.size == (1800, 400)
    # Drawn, not blank: the bars and the histogram put colour on the canvas.
    assert len(set(three.convert("RGB").getdata())) > 50


def test_plot_without_matplotlib_names_the_install(cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "lat.png"
    r = CliRunner().invoke(cli, ["bench", str(cnn), "--runs", "2", "--plot", str(png)])
    assert r.exit_code == 2 and "pip install matplotlib" in r.stderr and not png.exists()


def test_missing_psutil_names_the_install(cnn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    with pytest.raises(ConfigError, match="pip install psutil"):
        bench(cnn, device="cpu", runs=1)


def test_shell_completion_script() -> None:
    import os
    import subprocess

    env = dict(os.environ, _EDGEKIT_COMPLETE="bash_source")
    exe = Path(sys.executable).parent / "edgekit"
    out = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "_edgekit_completion" in out.stdout and "complete " in out.stdout


# ------------------------------------------------------------------ generate


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from reliability_models import converted_gpt2, gpt2_folder

    return converted_gpt2(tmp_path_factory), gpt2_folder(tmp_path_factory)


def test_generate_prompt_latency_decode_rate_and_replayed_steps(gpt2: tuple[Path, Path]) -> None:
    art, folder = gpt2
    r = bench(art, against=str(folder), device="cpu", runs=3, warmup=1, prompt_tokens=8, max_new_tokens=8)
    w = r.work
    assert r.task == "generate" and isinstance(w, GenerateWork) and w.prompt_tokens == 8 and w.new_tokens_per_call == 8
    assert 0 < w.prompt_latency_ms.min <= w.prompt_latency_ms.p50 <= w.prompt_latency_ms.max
    assert w.decode_tokens_per_s is not None and w.decode_tokens_per_s > 0
    assert r.throughput.value == pytest.approx(3 * 8 / (sum(r.latencies_ms) / 1000), rel=1e-9)
    # 1 prefill for the one-token call, then prefill + 7 decode steps (IO-bound): all replayed on PyTorch
    assert r.against is not None and r.against.graph_calls_per_run == 1 + 8
    assert r.against.speedup_p50 > 0


def test_generate_cli_text_report(gpt2: tuple[Path, Path]) -> None:
    r = CliRunner().invoke(cli, ["bench", str(gpt2[0]), "--runs", "1", "--warmup", "0", "--max-new-tokens", "4",
                                 "--prompt-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert "prompt" in r.stdout and "tokens/s" in r.stdout


# ------------------------------------------------------------------ recognize


def test_recognize_real_time_factor_and_replay(tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_w2v, w2v_folder

    art, folder = converted_w2v(tmp_path_factory), w2v_folder(tmp_path_factory)
    r = bench(art, against=str(folder), device="cpu", runs=3, warmup=1, audio_seconds=2.0)
    w = r.work
    assert r.task == "recognize" and isinstance(w, RecognizeWork) and w.audio_seconds == 2.0 and w.sample_rate == 16000
    assert w.real_time_factor == pytest.approx(r.latency_ms.p50 / 1000 / 2.0)
    assert r.throughput.value == pytest.approx(3 * 2.0 / (sum(r.latencies_ms) / 1000), rel=1e-9)
    assert r.against is not None and r.against.graph_calls_per_run >= 1 and r.against.speedup_p50 > 0
    assert "real-time factor" in __import__("edgekit.bench", fromlist=["format_report"]).format_report(r)
