"""The layers stay apart: the device runtime never needs the exporter, torch or transformers.

- No module under runtimes/ imports edgekit.converters (read with `ast`: `import`, `from ... import`,
  relative imports, `importlib.import_module` and `__import__`, inside functions too).
- Loading an artifact of every task kind and calling it imports none of edgekit.converters, torch,
  transformers (checked in a fresh interpreter, after the load and after each call).
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_models import (
    converted,
    converted_chat,
    converted_gpt2,
    converted_seq2seq,
    converted_w2v,
    converted_whisper,
)

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("edgekit.converters", "torch", "transformers")
# The source folders and the packages they are installed as (pyproject's package-dir).
PACKAGES = {"edgekit": "edgekit", "runtimes": "edgekit.runtimes", "converters": "edgekit.converters"}
MODULE_NAME = re.compile(r"^\.*[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*$")


def module_of(path: Path) -> str:
    """The dotted name `path` is imported as ("runtimes/tensorrt/build.py" -> "edgekit.runtimes.tensorrt.build")."""
    parts = list(path.resolve().relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(name: str, level: int, path: Path) -> str:
    """A relative import's target, resolved as Python does from the file's package."""
    if not level:
        return name
    package = module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _dynamic(node: ast.Call, path: Path, strings: list[str]) -> set[str]:
    """`importlib.import_module(x, package=...)` or `__import__(x)`: the module when x is a literal;
    otherwise every dotted module-like string literal of the file: the names the call can be handed
    (runtimes/select.py imports its backends by their names in a table)."""
    arg = node.args[0] if node.args else None
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return {s for s in strings if "." in s and MODULE_NAME.match(s)}
    name = arg.value.lstrip(".")
    level = len(arg.value) - len(name)
    package = next((k.value.value for k in node.keywords if k.arg == "package" and isinstance(k.value, ast.Constant)),
                   None)
    if level and isinstance(package, str):  # import_module(".x", package="a.b") is a.b.x
        parts = package.split(".")
        return {".".join(parts[: len(parts) - (level - 1)] + ([name] if name else []))}
    return {_absolute(name, level, path)}


def imports_of(path: Path, text: str | None = None) -> set[str]:
    """Every module a Python file (`text`, or read from `path`) imports, at any depth of its code, by
    any of the four forms; relative imports resolved from the package `path` belongs to."""
    tree = ast.parse(path.read_text() if text is None else text)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, path)
            out.add(base)
            out |= {f"{base}.{a.name}".lstrip(".") for a in node.names}  # `from edgekit import converters`
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out |= _dynamic(node, path, strings)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "runtimes").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtimes_never_import_the_converters(path: Path) -> None:
    bad = sorted(m for m in imports_of(path) if any(m == h or m.startswith(f"{h}.") for h in (*HEAVY, "converters")))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("text", [
    "def build():\n    from edgekit.converters.pipeline import convert\n",  # inside a function
    "from edgekit import converters\n",
    "from ...converters import pipeline\n",  # runtimes/tensorrt/x.py: three dots up is edgekit
    "from ... import converters\n",
    "import importlib\nimportlib.import_module('edgekit.converters.pipeline')\n",
    "from importlib import import_module\nimport_module('..converters', package='edgekit.runtimes')\n",
    "__import__('edgekit.converters.pipeline')\n",
    "import importlib\nNAME = 'edgekit.converters.pipeline'\nimportlib.import_module(NAME)\n",
])
def test_the_check_sees_every_form_of_import(text: str) -> None:
    seen = imports_of(ROOT / "runtimes" / "tensorrt" / "x.py", text)
    assert any(m.startswith("edgekit.converters") for m in seen), seen


# Each task kind: (artifact builder, the calls a user makes). One fresh interpreter per kind.
KINDS = {
    "decoder-generate": (converted_gpt2, ["model.generate('the cat', max_new_tokens=4)",
                                         "list(model.generate('the cat', max_new_tokens=4, stream=True))",
                                         "model.generate('the cat', max_new_tokens=4, num_beams=2)"]),
    "seq2seq-generate": (converted_seq2seq, ["model.generate('the cat', max_new_tokens=4)",
                                            "model.generate(['the cat', 'a'], max_new_tokens=4, num_beams=2)"]),
    "chat-generate": (converted_chat, ["model.generate(messages=[{'role': 'user', 'content': 'hi'}], "
                                       "max_new_tokens=4)"]),
    "image-classify": (lambda f: converted(f, "image"), ["model.classify(np.zeros((24, 24, 3), np.uint8), top_k=2)"]),
    "text-classify": (lambda f: converted(f, "text"), ["model.classify(['the cat sat', 'big'], top_k=2)"]),
    "tensor-classify": (lambda f: converted(f, "tensor"), ["model.classify(np.zeros(8, np.float32), top_k=2)"]),
    "ctc-recognize": (converted_w2v, ["model.recognize(np.sin(np.arange(16000, dtype=np.float32) / 7.0))"]),
    "whisper-recognize": (converted_whisper, ["model.recognize(np.sin(np.arange(16000, dtype=np.float32) / 7.0), "
                                              "max_new_tokens=4)",
                                              # Silero VAD's model file, not its package (that imports torch).
                                              "model.recognize(np.sin(np.arange(16000, dtype=np.float32) / 7.0), "
                                              "max_new_tokens=4, vad=True)"]),
}

_CALL = r"""
import json, sys
import numpy as np
import edgekit
def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")
                  or m.startswith("edgekit.converters"))
model = edgekit.load(sys.argv[1], device="cpu")
seen = {"load": heavy()}
for call in json.loads(sys.argv[2]):
    eval(call)
    seen[call] = heavy()
print(json.dumps({"type": type(model).__name__, "heavy": seen}))
"""


@pytest.mark.parametrize("kind", list(KINDS))
def test_load_and_call_import_no_exporter(kind: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    build, calls = KINDS[kind]
    art = build(tmp_path_factory)
    r = subprocess.run([sys.executable, "-c", _CALL, str(art), json.dumps(calls)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path_factory.getbasetemp())
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(seen["heavy"]) == ["load", *calls]  # every call ran
    for step, modules in seen["heavy"].items():
        assert modules == [], f"{kind} ({seen['type']}) imported {modules[:8]} by {step}"
