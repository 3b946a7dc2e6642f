"""One weights file per artifact: every graph's external data moved into `weights.data`, each byte string once.

A decoder artifact holds two graphs of the same model (the portable graph and onnxruntime's
stand-in), each exported with its own `<graph>.onnx.data`: the embedding, the norms, the output and
down projections are the same bytes in both, and quantized q/k/v and gate/up are rows of the
stand-in's packed weights. `share_weights` writes each payload once and points every graph's
external-data entries (location, offset, length) into that one file.

onnxruntime refuses an external-data location that leaves the model's folder ("External data path
escapes model directory", checked at session creation in onnxruntime 1.32), so every graph sharing
the file sits beside it, in the artifact root. onnxruntime maps a tensor's external data (mmap, pages
read only when touched) where its offset is a multiple of the allocation granularity, 4 KB (64 KB on
Windows), and copies it into memory otherwise (onnxruntime's model_saving_options.h): every stored
tensor starts at a multiple of 4 KB, those of 1 MB or more (its own threshold) at a multiple of 64 KB.
A tensor that is rows of a packed one starts inside it, unaligned: the portable graph's q/k/v, which
onnxruntime reads only where the stand-in does not run.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgekit.errors import ExportError

WEIGHTS_FILE = "weights.data"
ALIGN, ALIGN_LARGE, LARGE = 4096, 65536, 1 << 20


@dataclass(frozen=True)
class Shared:
    tensors: int  # external tensors over all graphs
    stored: int  # payloads written
    inside: int  # tensors whose bytes are a row range of a larger stored tensor (a packed weight's part)
    bytes_in: int  # what the graphs' own data files held
    bytes_out: int  # the weights file's size (alignment padding included)


@dataclass
class _Stored:
    offset: int
    data: bytes
    row: int  # bytes per row (dim 0) of the tensor first stored here
    starts: dict[bytes, list[int]] | None = None  # a row's first bytes -> where such rows start (made on use)

    def rows_starting(self, head: bytes) -> list[int]:
        if self.starts is None:
            self.starts = {}
            for at in range(0, len(self.data), self.row):
                self.starts.setdefault(self.data[at : at + min(_HEAD, self.row)], []).append(at)
        return self.starts.get(head, [])


_HEAD = 64  # bytes of a row that index it: a lookup, not a scan of every stored byte (a 113 MB embedding)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of `graph` and its subgraphs: initializers and node attributes."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def _external(tensor: onnx.TensorProto) -> dict[str, str] | None:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in tensor.external_data}


def _kind(tensor: onnx.TensorProto) -> tuple[int, tuple[int, ...]]:
    """What a tensor can be a row range of: the same element type and the same dims after the first."""
    return tensor.data_type, tuple(tensor.dims[1:])


def share_weights(folder: Path, graph_files: list[str]) -> Shared:
    """Rewrite the graphs `graph_files` (paths relative to `folder`, all in its root) to read their
    external data from `folder/weights.data`, each payload stored once; their own data files are removed.

    A tensor equal to another is stored once (sha256 of its bytes). A tensor equal to a row range of a
    larger one of its kind reads that range: onnxruntime's stand-in packs q/k/v (and gate/up) into one
    weight, [q; k; v] along the output dimension, and MatMulNBits keeps the output dimension first
    in its weights, scales and zero points, so each of the portable graph's int4/int8 projections is
    rows of the packed one. Larger tensors are stored first, so a packed weight precedes its parts.
    """
    if any(Path(f).parent != Path(".") for f in graph_files):
        raise ExportError("graphs sharing one weights file must sit in the artifact root", found=str(graph_files),
                          fix="report this as a bug in edgekit")
    models = {f: onnx.load(str(folder / f), load_external_data=False) for f in graph_files}
    found = [(t, info) for m in models.values() for t in _tensors(m.graph) if (info := _external(t)) is not None]
    payloads = [_read(folder, info) for _, info in found]
    stored: dict[str, _Stored] = {}  # sha256 -> where its bytes are
    by_kind: dict[tuple[int, tuple[int, ...]], list[_Stored]] = {}
    written = inside = 0
    out_path = folder / (WEIGHTS_FILE + ".partial")  # the graphs' data files are read while it is written
    with open(out_path, "wb") as out:
        for i in sorted(range(len(found)), key=lambda i: -len(payloads[i])):
            tensor, data = found[i][0], payloads[i]
            digest = hashlib.sha256(data).hexdigest()
            offset = stored[digest].offset if digest in stored else _row_range(by_kind.get(_kind(tensor), []), data)
            if offset is None:
                offset = -out.tell() % (ALIGN_LARGE if len(data) >= LARGE else ALIGN) + out.tell()
                out.write(b"\0" * (offset - out.tell()))
                out.write(data)
                written += 1
                rows = tensor.dims[0] if tensor.dims else 1
                by_kind.setdefault(_kind(tensor), []).append(_Stored(offset, data, len(data) // max(rows, 1)))
            elif digest not in stored:
                inside += 1
            stored.setdefault(digest, _Stored(offset, data, 0))
            del tensor.external_data[:]
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(data)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        size = out.tell()
    for f, model in models.items():
        (folder / f).write_bytes(model.SerializeToString())  # weights stay external: no 2 GB protobuf limit
    for loc in {info["location"] for _, info in found}:
        (folder / loc).unlink()
    if found:
        out_path.replace(folder / WEIGHTS_FILE)
    else:
        out_path.unlink()
    return Shared(len(found), written, inside, sum(map(len, payloads)), size)


def _row_range(candidates: list[_Stored], data: bytes) -> int | None:
    """The file offset of `data` as whole rows of a stored tensor of its kind, if it is one."""
    for c in candidates:
        if len(c.data) <= len(data) or not c.row or len(data) % c.row:
            continue
        for at in c.rows_starting(data[: min(_HEAD, c.row)]):
            if c.data[at : at + len(data)] == data:
                return c.offset + at
    return None

def _read(folder: Path, info: dict[str, str]) -> bytes:
    offset, length = int(info.get("offset", "0")), info.get("length")
    with open(folder / info["location"], "rb") as f:
        f.seek(offset)
        return f.read(int(length)) if length is not None else f.read()
