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
        out = self.runner.run({**self._small(ids, mask, pos, 1), **self.first})
        self.past = {past: out[present] for present, past in {**self.grows, **self.replaces}.items()}
        self.mask = np.asarray(mask, np.int64).copy()
        self.position = pos[:, -1:] + 1
        self.prompt_logits = out["logits"]
        return out["logits"][:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """One token per row after the whole past; returns (batch, vocab)."""
        self.mask = np.concatenate([self.mask, np.ones((self.mask.shape[0], 1), np.int64)], axis=1)
        out = self.runner.run({**self._small(np.asarray(tokens, np.int64)[:, None], self.mask, self.position, 0),
                               **self.past})
        grown = {past: np.concatenate([self.past[past], out[present]], axis=SLOT_AXIS)
                 for present, past in self.grows.items()}
        self.past = {**grown, **{past: out[present] for present, past in self.replaces.items()}}
        self.position = self.position + 1
        return out["logits"][:, -1]

    def _small(self, ids: np.ndarray, mask: np.ndarray, position: np.ndarray, prompt: int) -> dict[str, np.ndarray]:
        """The call's inputs beside the state: those the DecoderState names (a model without positions takes
        none; the prompt flag, 1 in the prompt's call and 0 in steps, only where the graph declares it)."""
        small = {"input_ids": ids, "attention_mask": mask, "position_ids": position,
                 PROMPT_FLAG: np.full((ids.shape[0], 1), prompt, np.int64)}
        return {n: small[n] for n in self.state.inputs}

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the given batch rows in that order, possibly repeated (beam search)."""
        rows = np.asarray(rows, np.int64)
        self.past = {k: np.ascontiguousarray(v[rows]) for k, v in self.past.items()}
        self.mask, self.position = self.mask[rows], self.position[rows]

    def close(self) -> None:
        self.past = {}
