"""The decode-loop state for decoders whose past must hold exactly the tokens so far ("append" tensors).

The slot loop (state_loop.py) feeds a preallocated buffer with the unfilled slots masked; that
is exact for models that only look at which slots are attended. Some models also look at where
they sit: BART-family decoders take positions from the cache length, ALiBi decoders such as MPT
bias attention by key index. For those the past grows by concatenation each step (the graph's
past dim is dynamic), as transformers' own DynamicCache does: one host-side copy per step, no
device-resident stepper, the same tokens as transformers.
"""
from __future__ import annotations

import numpy as np

from edgekit.contract.state import APPEND, SLOT_AXIS, DecoderState
from edgekit.contract.state.base import PROMPT_FLAG
from edgekit.runtimes.base import Runner


class CompactKV:
    """prefill / step / reorder / close, like every decode-loop state (tasks/generator.py)."""

    def __init__(self, runner: Runner, state: DecoderState, batch: int) -> None:
        self.runner = runner
        self.state = state
        dtypes = {s.name: np.dtype(s.dtype) for s in runner.inputs}
        self.first = {t.input: np.zeros(t.initial_shape(batch), dtypes[t.input]) for t in state.tensors()}
        self.grows = {t.output: t.input for t in state.tensors() if t.update == APPEND}
        self.replaces = {t.output: t.input for t in state.tensors() if t.update != APPEND}
        self.past: dict[str, np.ndarray] = {}
        self.mask = np.zeros((batch, 0), np.int64)
        self.position = np.zeros((batch, 1), np.int64)
        self.prompt_logits: np.ndarray | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt with an empty past; returns the last position's logits (batch, vocab)."""
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        out = self.runner.run({"input_ids": ids, "attention_mask": mask, "position_ids": pos, **self._flag(ids, 1),
                               **self.first})
        self.past = {past: out[present] for present, past in {**self.grows, **self.replaces}.items()}
        self.mask = np.asarray(mask, np.int64).copy()
        self.position = pos[:, -1:] + 1
        self.prompt_logits = out["logits"]
        return out["logits"][:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """One token per row after the whole past; returns (batch, vocab)."""
        self.mask = np.concatenate([self.mask, np.ones((self.mask.shape[0], 1), np.int64)], axis=1)
        ids = np.asarray(tokens, np.int64)[:, None]
        out = self.runner.run({"input_ids": ids, "attention_mask": self.mask, "position_ids": self.position,
                               **self._flag(ids, 0), **self.past})
        grown = {past: np.concatenate([self.past[past], out[present]], axis=SLOT_AXIS)
                 for present, past in self.grows.items()}
        self.past = {**grown, **{past: out[present] for present, past in self.replaces.items()}}
        self.position = self.position + 1
        return out["logits"][:, -1]

    def _flag(self, ids: np.ndarray, value: int) -> dict[str, np.ndarray]:
        """The prompt flag (1 in the prompt's call, 0 in steps), where the graph declares it (DecoderState)."""
        return {PROMPT_FLAG: np.full((ids.shape[0], 1), value, np.int64)} if PROMPT_FLAG in self.state.inputs else {}

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the given batch rows in that order, possibly repeated (beam search)."""
        rows = np.asarray(rows, np.int64)
        self.past = {k: np.ascontiguousarray(v[rows]) for k, v in self.past.items()}
        self.mask, self.position = self.mask[rows], self.position[rows]

    def close(self) -> None:
        self.past = {}
