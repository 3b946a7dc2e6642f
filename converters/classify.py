"""Export specs for classifiers: plain PyTorch modules and Hugging Face image/text classifiers.

A spec declares the graph's inputs, named dynamic dims, dummy inputs for parity, pre-processing
and labels. Any `*ForImageClassification` / `*ForSequenceClassification` works through the two
generic Hugging Face specs; a family that truly differs would get its own entry in `SPECS`.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InputError, SourceError
from edgekit.converters.export import GraphExport
from edgekit.converters.parity import graph_parity
from edgekit.converters.pipeline import ConvertOptions, Plan
from edgekit.converters.sources import Source

_CALIBRATION_BATCH = 8
_PARITY_SAMPLES = 32


def plan(src: Source, opts: ConvertOptions) -> Plan:
    family = _family(src)
    return SPECS[family](src, opts)


def _family(src: Source) -> str:
    if src.kind != "hf":
        return "torch-module"
    arch = src.architecture
    for suffix, family in (("ForImageClassification", "hf-image"), ("ForSequenceClassification", "hf-text")):
        if arch.endswith(suffix):
            return family
    raise SourceError(
        f"'{src.description}' is a {arch or 'model without architectures'}, not a classifier",
        fix="classify supports *ForImageClassification and *ForSequenceClassification folders",
    )


# ---------------------------------------------------------------- plain PyTorch modules


def _torch_module(src: Source, opts: ConvertOptions) -> Plan:
    import torch

    if not src.example_inputs or len(src.example_inputs) != 1 or not isinstance(src.example_inputs[0], torch.Tensor):
        raise ConfigError(
            "a plain PyTorch classifier needs example_inputs: one tensor with a batch axis",
            found=f"{type(src.example_inputs).__name__}",
            fix="pass example_inputs=torch.rand(1, 3, 224, 224) (the shape your model takes)",
        )
    x = src.example_inputs[0]
    with torch.no_grad():
        logits = _call(src.module, x)
    if logits.ndim != 2:
        raise SourceError("a classifier must return (batch, classes) logits", found=f"output shape {list(logits.shape)}")
    n_classes = int(logits.shape[1])
    labels = src.labels or [f"class_{i}" for i in range(n_classes)]
    if len(labels) != n_classes:
        raise ConfigError(f"{len(labels)} labels given for a model with {n_classes} outputs", fix="pass one label per class")

    batch = torch.export.Dim("batch", min=1, max=4096)
    if x.ndim == 4 and x.dtype.is_floating_point:
        kind, name = "image", "pixel_values"
        pre = _image_defaults(x, src.preprocess or {})
    elif x.ndim == 2 and not x.dtype.is_floating_point:
        kind, name = "text", "input_ids"
        pre = _text_pre_for_module(src)
    else:
        kind, name, pre = "tensor", "input", {}
    dims: dict[int, Any] = {0: batch}
    if kind == "text":
        dims[1] = torch.export.Dim("sequence", min=1, max=int(pre["max_length"]))
    if src.kind == "pt2":
        module, dynamic = src.module, None  # its dynamic dims were fixed when it was exported
    else:
        module, dynamic = src.module, (dims,)
    example = x if x.shape[0] > 1 or src.kind == "pt2" else x.expand(2, *x.shape[1:]).contiguous()
    graph = GraphExport("model", module, (example,), [name], ["logits"], dynamic)
    pre["kind"] = kind
    pre.setdefault("inputs", [name])
    files = _tokenizer_files(src) if kind == "text" else {}
    sample = _random_sampler(kind, x, pre)
    return _plan("torch-module", graph, pre, labels, files, src, sample, kind)


def _call(module: Any, x: Any) -> Any:
    import torch

    fn = module.module() if isinstance(module, torch.export.ExportedProgram) else module
    out = fn(x)
    return out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)


def _image_defaults(x: Any, user: dict[str, Any]) -> dict[str, Any]:
    h, w = int(x.shape[2]), int(x.shape[3])
    c = int(x.shape[1])
    pre: dict[str, Any] = {
        "size": [h, w], "resize": [h, w], "crop": None, "interpolation": "bilinear",
        "rescale": 1.0 / 255.0, "mean": [0.0] * c, "std": [1.0] * c,
        "channels": "L" if c == 1 else "RGB", "layout": "NCHW",
    }
    unknown = set(user) - set(pre)
    if unknown:
        raise ConfigError(f"unknown preprocess keys {sorted(unknown)}", found=f"known keys {sorted(pre)}")
    pre.update(user)
    return pre


def _text_pre_for_module(src: Source) -> dict[str, Any]:
    if src.tokenizer is None:
        raise ConfigError("a text classifier needs tokenizer=", fix="pass a tokenizers.Tokenizer or a tokenizer.json path")
    tok = _as_tokenizer(src.tokenizer)
    pad = tok.token_to_id("[PAD]") or tok.token_to_id("<pad>") or 0
    return {"tokenizer": "tokenizer.json", "max_length": int((src.preprocess or {}).get("max_length", 512)),
            "pad_id": int(pad), "inputs": ["input_ids"]}


def _as_tokenizer(t: Any) -> Any:
    from tokenizers import Tokenizer

    if isinstance(t, Tokenizer):
        return t
    if hasattr(t, "backend_tokenizer"):  # a transformers fast tokenizer
        return t.backend_tokenizer
    if isinstance(t, (str, Path)) and Path(t).is_file():
        return Tokenizer.from_file(str(t))
    raise ConfigError(f"cannot use a {type(t).__name__} as tokenizer", fix="pass a tokenizers.Tokenizer or tokenizer.json path")


def _tokenizer_files(src: Source) -> dict[str, bytes]:
    return {"tokenizer.json": _as_tokenizer(src.tokenizer).to_str().encode("utf-8")}


# ---------------------------------------------------------------- Hugging Face folders


def _hf_image(src: Source, opts: ConvertOptions) -> Plan:
    import torch
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(src.hf_dir).eval()
    pre = _hf_image_preprocess(src.hf_dir, src.config)
    pre.update(src.preprocess or {})
    h, w = pre["size"]
    x = torch.rand(2, 3, h, w)
    wrapper = _Logits(model, ["pixel_values"])
    # The wrapper takes *args: torch.export sees one varargs argument, so its shapes nest in a tuple.
    graph = GraphExport("model", wrapper, (x,), ["pixel_values"], ["logits"],
                        (({0: torch.export.Dim("batch", min=1, max=4096)},),))
    pre.update(kind="image", inputs=["pixel_values"])
    return _plan(src.config.get("model_type", "hf-image"), graph, pre, _hf_labels(src.config), {}, src,
                 _random_sampler("image", x, pre), "image")


def _hf_text(src: Source, opts: ConvertOptions) -> Plan:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src.hf_dir).eval()
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    max_len = int(src.config.get("max_position_embeddings", 512))
    tok_file = src.hf_dir / "tokenizer.json"
    if tok_file.is_file():
        tok_json = tok_file.read_bytes()
    else:  # only vocab files: let transformers build the fast tokenizer once, at convert time
        tok_json = AutoTokenizer.from_pretrained(src.hf_dir).backend_tokenizer.to_str().encode("utf-8")
    pad = int(src.config.get("pad_token_id") or 0)
    pre = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": max_len, "pad_id": pad, "inputs": names}
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=max_len)
    ids = torch.randint(3, int(src.config.get("vocab_size", 100)), (2, 8))
    args = tuple(ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else torch.zeros_like(ids)
                 for n in names)
    graph = GraphExport("model", _Logits(model, names), args, names, ["logits"],
                        (tuple({0: batch, 1: seq} for _ in names),))  # varargs: one nested tuple
    vocab = int(src.config.get("vocab_size", 100))
    return _plan(src.config.get("model_type", "hf-text"), graph, pre, _hf_labels(src.config),
                 {"tokenizer.json": tok_json}, src, _random_text_sampler(names, vocab, pad), "text")


def _hf_labels(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    n = len(id2label) or int(config.get("num_labels", 2))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def _hf_image_preprocess(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    path = folder / "preprocessor_config.json"
    p = json.loads(path.read_text()) if path.is_file() else {}
    size = p.get("size") or {"height": config.get("image_size", 224), "width": config.get("image_size", 224)}
    crop = p.get("crop_size") if p.get("do_center_crop") else None
    resize: Any = None
    if p.get("do_resize", True):
        resize = {"shortest_edge": size["shortest_edge"]} if "shortest_edge" in size else [size["height"], size["width"]]
    final = [crop["height"], crop["width"]] if crop else ([size["height"], size["width"]] if "height" in size else None)
    if final is None:
        s = int(size["shortest_edge"])
        final = [s, s]
    channels = int(config.get("num_channels", 3))
    normalize = p.get("do_normalize", True)
    return {
        "size": final, "resize": resize, "crop": [crop["height"], crop["width"]] if crop else None,
        "interpolation": {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}[int(p.get("resample", 2))],
        "rescale": float(p.get("rescale_factor", 1 / 255)) if p.get("do_rescale", True) else 1.0,
        "mean": list(p.get("image_mean", [0.5] * channels)) if normalize else [0.0] * channels,
        "std": list(p.get("image_std", [0.5] * channels)) if normalize else [1.0] * channels,
        "channels": "RGB", "layout": "NCHW",
    }


class _Logits:
    """Wrap a Hugging Face model: positional tensors in, a logits tensor out (what export wants)."""

    def __new__(cls, model: Any, names: list[str]) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                return self.model(**dict(zip(names, args))).logits

        return Wrapper().eval()


# ---------------------------------------------------------------- calibration, samples, parity

Sampler = Callable[[int, int], list[dict[str, np.ndarray]]]


def _random_sampler(kind: str, x: Any, pre: dict[str, Any]) -> Sampler:
    shape = list(x.shape[1:])
    dtype = str(x.dtype).replace("torch.", "")
    # Integer inputs (token ids, class indices) stay inside the range the user's example shows valid:
    # a fixed range would index past a small embedding table.
    low, high = (int(x.min()), int(x.max()) + 1) if not x.dtype.is_floating_point else (0, 1)

    def sample(n: int, seed: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        name = pre.get("inputs", ["input"])[0]
        out = []
        for b in _batches(n):
            if kind == "image":
                pixels = rng.integers(0, 256, size=(b, shape[1], shape[2], shape[0])).astype(np.float32)
                mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
                v = ((pixels * pre["rescale"] - mean) / std).transpose(0, 3, 1, 2)
            elif dtype.startswith("float"):
                v = rng.standard_normal((b, *shape)).astype(dtype)
            else:
                v = rng.integers(low, high, size=(b, *shape)).astype(dtype)
            out.append({name: np.ascontiguousarray(v, dtype=np.float32 if kind == "image" else dtype)})
        return out

    return sample


def _random_text_sampler(names: list[str], vocab: int, pad: int) -> Sampler:
    def sample(n: int, seed: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        out = []
        for i, b in enumerate(_batches(n)):
            length = [5, 11, 16, 23][i % 4]  # lengths not traced with: the dims really are dynamic
            ids = rng.integers(3, vocab, size=(b, length)).astype(np.int64)
            mask = np.ones_like(ids)
            mask[0, length - 2 :] = 0  # one padded row per batch
            ids[0, length - 2 :] = pad
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out.append({k: v for k, v in feeds.items() if k in names})
        return out

    return sample


def _batches(n: int) -> list[int]:
    return [min(_CALIBRATION_BATCH, n - i) for i in range(0, n, _CALIBRATION_BATCH)]


def _plan(family: str, graph: GraphExport, pre: dict[str, Any], labels: list[str], files: dict[str, bytes],
          src: Source, sample: Sampler, kind: str) -> Plan:
    state: dict[str, list[dict[str, np.ndarray]]] = {}

    def encode_texts(texts: list[str]) -> dict[str, np.ndarray]:
        # The artifact does not exist yet: encode with the tokenizer it is about to ship.
        from tokenizers import Tokenizer

        from edgekit.text import TextEncoder

        return TextEncoder(Tokenizer.from_str(files["tokenizer.json"].decode("utf-8")), pre)(texts)

    def calibration_feeds(calibration: Any) -> list[dict[str, dict[str, np.ndarray]]]:
        feeds = _calibration_to_feeds(calibration, pre, kind, graph.input_names, encode_texts)
        state["calibration"] = feeds
        # A few representative inputs ship with the artifact so that `edgekit parity` later
        # compares on real data, not noise (random-pixel logits are near ties for any model).
        files[PARITY_INPUTS] = _save_feeds(_first_batches(feeds))
        return [{"model": f} for f in feeds]

    def check_parity(plan_: Plan, model: Any, precision: str, samples: int | None = None) -> dict[str, Any]:
        from edgekit.runtimes.torch_ref import TorchRunner

        # Calibration data is the user's real distribution: prefer it (at convert time, or as
        # stored in the artifact) over random inputs.
        stored = _load_feeds(model.artifact.path / PARITY_INPUTS)
        feeds, origin = (state["calibration"], "calibration") if state.get("calibration") and samples is None \
            else (stored, "stored-calibration") if stored else (sample(samples or _PARITY_SAMPLES, 0), "random")
        ref = TorchRunner(graph.module, model.manifest.graph(), graph.input_names, graph.output_names)
        report = graph_parity(ref, model.runners["model"], feeds, precision, argmax_output="logits")
        report["inputs"] = origin
        return report

    return Plan(family=family, graphs=[graph], preprocess=pre,
                postprocess={"labels": labels, "output": "logits"}, files=files,
                calibration_feeds=calibration_feeds, check_parity=check_parity)


PARITY_INPUTS = "parity_inputs.npz"
_STORED_BATCHES = 2
_STORED_BYTES = 4 << 20  # 224x224 images: one batch of 8 is 4.8 MB; never more than one then


def _first_batches(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    kept: list[dict[str, np.ndarray]] = []
    size = 0
    for f in feeds[:_STORED_BATCHES]:
        size += sum(v.nbytes for v in f.values())
        if kept and size > _STORED_BYTES:
            break
        kept.append(f)
    return kept


def _save_feeds(feeds: list[dict[str, np.ndarray]]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{i}.{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    return buf.getvalue()


def _load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """Stored parity inputs, as plain arrays (never pickles); [] when the artifact has none."""
    if not path.is_file():
        return []
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            i, _, name = key.partition(".")
            out.setdefault(int(i), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def _calibration_to_feeds(
    calibration: Any, pre: dict[str, Any], kind: str, names: list[str], encode: Callable[[list[str]], Any]
) -> list[dict[str, np.ndarray]]:
    """Samples (images, texts, arrays) or a folder / .npy file -> batches of graph feeds."""
    if calibration is None:
        return []
    items: list[Any]
    if isinstance(calibration, (str, Path)):
        p = Path(calibration)
        if p.is_dir():
            items = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        elif p.suffix == ".npy" and p.is_file():
            items = list(np.load(p, allow_pickle=False))
        elif p.suffix == ".txt" and p.is_file():
            items = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            raise InputError(f"cannot read calibration data from '{p}'",
                             fix="pass a folder of images, a .npy array of samples, or a .txt file of texts")
    elif isinstance(calibration, np.ndarray):
        items = list(calibration)
    else:
        items = list(calibration)
    if not items:
        raise InputError("the calibration data is empty", fix="pass at least a few representative samples")
    feeds = []
    for i in range(0, len(items), _CALIBRATION_BATCH):
        chunk = items[i : i + _CALIBRATION_BATCH]
        if kind == "image" and not (isinstance(chunk[0], np.ndarray) and chunk[0].dtype == np.float32):
            from edgekit.vision import preprocess_images

            feeds.append({names[0]: preprocess_images(chunk, pre)})
        elif kind == "text":
            feeds.append(encode(chunk))
        else:
            feeds.append({names[0]: np.ascontiguousarray(np.stack(chunk))})
    return feeds


SPECS: dict[str, Callable[[Source, ConvertOptions], Plan]] = {
    "torch-module": _torch_module,
    "hf-image": _hf_image,
    "hf-text": _hf_text,
}
