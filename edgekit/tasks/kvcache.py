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

    def close(self) -> None:
        """Free the stepper (it may hold GPU memory and a CUDA graph). Safe to call twice."""
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None

    def __enter__(self) -> SlotCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SharedKVCache:
    """Keys/values in buffers the graph writes itself (a runner of kv_layout "shared"): same calls as SlotCache.

    onnxruntime's GroupQueryAttention takes the whole buffer as past and, bound to the same buffer
    as present, writes only this call's keys/values at slots [past_length, past_length + tokens).
    So the prompt runs through the stepper too (`Stepper.run`: straight into the resident buffer),
    and no step copies a slot. The mask spans the buffer's slots; a step marks its token's slot
    before the call (the graph reads the first past_length + tokens columns).
    """

    def __init__(self, runner: Runner, writes: Mapping[str, str], shape: tuple[int, int, int, int]) -> None:
        batch, _, self.slots, _ = shape
        dtype = np.dtype({s.name: s for s in runner.inputs}[next(iter(writes.values()))].dtype)
        self.past = {name: np.zeros(shape, dtype) for name in writes.values()}
        self.mask = np.zeros((batch, self.slots), np.int64)
        self.token = np.zeros((batch, 1), np.int64)
        self.position = np.zeros((batch, 1), np.int64)
        self.past_length = np.zeros((1,), np.int64)
        vocab = {s.name: s for s in runner.outputs}["logits"].shape[-1]
        self.logits = np.zeros((batch, 1, int(vocab) if isinstance(vocab, int) else 0), np.float32)
        self.filled = 0
        self._stepper = runner.stepper(StepSpec(
            inputs={"input_ids": self.token, "attention_mask": self.mask, "position_ids": self.position,
                    "past_length": self.past_length},
            caches=self.past, writes={}, outputs={"logits": self.logits}, shared=dict(writes)))

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt (at most `slots` tokens) into slots [0, tokens); returns its logits (batch, tokens, vocab)."""
        p = ids.shape[1]
        self.mask[:, :p] = mask
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        out = self._stepper.run({"input_ids": ids, "attention_mask": self.mask, "position_ids": pos,
                                 "past_length": np.zeros((1,), np.int64)})
        self.filled = p
        self.position[:, 0] = pos[:, -1] + 1
        return out["logits"]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at the next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        self.mask[:, self.filled] = 1  # this token's slot, which the graph writes and attends
        self.past_length[0] = self.filled
        self._stepper.step(self.filled)
        self.filled += 1
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def close(self) -> None:
        self._stepper.close()

    def __enter__(self) -> SharedKVCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
