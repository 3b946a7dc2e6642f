"""Where an ONNX file says its weights live: the `location` of every external-data tensor.

An ONNX graph may keep tensors in side files named by a relative path inside the protobuf. A
crafted file could name `../../home/user/.ssh/id_rsa` or `/etc/shadow`, and the backend would read
it. `external_locations(path)` lists those paths with a minimal protobuf reader (no `onnx` needed
on the device, no 2 GB protobuf limit, nothing executed), and `check_external_data` confines them
to the artifact folder and to the files whose sha256 the manifest records. `tensor_bytes(path)`
sums the bytes of the tensors a graph holds or references: the weights its session loads
(edgekit/memory.py).

The reader walks only the messages that can hold a tensor; the field numbers are onnx.proto's
(a test checks them against the `onnx` package's own descriptors).
"""
from __future__ import annotations

from collections.abc import Callable
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
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_STRINGS = 1, 2, 6  # TensorProto.dims, .data_type, .string_data
# TensorProto.DataType -> bits per element (onnx.proto; 4-bit types are stored two to a byte).
# STRING (8) is absent: its bytes are its strings' lengths.
ELEMENT_BITS: dict[int, int] = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32,
                                13: 64, 14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}


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


def _varints(buf: memoryview, number: int) -> list[int]:
    """The integer values of field `number` of one message, packed (wire 2) or not (wire 0)."""
    out: list[int] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if key >> 3 == number:
                out.append(value)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            size, i = _varint(buf, i)
            if key >> 3 == number:
                j, end = i, i + size
                while j < end:
                    value, j = _varint(buf, j)
                    out.append(value)
            i += size
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def _walk(buf: memoryview, kind: str, depth: int, visit: Callable[[memoryview], None]) -> None:
    """Call `visit` on every TensorProto of the message `buf` of type `kind`, subgraphs included."""
    if depth > _MAX_DEPTH:
        raise ValueError("graphs nested too deeply")
    if kind == "TensorProto":
        visit(buf)
        return
    children = SCHEMA[kind]
    for number, sub in _fields(buf):
        if number in children:
            _walk(sub, children[number], depth + 1, visit)


def _read_tensors(path: Path, visit: Callable[[memoryview], None]) -> None:
    # Read whole: with external data the graph file is small; without, the backend reads it all anyway.
    data = path.read_bytes()
    if not data:
        raise ArtifactError(f"'{path.name}' is empty", fix="convert the model again")
    try:
        _walk(memoryview(data), "ModelProto", 0, visit)
    except (ValueError, IndexError) as e:
        raise ArtifactError(f"'{path.name}' is not a readable ONNX file ({e})", fix="convert the model again") from None


def external_locations(path: Path) -> list[str]:
    """Every external-data `location` in the ONNX file at `path`, in file order."""
    found: list[str] = []

    def visit(tensor: memoryview) -> None:
        for number, sub in _fields(tensor):
            if number == _TENSOR_EXTERNAL_DATA:
                entry = dict(_fields(sub))
                if bytes(entry.get(1, b"")) == b"location":
                    found.append(bytes(entry.get(2, b"")).decode("utf-8", errors="replace"))

    _read_tensors(path, visit)
    return found


def _tensor_bytes(tensor: memoryview) -> int:
    """The bytes of one tensor's values, wherever they are stored (raw, typed fields, external file):
    its element count times its type's size, as the runtime holds it."""
    (dtype,) = _varints(tensor, _TENSOR_TYPE) or [0]
    if dtype == 8:
        return sum(len(sub) for number, sub in _fields(tensor) if number == _TENSOR_STRINGS)
    if dtype not in ELEMENT_BITS:
        raise ValueError(f"a tensor has unknown data type {dtype}")
    count = 1
    for d in _varints(tensor, _TENSOR_DIMS):
        count *= d
    return (count * ELEMENT_BITS[dtype] + 7) // 8


def tensor_bytes(path: Path) -> int:
    """The bytes of every tensor the ONNX file at `path` holds or references (initializers, constants,
    subgraphs'), summed per tensor: a weights file shared by several graphs counts once per graph
    that reads it, which is what each graph's session loads."""
    total = 0

    def visit(tensor: memoryview) -> None:
        nonlocal total
        total += _tensor_bytes(tensor)

    _read_tensors(path, visit)
    return total


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

