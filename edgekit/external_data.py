"""Where an ONNX file says its weights live: the `location` of every external-data tensor.

An ONNX graph may keep tensors in side files named by a relative path inside the protobuf. A
crafted file could name `../../home/user/.ssh/id_rsa` or `/etc/shadow`, and the backend would read
it. `external_locations(path)` lists those paths with a minimal protobuf reader (no `onnx` needed
on the device, no 2 GB protobuf limit, nothing executed), and `check_external_data` confines them
to the artifact folder and to the files whose sha256 the manifest records.

The reader walks only the messages that can hold a tensor; the field numbers are onnx.proto's
(a test checks them against the `onnx` package's own descriptors).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from edgekit.errors import ArtifactError

# message -> {field number: message type of that (repeated) field}. Data, not code paths.
SCHEMA: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto", 11: "GraphProto",
                       22: "SparseTensorProto", 23: "SparseTensorProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
}
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated StringStringEntryProto {1: key, 2: value}
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies); deeper means a crafted file


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or oversized varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, memoryview]]:
    """The length-delimited fields of one message as (number, bytes); other wire types skipped."""
    out: list[tuple[int, memoryview]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > len(buf):
                raise ValueError("a field runs past the end of its message")
            out.append((number, buf[i : i + size]))
            i += size
        else:  # groups (3, 4) are not used by onnx.proto
            raise ValueError(f"unexpected wire type {wire}")
        if i > len(buf):
            raise ValueError("a field runs past the end of its message")
    return out


def _walk(buf: memoryview, kind: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("graphs nested too deeply")
    if kind == "TensorProto":
        for number, sub in _fields(buf):
            if number == _TENSOR_EXTERNAL_DATA:
                entry = dict(_fields(sub))
                if bytes(entry.get(1, b"")) == b"location":
                    found.append(bytes(entry.get(2, b"")).decode("utf-8", errors="replace"))
        return
    children = SCHEMA[kind]
    for number, sub in _fields(buf):
        if number in children:
            _walk(sub, children[number], depth + 1, found)


def external_locations(path: Path) -> list[str]:
    """Every external-data `location` in the ONNX file at `path`, in file order."""
    # Read whole: with external data the graph file is small; without, the backend reads it all anyway.
    data = path.read_bytes()
    if not data:
        raise ArtifactError(f"'{path.name}' is empty", fix="convert the model again")
    found: list[str] = []
    try:
        _walk(memoryview(data), "ModelProto", 0, found)
    except (ValueError, IndexError) as e:
        raise ArtifactError(f"'{path.name}' is not a readable ONNX file ({e})", fix="convert the model again") from None
    return found


def check_external_data(folder: Path, graph_file: str, listed: set[str]) -> None:
    """Refuse external data outside `folder` or not among the checksummed files `listed`."""
    model = (folder / graph_file).resolve()
    root = folder.resolve()
    for loc in external_locations(model):
        absolute = PurePosixPath(loc).is_absolute() or PureWindowsPath(loc).is_absolute() or PureWindowsPath(loc).drive
        target = (model.parent / loc).resolve()
        rel = target.relative_to(root).as_posix() if target.is_relative_to(root) else None
        if absolute or "\x00" in loc or rel is None:
            raise ArtifactError(
                f"'{graph_file}' reads external data from '{loc}', outside the artifact folder",
                found="an external-data path that escapes the folder (absolute or '..')",
                fix="this artifact was tampered with; do not use it, convert the model again",
            )
        if rel not in listed:
            raise ArtifactError(
                f"'{graph_file}' reads external data from '{loc}', which the manifest has no sha256 for",
                fix="convert the model again so every weight file is checksummed",
            )
