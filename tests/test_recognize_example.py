"""examples/speech: the trained digit recognizer converts to fp32 and int8 and keeps its word error rate."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "speech"


def test_example_wer_pytorch_fp32_int8(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "run.py", "--out", str(tmp_path)], cwd=EXAMPLE, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    wer = {name: float(v) for name, v in re.findall(r"WER (\S+)\s+([\d.]+) %", run.stdout)}
    assert set(wer) == {"pytorch", "edgekit-fp32", "edgekit-int8"}, run.stdout
    assert wer["pytorch"] <= 10.0  # a real, trained model on utterances it never saw
    assert wer["edgekit-fp32"] == wer["pytorch"]
    assert abs(wer["edgekit-int8"] - wer["pytorch"]) <= 1.0  # the target: within one point
    assert run.stdout.count("parity CTC argmax ids agree") == 2


def test_training_script_runs_on_committed_wavs(tmp_path: Path) -> None:
    out = tmp_path / "w.npz"
    run = subprocess.run([sys.executable, "train.py", "--data", "heldout", "--out", str(out), "--steps", "3",
                          "--batch", "4"], cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step     2  ctc loss" in run.stdout and out.is_file()
