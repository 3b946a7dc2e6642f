"""Per-task request handling for the Triton backend, in plain numpy (no Triton needed to test it).

A request is a dict of input name -> numpy array, as Triton delivers it (serving/config.py names
them); a response is a dict of output name -> array. String tensors are object arrays of bytes.
Everything a client may get wrong raises an EdgekitError, which the backend returns as a 4xx with
this message; the task objects validate options themselves (generate options pass through by name,
so options the Generator learns work over Triton unchanged).
"""
from __future__ import annotations

import inspect
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekit.contract.classify import TextInput
from edgekit.errors import ConfigError, EdgekitError, InputError

Tensors = dict[str, np.ndarray]


def handler_for(model: Any) -> Any:
    """The handler for a loaded model's task."""
    return {"classify": ClassifyHandler, "generate": GenerateHandler, "recognize": RecognizeHandler}[
        model.manifest.task](model)


def strings(values: list[str] | list[bytes], rows: int | None = None) -> np.ndarray:
    """Python strings -> a TYPE_STRING tensor (object array of UTF-8 bytes), shaped (rows, -1) if asked."""
    arr = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    return arr if rows is None else arr.reshape(rows, -1)


def text_of(value: Any, name: str) -> str:
    """One TYPE_STRING element -> str, refusing invalid UTF-8 in edgekit's words."""
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except (UnicodeDecodeError, TypeError) as e:
        raise InputError(f"{name} must be UTF-8 text", found=str(e)) from None


def options_of(inputs: Tensors) -> dict[str, Any]:
    """The OPTIONS tensor (one JSON object of keyword arguments) -> dict."""
    if "OPTIONS" not in inputs:
        return {}
    raw = text_of(inputs["OPTIONS"].reshape(-1)[0], "OPTIONS")
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError("OPTIONS must be one JSON object of keyword options", found=f"{e} in {raw[:80]!r}",
                         fix='send e.g. {"max_new_tokens": 16}') from None
    if not isinstance(opts, dict):
        raise InputError("OPTIONS must be one JSON object of keyword options", found=type(opts).__name__)
    return opts


def _one_of(inputs: Tensors, names: tuple[str, ...]) -> str:
    given = [n for n in names if n in inputs]
    if len(given) != 1:
        raise InputError(f"a request takes exactly one of the inputs {', '.join(names)}",
                         found=", ".join(given) or "none of them")
    return given[0]


class ClassifyHandler:
    """Rows of images (encoded or pixels), texts or tensors -> top-k labels, scores, indices.

    Triton's dynamic batcher hands several requests at once: each is checked and pre-processed on
    its own (a bad one fails alone), then requests whose feeds have the same shapes run as one
    batch. Text rows are padded per request, so only requests padded alike share a batch: every
    answer is the one the request would get alone.
    """

    def __init__(self, model: Any, forward: Any = None) -> None:
        self.model = model
        self.forward = forward or model.forward  # feeds -> logits; a BLS call when Triton runs the graph
        self.data = {"image": ("IMAGE", "PIXELS"), "text": ("TEXT",), "tensor": ("TENSOR",)}[model.kind]

    def run_batch(self, requests: list[Tensors]) -> list[Tensors | EdgekitError]:
        results: list[Tensors | EdgekitError | None] = [None] * len(requests)
        parts: dict[int, list[np.ndarray]] = {}  # request -> the logits of its pieces, in order
        top_ks: dict[int, int] = {}
        ready: dict[tuple[Any, ...], list[tuple[int, int, Tensors]]] = {}  # feed shapes -> (request, piece, feeds)
        for i, inputs in enumerate(requests):
            try:
                pieces, top_ks[i] = self._prepare(inputs)
            except EdgekitError as e:
                results[i] = e
                continue
            parts[i] = [np.empty(0)] * len(pieces)
            for j, feeds in enumerate(pieces):
                key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(feeds.items()))
                ready.setdefault(key, []).append((i, j, feeds))
        for group in ready.values():
            names = list(group[0][2])
            try:
                logits = self.forward({n: np.concatenate([f[n] for _, _, f in group]) for n in names})
            except EdgekitError as e:
                for i, _, _ in group:
                    results[i] = e
                continue
            start = 0
            for i, j, feeds in group:
                rows = len(next(iter(feeds.values())))
                parts[i][j] = logits[start:start + rows]
                start += rows
        for i, pieces in parts.items():
            if results[i] is None:
                results[i] = _guard(lambda x, k=top_ks[i]: self._answer(x, k), np.concatenate(pieces))
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _prepare(self, inputs: Tensors) -> tuple[list[Tensors], int]:
        name = _one_of(inputs, self.data)
        arr = inputs[name]
        if name == "IMAGE":
            items = [_image(v, f"IMAGE row {r}") for r, v in enumerate(arr.reshape(len(arr), -1)[:, 0])]
        elif name == "TEXT":
            items = [text_of(v, "TEXT") for v in arr.reshape(len(arr), -1)[:, 0]]
        else:
            items = list(arr)
        if not items:
            raise InputError("classify got an empty batch", fix="send at least one row")
        top_k = 5
        if "TOP_K" in inputs:
            ks = np.unique(inputs["TOP_K"])
            if len(ks) != 1:
                raise InputError("TOP_K must be the same for every row of a request", found=str(ks.tolist()))
            top_k = int(ks[0])
        if top_k < 1:
            raise InputError("TOP_K must be a positive integer", found=str(top_k))
        x = self.model.contract.input
        if isinstance(x, TextInput) and not x.pad_batches:  # texts that see their padding run unpadded
            return [self.model.prepare([t]) for t in items], top_k
        return [self.model.prepare(items)], top_k

    def _answer(self, logits: np.ndarray, top_k: int) -> Tensors:
        ranked = self.model.rank(logits, top_k)
        return {"LABELS": strings([p.label for row in ranked for p in row], len(ranked)),
                "SCORES": np.array([[p.score for p in row] for row in ranked], np.float32),
                "INDICES": np.array([[p.index for p in row] for row in ranked], np.int32)}


def _image(data: Any, what: str) -> Any:
    """Encoded image bytes -> a PIL image; `what` names the element in the error ("IMAGE row 0")."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
        return img
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image PIL can read", found=f"{len(bytes(data))} bytes "
                         f"starting {bytes(data)[:8]!r}", fix="send the bytes of a JPEG, PNG, BMP or WebP file") from None
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as e:
        raise InputError(f"{what} is not a readable image ({e})",
                         fix="send the bytes of a JPEG, PNG, BMP or WebP file") from None


class GenerateHandler:
    """PROMPT (or INPUT_IDS) + OPTIONS -> TEXT (or OUTPUT_IDS); `stream` yields TEXT pieces.

    A vision-language artifact's PROMPT may come with its images, in prompt order: IMAGE (encoded
    files, one per element) or PIXELS (N x H x W x C uint8), as generate(prompt, images=[...]) takes them.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def _call(self, inputs: Tensors) -> tuple[list[Any], dict[str, Any]]:
        opts = options_of(inputs)
        if "stream" in opts:
            raise ConfigError("'stream' is not an option over Triton", found=f"stream={opts['stream']!r}",
                              fix="call NAME_stream over a gRPC stream for pieces, NAME for the whole text")
        args: list[Any] = []
        if "PROMPT" in inputs:
            args.append(text_of(inputs["PROMPT"].reshape(-1)[0], "PROMPT"))
        _no_server_paths(opts)
        images = _images(inputs)
        if images is not None:
            opts["images"] = images  # the Generator refuses images without a text prompt, in its words
        if "INPUT_IDS" in inputs:
            if "input_ids" in opts:
                raise ConfigError("input_ids came both as the INPUT_IDS tensor and in OPTIONS")
            opts["input_ids"] = inputs["INPUT_IDS"].reshape(1, -1)
        return args, opts

    def run_batch(self, requests: list[Tensors]) -> list[Tensors | EdgekitError]:
        return [_guard(self._run, r) for r in requests]

    def _run(self, inputs: Tensors) -> Tensors:
        args, opts = self._call(inputs)
        out = self.model.generate(*args, **opts)
        if isinstance(out, np.ndarray):
            return {"OUTPUT_IDS": out.reshape(-1).astype(np.int64)}
        return {"TEXT": strings([out if isinstance(out, str) else "".join(out)])}

    def stream(self, inputs: Tensors) -> Iterator[Tensors]:
        args, opts = self._call(inputs)
        for piece in self.model.generate(*args, stream=True, **opts):
            yield {"TEXT": strings([piece])}


def _no_server_paths(opts: dict[str, Any]) -> None:
    """Images come as tensors only: a path in OPTIONS would make the server read its own files."""
    if "images" in opts or _has_image_part(opts.get("messages")):
        raise InputError("images travel in the IMAGE or PIXELS tensors, not in OPTIONS",
                         found="images=" if "images" in opts else "an image part in messages",
                         fix="send PROMPT with the image placeholder and the images as IMAGE (file bytes) or PIXELS")


def _has_image_part(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("type") == "image" or any(_has_image_part(v) for v in value.values())
    return isinstance(value, list) and any(_has_image_part(v) for v in value)


def _images(inputs: Tensors) -> list[Any] | None:
    """IMAGE (encoded files) or PIXELS (N x H x W x C uint8) -> the images of one prompt, in order."""
    given = [n for n in ("IMAGE", "PIXELS") if n in inputs]
    if not given:
        return None
    if len(given) == 2:  # two tensors have no order between them, and a prompt's images do
        raise InputError("a request takes its images as IMAGE or as PIXELS, not both", found="IMAGE and PIXELS",
                         fix="send every image as encoded bytes in IMAGE, or same-sized arrays in PIXELS")
    if given[0] == "IMAGE":
        return [_image(v, f"IMAGE {i}") for i, v in enumerate(inputs["IMAGE"].reshape(-1))]
    pixels = inputs["PIXELS"]
    if pixels.ndim != 4:
        raise InputError("PIXELS must be N x H x W x C uint8 (N images of one size)", found=f"shape {list(pixels.shape)}")
    return list(pixels)  # each HxWxC array is checked and read by the Generator's load_image


class RecognizeHandler:
    """AUDIO (file bytes) or PCM + SAMPLE_RATE, OPTIONS -> TEXT, SEGMENTS (JSON), LANGUAGE; `stream`
    feeds the clip to recognize_stream in `chunk_s` pieces -> TEXT, PARTIAL, WORDS, AUDIO_S, IS_FINAL."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.options = _keywords(model.recognize, "audio_in")
        streams = hasattr(model, "recognize_stream")
        self.stream_options = _keywords(model.recognize_stream, "chunks") + ["chunk_s"] if streams else []

    def run_batch(self, requests: list[Tensors]) -> list[Tensors | EdgekitError]:
        return [_guard(self._run, r) for r in requests]

    def _run(self, inputs: Tensors) -> Tensors:
        opts = _known(options_of(inputs), self.options, "recognize")
        wave, rate = _wave(inputs)
        t = self.model.recognize(wave, sample_rate=rate, **opts)
        segments = [{"text": s.text, "start": s.start, "end": s.end} for s in t.segments]
        return {"TEXT": strings([t.text]), "SEGMENTS": strings([json.dumps(segments)]),
                "LANGUAGE": strings([t.language or ""])}

    def stream(self, inputs: Tensors) -> Iterator[Tensors]:
        opts = _known(options_of(inputs), self.stream_options, "recognize_stream")
        chunk_s = opts.pop("chunk_s", 0.5)
        if isinstance(chunk_s, bool) or not isinstance(chunk_s, (int, float)) or not chunk_s > 0:
            raise ConfigError("chunk_s (the pieces the server cuts the clip into) must be a positive number "
                              "of seconds", found=repr(chunk_s), fix='e.g. {"chunk_s": 0.5}')
        wave, rate = _wave(inputs)
        step = max(1, int(chunk_s * (rate or self.model.sample_rate)))
        pieces = (wave[i:i + step] for i in range(0, len(wave), step))
        for u in self.model.recognize_stream(pieces, sample_rate=rate, **opts):
            words = [{"text": w.text, "start": w.start, "end": w.end} for w in u.words]
            yield {"TEXT": strings([u.text_final]), "PARTIAL": strings([u.text_partial]),
                   "WORDS": strings([json.dumps(words)]), "AUDIO_S": np.array([u.audio_s], np.float32),
                   "IS_FINAL": np.array([u.is_final])}


def _keywords(method: Any, *data: str) -> list[str]:
    """A task call's keyword options: its parameters but the data and sample_rate (a tensor of its own)."""
    return sorted(n for n in inspect.signature(method).parameters if n not in (*data, "sample_rate"))


def _known(opts: dict[str, Any], names: list[str], call: str) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(names))
    if unknown:
        raise ConfigError(f"{call} got unknown options {unknown}", fix=f"use {', '.join(names)}")
    return opts


def _wave(inputs: Tensors) -> tuple[np.ndarray, int | None]:
    """AUDIO (a file, its own rate) or PCM (+ SAMPLE_RATE) -> the waveform and its rate (None: the model's)."""
    rate = int(inputs["SAMPLE_RATE"].reshape(-1)[0]) if "SAMPLE_RATE" in inputs else None
    if _one_of(inputs, ("AUDIO", "PCM")) == "AUDIO":
        if rate is not None:
            raise InputError("SAMPLE_RATE is only for PCM; an audio file carries its own rate", fix="drop SAMPLE_RATE")
        return _audio(inputs["AUDIO"].reshape(-1)[0])
    return inputs["PCM"].reshape(-1), rate


def _audio(data: Any) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wave, rate = sf.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError for unreadable data
        raise InputError(f"AUDIO is not a readable audio file ({e})",
                         fix="send the bytes of a WAV, FLAC or OGG file, or PCM + SAMPLE_RATE") from None
    return wave, int(rate)


def _guard(fn: Any, inputs: Any) -> Tensors | EdgekitError:
    try:
        return fn(inputs)  # type: ignore[no-any-return]
    except EdgekitError as e:
        return e
