"""A fixed-slot KV cache that decodes through `Runner.stepper`: any decoder graph of the slot contract.

The contract (edgekit/contract/generate.py declares it; `decoder_needs` checks it at load):
  inputs   input_ids (batch, sequence), attention_mask (batch, past + sequence) int64,
           position_ids (batch, sequence) int64, the past keys/values (batch, heads, past, dim),
           and any number of resident inputs (an encoder's cross-attention keys/values)
  outputs  logits (batch, sequence, vocab), and per past tensor the NEW tokens' keys/values only
           (batch, heads, sequence, dim).
A past slot is attended iff its mask column is 1; the new tokens see each other causally.

So the buffers are sized once for the whole call and never change shape or address: the prompt
runs with past length 0 (`prefill`), then every decode step feeds the whole buffer with the
unwritten slots masked, and the runner's stepper keeps the buffers (and the resident inputs,
sent once) where it computes; only token, position and mask go in and the logits come out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekit.runtimes.base import Runner, StepSpec, Stepper


class SlotCache:
    """Keys/values of `slots` tokens per row, preallocated; each decode step writes one slot.

    `writes` maps each present output to the past input it fills; `resident` are inputs fed
    unchanged to every run (kept on the backend by the stepper, never written). The mask has
    one column more than the slots, always 1: the current token, which the graph appends.
    """

    def __init__(self, runner: Runner, writes: Mapping[str, str], shape: tuple[int, int, int, int],
                 resident: Mapping[str, np.ndarray] | None = None) -> None:
        self.runner = runner
        self.writes = dict(writes)
        self.resident = dict(resident or {})
        batch, _, self.slots, _ = shape
        dtype = np.dtype({s.name: s for s in runner.inputs}[next(iter(self.writes.values()))].dtype)
        self.past = {name: np.zeros(shape, dtype) for name in self.writes.values()}
        self.mask = np.zeros((batch, self.slots + 1), np.int64)
        self.mask[:, -1] = 1
        self.token = np.zeros((batch, 1), np.int64)
        self.position = np.zeros((batch, 1), np.int64)
        self.logits = np.zeros((batch, 1, 0), np.float32)
        self.filled = 0
        self.origin = np.arange(batch)  # which row of the resident inputs each row holds
        self._stepper: Stepper | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt (at most `slots` tokens) with past length 0; returns its logits (batch, tokens, vocab)."""
        b, p = ids.shape
        empty = {n: np.zeros((b, a.shape[1], 0, a.shape[3]), a.dtype) for n, a in self.past.items()}
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        out = self.runner.run({"input_ids": ids, "attention_mask": mask, "position_ids": pos, **empty,
                               **self.resident})
        for present, past in self.writes.items():
            self.past[past][:, :, :p] = out[present]
        self.mask[:, :p] = mask
        self.filled = p
        self.position[:, 0] = pos[:, -1] + 1
        self.logits = np.zeros((b, 1, out["logits"].shape[-1]), out["logits"].dtype)
        return out["logits"]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at the next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        if self._stepper is None:
            self._stepper = self.runner.stepper(StepSpec(
                inputs={"input_ids": self.token, "attention_mask": self.mask, "position_ids": self.position},
                caches={**self.past, **self.resident}, writes=self.writes, outputs={"logits": self.logits}))
        self._stepper.step(self.filled)
        self.mask[:, self.filled] = 1
        self.filled += 1
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows `rows` (in that order, possibly repeated): beam search after each step.

        Before the first step the host arrays are the cache, so the batch may change size (one
        prompt row becomes num_beams rows); after it the stepper gathers the rows where the
        caches live. Resident inputs are gathered only when a row's source row changes, which
        beam search never does (beams of one input share its encoder output).
        """
        rows = np.asarray(rows, np.int64)
        origin = self.origin[rows]
        if self._stepper is None:
            self.past = {n: np.ascontiguousarray(a[rows]) for n, a in self.past.items()}
            self.resident = {n: np.ascontiguousarray(a[rows]) for n, a in self.resident.items()}
            self.mask, self.position = self.mask[rows], self.position[rows]
            self.token = np.zeros((len(rows), 1), np.int64)
            self.logits = np.zeros((len(rows), *self.logits.shape[1:]), self.logits.dtype)
        else:
            moved = [] if np.array_equal(origin, self.origin) else list(self.resident)
            self._stepper.reorder(rows, [*self.writes.values(), *moved])
            self.mask[...], self.position[...] = self.mask[rows], self.position[rows]
        self.origin = origin

    def close(self) -> None:
        """Free the stepper (it may hold GPU memory and a CUDA graph). Safe to call twice."""
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None

    def __enter__(self) -> SlotCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
