"""Tokenization with the `tokenizers` library from the artifact's tokenizer.json (no transformers)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract.classify import TextInput
from edgekit.errors import ArtifactError, InputError


def check_texts(texts: Iterable[Any]) -> None:
    """Refuse what the tokenizer cannot encode (non-strings, lone surrogates) with an InputError."""
    for t in texts:
        if not isinstance(t, str):
            raise InputError("texts must be strings", found=type(t).__name__)
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError("a text is not valid Unicode", found=f"{e.reason} at position {e.start}",
                             fix="decode the bytes with errors='replace'") from None


def read_tokenizer(folder: Path, name: str) -> Any:
    """The `tokenizers.Tokenizer` saved in an artifact, or an ArtifactError."""
    from tokenizers import Tokenizer

    path = folder / name
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception subclass
        raise ArtifactError(f"cannot read the tokenizer '{path.name}': {e}", fix="convert the model again") from None


class TextEncoder:
    """Texts -> the int64 arrays a text graph takes (input_ids, attention_mask, token_type_ids).

    Padding (right, to the longest text) and truncation (to `max_length`, special tokens kept) are
    the tokenizers library's own, as the Hugging Face fast tokenizers do them.
    """

    def __init__(self, tokenizer: Any, cfg: TextInput) -> None:
        self.tokenizer = tokenizer
        self.inputs = cfg.inputs
        pad_token = tokenizer.id_to_token(cfg.pad_id) or "[PAD]"
        self.tokenizer.enable_truncation(max_length=cfg.max_length)
        self.tokenizer.enable_padding(pad_id=cfg.pad_id, pad_token=pad_token)

    @classmethod
    def from_folder(cls, folder: Path, cfg: TextInput) -> TextEncoder:
        return cls(read_tokenizer(folder, cfg.tokenizer), cfg)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        check_texts(texts)
        encs = self.tokenizer.encode_batch(texts)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        if not mask.sum(axis=1).all():
            raise InputError("a text encodes to no tokens", fix="pass a non-empty string")
        out = {"input_ids": np.asarray([e.ids for e in encs], dtype=np.int64), "attention_mask": mask,
               "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64)}
        return {k: out[k] for k in self.inputs}
