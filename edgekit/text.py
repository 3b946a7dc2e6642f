"""Tokenization with the `tokenizers` library from the artifact's tokenizer.json (no transformers)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ArtifactError, InputError


def check_texts(texts: Any) -> None:
    """Refuse text the tokenizer cannot encode (lone surrogates) with an InputError, not a TypeError."""
    for t in texts:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError("a text is not valid Unicode", found=f"{e.reason} at position {e.start}",
                             fix="decode the bytes with errors='replace'") from None
        except AttributeError:
            raise InputError("texts must be strings", found=type(t).__name__) from None


class TextEncoder:
    """Encode texts into the int64 arrays a text graph takes (input_ids, attention_mask, ...).

    `cfg` is the manifest's preprocess section for kind "text": {"tokenizer": "tokenizer.json",
    "max_length": int, "pad_id": int, "inputs": [...graph input names...]}.
    """

    def __init__(self, tokenizer: Any, cfg: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(cfg.get("max_length", 512))
        self.pad_id = int(cfg.get("pad_id", 0))
        self.input_names = list(cfg.get("inputs", ["input_ids", "attention_mask"]))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @classmethod
    def from_folder(cls, folder: Path, cfg: dict[str, Any]) -> TextEncoder:
        from tokenizers import Tokenizer

        path = folder / cfg.get("tokenizer", "tokenizer.json")
        try:
            return cls(Tokenizer.from_file(str(path)), cfg)
        except Exception as e:
            raise ArtifactError(f"cannot read the tokenizer '{path.name}': {e}", fix="convert the model again") from None

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        for t in texts:
            if not isinstance(t, str):
                raise InputError("a text model takes strings", found=type(t).__name__)
        check_texts(texts)
        encs = self.tokenizer.encode_batch(texts)
        lengths = [min(len(e.ids), self.max_length) for e in encs]
        if min(lengths) == 0:
            raise InputError("a text encodes to no tokens", fix="pass a non-empty string")
        width = max(lengths)
        out = {
            "input_ids": np.full((len(texts), width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(texts), width), dtype=np.int64),
            "token_type_ids": np.zeros((len(texts), width), dtype=np.int64),
        }
        for i, (e, n) in enumerate(zip(encs, lengths)):
            ids = e.ids[:n]
            if n < len(e.ids) and len(e.special_tokens_mask) == len(e.ids) and e.special_tokens_mask[-1]:
                ids = ids[:-1] + [e.ids[-1]]  # keep the closing special token ([SEP]) when truncating
            out["input_ids"][i, :n] = ids
            out["attention_mask"][i, :n] = 1
            out["token_type_ids"][i, :n] = e.type_ids[:n]
        return {k: v for k, v in out.items() if k in self.input_names}
