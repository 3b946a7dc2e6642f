"""The wheel holds every module of the three source folders; its extras never install both onnxruntime builds;
`import edgekit` stays light."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
X86_LINUX = {"platform_machine": "x86_64", "sys_platform": "linux"}
JETSON = {"platform_machine": "aarch64", "sys_platform": "linux"}
BOTH_BUILDS = {"onnxruntime", "onnxruntime-gpu"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("edgekit-*.whl"))


def _metadata(wheel: Path) -> str:
    z = zipfile.ZipFile(wheel)
    return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def _resolve(requires: list[Requirement], extra: str, env: dict[str, str]) -> set[str]:
    """Project names pip installs for `edgekit[extra]` on `env`: base + extra, self-references followed."""
    names: set[str] = set()
    todo, seen = ["", extra], set()  # "" selects the base requirements (markers without an extra clause)
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        for r in requires:
            if r.marker is not None and not r.marker.evaluate({**env, "extra": e}):
                continue
            if r.marker is None and e:
                continue  # a base requirement, already taken with ""
            if canonicalize_name(r.name) == "edgekit":
                todo.extend(r.extras)  # tensorrt = ["edgekit[gpu]"]
            else:
                names.add(canonicalize_name(r.name))
    return names


def test_wheel_contains_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    # Sub-packages too: each must be listed in pyproject's packages, or the wheel silently lacks it.
    expected = {f"edgekit/{p.relative_to(ROOT / 'edgekit').as_posix()}" for p in (ROOT / "edgekit").rglob("*.py")}
    expected |= {f"edgekit/converters/{p.relative_to(ROOT / 'converters').as_posix()}"
                 for p in (ROOT / "converters").rglob("*.py")}
    expected |= {f"edgekit/runtimes/{p.relative_to(ROOT / 'runtimes').as_posix()}" for p in (ROOT / "runtimes").rglob("*.py")}
    missing = sorted(expected - names)
    assert not missing, f"the wheel misses {missing}"
    assert not any(n.startswith(("converters/", "runtimes/", "tests/")) for n in names)


def test_extras_never_install_both_onnxruntime_builds(wheel: Path) -> None:
    text = _metadata(wheel)
    requires = [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
                if line.startswith("Requires-Dist:")]
    extras = {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Provides-Extra:")}
    assert {"cpu", "gpu", "tensorrt", "export", "dev"} <= extras, extras
    builds = [r for r in requires if canonicalize_name(r.name) in BOTH_BUILDS]
    # Only ever through an extra: not even a platform-marked base requirement.
    assert builds and all(r.marker is not None and re.search(r'extra == "[\w-]+"', str(r.marker)) for r in builds)

    base = _resolve(requires, "", X86_LINUX)
    assert not base & (BOTH_BUILDS | {"torch", "transformers", "tensorrt"}), base
    x86 = {e: _resolve(requires, e, X86_LINUX) for e in extras}
    assert "onnxruntime" in x86["cpu"] and "onnxruntime-gpu" not in x86["cpu"]
    assert {"onnxruntime-gpu", "cuda-python", "tensorrt"} <= x86["gpu"] and "onnxruntime" not in x86["gpu"]
    assert x86["tensorrt"] == x86["gpu"]  # `pip install edgekit[tensorrt]` is the GPU path, as documented
    assert not x86["export"] & BOTH_BUILDS  # converting works with either build: the user picks one
    assert {"onnxruntime", "torch"} <= x86["dev"]
    clashing = sorted(e for e, names in x86.items() if BOTH_BUILDS <= names)
    assert not clashing, f"extras {clashing} install both onnxruntime and onnxruntime-gpu"

    # On Jetson, onnxruntime-gpu and TensorRT come from JetPack: only cuda-python comes from PyPI.
    jetson_gpu = _resolve(requires, "gpu", JETSON) - base
    assert jetson_gpu == {"cuda-python"}, jetson_gpu


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
