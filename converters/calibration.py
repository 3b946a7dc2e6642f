"""The user's calibration data, in whatever form it comes, as batches of graph feeds (classify).

Accepted (what Torch-TensorRT, ModelOpt and Optimum users already have at hand):
  a folder of images, an image file, a .npy file, a .txt file of texts;
  PIL images, uint8 HxW / HxWxC arrays, image paths (pre-processed as at run time);
  float tensors or arrays in the graph's layout, with or without the batch axis;
  one big batch tensor; a list of them; an iterable or DataLoader of tensors or of (x, y) tuples;
  texts (a list of strings).
Raw inputs (images, texts) are also kept: the parity gate runs them end to end.
A wrong shape is refused naming the one expected.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract.classify import ImageInput, TensorInput, TextInput
from edgekit.errors import InputError

BATCH = 8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
Feeds = dict[str, np.ndarray]


@dataclass
class Read:
    feeds: list[Feeds] = field(default_factory=list)  # batches of graph feeds
    raw: list[Any] = field(default_factory=list)  # the raw images / texts among them (end-to-end parity)


def read_classify(data: Any, x: ImageInput | TextInput | TensorInput, name: str, sample_shape: tuple[int, ...],
                  dtype: str, encode: Callable[[list[str]], Feeds]) -> Read:
    """`data` -> feeds for the graph input `name` of per-sample shape `sample_shape`."""
    if data is None:
        return Read()
    tensors: list[np.ndarray] = []  # single samples in the graph's layout
    raw: list[Any] = []
    for item in _items(data):
        if isinstance(item, str) and isinstance(x, TextInput):
            raw.append(item)
        elif _is_raw_image(item) and isinstance(x, ImageInput):
            raw.append(item)
        else:
            tensors += _samples(item, sample_shape, dtype)
    if not raw and not tensors:
        raise InputError("the calibration data is empty", fix="pass at least a few representative samples")
    feeds: list[Feeds] = []
    for i in range(0, len(raw), BATCH):
        chunk = raw[i : i + BATCH]
        if isinstance(x, TextInput):
            feeds.append(encode(chunk))
        else:
            from edgekit.preprocess.image import preprocess_images

            assert isinstance(x, ImageInput)
            feeds.append({name: preprocess_images(chunk, x)})
    for i in range(0, len(tensors), BATCH):
        feeds.append({name: np.ascontiguousarray(np.stack(tensors[i : i + BATCH]))})
    return Read(feeds, raw)


def _items(data: Any) -> Iterable[Any]:
    """Flatten the containers users pass into single items (or whole batches)."""
    if isinstance(data, (str, Path)):
        p = Path(data)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"no image files in '{p}'", found="suffixes " + ", ".join(
                    sorted({f.suffix for f in p.iterdir()})[:8]) or "an empty folder",
                    fix=f"put {'/'.join(IMAGE_SUFFIXES[:4])} files there")
            return files
        if p.suffix == ".npy" and p.is_file():
            return [np.load(p, allow_pickle=False)]
        if p.suffix == ".txt" and p.is_file():
            return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            return [p]
        raise InputError(f"cannot read calibration data from '{p}'",
                         fix="pass a folder of images, an image, a .npy array, a .txt file of texts, or the samples")
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        return list(data)  # a batch of HxWxC pictures
    if _is_array(data) or _is_raw_image(data):
        return [data]
    if isinstance(data, dict):
        raise InputError("calibration got a dict", fix="pass the samples (a list, a tensor, or a DataLoader)")
    try:
        it = iter(data)
    except TypeError:
        raise InputError(f"cannot read calibration data from a {type(data).__name__}",
                         fix="pass images, arrays or tensors, a DataLoader, texts, or a folder/file") from None
    out: list[Any] = []
    for item in it:
        if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
            item = item[0]  # a (x, y) pair from a dataset or DataLoader: x is the input
        if isinstance(item, dict):
            raise InputError("a calibration item is a dict", fix="yield tensors, or (x, y) tuples")
        out.append(item)
    return out


def _is_array(v: Any) -> bool:
    """A numpy array or a torch tensor (torch is not imported here: a DataLoader is no tensor)."""
    return isinstance(v, np.ndarray) or (type(v).__module__.startswith("torch") and hasattr(v, "detach")
                                         and hasattr(v, "shape"))


def _is_raw_image(v: Any) -> bool:
    if type(v).__module__.startswith("PIL."):
        return True
    if isinstance(v, Path) or (isinstance(v, str) and Path(v).suffix.lower() in IMAGE_SUFFIXES):
        return True
    return isinstance(v, np.ndarray) and v.dtype == np.uint8


def _samples(item: Any, shape: tuple[int, ...], dtype: str) -> list[np.ndarray]:
    """A tensor/array with or without the batch axis -> single samples of `shape`."""
    if not _is_array(item):
        raise InputError(f"cannot use a {type(item).__name__} as a calibration sample",
                         fix="pass tensors or arrays, images, or texts")
    arr = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
    if tuple(arr.shape) == tuple(shape):
        return [arr.astype(dtype, copy=False)]
    if arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == tuple(shape):
        return [a.astype(dtype, copy=False) for a in arr]
    raise InputError("a calibration sample has the wrong shape", found=f"shape {list(arr.shape)}",
                     fix=f"pass samples of shape {list(shape)} or batches of shape [N, {', '.join(map(str, shape))}] "
                         "(the graph's layout), or raw images / texts")
