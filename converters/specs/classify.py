"""Classifier specs: plain PyTorch modules, and Hugging Face image and text classification folders.

Every `*ForImageClassification` / `*ForSequenceClassification` folder goes through the two
generic Hugging Face specs; the graph is one call of the model, (batch, classes) out. Parity runs
the artifact against the module on the user's calibration data when given (stored in the
artifact for a later `edgekit parity`), else on random inputs of the example's shape.
"""
from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, SEQUENCE
from edgekit.contract.classify import (SCORES, ClassifySection, ExactSize, ImageInput, ShortestEdge, TensorInput,
                                       TextInput)
from edgekit.converters.export import GraphExport
from edgekit.converters.parity import OUTPUT_GATES, graph_parity
from edgekit.converters.reference import TorchRunner
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec, Feeds
from edgekit.converters.calibration import read_classify
from edgekit.converters.classify_parity import Reference, end_to_end, preprocess_difference
from edgekit.converters.wrappers import Logits, callable_module, first_output
from edgekit.tasks.classifier import apply_scores
from edgekit.errors import ConfigError, SourceError, UnsupportedError
from edgekit.parity_report import ParityReport, PreprocessCheck

_BATCH = 8  # calibration and parity feeds per run
_PARITY_SAMPLES = 32
PARITY_INPUTS = "parity_inputs.npz"
_STORED_BATCHES = 2
_STORED_BYTES = 4 << 20  # 224x224 images: one batch of 8 is 4.8 MB; never more than one then
Sampler = Callable[[int, int], list[Feeds]]  # (count, seed) -> batches of graph feeds


class _Classifier(ExportSpec):
    """What every classifier spec shares: one graph "model", calibration, stored inputs, parity."""

    task: ClassVar[str] = "classify"
    gates = OUTPUT_GATES

    graph: GraphExport
    input: ImageInput | TextInput | TensorInput
    labels: list[str]
    tokenizer_json: bytes | None = None
    sample: Sampler

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def contract(self, graphs: dict[str, GraphSpec]) -> ClassifySection:
        if isinstance(self.input, TextInput):
            seq = graphs["model"].inputs[0].shape[1]
            if isinstance(seq, int):  # the exporter specialized it (a branch on the length in the model)
                raise UnsupportedError(f"the {self.family} graph was exported for texts of exactly {seq} tokens",
                                       found="torch.export fixed the sequence length (the model branches on it)",
                                       fix="this family cannot take texts of any length through one graph yet")
        return ClassifySection(input=self.input, labels=tuple(self.labels), output="logits",
                               scores=self.output_scores())  # type: ignore[arg-type]

    def output_scores(self) -> str:
        """What the graph outputs (ClassifySection.scores): the user's `scores=`, else detected."""
        given = self.options.scores
        if given is not None:
            if given not in SCORES:
                raise ConfigError(f"unknown scores '{given}'", found=f"choices {list(SCORES)}")
            return given
        return self.detect_scores()

    def detect_scores(self) -> str:
        """From the exported graph's last op and the outputs on sample inputs (plain modules)."""
        from edgekit.converters.export import producer_op

        op = producer_op(self.graph.path, "logits") if self.graph.path is not None else ""
        feeds = self.sample(_BATCH, 1)[0]
        with torch.inference_mode():
            out = first_output(callable_module(self.graph.module)(*[torch.from_numpy(feeds[n])
                                                                    for n in self.graph.input_names]))
        return scores_of(op, out.float().numpy())

    def files(self, calibration: Calibration | None) -> dict[str, bytes]:
        out = {"tokenizer.json": self.tokenizer_json} if self.tokenizer_json is not None else {}
        if calibration is not None and calibration.samples:
            # A few representative inputs ship with the artifact so that `edgekit parity` later
            # compares on real data, not noise (random-pixel logits are near ties for any model).
            out[PARITY_INPUTS] = _save_feeds(_first_batches(calibration.samples))
        return out

    def calibrate(self, data: Any) -> Calibration:
        x = self.graph.args[0]
        got = read_classify(data, self.input, self.graph.input_names[0], tuple(x.shape[1:]),
                            str(x.dtype).replace("torch.", ""), self._encode)
        return Calibration([{"model": f} for f in got.feeds], got.feeds, got.raw)

    def _encode(self, texts: list[str]) -> Feeds:
        # The artifact does not exist yet: encode with the tokenizer it is about to ship.
        from tokenizers import Tokenizer

        from edgekit.preprocess.text import TextEncoder

        assert self.tokenizer_json is not None and isinstance(self.input, TextInput)
        return TextEncoder(Tokenizer.from_str(self.tokenizer_json.decode("utf-8")), self.input)(texts)

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        # Calibration data is the user's real distribution: prefer it (at convert time, or as stored
        # in the artifact) over random inputs.
        stored = _load_feeds(model.artifact.path / PARITY_INPUTS)
        if calibration is not None and calibration.samples and samples is None:
            feeds, origin = calibration.samples, "calibration"
        elif stored:
            feeds, origin = stored, "stored-calibration"
        else:
            feeds, origin = self.sample(samples or _PARITY_SAMPLES, 0), "random"
        g = self.graph
        ref = TorchRunner(g.module, model.manifest.graph(), g.input_names, g.output_names)
        report = graph_parity(ref, model.runners["model"], feeds, precision, argmax_output="logits")
        report = replace(report, notes={**report.notes, "inputs": origin})
        raw = calibration.raw if calibration is not None and calibration.raw and samples is None else []
        return end_to_end(self, model, report, raw)

    def reference(self, model: Any, raw: list[Any]) -> Reference:
        """The source's own answer for raw inputs: its pre-processing (here: edgekit's, as declared by
        `preprocess=`), the PyTorch module, and the scores its user reads."""
        feeds = model.prepare(raw)
        return Reference(feeds, self.torch_scores(model, feeds), None, "declared by preprocess= (the same steps)")

    def torch_scores(self, model: Any, feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            out = callable_module(self.graph.module)(*[torch.from_numpy(np.ascontiguousarray(feeds[n]))
                                                        for n in self.graph.input_names])
        return apply_scores(first_output(out).double().numpy(), model.contract.scores)


# ---------------------------------------------------------------- plain PyTorch modules


class TorchClassifier(_Classifier):
    """An nn.Module (or .pt2, or factory) taking one tensor with a batch axis, returning (batch, classes).

    A 4-D float example is an image model (pre-processing from `preprocess=`, defaults: resize to
    the example's size, scale to [0, 1]); a 2-D integer example with a tokenizer is a text model;
    anything else takes tensors as they are.
    """

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return src.is_plain and (task == "classify" or (task is None and bool(src.labels)))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.family = "torch-module"
        if not src.example_inputs or len(src.example_inputs) != 1 or not isinstance(src.example_inputs[0], torch.Tensor):
            raise ConfigError(
                "a plain PyTorch classifier needs example_inputs: one tensor with a batch axis",
                found=f"{type(src.example_inputs).__name__}",
                fix="pass example_inputs=torch.rand(1, 3, 224, 224) (the shape your model takes)",
            )
        x = src.example_inputs[0]
        with torch.no_grad():
            logits = first_output(callable_module(src.module)(x))
        if logits.ndim != 2:
            raise SourceError("a classifier must return (batch, classes) logits", found=f"output shape {list(logits.shape)}")
        n_classes = int(logits.shape[1])
        self.labels = src.labels or [f"class_{i}" for i in range(n_classes)]
        if len(self.labels) != n_classes:
            raise ConfigError(f"{len(self.labels)} labels given for a model with {n_classes} outputs",
                              fix="pass one label per class")
        dims: dict[int, Any] = {0: torch.export.Dim(BATCH, min=1, max=4096)}
        if x.ndim == 4 and x.dtype.is_floating_point:
            self.input = image_input(int(x.shape[1]), (int(x.shape[2]), int(x.shape[3])), src.preprocess or {})
        elif x.ndim == 2 and not x.dtype.is_floating_point:
            if src.tokenizer is None:
                raise ConfigError("a text classifier needs tokenizer=",
                                  fix="pass a tokenizers.Tokenizer or a tokenizer.json path")
            tok = as_tokenizer(src.tokenizer)
            pad = tok.token_to_id("[PAD]") or tok.token_to_id("<pad>") or 0
            self.input = TextInput("tokenizer.json", int((src.preprocess or {}).get("max_length", 512)), int(pad),
                                   ("input_ids",))
            self.tokenizer_json = tok.to_str().encode("utf-8")
            dims[1] = torch.export.Dim(SEQUENCE, min=1, max=self.input.max_length)
        else:
            self.input = TensorInput("input")
        name = _input_name(self.input)
        # A .pt2 program had its dynamic dims fixed when it was exported.
        dynamic = None if src.origin == "pt2" else (dims,)
        example = x if x.shape[0] > 1 or src.origin == "pt2" else x.expand(2, *x.shape[1:]).contiguous()
        self.graph = GraphExport("model", src.module, (example,), [name], ["logits"], dynamic)
        self.sample = _random_sampler(self.input, x)


def scores_of(last_op: str, outputs: np.ndarray) -> str:
    """"probabilities" for a graph ending in Softmax/Sigmoid (or whose rows are distributions),
    "log_probabilities" for LogSoftmax (or rows whose exp are), else "softmax" (logits)."""
    if last_op in ("Softmax", "Sigmoid"):
        return "probabilities"
    if last_op == "LogSoftmax":
        return "log_probabilities"
    x = np.asarray(outputs, np.float64)
    if x.size and 0 <= x.min() and x.max() <= 1 and np.allclose(x.sum(-1), 1, atol=1e-4):
        return "probabilities"
    if x.size and x.max() <= 0 and np.allclose(np.exp(x).sum(-1), 1, atol=1e-4):
        return "log_probabilities"
    return "softmax"


def hf_scores(config: dict[str, Any]) -> str:
    """What transformers' classification pipelines apply: sigmoid for multi-label or one label,
    nothing for regression, else softmax (their `function_to_apply` default)."""
    problem = config.get("problem_type")
    n = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or n == 1:
        return "sigmoid"
    return "softmax"


def _input_name(x: ImageInput | TextInput | TensorInput) -> str:
    return "input_ids" if isinstance(x, TextInput) else x.name


_PREPROCESS_KEYS = ("size", "resize", "crop", "interpolation", "rescale", "mean", "std", "channels", "layout")


def image_input(channels: int, size: tuple[int, int], user: dict[str, Any]) -> ImageInput:
    """Image pre-processing as `preprocess=` keys say; defaults: resize to `size`, scale to [0, 1].

    Keys: size [h, w]; resize [h, w] | {"shortest_edge": n[, "longest_edge": m]} | None; crop [h, w] | None;
    interpolation; rescale; mean; std; channels "RGB" | "BGR" | "L"; layout "NCHW" | "NHWC".
    """
    unknown = set(user) - set(_PREPROCESS_KEYS)
    if unknown:
        raise ConfigError(f"unknown preprocess keys {sorted(unknown)}", found=f"known keys {list(_PREPROCESS_KEYS)}")
    final = tuple(user.get("size", size))
    resize = user.get("resize", final)
    try:
        return ImageInput(
            name="pixel_values", size=final,  # type: ignore[arg-type]
            resize=None if resize is None else ShortestEdge(int(resize["shortest_edge"]), _opt_int(resize.get("longest_edge")))
            if isinstance(resize, dict) else ExactSize(int(resize[0]), int(resize[1])),
            crop=None if user.get("crop") is None else tuple(user["crop"]),  # type: ignore[arg-type]
            interpolation=user.get("interpolation", "bilinear"), rescale=float(user.get("rescale", 1 / 255)),
            mean=tuple(float(v) for v in user.get("mean", [0.0] * channels)),
            std=tuple(float(v) for v in user.get("std", [1.0] * channels)),
            channels=user.get("channels", "L" if channels == 1 else "RGB"), layout=user.get("layout", "NCHW"))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ConfigError(f"preprocess= is malformed ({e})", found=f"{user!r:.200}",
                          fix="see edgekit.contract.classify.ImageInput for the keys and their types") from None


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def as_tokenizer(t: Any) -> Any:
    """A `tokenizers.Tokenizer` from one, a transformers fast tokenizer, or a tokenizer.json path."""
    from tokenizers import Tokenizer

    if isinstance(t, Tokenizer):
        return t
    if hasattr(t, "backend_tokenizer"):  # a transformers fast tokenizer
        return t.backend_tokenizer
    if isinstance(t, (str, Path)) and Path(t).is_file():
        return Tokenizer.from_file(str(t))
    raise ConfigError(f"cannot use a {type(t).__name__} as tokenizer", fix="pass a tokenizers.Tokenizer or tokenizer.json path")


# ---------------------------------------------------------------- Hugging Face folders


class HFImageClassifier(_Classifier):
    """Any `*ForImageClassification` folder, with its image processor's settings."""

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        arch = src.architecture
        return not src.is_plain and task in (None, "classify") and (arch.endswith("ForImageClassification") or arch
                                                                    in auto_architectures("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForImageClassification

        assert src.hf_dir is not None
        model = AutoModelForImageClassification.from_pretrained(src.hf_dir).eval()
        self.family = str(src.config.get("model_type", "hf-image"))
        self.input = hf_image_input(src.hf_dir, src.config, src.preprocess or {})
        x = torch.rand(2, 3, *self.input.size)
        # The wrapper takes *args: torch.export sees one varargs argument, so its shapes nest in a tuple.
        self.graph = GraphExport("model", Logits(model, ["pixel_values"]), (x,), ["pixel_values"], ["logits"],
                                 (({0: torch.export.Dim(BATCH, min=1, max=4096)},),))
        self.labels = hf_labels(src.config)
        self.sample = _random_sampler(self.input, x)

    def detect_scores(self) -> str:
        return hf_scores(self.src.config)

    def reference(self, model: Any, raw: list[Any]) -> Reference:
        """The folder's image processor (PIL backend) -> the PyTorch model -> the pipeline's scores."""
        from edgekit.converters.image_processors import hf_pixels, load_processor
        from edgekit.preprocess.image import load_image, to_mode

        assert self.src.hf_dir is not None
        proc = load_processor(self.src.hf_dir)
        if proc is None:
            return super().reference(model, raw)
        mode = "L" if isinstance(self.input, ImageInput) and self.input.channels == "L" else "RGB"
        theirs = [hf_pixels(proc, [to_mode(load_image(r), mode)]) for r in raw]
        scores = np.concatenate([self.torch_scores(model, {"pixel_values": t}) for t in theirs])
        mine = model.prepare(raw)["pixel_values"]
        pre = preprocess_difference({"pixel_values": mine}, {"pixel_values": np.concatenate(theirs)}) \
            if len({t.shape for t in theirs}) == 1 else preprocess_difference(
                {"pixel_values": mine}, {"pixel_values": theirs[0][:0]})
        return Reference(None, scores, pre, f"transformers {type(proc).__name__}")


class HFTextClassifier(_Classifier):
    """Any `*ForSequenceClassification` folder, with its fast tokenizer."""

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        arch = src.architecture
        return not src.is_plain and task in (None, "classify") and (arch.endswith("ForSequenceClassification") or arch
                                                                    in auto_architectures("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForSequenceClassification

        assert src.hf_dir is not None
        model = AutoModelForSequenceClassification.from_pretrained(src.hf_dir).eval()
        self.family = str(src.config.get("model_type", "hf-text"))
        accepted = inspect.signature(model.forward).parameters
        # Only what the folder's tokenizer gives the model: GPT-2-style models accept token_type_ids
        # but add a token-type embedding when given any (zeros included), which the tokenizer never sends.
        given = _tokenizer_inputs(src.hf_dir)
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted and n in given]
        max_len = int(src.config.get("max_position_embeddings", 512))
        pad = int(src.config.get("pad_token_id") or 0)
        vocab = int(src.config.get("vocab_size", 100))
        # Rows end with eos as tokenized text does: BART-style heads pool on it (and check it is there).
        eos = src.config.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
        ids = torch.randint(3, vocab, (2, 8))
        if isinstance(eos, int) and 0 <= eos < vocab:
            ids[:, -1] = eos
        pad_batches = not _padding_changes_answers(model, names, ids, pad)
        self.input = TextInput("tokenizer.json", max_len, pad, tuple(names), pad_batches)  # type: ignore[arg-type]
        self.tokenizer_json = hf_tokenizer_json(src)
        batch = torch.export.Dim(BATCH, min=1, max=4096)
        seq = torch.export.Dim(SEQUENCE, min=2, max=max_len)
        args = tuple(ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else torch.zeros_like(ids)
                     for n in names)
        self.graph = GraphExport("model", Logits(model, names), args, names, ["logits"],
                                 (tuple({0: batch, 1: seq} for _ in names),))  # varargs: one nested tuple
        self.labels = hf_labels(src.config)
        self.sample = _random_text_sampler(names, vocab, pad, eos if isinstance(eos, int) and 0 <= eos < vocab else None)

    def detect_scores(self) -> str:
        return hf_scores(self.src.config)

    def reference(self, model: Any, raw: list[Any]) -> Reference:
        """The folder's tokenizer -> the PyTorch model -> the pipeline's scores, one text at a time
        (as the text-classification pipeline runs them: no padding)."""
        from transformers import AutoTokenizer

        assert self.src.hf_dir is not None and isinstance(self.input, TextInput)
        tok = AutoTokenizer.from_pretrained(self.src.hf_dir)
        scores, tokens, shapes = [], 0, []
        for text in raw:
            enc = tok([text], truncation=True, max_length=self.input.max_length, return_tensors="np")
            feeds = {n: np.asarray(enc[n], np.int64) for n in self.graph.input_names}
            scores.append(self.torch_scores(model, feeds))
            mine = model.prepare([text])
            for n in ("input_ids", "attention_mask"):
                if n in mine and n in feeds:
                    if mine[n].shape != feeds[n].shape:
                        shapes.append(f"{list(mine[n].shape)} vs {list(feeds[n].shape)}")
                    else:
                        tokens += int((mine[n] != feeds[n]).sum())
        passed = not shapes and tokens == 0
        summary = f"token counts differ ({'; '.join(shapes[:3])})" if shapes else f"{tokens} token ids differ"
        return Reference(None, np.concatenate(scores), PreprocessCheck(passed, summary, tokens_differ=tokens),
                         f"transformers {type(tok).__name__}")


def _tokenizer_inputs(folder: Path) -> tuple[str, ...]:
    """The inputs the folder's tokenizer produces (`model_input_names`)."""
    from transformers import AutoTokenizer

    try:
        return tuple(AutoTokenizer.from_pretrained(folder).model_input_names)
    except Exception:  # no loadable tokenizer config: tokenizer.json alone gives ids and mask
        return ("input_ids", "attention_mask")


def hf_tokenizer_json(src: Source) -> bytes:
    """tokenizer.json of a folder, or built once here by transformers from its vocab files."""
    assert src.hf_dir is not None
    path = src.hf_dir / "tokenizer.json"
    if path.is_file():
        return path.read_bytes()
    from transformers import AutoTokenizer  # only vocab files: the runtime never needs transformers

    return AutoTokenizer.from_pretrained(src.hf_dir).backend_tokenizer.to_str().encode("utf-8")


def hf_labels(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    n = len(id2label) or int(config.get("num_labels", 2))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def hf_image_input(folder: Path, config: dict[str, Any], user: dict[str, Any]) -> ImageInput:
    """The folder's image processor as an ImageInput (converters/image_processors.py); `preprocess=`
    keys override it (the parity gate still compares with the folder's own processor)."""
    from edgekit.converters.image_processors import load_processor, processor_keys

    channels = int(config.get("num_channels", 3))
    proc = load_processor(folder)
    if proc is None:
        side = config.get("image_size", 224)
        side = side if isinstance(side, int) else int(side[0])
        keys: dict[str, Any] = {"size": [side, side], "resize": [side, side], "mean": [0.5] * channels,
                                "std": [0.5] * channels}
    else:
        keys = processor_keys(proc, channels)
    merged = {**keys, **user}
    return image_input(channels, tuple(merged["size"]), merged)  # type: ignore[arg-type]


# ---------------------------------------------------------------- calibration and stored parity inputs


def _random_sampler(x: ImageInput | TextInput | TensorInput, example: torch.Tensor) -> Sampler:
    shape = list(example.shape[1:])
    dtype = str(example.dtype).replace("torch.", "")
    # Integer inputs (token ids, class indices) stay inside the range the user's example shows valid:
    # a fixed range would index past a small embedding table.
    low, high = (int(example.min()), int(example.max()) + 1) if not example.dtype.is_floating_point else (0, 1)
    name = _input_name(x)

    def sample(n: int, seed: int) -> list[Feeds]:
        rng = np.random.default_rng(seed)
        out = []
        for b in _batches(n):
            if isinstance(x, ImageInput):
                pixels = rng.integers(0, 256, size=(b, shape[1], shape[2], shape[0])).astype(np.float32)
                mean, std = np.asarray(x.mean, np.float32), np.asarray(x.std, np.float32)
                v = ((pixels * x.rescale - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
            elif dtype.startswith("float"):
                v = rng.standard_normal((b, *shape)).astype(dtype)
            else:
                v = rng.integers(low, high, size=(b, *shape)).astype(dtype)
            out.append({name: np.ascontiguousarray(v)})
        return out

    return sample


def _padding_changes_answers(model: Any, names: list[str], ids: torch.Tensor, pad: int) -> bool:
    """Whether a text's logits change when pad tokens (masked) follow it: models that mix over all
    positions (convolutions: ConvBERT; Fourier transforms: FNet) see the padding. Those run texts in
    groups of one length (TextInput.pad_batches), as the transformers pipeline runs one at a time."""
    row = ids[:1]
    padded = torch.cat([row, torch.full((1, 3), pad, dtype=row.dtype)], dim=1)
    mask = torch.cat([torch.ones_like(row), torch.zeros((1, 3), dtype=row.dtype)], dim=1)

    def logits(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": x, "attention_mask": m, "token_type_ids": torch.zeros_like(x)}
        with torch.no_grad():
            return first_output(model(**{n: feeds[n] for n in names})).float()

    return not torch.allclose(logits(row, torch.ones_like(row)), logits(padded, mask), atol=1e-5, rtol=1e-4)


def _random_text_sampler(names: list[str], vocab: int, pad: int, eos: int | None = None) -> Sampler:
    def sample(n: int, seed: int) -> list[Feeds]:
        rng = np.random.default_rng(seed)
        out = []
        for i, b in enumerate(_batches(n)):
            length = [5, 11, 16, 23][i % 4]  # lengths not traced with: the dims really are dynamic
            ids = rng.integers(3, vocab, size=(b, length)).astype(np.int64)
            if eos is not None:
                ids[:, -1] = eos
                ids[0, length - 3] = eos  # the padded row below ends where its text ends
            mask = np.ones_like(ids)
            mask[0, length - 2 :] = 0  # one padded row per batch
            ids[0, length - 2 :] = pad
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out.append({k: v for k, v in feeds.items() if k in names})
        return out

    return sample


def _batches(n: int) -> list[int]:
    return [min(_BATCH, n - i) for i in range(0, n, _BATCH)]


def _first_batches(feeds: list[Feeds]) -> list[Feeds]:
    kept: list[Feeds] = []
    size = 0
    for f in feeds[:_STORED_BATCHES]:
        size += sum(v.nbytes for v in f.values())
        if kept and size > _STORED_BYTES:
            break
        kept.append(f)
    return kept


def _save_feeds(feeds: list[Feeds]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{i}.{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    return buf.getvalue()


def _load_feeds(path: Path) -> list[Feeds]:
    """Stored parity inputs, as plain arrays (never pickles); [] when the artifact has none."""
    if not path.is_file():
        return []
    out: dict[int, Feeds] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            i, _, name = key.partition(".")
            out.setdefault(int(i), {})[name] = data[key]
    return [out[i] for i in sorted(out)]
