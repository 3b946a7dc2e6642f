"""Artifacts are refused when altered, cannot make a backend read outside their folder, never
unpickle anything, and a convert killed at any point leaves the user's old artifact in place."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.artifact import open_artifact, sha256_file, staging
from edgekit.errors import ArtifactError, ChecksumError
from edgekit.external_data import SCHEMA, external_locations
from reliability_models import converted

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted(tmp_path_factory, "image")


@pytest.fixture()
def art(cnn: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(cnn, tmp_path / "art"))


def _rehash(folder: Path, rel: str) -> None:
    """What an attacker who also edits the manifest does: make the checksums agree again."""
    m = json.loads((folder / "edgekit.json").read_text())
    m["files"][rel] = sha256_file(folder / rel)
    (folder / "edgekit.json").write_text(json.dumps(m))


# ------------------------------------------------------------------ checksums


def test_the_artifact_has_external_data_listed_with_its_checksum(art: Path) -> None:
    files = json.loads((art / "edgekit.json").read_text())["files"]
    assert external_locations(art / "model.onnx") and set(external_locations(art / "model.onnx")) <= set(files)


@pytest.mark.parametrize("rel", ["model.onnx", "weights.data"])
def test_truncated_file_is_refused_by_checksum(art: Path, rel: str) -> None:
    data = (art / rel).read_bytes()
    (art / rel).write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match=re.escape(rel)):
        edgekit.load(art, device="cpu")


@pytest.mark.parametrize("rel", ["model.onnx", "weights.data"])
def test_one_flipped_byte_is_refused_by_checksum(art: Path, rel: str) -> None:
    data = bytearray((art / rel).read_bytes())
    data[len(data) // 3] ^= 0x01
    (art / rel).write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        open_artifact(art)


def test_missing_file_is_refused(art: Path) -> None:
    (art / "weights.data").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        edgekit.load(art, device="cpu")


def test_truncated_weights_without_verification_are_still_an_edgekit_error(art: Path) -> None:
    # verify=False skips the sha256 pass; the backend's refusal must still come out as ours.
    data = (art / "weights.data").read_bytes()
    (art / "weights.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        edgekit.load(art, device="cpu", verify=False)


def test_manifest_naming_a_file_outside_is_refused(art: Path) -> None:
    m = json.loads((art / "edgekit.json").read_text())
    m["files"]["../outside.bin"] = "0" * 64
    (art / "edgekit.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        open_artifact(art)


@pytest.mark.parametrize("file", ["engines/../../outside.plan", "model.onnx", "engines/sub/x.plan"])
def test_engine_record_naming_a_file_outside_engines_is_refused(art: Path, file: str) -> None:
    m = json.loads((art / "edgekit.json").read_text())
    fp = {"graph": "model", "onnx_sha256": "0" * 64, "gpu": "T4", "cc": "7.5", "trt": "10.3.0", "precision": "fp32",
          "dla_core": None, "profiles": [{"name": "default", "dims": {"batch": [1, 1, 4]}}], "contexts": 1}
    options = {"workspace_mb": 4096, "dla_core": None, "hardware_compatible": False, "version_compatible": False,
               "optimization_level": None, "strongly_typed": True, "contexts": 1}
    record = {"graph": "model", "file": "engines/x.plan", "sha256": "0" * 64, "fingerprint": fp,
              "built_for": {"gpu": "T4", "cc": "7.5", "trt": "10.3.0"}, "options": options, "build_seconds": 1.0}
    m["engines"] = {"x": record}
    (art / "edgekit.json").write_text(json.dumps(m))
    assert open_artifact(art).manifest.engines["x"].file == "engines/x.plan"  # the well-formed record reads
    m["engines"] = {"x": {**record, "file": file}}
    (art / "edgekit.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="malformed at engines.x.*not inside the artifact's engines/"):
        open_artifact(art)


# ------------------------------------------------------------------ external data confinement


def _point_external_data_at(art: Path, location: str) -> None:
    import onnx

    model = onnx.load(str(art / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    (art / "model.onnx").write_bytes(model.SerializeToString())
    _rehash(art, "model.onnx")


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(art: Path, where: str) -> None:
    # A secret beside the artifact, holding exactly the bytes the graph expects: if anything
    # read it, the model would load and run.
    secret = art.parent / "secret"
    shutil.copy(art / "weights.data", secret)
    location = {"parent": "../secret", "absolute": str(secret), "symlink": "link.data"}[where]
    if where == "symlink":
        (art / "link.data").symlink_to(secret)
    _point_external_data_at(art, location)
    with pytest.raises(ArtifactError, match="outside the artifact folder") as e:
        edgekit.load(art, device="cpu")
    assert "tampered" in str(e.value)


def test_external_data_not_checksummed_is_refused(art: Path) -> None:
    shutil.copy(art / "weights.data", art / "unlisted.data")
    _point_external_data_at(art, "unlisted.data")
    with pytest.raises(ArtifactError, match="no sha256"):
        edgekit.load(art, device="cpu")


def test_onnxruntime_alone_also_refuses_the_escape(art: Path) -> None:
    # Defence in depth: without our check, onnxruntime (1.32) refuses too; TensorRT's parser
    # makes no such promise, which is why the check sits in open_artifact, before any backend.
    import onnxruntime as ort

    shutil.copy(art / "weights.data", art.parent / "secret")
    _point_external_data_at(art, "../secret")
    with pytest.raises(Exception, match="escapes model directory"):
        ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])


def test_reader_finds_what_onnx_finds_including_subgraphs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def external(name: str, location: str) -> TensorProto:
        t = numpy_helper.from_array(np.ones((2,), np.float32), name)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "8")):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    then = helper.make_graph([helper.make_node("Constant", [], ["y"], value=external("c", "../in-subgraph"))],
                             "then", [], [out])
    other = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "else", [], [out])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out],
                              [external("w", "weights.bin")])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    assert sorted(external_locations(path)) == ["../in-subgraph", "weights.bin"]
    from onnx.external_data_helper import _get_all_tensors

    model = onnx.load(str(path), load_external_data=False)
    theirs = [e.value for t in _get_all_tensors(model) for e in t.external_data if e.key == "location"]
    assert sorted(theirs) == sorted(external_locations(path))


def test_reader_schema_matches_onnx_proto() -> None:
    import onnx

    for message, fields in SCHEMA.items():
        descriptor = getattr(onnx, message).DESCRIPTOR
        for number, kind in fields.items():
            field = descriptor.fields_by_number[number]
            assert field.message_type.name == kind, (message, number)
    assert onnx.TensorProto.DESCRIPTOR.fields_by_name["external_data"].number == 13


@pytest.mark.parametrize("data", [b"", b"\xff" * 64, b"\x3a\xff\xff\xff\xff\x0f", b"garbage that is not protobuf"])
def test_garbage_onnx_file_is_an_artifact_error(art: Path, data: bytes) -> None:
    (art / "model.onnx").write_bytes(data)
    _rehash(art, "model.onnx")
    with pytest.raises(ArtifactError):
        edgekit.load(art, device="cpu")


# ------------------------------------------------------------------ no pickle, no code


def test_loading_and_running_never_unpickles(cnn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("pickle used while loading an artifact")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: refuse() if k.get("allow_pickle") else real_np_load(*a, **k))
    model = edgekit.load(cnn, device="cpu")
    assert model.classify(np.zeros((24, 24, 3), np.uint8), top_k=1)[0].label in ("cat", "dog", "owl")


def test_runtime_sources_have_no_pickle_or_eval() -> None:
    # The device-side code: edgekit/ and runtimes/ (converters run only where the user's PyTorch is).
    bad = re.compile(r"\bpickle\b|allow_pickle\s*=\s*True|torch\.load\(|\beval\(|\bexec\(|marshal\.loads|shelve")
    hits = []
    for folder in ("edgekit", "runtimes"):
        for f in sorted((ROOT / folder).glob("*.py")):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if bad.search(code) and "allow_pickle=False" not in code:
                    hits.append(f"{f.name}:{n}: {line.strip()}")
    assert hits == []


# ------------------------------------------------------------------ convert killed with -9

_CHILD = """
import os, sys, time
sys.path.insert(0, {tests!r})
point = sys.argv[2]

def pause(name):
    print(name, flush=True)
    time.sleep(120)

if point == "staging":
    import tempfile
    real_mkdtemp = tempfile.mkdtemp
    def mkdtemp(*a, **k):
        p = real_mkdtemp(*a, **k)
        if ".edgekit-tmp-" in p:
            pause(point)
        return p
    tempfile.mkdtemp = mkdtemp
elif point == "exported":
    import edgekit.converters.pipeline as P
    real_export = P.export_graph
    def export_graph(g, path):
        spec = real_export(g, path)
        pause(point)
        return spec
    P.export_graph = export_graph
elif point == "manifest":
    from edgekit.manifest import Manifest
    real_save = Manifest.save
    def save(self, folder):
        real_save(self, folder)
        if self.parity:  # the second save, after the parity gate: the folder is complete
            pause(point)
    Manifest.save = save
elif point == "between-renames":
    real_replace = os.replace
    def replace(a, b):
        real_replace(a, b)
        if ".edgekit-old-" in str(b):
            pause(point)
    os.replace = replace

import edgekit
from reliability_models import image_net
spec = image_net()
net = spec.pop("model")
import torch
with torch.no_grad():
    net[-1].bias += 1.0  # a different model: the old artifact must not be replaced by it
edgekit.convert(net, sys.argv[1], overwrite=True, **spec)
print("finished", flush=True)
"""


@pytest.mark.parametrize("point", ["staging", "exported", "manifest", "between-renames"])
def test_convert_killed_leaves_old_artifact(cnn: Path, tmp_path: Path, point: str) -> None:
    out = Path(shutil.copytree(cnn, tmp_path / "models" / "cnn"))
    old_manifest = (out / "edgekit.json").read_bytes()
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(TESTS)))
    child = subprocess.Popen([sys.executable, str(script), str(out), point], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        line = child.stdout.readline().strip() if child.stdout else ""
        assert line == point, f"the child did not reach '{point}' (said {line!r})"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Right after the kill: either the old artifact is in place, or (killed between the two renames)
    # nothing is at `out` -- never a half-written folder.
    if out.exists():
        assert (out / "edgekit.json").read_bytes() == old_manifest
        open_artifact(out)
    else:
        assert point == "between-renames"
    # The next convert into the same parent puts things right before it writes anything.
    with pytest.raises(RuntimeError), staging(out, overwrite=True):
        raise RuntimeError("stop after recovery")
    assert (out / "edgekit.json").read_bytes() == old_manifest
    open_artifact(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cnn"]
    assert edgekit.load(out, device="cpu").classify(np.zeros((24, 24, 3), np.uint8), top_k=1)


# ------------------------------------------------------------------ staging folders of dead processes

_STAGER = """
import sys, time
from edgekit.artifact import staging
with staging(sys.argv[1], overwrite=True) as tmp:
    print(tmp.name, flush=True)
    time.sleep(120)
"""


def _stager(tmp_path: Path, out: Path) -> tuple[subprocess.Popen[str], str]:
    """A process that stages into `out`, says its staging folder's name, and blocks."""
    script = tmp_path / "stager.py"
    script.write_text(_STAGER)
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    name = child.stdout.readline().strip() if child.stdout else ""
    assert name.startswith(".edgekit-tmp-"), f"the child did not stage (said {name!r})"
    return child, name


def _start_time(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[19]  # field 22 of proc(5)


def _recover_now(out: Path) -> None:
    """What the next convert into `out`'s parent does before it writes anything."""
    with pytest.raises(RuntimeError), staging(out, overwrite=True):
        raise RuntimeError("stop after recovery")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="start times are read from Linux's /proc")
def test_staging_folder_of_a_killed_convert_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "models" / "cnn"
    live, live_name = _stager(tmp_path, out)
    dead, dead_name = _stager(tmp_path, out)
    try:
        assert live_name.startswith(f".edgekit-tmp-{live.pid}.{_start_time(live.pid)}-cnn-")
        os.kill(dead.pid, signal.SIGKILL)
        # Not reaped yet (a zombie, as under a supervisor that has not waited): it runs nothing.
        deadline = time.monotonic() + 30
        while Path(f"/proc/{dead.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.01)
        _recover_now(out)
        left = sorted(p.name for p in out.parent.iterdir())
        assert left == [live_name], "the dead convert's folder stays, or the live one's was removed"
        assert dead.wait(timeout=30) == -signal.SIGKILL
        os.kill(live.pid, signal.SIGKILL)
        assert live.wait(timeout=30) == -signal.SIGKILL
        _recover_now(out)
        assert list(out.parent.iterdir()) == []
    finally:
        for child in (live, dead):
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="start times are read from Linux's /proc")
def test_a_reused_pid_does_not_keep_a_dead_convert_folder(tmp_path: Path) -> None:
    """In a container the next convert often gets the killed one's pid: its start time tells them apart."""
    out = tmp_path / "models" / "cnn"
    dead, dead_name = _stager(tmp_path, out)
    os.kill(dead.pid, signal.SIGKILL)
    assert dead.wait(timeout=30) == -signal.SIGKILL
    started = dead_name[len(".edgekit-tmp-"):].split("-", 1)[0].split(".")[1]
    rest = dead_name.split("-", 3)[3]
    # The dead convert's folder as it would be named had it run under this (live) process's pid.
    reused = out.parent / f".edgekit-tmp-{os.getpid()}.{started}-{rest}"
    os.replace(out.parent / dead_name, reused)
    # And a live convert's in this process (another thread's): same pid, same start time.
    mine = out.parent / f".edgekit-tmp-{os.getpid()}.{_start_time(os.getpid())}-cnn-abc"
    mine.mkdir()
    _recover_now(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [mine.name]
