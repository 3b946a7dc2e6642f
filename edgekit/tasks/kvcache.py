"""Keys/values in buffers the graph writes itself: onnxruntime's fused-attention stand-in (kv_layout "shared").

Every other decoder graph runs through the state loop (state_loop.py); this stand-in takes its
cache whole, writes this call's keys/values into it, and counts tokens with `total_length` instead
of a mask (converters/ort_attention.py makes it), so its loop is its own.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.contract.state import DecoderState
from edgekit.errors import InputError
from edgekit.runtimes.base import Runner, StepSpec
from edgekit.tasks.state_loop import vocab_of


class SharedKVCache:
    """Keys/values in buffers the graph writes itself (a runner of kv_layout "shared"): same calls as StateLoop.

    onnxruntime's GroupQueryAttention takes the whole buffer as past and, bound to the same buffer
    as present, writes only this call's keys/values: each row's tokens fill its slots from 0, and
    `total_length` (per row) says how many there are after the call. So the prompt runs through the
    stepper too (`Stepper.run`: straight into the resident buffer, rows moved to the left, shorter
    ones padded on the right), no step copies a slot, and no mask is needed.
    """

    def __init__(self, runner: Runner, state: DecoderState, batch: int, slots: int) -> None:
        self.slots = slots
        dtypes = {s.name: np.dtype(s.dtype) for s in runner.inputs}
        self.caches = {t.input: np.zeros(t.shape(batch, slots), dtypes[t.input]) for t in state.tensors()}
        writes = {t.output: t.input for t in state.tensors()}
        self.token = np.zeros((batch, 1), np.int64)
        self.position = np.zeros((batch, 1), np.int64)  # each row's next slot: its tokens so far
        self.total = np.zeros((batch,), np.int64)
        self.logits = np.zeros((batch, 1, vocab_of(runner)), np.float32)
        self.prompt_logits: np.ndarray | None = None
        self._stepper = runner.stepper(StepSpec(
            inputs={"input_ids": self.token, "position_ids": self.position, "total_length": self.total},
            caches=self.caches, writes={}, outputs={"logits": self.logits}, shared=dict(writes)))

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The left-padded prompt (at most `slots` tokens); returns the last position's logits (batch,
        vocab), and keeps all of them (batch, tokens, vocab) in `prompt_logits`, laid out as `ids`."""
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
        self.prompt_logits = logits
        return logits[:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at each row's next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        self.total[:] = self.position[:, 0] + 1
        self._stepper.step(int(self.position.max()))
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        """Feed n tokens per row after each row's tokens in one call (speculative decoding's check of
        its drafts); returns their logits (batch, n, vocab). GroupQueryAttention masks causally
        within a call after a past (onnxruntime's "subsequent prompt")."""
        b, n = tokens.shape
        if int(self.position.max()) + n > self.slots:
            raise InputError(f"{n} tokens do not fit the cache", found=f"{self.filled} of {self.slots} slots used")
        pos = self.position + np.arange(n)
        out = self._stepper.run({"input_ids": np.asarray(tokens, np.int64), "position_ids": pos,
                                 "total_length": self.position[:, 0] + n})
        self.position += n
        return out["logits"]

    def rollback(self, n: int) -> None:
        """Forget the last n fed tokens: the count goes back and the next call overwrites their slots."""
        if not 0 <= n <= int(self.position.min()):
            raise InputError(f"cannot roll back {n} tokens", found=f"{self.filled} fed")
        self.position -= n

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows `rows` (the batch size stays): each row's slots and its token count move."""
        rows = np.asarray(rows, np.int64)
        self._stepper.reorder(rows, list(self.caches))
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
