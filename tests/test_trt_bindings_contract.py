"""Every TensorRT / cuda-python name edgekit's code uses exists in the real bindings.

TensorRT cannot run here (no GPU, no libnvinfer), so this is how a typo or an API that TensorRT
10.3 (JetPack 6) or 11.x lacks is caught in CI. The names are read from our own source with
`ast`, so the check cannot drift from the code:

- every attribute read or method called whose owner is not explained by a known non-TensorRT
  type (numpy arrays, paths, dicts, strings, loggers, locks, onnxruntime sessions, subprocess
  results, our own classes, imported Python modules) must be a TensorRT name (in 10.3 *and* 11.x) or, for `cu`/`cudart` owners and
  `cuda*` names, a cuda-python runtime name (12.9 and 13);
- methods of classes that subclass a `trt.*` class (logger, progress monitor) are overrides
  and must be TensorRT names too;
- the recording fakes the control-flow tests use expose only real names.

A TensorRT name that collides with a Python attribute name (e.g. `name`) is not distinguishable
by this check. The names come from tests/data/trt_api_names.json (regenerate with
tools/extract_trt_names.py; `--check` re-derives it from the wheels and compares, where they are at hand:
TensorRT 10.3's bindings are only on NVIDIA's index).
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "trt_api_names.json"
TRT = ROOT / "runtimes" / "tensorrt"
SOURCES = [TRT / "__init__.py", TRT / "build.py", TRT / "runner.py", TRT / "logger.py", TRT / "profiles.py",
           TRT / "fingerprint.py", ROOT / "runtimes" / "probe.py", ROOT / "runtimes" / "cuda.py",
           ROOT / "runtimes" / "onnxruntime" / "runner.py", ROOT / "runtimes" / "onnxruntime" / "__init__.py"]
CUDA_OWNERS = {"cu", "cudart", "self.cudart", "self.cu", "props"}  # props: cudaGetDeviceProperties' result
# Names edgekit must find in the bindings for the build/run path to work at all (collector sanity).
CORE = {"OnnxParser", "parse_from_file", "num_errors", "get_error", "STRONGLY_TYPED", "create_optimization_profile",
        "set_shape", "add_optimization_profile", "set_memory_pool_limit", "create_timing_cache", "set_timing_cache",
        "get_timing_cache", "build_serialized_network", "deserialize_cuda_engine", "create_execution_context",
        "set_input_shape", "set_tensor_address", "execute_async_v3", "set_optimization_profile_async",
        "phase_start", "step_complete", "phase_finish", "DLA_core", "GPU_FALLBACK", "AMPERE_PLUS",
        "VERSION_COMPATIBLE", "cudaMalloc", "cudaMemcpyAsync", "cudaStreamSynchronize", "cudaMemcpy2DAsync",
        "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch"}


def _names() -> dict[str, dict[str, set[str]]]:
    data = json.loads(DATA.read_text())
    return {mod: {ver: set(e["names"]) for ver, e in vers.items()} for mod, vers in data.items()}


def _has(names: set[str], name: str) -> bool:
    # The linker stores a string that is the tail of another only once ("INPUT" in "CONDITIONAL_INPUT").
    return name in names or any(s.endswith(name) for s in names)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _known_attributes(tree: ast.Module) -> set[str]:
    """Attributes explained by non-TensorRT types: Python/numpy objects and the module's own classes."""
    import edgekit.artifact as A
    import edgekit.contract as C
    import edgekit.engines as ENG
    import edgekit.errors as E
    import edgekit.manifest as M
    import edgekit.parity_report as PR
    import edgekit.runtimes.base as B
    import edgekit.runtimes.cuda as CU
    import edgekit.runtimes.tensorrt.build as T

    import subprocess

    import onnxruntime as ort

    objects = [subprocess.CompletedProcess([], 0, "", ""), ort, ort.InferenceSession, ort.SessionOptions(), ort.OrtValue,
               threading.Condition(),
               ort.IOBinding, B.StepSpec, B.HostStepper(None, B.StepSpec({}, {}, {}, {})), CU.DeviceBuffers(None), dict, list, str, bytes, tuple, set, int, float, object, np.ndarray, np.dtype, Path, logging.Logger,
               threading.local(), threading.Lock(), hashlib.sha256(), Exception, M.Manifest, C.GraphSpec,
               C.TensorSpec, C.Section, M.Precision, M.RuntimeGraph, A.Artifact, T.BuildOptions, T.Eta, ENG.Machine, ENG.Fingerprint,
               ENG.EngineRecord, ENG.EngineOptions, ENG.Profile, PR.ParityReport, E.EngineError("an edgekit error", found="", fix="")]
    known = {a for o in objects for a in dir(o)}
    known |= {f for o in objects for f in getattr(o, "__dataclass_fields__", {})}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and not any(_dotted(b).startswith("trt.") for b in node.bases):
            known |= {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            for sub in ast.walk(node):  # attributes the class stores on self
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and _dotted(sub.value) == "self":
                    known.add(sub.attr)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:  # self.x = ... / self._local.x = ... anywhere: our own state
            if isinstance(t, ast.Attribute) and _dotted(t.value).split(".")[0] == "self":
                known.add(t.attr)
    return known


def _python_modules(tree: ast.Module) -> set[str]:
    """Names bound by imports of anything but tensorrt/cuda (their attributes are not ours to check)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith(("tensorrt", "cuda"))}
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(("tensorrt", "cuda")):
            out |= {a.asname or a.name for a in node.names}
    return out


def used_names(path: Path) -> tuple[set[str], set[str]]:
    """(TensorRT names, cuda-python names) that `path` uses."""
    tree = ast.parse(path.read_text())
    known, modules = _known_attributes(tree), _python_modules(tree)
    trt_names, cuda_names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = _dotted(node.value)
            if owner.split(".")[0] in modules and owner.split(".")[0] not in ("trt", "cu", "cudart"):
                continue
            if owner in CUDA_OWNERS or owner.startswith(("cu.", "cudart.")):
                cuda_names.add(node.attr)
            elif owner.split(".")[0] == "trt":
                trt_names.add(node.attr)
            elif node.attr not in known:
                (cuda_names if node.attr.startswith("cuda") else trt_names).add(node.attr)
        if isinstance(node, ast.Call) and _dotted(node.func) in ("hasattr", "getattr") and len(node.args) >= 2:
            if _dotted(node.args[0]) == "trt" and isinstance(node.args[1], ast.Constant):
                trt_names.add(str(node.args[1].value))
        if isinstance(node, ast.ClassDef) and any(_dotted(b).startswith("trt.") for b in node.bases):
            trt_names |= {n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"}
    return trt_names, cuda_names


def _missing(used: set[str], tables: dict[str, set[str]]) -> dict[str, list[str]]:
    return {ver: sorted(n for n in used if not _has(names, n)) for ver, names in tables.items()
            if any(not _has(names, n) for n in used)}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_name_exists_in_tensorrt_10_and_11_and_cuda_python(path: Path) -> None:
    tables = _names()
    assert set(tables["tensorrt"]) >= {"10.3.0"} and any(v.startswith("11.") for v in tables["tensorrt"])
    trt_used, cuda_used = used_names(path)
    assert _missing(trt_used, tables["tensorrt"]) == {}
    assert _missing(cuda_used, tables["cuda.bindings.runtime"]) == {}


def test_collector_sees_the_core_api() -> None:
    used = set().union(*(a | b for a, b in map(used_names, SOURCES)))
    assert CORE <= used, sorted(CORE - used)


def test_collector_catches_an_invented_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(trt, cu, path):\n    b = trt.Builder(None)\n    b.build_engine_v2(path.name)\n"
                   "    cu.cudaMallocMagic(3)\n")
    trt_used, cuda_used = used_names(bad)
    tables = _names()
    assert _missing(trt_used, tables["tensorrt"]) == {v: ["build_engine_v2"] for v in tables["tensorrt"]}
    assert "cudaMallocMagic" in _missing(cuda_used, tables["cuda.bindings.runtime"])["12.9.10"]


def test_fakes_expose_only_real_names() -> None:
    import trt_fakes as F

    calls = F.Calls()
    trt, cu = F.make_trt(calls), F.make_cudart(calls)
    tables = _names()
    public = {n for n in vars(trt) if not n.startswith("_")} | {"__version__"}
    for cls in (trt.Builder, trt.Runtime, trt.OnnxParser, trt.ILogger, trt.IProgressMonitor):
        public |= {n for n in vars(cls) if not n.startswith("_")}
    assert _missing(public, tables["tensorrt"]) == {}
    fake_cuda = {n for n in vars(cu) if n.startswith("cuda")}
    assert _missing(fake_cuda, tables["cuda.bindings.runtime"]) == {}
