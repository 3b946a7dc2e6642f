"""What `generate` is given, as the arrays its graphs take: checked, and padded on the proper side.

A decoder's cache wants its prompts left-padded (the new tokens follow every row's last token);
an encoder wants its inputs right-padded (its positions count from the first token). Text and
chat prompts are tokenized by the Generator; ids come here as the caller passed them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InputError


@dataclass
class Prompt:
    """One call's input, tokenized: the decoder's prompt (left-padded) or an encoder's input (right-padded)."""

    ids: np.ndarray
    mask: np.ndarray
    form: str  # "text" | "texts" | "ids" (the caller's ids come back with the new tokens)
    given: np.ndarray | None = None  # the caller's input_ids, as passed
    features: list[np.ndarray] | None = None  # a vision-language prompt's image rows, per row


def from_ids(input_ids: Any, attention_mask: Any, pad: int, eos: tuple[int, ...], left: bool, vocab: Any,
             limit: int) -> Prompt:
    """The caller's ids and mask, checked; kept as laid out when a decoder gets them left-padded (as
    transformers would run them) or an encoder gets them, else laid out anew on the left."""
    arr = np.asarray(input_ids)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError("input_ids must be a 2-D integer array (batch, prompt length)",
                         found=f"{arr.dtype} array of shape {list(arr.shape)}", fix="use np.array([[1, 2, 3]])")
    if arr.size and (arr.min() < 0 or (isinstance(vocab, int) and arr.max() >= vocab)):
        raise InputError(f"input_ids must be in [0, {vocab})", found=f"ids {arr.min()}..{arr.max()}")
    check_rows([[0] * arr.shape[1]] if arr.size else [], limit)  # the width alone must fit
    if attention_mask is not None:
        mask = np.asarray(attention_mask)
    elif left and arr.size and pad in arr and pad not in eos and (arr != pad).any(axis=1).all():
        # transformers infers a decoder's mask from its padding (a row of nothing but the pad
        # id is taken as tokens, not as an empty prompt)
        mask = (arr != pad).astype(np.int64)
    else:
        mask = np.ones_like(arr)
    if mask.shape != arr.shape:
        raise InputError("attention_mask must have the shape of input_ids", found=f"{list(mask.shape)} vs {list(arr.shape)}")
    arr, mask = arr.astype(np.int64), (mask != 0).astype(np.int64)
    rows = [[int(t) for t, m in zip(r, mr) if m] for r, mr in zip(arr, mask)]
    check_rows(rows, limit)
    # Left-padded already (the caller's layout, as transformers would run it) or laid out anew.
    if not left or bool(np.all(np.diff(mask, axis=1) >= 0)):
        return Prompt(arr, mask, "ids", arr)
    ids, new_mask = left_pad(rows, pad)
    return Prompt(ids, new_mask, "ids", arr)


def check_rows(rows: list[list[int]], limit: int) -> None:
    """Refuse an empty batch, an empty prompt, a prompt longer than `limit`."""
    if not rows:
        raise InputError("generate got an empty batch (no prompt rows)", fix="pass at least one prompt")
    if any(len(r) == 0 for r in rows):
        raise InputError("a prompt is empty (it encodes to no tokens)", fix="pass at least one token of text")
    longest = max(len(r) for r in rows)
    if longest > limit:
        raise InputError(f"the prompt is longer than the model's context of {limit} tokens",
                         found=f"{longest} tokens", fix="shorten the prompt")


def left_pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of different lengths -> (ids, attention_mask), padded on the left for the cache."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def right_pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows -> (ids, attention_mask), padded on the right as encoder tokenizers pad: an
    encoder's positions count from the first token, so padding must come after it."""
    ids, mask = left_pad([r[::-1] for r in rows], pad)
    return np.ascontiguousarray(ids[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def language_code(codes: Mapping[str, int], lang: str) -> str:
    """The code token for `lang`: the token itself ("__zh__", "zho_Hans", ">>zho<<") or its short
    name ("zh" for "__zh__" or "zh_CN", "zho" for "zho_Hans" or ">>zho<<")."""
    if lang in codes:
        return lang
    hits = [c for c in codes if c.strip("_<>").split("_")[0] == lang or c.strip("_<>") == lang]
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"unknown or ambiguous target language {lang!r}",
                      found=f"{'candidates ' + str(hits) if hits else 'codes'} "
                            f"{sorted(hits or codes)[:12]}{'...' if len(codes) > 12 and not hits else ''}",
                      fix="pass one of the model's language codes")
