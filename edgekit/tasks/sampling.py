"""Sampling warpers and the draw, in numpy float32 with Hugging Face `generate()` meaning.

transformers applies its warpers after every other logits processor, only when sampling, in this
order: temperature, top-k, top-p, min-p, typical-p (`_get_logits_processor`). Each is a port of
its `*LogitsWarper`, in float32 as transformers computes them, so the kept set of tokens is the
same. The draw itself is edgekit's (seeded numpy): sampled tokens cannot equal torch's RNG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InputError

F32 = np.float32


@dataclass(frozen=True)
class SamplingConfig:
    """Validated sampling settings; `SamplingConfig.make(...)` raises ConfigError on bad values."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    seed: int | None = None
    min_p: float | None = None  # None: off
    typical_p: float = 1.0  # 1.0: off
    min_tokens_to_keep: int = 1  # beam sampling keeps one more than there are eos tokens

    @classmethod
    def make(cls, do_sample: Any = False, temperature: Any = 1.0, top_k: Any = 0, top_p: Any = 1.0,
             repetition_penalty: Any = 1.0, seed: Any = None, min_p: Any = None, typical_p: Any = 1.0,
             min_tokens_to_keep: int = 1) -> SamplingConfig:
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
        m = None if min_p is None else _number("min_p", min_p)
        if m is not None and not 0 <= m <= 1:
            raise ConfigError("min_p must be in [0, 1]", found=repr(min_p))
        typ = _number("typical_p", typical_p)
        if not 0 < typ <= 1:
            raise ConfigError("typical_p must be in (0, 1]", found=repr(typical_p))
        return cls(bool(do_sample), t, int(top_k), p, r, None if seed is None else int(seed), m, typ,
                   int(min_tokens_to_keep))


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number", found=repr(value))
    v = float(value)
    if not np.isfinite(v):
        raise ConfigError(f"{name} must be finite", found=repr(value))
    return v


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Divide positive / multiply negative logits of every token already in `seen` (batch, length);
    ids at or past the vocabulary (transformers' marker for ignored positions) are skipped."""
    if penalty == 1.0 or seen.shape[1] == 0:
        return logits
    out = logits.copy()
    for r in range(logits.shape[0]):
        ids = seen[r][seen[r] < logits.shape[1]]
        picked = logits[r, ids]
        out[r, ids] = np.where(picked < 0, picked * penalty, picked / penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int, keep: int = 1) -> np.ndarray:
    """Keep the k largest logits per row (ties at the k-th value kept, as in transformers)."""
    if k <= 0:
        return logits
    k = min(max(k, keep), logits.shape[-1])
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits).astype(logits.dtype)


def top_p_filter(logits: np.ndarray, p: float, keep: int = 1) -> np.ndarray:
    """Drop the least likely tokens whose probabilities sum to at most 1 - p (TopPLogitsWarper)."""
    if p >= 1.0:
        return logits
    order = np.argsort(logits, axis=-1, kind="stable")  # ascending, as transformers sorts
    cum = np.cumsum(softmax(np.take_along_axis(logits, order, axis=-1)), axis=-1)
    drop_sorted = cum <= (1 - p)
    drop_sorted[:, -keep:] = False
    return _drop(logits, order, drop_sorted)


def min_p_filter(logits: np.ndarray, p: float | None, keep: int = 1) -> np.ndarray:
    """Drop tokens less likely than p times the most likely one (MinPLogitsWarper)."""
    if p is None:
        return logits
    probs = softmax(logits)
    drop = probs < p * probs.max(axis=-1, keepdims=True)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, : min(keep, probs.shape[-1])]
    np.put_along_axis(drop, top, False, axis=-1)
    return np.where(drop, -np.inf, logits).astype(logits.dtype)


def typical_filter(logits: np.ndarray, mass: float, keep: int = 1) -> np.ndarray:
    """Keep the tokens whose surprise is closest to the entropy, up to `mass` (TypicalLogitsWarper)."""
    if mass >= 1.0:
        return logits
    normalized = log_softmax(logits)
    p = np.exp(normalized)
    with np.errstate(invalid="ignore"):  # -inf * 0 for removed tokens: nan, skipped as transformers does
        ent = -np.nansum(normalized * p, axis=-1, keepdims=True)
    shifted = np.abs(-normalized - ent)
    order = np.argsort(shifted, axis=-1, kind="stable")
    sorted_shifted = np.take_along_axis(shifted, order, axis=-1)
    cum = np.cumsum(softmax(np.take_along_axis(logits, order, axis=-1)), axis=-1)
    last = np.minimum((cum < mass).sum(axis=1), logits.shape[-1] - 1)
    drop_sorted = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], axis=1)
    drop_sorted[:, :keep] = False
    return _drop(logits, order, drop_sorted)


def _drop(logits: np.ndarray, order: np.ndarray, drop_sorted: np.ndarray) -> np.ndarray:
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits).astype(logits.dtype)


class TokenChooser:
    """Picks the next token of each row from one step's logits; owns the seeded random generator."""

    def __init__(self, cfg: SamplingConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def warp(self, scores: np.ndarray) -> np.ndarray:
        """The sampling warpers in transformers' order (nothing when greedy)."""
        c = self.cfg
        if not c.do_sample:
            return scores
        x = scores / c.temperature if c.temperature != 1.0 else scores
        x = top_k_filter(x, c.top_k, c.min_tokens_to_keep)
        x = top_p_filter(x, c.top_p, c.min_tokens_to_keep)
        x = min_p_filter(x, c.min_p, c.min_tokens_to_keep)
        return typical_filter(x, c.typical_p, c.min_tokens_to_keep)

    def process(self, logits: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Repetition penalty over `seen`, then the warpers: what the choice is made from (float32)."""
        x = repetition_penalty(np.asarray(logits, dtype=F32), seen, self.cfg.repetition_penalty)
        return self.warp(x)

    def choose(self, scores: np.ndarray) -> np.ndarray:
        """Greedy argmax, or one draw per row from softmax(scores)."""
        if not self.cfg.do_sample:
            return np.argmax(scores, axis=-1).astype(np.int64)
        return self.draw(softmax(scores.astype(np.float64)))

    def draw(self, probs: np.ndarray) -> np.ndarray:
        """One token per row from probabilities (rows, vocab), summing to 1 up to rounding."""
        # Inverse-CDF draw, one uniform per row: reproducible for a seed, independent of vocab order tricks.
        u = 1.0 - self.rng.random((probs.shape[0], 1))  # in (0, 1]: never lands on a removed token
        cdf = np.cumsum(probs, axis=-1)
        picked = (cdf < u * cdf[:, -1:]).sum(axis=-1)
        return np.minimum(picked, probs.shape[-1] - 1).astype(np.int64)

    def uniform(self) -> float:
        """One uniform draw in [0, 1) from the call's generator (speculative sampling's accept test)."""
        return float(self.rng.random())

    def choose_many(self, scores: np.ndarray, n: int) -> np.ndarray:
        """n distinct draws per row without replacement (beam sampling), in draw order."""
        probs = softmax(scores.astype(np.float64))
        if int((probs > 0).sum(axis=-1).min()) < n:
            raise InputError(f"beam sampling needs {n} candidates with non-zero probability",
                             found="fewer left after the logits processors", fix="raise top_k/top_p or lower num_beams")
        return np.stack([self.rng.choice(probs.shape[1], size=n, replace=False, p=p / p.sum()) for p in probs])

    def __call__(self, logits: np.ndarray, seen: np.ndarray) -> np.ndarray:
        return self.choose(self.process(logits, seen))
