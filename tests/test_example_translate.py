"""The translation example end to end with a short training: PyTorch vs edgekit fp32 vs int8, and `edgekit run`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


def test_translate_numbers_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli
    from examples.translate_numbers import chinese, main

    assert main(["--out", str(tmp_path)]) == 0  # the full 400 steps: a sharper drop before 300
    out = capsys.readouterr().out
    acc = {m[0]: float(m[1]) for m in re.findall(r"^\s+\| (PyTorch|edgekit fp32|edgekit int8)[^|]*\| ([\d.]+)% \|", out, re.M)}
    assert set(acc) == {"PyTorch", "edgekit fp32", "edgekit int8"}, out
    assert acc["PyTorch"] > 90.0, out
    assert acc["edgekit fp32"] == acc["PyTorch"], out  # the same greedy tokens as transformers
    assert abs(acc["edgekit int8"] - acc["PyTorch"]) <= 1.5, out
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "numbers-en-zh"), "--prompt", "three thousand and five",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["text"] == chinese(3005)
