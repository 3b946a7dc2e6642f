"""The README's main job (examples/quickstart.py) runs and prints a result for every task."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_prints_predictions_text_transcripts_and_translations(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path),
         "--digits-epochs", "2", "--gpt-steps", "40", "--translate-steps", "40"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "[classify]" in out and "held-out accuracy" in out and "digit " in out
    assert "[generate]" in out and "'The for statement' -> '" in out
    assert "[recognize]" in out and out.count(".wav: '") == 4
    assert "[translate]" in out and "| edgekit int8 (dynamic) |" in out and "-> '" in out
    for task in ("digits-int8", "char-gpt", "digits-asr", "numbers-en-zh", "numbers-en-zh-int8"):
        assert (tmp_path / task / "edgekit.json").is_file()
