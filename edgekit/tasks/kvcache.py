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

from edgekit.errors import ArtifactError
from edgekit.runtimes.base import Runner, StepSpec, Stepper


def _vocab(runner: Runner) -> int:
    """The logits' last dim, fixed in every decoder graph edgekit exports."""
    vocab = {s.name: s for s in runner.outputs}["logits"].shape[-1]
    if not isinstance(vocab, int):
        raise ArtifactError("the decoder's logits have no fixed vocabulary size", found=f"dim '{vocab}'",
                            fix="convert the model again")
    return vocab


class SlotCache:
    """Keys/values of `slots` tokens per row, preallocated; each decode step writes one slot.

    `writes` maps each present output to the past input it fills; `resident` are inputs fed
    unchanged to every run (kept on the backend by the stepper, never written). The mask has
    one column more than the slots, always 1: the current token, which the graph appends.
    """

    def __init__(self, runner: Runner, writes: Mapping[str, str], shape: tuple[int, int, int, int],
                 resident: Mapping[str, np.ndarray] | None = None, origin: np.ndarray | None = None) -> None:
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
        self.logits = np.zeros((batch, 1, _vocab(runner)), np.float32)
        self.filled = 0
        # Which input's resident rows each row holds (the beams of one input share them).
        self.origin = np.arange(batch) if origin is None else np.asarray(origin, np.int64)
        self._stepper: Stepper | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt (at most `slots` tokens) with past length 0; returns its logits (batch, tokens, vocab).

        It runs through the stepper, so its keys/values go into the resident cache where the backend
        keeps it (on a GPU they never come down to the host and back up); only the logits come out.
        """
        b, p = ids.shape
        empty = {n: np.zeros((b, a.shape[1], 0, a.shape[3]), a.dtype) for n, a in self.past.items()}
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        out = self._stepper_made().run({"input_ids": ids, "attention_mask": mask, "position_ids": pos, **empty},
                                       slot=0)
        self.mask[:, :p] = mask
        self.filled = p
        self.position[:, 0] = pos[:, -1] + 1
        return out["logits"]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at the next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        self._stepper_made().step(self.filled)
        self.mask[:, self.filled] = 1
        self.filled += 1
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows `rows` (in that order, possibly repeated; the batch size stays): beam search
        after each step. The stepper gathers the rows where the caches live; resident inputs only when
        a row's source changes, which beam search never does (beams of one input share its encoder
        output)."""
        rows = np.asarray(rows, np.int64)
        origin = self.origin[rows]
        moved = [] if np.array_equal(origin, self.origin) else list(self.resident)
        self._stepper_made().reorder(rows, [*self.writes.values(), *moved])
        self.mask[...], self.position[...] = self.mask[rows], self.position[rows]
        self.origin = origin

    def _stepper_made(self) -> Stepper:
        if self._stepper is None:
            self._stepper = self.runner.stepper(StepSpec(
                inputs={"input_ids": self.token, "attention_mask": self.mask, "position_ids": self.position},
                caches={**self.past, **self.resident}, writes=self.writes, outputs={"logits": self.logits}))
        return self._stepper

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
    as present, writes only this call's keys/values: each row's tokens fill its slots from 0, and
    `total_length` (per row) says how many there are after the call. So the prompt runs through the
    stepper too (`Stepper.run`: straight into the resident buffer, rows moved to the left, shorter
    ones padded on the right), no step copies a slot, and no mask is needed.
    """

    def __init__(self, runner: Runner, writes: Mapping[str, str], shape: tuple[int, int, int, int]) -> None:
        batch, _, self.slots, _ = shape
        dtype = np.dtype({s.name: s for s in runner.inputs}[next(iter(writes.values()))].dtype)
        self.past = {name: np.zeros(shape, dtype) for name in writes.values()}
        self.token = np.zeros((batch, 1), np.int64)
        self.position = np.zeros((batch, 1), np.int64)  # each row's next slot: its tokens so far
        self.total = np.zeros((batch,), np.int64)
        self.logits = np.zeros((batch, 1, _vocab(runner)), np.float32)
        self._stepper = runner.stepper(StepSpec(
            inputs={"input_ids": self.token, "position_ids": self.position, "total_length": self.total},
            caches=self.past, writes={}, outputs={"logits": self.logits}, shared=dict(writes)))

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The left-padded prompt (at most `slots` tokens); returns its logits (batch, tokens, vocab) as
        laid out in `ids` (a row's last real token last)."""
        b, p = ids.shape
        lengths = mask.sum(axis=1).astype(np.int64)
        left = np.zeros_like(ids)
        for r in range(b):  # the real tokens of each row to its start
            left[r, : lengths[r]] = ids[r][mask[r].astype(bool)]
        pos = np.broadcast_to(np.arange(p, dtype=np.int64), (b, p))
        out = self._stepper.run({"input_ids": left, "position_ids": pos, "total_length": lengths})["logits"]
        logits = np.zeros_like(out)
        for r in range(b):
            logits[r, p - lengths[r]:] = out[r, : lengths[r]]
        self.position[:, 0] = lengths
        return logits

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at each row's next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        self.total[:] = self.position[:, 0] + 1
        self._stepper.step(int(self.position.max()))
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows `rows` (the batch size stays): each row's slots and its token count move."""
        rows = np.asarray(rows, np.int64)
        self._stepper.reorder(rows, list(self.past))
        self.position[...] = self.position[rows]

    @property
    def filled(self) -> int:
        """Slots used by the longest row."""
        return int(self.position.max())

    def close(self) -> None:
        self._stepper.close()

    def __enter__(self) -> SharedKVCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
