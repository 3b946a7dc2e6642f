"""Logits processors and token choice in numpy, with Hugging Face `generate()` meaning.

Order as in transformers: repetition penalty on the raw logits, then (sampling only) temperature,
top-k, top-p, softmax and a draw. Greedy is argmax after the repetition penalty. Shared by every
decoder loop (text generation, Whisper's decoder): pass the (batch, vocab) logits of one step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """Validated decoding settings; `SamplingConfig.make(...)` raises ConfigError on bad values."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    seed: int | None = None

    @classmethod
    def make(cls, do_sample: Any = False, temperature: Any = 1.0, top_k: Any = 0, top_p: Any = 1.0,
             repetition_penalty: Any = 1.0, seed: Any = None) -> SamplingConfig:
        if not isinstance(do_sample, (bool, np.bool_)):
            raise ConfigError("do_sample must be True or False", found=repr(do_sample))
        t = _number("temperature", temperature)
        if not t > 0:
            raise ConfigError("temperature must be > 0", found=repr(temperature),
                              fix="use do_sample=False for greedy decoding, or a temperature like 0.7")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ConfigError("top_k must be an integer >= 0 (0 turns it off)", found=repr(top_k))
        p = _number("top_p", top_p)
        if not 0 < p <= 1:
            raise ConfigError("top_p must be in (0, 1]", found=repr(top_p), fix="use e.g. top_p=0.95, or 1.0 for off")
        r = _number("repetition_penalty", repetition_penalty)
        if not r > 0:
            raise ConfigError("repetition_penalty must be > 0 (1.0 is off)", found=repr(repetition_penalty))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError("seed must be a non-negative integer or None", found=repr(seed))
        return cls(bool(do_sample), t, int(top_k), p, r, None if seed is None else int(seed))


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number", found=repr(value))
    v = float(value)
    if not np.isfinite(v):
        raise ConfigError(f"{name} must be finite", found=repr(value))
    return v


def repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Divide positive / multiply negative logits of every token already in `seen` (batch, length)."""
    if penalty == 1.0 or seen.shape[1] == 0:
        return logits
    out = logits.copy()
    rows = np.arange(logits.shape[0])[:, None]
    picked = out[rows, seen]
    out[rows, seen] = np.where(picked < 0, picked * penalty, picked / penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits per row (ties at the k-th value kept, as in transformers)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability sums to at least p (>= 1 token)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = softmax(sorted_logits)
    before = np.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = before >= p
    drop_sorted[:, 0] = False
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class TokenChooser:
    """Picks the next token of each row from one step's logits; owns the seeded random generator."""

    def __init__(self, cfg: SamplingConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def process(self, logits: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The processed logits (batch, vocab) as float64: what the choice is made from."""
        x = repetition_penalty(np.asarray(logits, dtype=np.float64), seen, self.cfg.repetition_penalty)
        if not self.cfg.do_sample:
            return x
        x = x / self.cfg.temperature
        x = top_k_filter(x, self.cfg.top_k)
        return top_p_filter(x, self.cfg.top_p)

    def __call__(self, logits: np.ndarray, seen: np.ndarray) -> np.ndarray:
        x = self.process(logits, seen)
        if not self.cfg.do_sample:
            return np.argmax(x, axis=-1).astype(np.int64)
        probs = softmax(x)
        # Inverse-CDF draw, one uniform per row: reproducible for a seed, independent of vocab order tricks.
        u = 1.0 - self.rng.random((probs.shape[0], 1))  # in (0, 1]: never lands on a removed token
        cdf = np.cumsum(probs, axis=-1)
        picked = (cdf < u * cdf[:, -1:]).sum(axis=-1)
        return np.minimum(picked, probs.shape[-1] - 1).astype(np.int64)
