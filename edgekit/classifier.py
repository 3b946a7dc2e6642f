"""`classify`: images or texts in, ranked labels out."""
from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from edgekit.errors import ArtifactError, InputError
from edgekit.model import Model
from edgekit.results import Prediction

_MAX_BATCH = 32  # bounds memory for long lists; results are identical to one big batch


class Classifier(Model):
    """A loaded classification artifact.

    >>> import edgekit, numpy as np
    >>> clf = edgekit.load("/tmp/edgekit-doc", device="cpu")
    >>> preds = clf.classify(np.zeros((2, 2, 3), dtype=np.uint8), top_k=2)
    >>> len(preds), preds[0].label in ("a", "b", "c")
    (2, True)
    """

    task = "classify"

    def __init__(self, artifact: Any, runners: dict[str, Any]) -> None:
        super().__init__(artifact, runners)
        self._check_sections()

    def _check_sections(self) -> None:
        """Refuse a damaged edgekit.json at load rather than with a KeyError mid-call."""
        post, pre = self.manifest.postprocess, self.manifest.preprocess
        outputs = [o.name for o in self.runners["model"].outputs]
        labels = post.get("labels")
        problems = {
            "postprocess.labels": isinstance(labels, list) and all(isinstance(x, str) for x in labels),
            "postprocess.output": post.get("output", "logits") in outputs,
            "preprocess.kind": pre.get("kind", "tensor") in ("image", "text", "tensor"),
            "graph inputs": bool(self.runners["model"].inputs),
        }
        bad = [k for k, ok in problems.items() if not ok]
        if bad:
            raise ArtifactError(f"the artifact's classify settings are malformed: {', '.join(bad)}",
                                found=f"outputs {outputs}, postprocess keys {sorted(post)[:8]}",
                                fix="the edgekit.json was edited or damaged; convert the model again")

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.postprocess["labels"])

    @property
    def kind(self) -> str:
        """"image", "text" or "tensor": what `classify` accepts."""
        return str(self.manifest.preprocess.get("kind", "tensor"))

    @cached_property
    def _encoder(self) -> Any:
        from edgekit.text import TextEncoder

        return TextEncoder.from_folder(self.artifact.path, self.manifest.preprocess)

    def classify(self, inputs: Any, top_k: int = 5) -> list[Prediction] | list[list[Prediction]]:
        """Classify one input (-> list[Prediction]) or a list of them (-> list[list[Prediction]])."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InputError("top_k must be a positive integer", found=repr(top_k))
        single = self._is_single(inputs)
        items = [inputs] if single else list(inputs)
        if not items:
            raise InputError("classify got an empty batch", fix="pass at least one input")
        logits = np.concatenate([self.logits(items[i : i + _MAX_BATCH]) for i in range(0, len(items), _MAX_BATCH)])
        ranked = [self._rank(row, int(top_k)) for row in logits]
        return ranked[0] if single else ranked

    def logits(self, items: list[Any]) -> np.ndarray:
        """Pre-process `items` as recorded in the artifact and return the raw logits (batch, classes)."""
        feeds = self.prepare(items)
        out = self.runners["model"].run(feeds)
        return np.asarray(out[self.manifest.postprocess.get("output", "logits")], dtype=np.float32)

    def prepare(self, items: list[Any]) -> dict[str, np.ndarray]:
        if self.kind == "image":
            from edgekit.vision import preprocess_images

            return {self.runners["model"].inputs[0].name: preprocess_images(items, self.manifest.preprocess)}
        if self.kind == "text":
            return self._encoder(items)
        # A plain tensor model: each item is one sample without its batch axis.
        spec = self.runners["model"].inputs[0]
        try:
            batch = np.stack([np.asarray(x) for x in items]).astype(spec.dtype, copy=False)
        except ValueError as e:
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

    def _rank(self, row: np.ndarray, top_k: int) -> list[Prediction]:
        if not np.all(np.isfinite(row)):
            raise InputError("the model produced non-finite logits for this input", fix="check the input values")
        z = row - row.max()
        p = np.exp(z) / np.exp(z).sum()
        order = np.argsort(-p, kind="stable")[:top_k]
        labels = self.labels
        return [Prediction(labels[i] if i < len(labels) else str(i), float(p[i]), int(i)) for i in order]
