"""No onnxruntime build installed (it is an extra, [cpu] or [gpu]): import works, everything else says the fix.

Each check runs in a fresh interpreter where `import onnxruntime` fails the way it does when neither
onnxruntime nor onnxruntime-gpu is installed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.runtimes import onnxruntime as ort_backend
from edgekit.errors import BackendUnavailableError

CPU_FIX = "pip install 'edgekit[cpu]'"
GPU_FIX = "pip install 'edgekit[gpu]'"

NO_ORT = '''
import sys

# What a missing package looks like to both `import onnxruntime` (ModuleNotFoundError) and
# `importlib.util.find_spec("onnxruntime")` (None), which transformers uses to probe for it.
sys.modules["onnxruntime"] = None
'''


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NO_ORT + code], capture_output=True, text=True, timeout=300)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return _python(f"from edgekit.cli import main\nsys.argv = ['edgekit', *{list(args)!r}]\nmain()\n")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import edgekit

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    out = tmp_path_factory.mktemp("no-ort") / "lin"
    edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 2, 2), labels=["no", "yes"])
    return out


def test_the_shim_really_blocks_onnxruntime() -> None:
    r = _python("import edgekit\ntry:\n    import onnxruntime\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    assert r.returncode == 0 and r.stdout.strip() == "blocked", r.stderr


def test_load_and_convert_say_which_extra_to_install(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    code = (
        "import edgekit, torch\n"
        "from edgekit.errors import BackendUnavailableError\n"
        "def attempt(label, call):\n"
        "    try:\n"
        "        call()\n"
        "    except BackendUnavailableError as e:\n"
        "        print(label, '|', e)\n"
        "    else:\n"
        "        print(label, '| no error')\n"
        "for device in ('auto', 'cpu'):\n"
        f"    attempt(device, lambda: edgekit.load({str(artifact)!r}, device=device))\n"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()\n"
        f"attempt('convert', lambda: edgekit.convert(net, {str(out)!r}, example_inputs=torch.rand(1, 3, 2, 2)))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" | ", 1) for line in r.stdout.splitlines())
    assert set(lines) == {"auto", "cpu", "convert"}, r.stdout
    for label, message in lines.items():
        assert "onnxruntime is not installed" in message, (label, message)
        assert CPU_FIX in message and GPU_FIX in message, (label, message)
    assert "pass device='cpu'" not in lines["cpu"]  # not offered as the way out when cpu is what failed
    assert not out.exists()  # convert refused before exporting anything


def test_run_command_exits_2_with_the_fix(artifact: Path, tmp_path: Path) -> None:
    r = _cli("run", str(artifact), str(tmp_path / "unused.png"))
    assert r.returncode == 2, r.stderr
    assert "onnxruntime is not installed" in r.stderr and CPU_FIX in r.stderr and GPU_FIX in r.stderr
    assert "Traceback" not in r.stderr


def test_doctor_reports_not_installed() -> None:
    r = _cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    ort = report["onnxruntime"]
    assert ort["version"] is None and ort["providers"] == []
    assert "onnxruntime is not installed" in ort["error"] and CPU_FIX in ort["error"] and GPU_FIX in ort["error"]
    assert report["auto"] is None
    assert not report["backends"]["cpu"]["available"]
    assert "onnxruntime is not installed" in report["backends"]["cpu"]["detail"]
    text = _cli("doctor")
    assert text.returncode == 0, text.stderr
    assert "onnxruntime: onnxruntime is not installed" in text.stdout and CPU_FIX in text.stdout
    assert "device='auto' uses: nothing" in text.stdout


def test_a_clobbered_install_says_to_reinstall_one_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # What is left after installing both builds and uninstalling one: the package imports half-way.
    class Broken:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "onnxruntime":
                raise ImportError("cannot import name 'InferenceSession' from 'onnxruntime.capi'")

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(BackendUnavailableError, match="installed but cannot be imported") as e:
        ort_backend.import_onnxruntime()
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in str(e.value) and CPU_FIX in str(e.value)
