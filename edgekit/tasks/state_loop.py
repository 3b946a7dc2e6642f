"""The decode loop's state for any `DecoderState` (edgekit/contract/state), through `Runner.stepper`.

Every tensor is sized once per call and never changes shape or address, so the runner's stepper
keeps it where it computes (GPU memory on CUDA/TensorRT): a "slots" tensor (attention keys/values)
gets this call's tokens written at the next slot, with unfilled slots masked; a "replace" tensor
(conv, SSM, LSTM state) is overwritten by its output. Only token, position and mask go in and the
logits come out. Resident inputs (an encoder's cross-attention keys/values) are sent once.

A "whole" prompt runs as one call with an empty past; a "stepwise" one (recurrent graphs take one
token per call) is fed token by token, each row of a left-padded batch on its own so that no pad
token enters a state (what transformers' masking of padded positions gives too). A graph that
declares the prompt flag (DecoderState) is fed 1 in every prompt call and 0 in every step.
A decoder whose media rows are added per position (`added`: Voxtral Realtime, contract/audio_lm)
gets the prompt's rows in the prompt call and its position's row in every step.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekit.contract.state import REPLACE, SLOTS, DecoderState
from edgekit.contract.state.base import PROMPT_FLAG
from edgekit.contract.audio_lm import AUDIO_FEATURES
from edgekit.contract.vision import IMAGE_FEATURES
from edgekit.errors import ArtifactError, ConfigError, InputError
from edgekit.runtimes.base import HostStepper, Runner, StepSpec, Stepper
from edgekit.contract.generate import verify_refusal


def vocab_of(runner: Runner) -> int:
    """The logits' last dim, fixed in every decoder graph edgekit exports."""
    vocab = {s.name: s for s in runner.outputs}["logits"].shape[-1]
    if not isinstance(vocab, int):
        raise ArtifactError("the decoder's logits have no fixed vocabulary size", found=f"dim '{vocab}'",
                            fix="convert the model again")
    return vocab


# A multimodal decoder's input of media rows that replace placeholder tokens (contract/vision, contract/audio_lm).
FEATURE_INPUTS = (IMAGE_FEATURES, AUDIO_FEATURES)


class StateLoop:
    """prefill / step / reorder / close over one decoder state, `slots` tokens per row at most.

    `resident` are inputs fed unchanged to every run (kept on the backend by the stepper, never
    written); `origin` says which input's resident rows each row holds (the beams of one input
    share them). `host=True` keeps every tensor in the host arrays (a row's stepwise prompt).
    """

    def __init__(self, runner: Runner, state: DecoderState, batch: int, slots: int,
                 resident: Mapping[str, np.ndarray] | None = None, origin: np.ndarray | None = None,
                 host: bool = False, features: np.ndarray | None = None, added: bool = False) -> None:
        self.runner, self.state, self.slots, self.host = runner, state, slots, host
        dtypes = {s.name: np.dtype(s.dtype) for s in runner.inputs}
        # A multimodal decoder's image or audio rows: the prompt call's, then none; or, `added`, one
        # (batch, 1, hidden) row per step, rewritten in place as the token is.
        self.no_rows = {}
        name = next((n for n in FEATURE_INPUTS if n in dtypes), None)
        if added and (name is None or features is None or batch != 1):
            raise ArtifactError("rows added per position need a decoder input of them, the rows, and batch 1",
                                found=f"input {name}, batch {batch}", fix="convert the model again")
        if name is not None:
            hidden = int({s.name: s for s in runner.inputs}[name].shape[-1])
            self.no_rows = {name: np.zeros((batch, 1, hidden) if added else (0, hidden), dtypes[name])}
        elif features is not None and len(features):
            raise ArtifactError(f"media features were given to a decoder graph without an input of them {FEATURE_INPUTS}",
                                fix="convert the vision- or audio-language model again")
        self.features, self.added = features, added
        self.caches = {t.input: np.zeros(t.shape(batch, slots), dtypes[t.input]) for t in state.tensors()}
        self.writes = {t.output: t.input for t in state.tensors() if t.update == SLOTS}
        self.replaces = {t.output: t.input for t in state.tensors() if t.update == REPLACE}
        self.resident = dict(resident or {})
        self.token = np.zeros((batch, 1), np.int64)
        self.position = np.zeros((batch, 1), np.int64)
        self.flag = np.zeros((batch, 1), np.int64)  # the graph's prompt_flag, where it takes one: 1 while a prompt is fed
        # The mask has one column more than the slots, always 1: the current token, which the graph appends.
        self.mask = np.zeros((batch, slots + 1), np.int64)
        self.mask[:, -1] = 1
        self.logits = np.zeros((batch, 1, vocab_of(runner)), np.float32)
        self.filled = 0
        self.origin = np.arange(batch) if origin is None else np.asarray(origin, np.int64)
        self.prompt_logits: np.ndarray | None = None
        self._stepper: Stepper | None = None

    def _small(self) -> dict[str, np.ndarray]:
        small = {"input_ids": self.token, "attention_mask": self.mask, "position_ids": self.position,
                 PROMPT_FLAG: self.flag}
        return {**{n: small[n] for n in self.state.inputs}, **self.no_rows}

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The prompt (at most `slots` tokens, left-padded); returns the last position's logits
        (batch, vocab) and keeps all of them (batch, tokens, vocab) in `prompt_logits`."""
        if self.state.prompt == "whole":
            self.prompt_logits = self._prefill_whole(ids, mask)
        elif mask.all():
            self.prompt_logits = self._feed(ids)
        else:
            self.prompt_logits = self._prefill_rows(ids, mask)
        return self.prompt_logits[:, -1]

    def _prefill_whole(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # Through the stepper, so the prompt's keys/values go into the resident cache where the backend
        # keeps it (on a GPU they never come down to the host and back up); only the logits come out.
        b, p = ids.shape
        first = {t.input: np.zeros(t.initial_shape(b), self.caches[t.input].dtype) for t in self.state.tensors()}
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        small = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, PROMPT_FLAG: np.ones((b, 1), np.int64)}
        rows = {n: self.features if self.features is not None else empty for n, empty in self.no_rows.items()}
        if self.added:
            rows = {n: self._rows(0, p)[None] for n in self.no_rows}
        out = self._stepper_made().run({**{n: small[n] for n in self.state.inputs}, **rows, **first}, slot=0)
        self.mask[:, :p] = mask
        self.filled = p
        self.position[:, 0] = pos[:, -1] + 1
        return out["logits"]

    def _feed(self, ids: np.ndarray) -> np.ndarray:
        """Rows of one length (no padding), token by token through the step, flagged as prompt."""
        self.flag[...] = 1
        try:
            return np.stack([self.step(ids[:, t]) for t in range(ids.shape[1])], axis=1)
        finally:
            self.flag[...] = 0

    def _prefill_rows(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Each row's real tokens on its own (host arrays), then the rows laid side by side: row r's
        tokens fill its first slots, the batch decodes on from the longest row's next slot."""
        b, p = ids.shape
        lengths = mask.sum(axis=1).astype(np.int64)
        logits = np.zeros((b, p, self.logits.shape[-1]), np.float32)
        for r in range(b):
            with StateLoop(self.runner, self.state, 1, self.slots, host=True) as one:
                logits[r, p - lengths[r]:] = one._feed(ids[r : r + 1, p - lengths[r]:])[0]
                for name, cache in one.caches.items():
                    self.caches[name][r] = cache[0]
                self.mask[r, : lengths[r]] = 1
        self.filled = int(lengths.max())
        self.position[:, 0] = lengths
        return logits

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row at the next slot; returns the logits (batch, vocab)."""
        self.token[:, 0] = tokens
        for buffer in self.no_rows.values() if self.added else ():
            buffer[0] = self._rows(int(self.position[0, 0]), 1)
        self._stepper_made().step(self.filled)
        if self.filled < self.slots:
            self.mask[:, self.filled] = 1
        self.filled += 1
        self.position += 1
        return self.logits[:, 0].copy()  # the bound buffer is overwritten by the next step

    def _rows(self, start: int, n: int) -> np.ndarray:
        """The added rows of positions start..start+n-1."""
        assert self.features is not None
        if start + n > len(self.features):
            raise ArtifactError(f"position {start + n - 1} has no audio row: {len(self.features)} rows given",
                                fix="decode no further than the rows reach")
        return self.features[start:start + n]

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        """Feed n tokens per row at the next n slots in one call (speculative decoding checks its
        drafted tokens so, a conversation its new turn); returns their logits (batch, n, vocab). The
        graph masks causally within the call (it is exported for n new tokens after a past:
        converters/specs/causal_lm.py). Where the runner takes fewer tokens per call (a TensorRT
        engine's verify profile), they go in consecutive calls of at most that many."""
        b, n = tokens.shape
        why = verify_refusal(self.state) or ("its media rows are added one per position, fed with each step"
                                      if self.added else None)
        if why is not None:
            raise ConfigError("this decoder cannot check several tokens in one call", found=why,
                              fix="leave prompt_lookup_num_tokens and assistant_model out for this model")
        if self.filled + n > self.slots:
            raise InputError(f"{n} tokens do not fit the cache", found=f"{self.filled} of {self.slots} slots used")
        most = self.runner.tokens_per_call(self.slots)  # a TensorRT engine's profiles bound a call's tokens
        if most is not None and n > most:
            if most < 1:
                raise ArtifactError("the engine takes no call of several tokens after a cache",
                                    found=f"{self.slots} cache slots", fix="rebuild it: `edgekit build --rebuild`")
            return np.concatenate([self.verify(tokens[:, i:i + most]).copy() for i in range(0, n, most)], axis=1)
        mask = np.concatenate([self.mask[:, : self.slots], np.ones((b, n), np.int64)], axis=1)
        small = {"input_ids": np.asarray(tokens, np.int64), "attention_mask": mask,
                 "position_ids": self.position + np.arange(n)}
        out = self._stepper_made().run({**{k: small[k] for k in self.state.inputs}, **self.no_rows}, slot=self.filled)
        self.mask[:, self.filled : self.filled + n] = 1
        self.filled += n
        self.position += n
        return out["logits"]

    def rollback(self, n: int) -> None:
        """Forget the last n fed tokens: their slots are masked again and the next tokens overwrite
        them, so nothing of the cache is copied."""
        if not 0 <= n <= self.filled:
            raise InputError(f"cannot roll back {n} tokens", found=f"{self.filled} fed")
        self.filled -= n
        self.position -= n
        self.mask[:, self.filled : self.filled + n] = 0

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows `rows` (in that order, possibly repeated; the batch size stays): beam search
        after each step. The stepper gathers the rows where the state lives; resident inputs only
        when a row's source changes, which beam search never does."""
        rows = np.asarray(rows, np.int64)
        origin = self.origin[rows]
        moved = [] if np.array_equal(origin, self.origin) else list(self.resident)
        self._stepper_made().reorder(rows, [*self.caches, *moved])
        self.mask[...], self.position[...] = self.mask[rows], self.position[rows]
        self.origin = origin

    def _stepper_made(self) -> Stepper:
        if self._stepper is None:
            spec = StepSpec(inputs=self._small(), caches={**self.caches, **self.resident}, writes=self.writes,
                            outputs={"logits": self.logits}, replaces=self.replaces)
            self._stepper = HostStepper(self.runner, spec) if self.host else self.runner.stepper(spec)
        return self._stepper

    def close(self) -> None:
        """Free the stepper (it may hold GPU memory and a CUDA graph). Safe to call twice."""
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None

    def __enter__(self) -> StateLoop:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
