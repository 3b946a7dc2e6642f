"""The layers stay apart: the device runtime never needs the exporter, torch or transformers.

- No module under runtimes/ imports edgekit.converters (read with `ast`, imports inside functions too).
- Loading an artifact of each task and calling it imports none of edgekit.converters, torch,
  transformers (checked in a fresh interpreter, after the call).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_models import converted, converted_gpt2, converted_w2v, converted_whisper

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("edgekit.converters", "torch", "transformers")


def imports_of(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "runtimes").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtimes_never_import_the_converters(path: Path) -> None:
    bad = sorted(m for m in imports_of(path) if m.startswith(("edgekit.converters", "converters")) or m in ("torch",))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def build():\n    from edgekit.converters.pipeline import convert\n")
    assert "edgekit.converters.pipeline" in imports_of(f)


_CALL = r"""
import json, sys
import numpy as np
import edgekit
model = edgekit.load(sys.argv[1], device="cpu")
task = model.manifest.task
if task == "classify":
    model.classify(np.zeros((24, 24, 3), np.uint8), top_k=2)
elif task == "generate":
    model.generate("the cat", max_new_tokens=4)
    list(model.generate("the cat", max_new_tokens=4, stream=True))
else:
    model.recognize(np.sin(np.arange(16000, dtype=np.float32) / 7.0), sample_rate=16000)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m.startswith("edgekit.converters"))
print(json.dumps({"task": task, "type": type(model).__name__, "heavy": heavy}))
"""


@pytest.mark.parametrize("kind", ["classify", "generate", "ctc", "whisper"])
def test_load_and_call_import_no_exporter(kind: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    art = {"classify": lambda f: converted(f, "image"), "generate": converted_gpt2, "ctc": converted_w2v,
           "whisper": converted_whisper}[kind](tmp_path_factory)
    r = subprocess.run([sys.executable, "-c", _CALL, str(art)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path_factory.getbasetemp())
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["heavy"] == [], f"{kind} ({seen['type']}) imported {seen['heavy'][:8]}"
