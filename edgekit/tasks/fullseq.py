"""The decode-loop state of a decoder without a cache: every step runs the whole sequence again.

For plain `forward(input_ids) -> logits` modules (nanoGPT-style): correct for any such model, and
O(n^2) over a generation (step t attends over all t tokens again), which is what the model itself
does when generating without a cache. Rows are kept unpadded (the graph takes no attention mask, so
a pad token would change the answer): rows of one length run as one batch, others separately.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.contract.generate import FullSequence
from edgekit.runtimes.base import Runner


class FullSequenceState:
    """prefill / step / reorder / close, like every decode-loop state (tasks/generator.py)."""

    def __init__(self, runner: Runner, cfg: FullSequence, batch: int, prompt: int, new: int) -> None:
        self.runner = runner
        self.input = cfg.input
        self.rows: list[list[int]] = []
        self.prompt_logits: np.ndarray | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt rows (left padding dropped); returns the last position's logits (batch, vocab)."""
        self.rows = [[int(t) for t, m in zip(row, mrow) if m] for row, mrow in zip(ids, mask)]
        if mask.all():  # one batch: the whole output is kept for teacher-forced scoring (Generator.logits)
            self.prompt_logits = self._logits(ids)
            return self.prompt_logits[:, -1]
        return self._last()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Append one token per row and run the whole sequences; returns (batch, vocab)."""
        for row, t in zip(self.rows, tokens.tolist()):
            row.append(int(t))
        return self._last()

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the given batch rows in that order, possibly repeated (beam search)."""
        self.rows = [list(self.rows[int(i)]) for i in rows]

    def close(self) -> None:
        pass  # nothing held beyond Python lists

    def _last(self) -> np.ndarray:
        out: list[Any] = [None] * len(self.rows)
        for length in sorted({len(r) for r in self.rows}):
            idx = [i for i, r in enumerate(self.rows) if len(r) == length]
            logits = self._logits(np.asarray([self.rows[i] for i in idx], dtype=np.int64))[:, -1]
            for j, i in enumerate(idx):
                out[i] = logits[j]
        return np.stack(out)

    def _logits(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner.run({self.input: ids}, outputs=["logits"])["logits"])
