"""The wheel holds every module of the three source folders; `import edgekit` stays light."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"edgekit/{p.relative_to(ROOT / 'edgekit').as_posix()}" for p in (ROOT / "edgekit").glob("*.py")}
    expected |= {f"edgekit/converters/{p.name}" for p in (ROOT / "converters").glob("*.py")}
    expected |= {f"edgekit/runtimes/{p.name}" for p in (ROOT / "runtimes").glob("*.py")}
    missing = sorted(expected - names)
    assert not missing, f"the wheel misses {missing}"
    assert not any(n.startswith(("converters/", "runtimes/", "tests/")) for n in names)
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    runtime_deps = [line for line in text.splitlines() if line.startswith("Requires-Dist") and "extra ==" not in line]
    assert not any("torch" in d or "transformers" in d for d in runtime_deps), runtime_deps
    assert any("onnxruntime" in d for d in runtime_deps)


def test_import_and_inference_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, edgekit\n"
        "heavy = [m for m in ('torch', 'tensorrt', 'transformers', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import edgekit.errors, edgekit.manifest, edgekit.cli\n"
        "heavy = [m for m in ('torch', 'tensorrt', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_loading_and_classifying_needs_no_torch(tmp_path: Path) -> None:
    import torch

    import edgekit

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    out = tmp_path / "lin"
    edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 2, 2), labels=["no", "yes"])
    code = (
        "import sys, numpy as np, edgekit\n"
        f"m = edgekit.load({str(out)!r}, device='cpu')\n"
        "p = m.classify(np.zeros((4, 4, 3), dtype=np.uint8), top_k=1)\n"
        "assert p[0].label in ('no', 'yes')\n"
        "heavy = [m for m in ('torch', 'tensorrt', 'transformers', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
