"""`classify`: images or texts in, ranked labels out."""
from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.contract.classify import ClassifySection, ImageInput, TextInput
from edgekit.errors import InputError
from edgekit.results import Prediction
from edgekit.tasks.model import Model

_MAX_BATCH = 32  # bounds memory for long lists; results are identical to one big batch


class Classifier(Model):
    """A loaded classification artifact.

    >>> import tempfile, edgekit, numpy as np, torch
    >>> out = tempfile.mkdtemp() + "/cnn"
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 3))
    >>> _ = edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 8, 8), labels=["a", "b", "c"])
    >>> clf = edgekit.load(out, device="cpu")
    >>> preds = clf.classify(np.zeros((20, 30, 3), dtype=np.uint8), top_k=2)
    >>> len(preds), preds[0].label in ("a", "b", "c")
    (2, True)
    """

    contract: ClassifySection

    @property
    def labels(self) -> list[str]:
        return list(self.contract.labels)

    @property
    def kind(self) -> str:
        """"image", "text" or "tensor": what `classify` accepts."""
        return self.contract.input.tag

    @cached_property
    def _encoder(self) -> Any:
        from edgekit.preprocess.text import TextEncoder

        assert isinstance(self.contract.input, TextInput)
        return TextEncoder.from_folder(self.artifact.path, self.contract.input)

    def classify(self, inputs: Any, top_k: int = 5) -> list[Prediction] | list[list[Prediction]]:
        """Classify one input (-> list[Prediction]) or a list of them (-> list[list[Prediction]])."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InputError("top_k must be a positive integer", found=repr(top_k))
        single = self._is_single(inputs)
        items = [inputs] if single else list(inputs)
        if not items:
            raise InputError("classify got an empty batch", fix="pass at least one input")
        logits = np.concatenate([self.logits(items[i : i + _MAX_BATCH]) for i in range(0, len(items), _MAX_BATCH)])
        ranked = self.rank(logits, top_k)
        return ranked[0] if single else ranked

    def logits(self, items: list[Any]) -> np.ndarray:
        """Pre-process `items` as recorded in the artifact and return the raw outputs (batch, classes)."""
        x = self.contract.input
        if isinstance(x, TextInput) and not x.pad_batches and len(items) > 1:
            return self._unpadded(items)
        return self.forward(self.prepare(items))

    def forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's outputs (batch, classes) for feeds made by `prepare` (a server batches several)."""
        out = self.runners["model"].run(feeds, outputs=[self.contract.output])
        return np.asarray(out[self.contract.output], dtype=np.float32)

    def rank(self, logits: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """Each row of raw outputs -> its top_k predictions, as `classify` returns them (scores as
        the artifact records them)."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InputError("top_k must be a positive integer", found=repr(top_k))
        return [self._rank(row, int(top_k)) for row in logits]

    def _unpadded(self, texts: list[Any]) -> np.ndarray:
        """Texts grouped by token length, each group one batch without padding (TextInput.pad_batches)."""
        lengths = [self.prepare([t])["input_ids"].shape[1] for t in texts]
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for n in sorted(set(lengths)):
            idx = [i for i, length in enumerate(lengths) if length == n]
            out = self.forward(self.prepare([texts[i] for i in idx]))  # one length: nothing is padded
            for j, i in enumerate(idx):
                rows[i] = out[j]
        return np.stack(rows)

    def prepare(self, items: list[Any]) -> dict[str, np.ndarray]:
        """Raw inputs -> the graph's feeds, as the contract's `input` says."""
        x = self.contract.input
        if isinstance(x, ImageInput):
            from edgekit.preprocess.image import preprocess_images

            return {x.name: preprocess_images(items, x)}
        if isinstance(x, TextInput):
            return self._encoder(items)
        # A plain tensor model: each item is one sample without its batch axis.
        spec = self.runners["model"].inputs[0]
        try:
            batch = np.stack([np.asarray(v) for v in items]).astype(spec.dtype, copy=False)
        except (ValueError, TypeError) as e:
            raise InputError(f"the inputs do not stack into one batch ({e})", fix="pass samples of one shape") from None
        return {spec.name: batch}

    def _is_single(self, inputs: Any) -> bool:
        if isinstance(inputs, (str, os.PathLike)):
            return True
        if isinstance(inputs, np.ndarray):
            if inputs.ndim == 0:  # a scalar array is neither one input nor a list of them
                raise InputError("classify cannot take a 0-d array", found=f"array({inputs.item()!r:.40})",
                                 fix="pass an image/sample array, or a list of them")
            if self.kind == "image":
                return inputs.ndim in (2, 3)
            return inputs.ndim == len(self.runners["model"].inputs[0].shape) - 1
        if type(inputs).__module__.startswith("PIL."):
            return True
        if isinstance(inputs, (list, tuple)):
            return False
        raise InputError(
            f"classify cannot take a {type(inputs).__name__}",
            fix="pass an image path, PIL image, HxWxC uint8 array or text, or a list of them",
        )

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """The graph's outputs (batch, classes) -> the scores a user of the source model reads, as
        the artifact records them (`contract.scores`): softmax or sigmoid of logits, probabilities
        as they are, exp of log-probabilities."""
        if not np.all(np.isfinite(outputs)):
            raise InputError("the model produced non-finite outputs for this input", fix="check the input values")
        return apply_scores(np.asarray(outputs, np.float64), self.contract.scores).astype(np.float32)

    def _rank(self, row: np.ndarray, top_k: int) -> list[Prediction]:
        p = self.scores(row[None])[0]
        order = np.argsort(-p, kind="stable")[:top_k]
        labels = self.labels
        return [Prediction(labels[i] if i < len(labels) else str(i), float(p[i]), int(i)) for i in order]


def apply_scores(x: np.ndarray, how: str) -> np.ndarray:
    """Rows of raw outputs -> scores (`ClassifySection.scores`), in float64."""
    if how == "softmax":
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if how == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if how == "log_probabilities":
        return np.exp(x)
    return x  # "probabilities" and "none": the outputs are the scores
