"""The CLI contract: commands, --json purity, exit codes 0 / 1 / 2, errors without tracebacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgekit.cli import cli

TESTS = Path(__file__).parent


def _edgekit(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cnn"
    r = CliRunner().invoke(cli, ["convert", "cli_factories:tiny_cnn", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["task"] == "classify" and summary["parity"]["passed"] is True
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(p)
    return p


def test_run_prints_predictions_as_json(artifact: Path, image: Path) -> None:
    r = CliRunner().invoke(cli, ["run", str(artifact), str(image), "--top-k", "2", "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["device"] == "onnxruntime-cpu"
    preds = data["results"][0]["predictions"]
    assert len(preds) == 2 and {p["label"] for p in preds} <= {"cat", "dog", "owl"}
    assert preds[0]["score"] >= preds[1]["score"]


def test_run_matches_python_api(artifact: Path, image: Path) -> None:
    import edgekit

    r = CliRunner().invoke(cli, ["run", str(artifact), str(image), "--top-k", "3", "--json"])
    cli_preds = json.loads(r.stdout)["results"][0]["predictions"]
    api_preds = edgekit.load(artifact).classify(str(image), top_k=3)
    assert [p["label"] for p in cli_preds] == [p.label for p in api_preds]
    assert np.allclose([p["score"] for p in cli_preds], [p.score for p in api_preds])


def test_info_text_and_json(artifact: Path) -> None:
    r = CliRunner().invoke(cli, ["info", str(artifact)])
    assert r.exit_code == 0 and "task: classify" in r.stdout and "pixel_values" in r.stdout
    data = json.loads(CliRunner().invoke(cli, ["info", str(artifact), "--json"]).stdout)
    assert data["graphs"]["model"]["inputs"][0]["shape"] == ["batch", 3, 24, 24]
    assert all(len(h) == 64 for h in data["files"].values())


def test_parity_passes_against_source(artifact: Path) -> None:
    r = CliRunner().invoke(cli, ["parity", str(artifact), "--against", "cli_factories:tiny_cnn", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["passed"] and report["outputs"]["logits"]["top1"] == 1.0


def test_parity_fails_with_exit_1_against_other_weights(artifact: Path, tmp_path: Path) -> None:
    # Same architecture, other weights: a real check must notice.
    (tmp_path / "other_factory.py").write_text(
        "import torch, cli_factories\n"
        "def make():\n"
        "    d = cli_factories.tiny_cnn()\n"
        "    torch.manual_seed(1)\n"
        "    for p in d['model'].parameters():\n"
        "        torch.nn.init.normal_(p)\n"
        "    return d\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        r = CliRunner().invoke(cli, ["parity", str(artifact), "--against", "other_factory:make"])
    finally:
        sys.path.remove(str(tmp_path))
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.stdout


def test_existing_output_needs_overwrite(artifact: Path) -> None:
    before = (artifact / "edgekit.json").read_bytes()
    r = _edgekit("convert", "cli_factories:tiny_cnn", "-o", str(artifact))
    assert r.returncode == 2
    assert "already exists" in r.stderr and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert (artifact / "edgekit.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "/nonexistent/artifact", "x.png"], "no artifact folder"),
        (["convert", "cli_factories:not_a_model", "-o", "/tmp/edgekit-never"], "not a torch.nn.Module"),
        (["convert", "no_such_module:f", "-o", "/tmp/edgekit-never"], "cannot import"),
        (["convert", "cli_factories:tiny_cnn", "-o", "/tmp/edgekit-never", "--precision", "int3"], "int3"),
    ],
)
def test_errors_exit_2_without_traceback(args: list[str], needle: str) -> None:
    r = _edgekit(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not Path("/tmp/edgekit-never").exists()


def test_run_on_unreadable_image_is_exit_2(artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = _edgekit("run", str(artifact), str(bad))
    assert r.returncode == 2 and "not a readable image" in r.stderr and "Traceback" not in r.stderr


def test_help_of_every_command() -> None:
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    for name in cli.commands:
        r = runner.invoke(cli, [name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, name
        assert (cli.commands[name].help or "").strip(), f"{name} has no help text"
