"""The digits example end to end with a short training: PyTorch vs edgekit fp32 vs int8."""
from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_train_digits_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.train_digits import main

    assert main(["--epochs", "4", "--out", str(tmp_path / "digits")]) == 0
    out = capsys.readouterr().out
    acc = {m[0]: float(m[1]) for m in re.findall(r"^\s+(PyTorch|edgekit fp32|edgekit int8)\s+([\d.]+) %", out, re.M)}
    assert set(acc) == {"PyTorch", "edgekit fp32", "edgekit int8"}, out
    assert acc["PyTorch"] > 85.0, out  # four epochs on 1347 digits
    assert acc["edgekit fp32"] == acc["PyTorch"], out  # same pictures and pre-processing, fp32 graph
    assert abs(acc["edgekit int8"] - acc["PyTorch"]) <= 1.0, out  # full training target: 0.5 points
    assert (tmp_path / "digits" / "int8" / "edgekit.json").is_file()
