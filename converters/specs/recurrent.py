"""Recurrent generators: a plain nn.Module with an `nn.LSTM` whose forward(input_ids, (h, c)) returns
(logits, (h, c)). The graph is one step: torch.export unrolls an LSTM over time and would fix the
traced length, so the runtime feeds a prompt token by token (the state carries it).

`preprocess=` may give eos_token_id, pad_token_id and max_context.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH
from edgekit.contract.generate import GenerateSection
from edgekit.contract.state import DecoderState, LSTMState
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions
from edgekit.converters.specs.causal_lm import MAX_BATCH, MAX_LEN
from edgekit.converters.specs.classify import as_tokenizer
from edgekit.converters.specs.generate import GeneratorSpec, torch_step
from edgekit.errors import ConfigError, UnsupportedError
from edgekit.tasks.generator import token_ids

_USER_KEYS = ("eos_token_id", "pad_token_id", "max_context")


class LSTMStep(torch.nn.Module):
    """One step with the state batch-first, (batch, layers, hidden), as every state entry keeps it
    (a beam reorder gathers axis 0); nn.LSTM itself takes (layers, batch, hidden)."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.module = module

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, (h2, c2) = self.module(ids, (h.transpose(0, 1), c.transpose(0, 1)))
        return logits.float(), h2.transpose(0, 1), c2.transpose(0, 1)


class RecurrentGenerator(GeneratorSpec):
    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        # The LSTM-style step; other plain decoders are converters/specs/torch_decoder.py's.
        return src.is_plain and task == "generate" and hasattr(src.module, "modules") and any(
            isinstance(m, torch.nn.LSTM) for m in src.module.modules())

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.family = "lstm"
        module = src.module
        lstm = next(m for m in module.modules() if isinstance(m, torch.nn.LSTM))
        if src.tokenizer is None:
            raise ConfigError("a plain-module generator needs tokenizer=",
                              fix="pass a tokenizers.Tokenizer or tokenizer.json path")
        if not lstm.batch_first or lstm.bidirectional or lstm.proj_size:
            raise UnsupportedError("the LSTM must be batch_first, one-directional and without projection",
                                   found=f"batch_first={lstm.batch_first}, bidirectional={lstm.bidirectional}")
        user = dict(src.preprocess or {})
        if set(user) - set(_USER_KEYS):
            raise ConfigError(f"unknown preprocess keys {sorted(set(user) - set(_USER_KEYS))}",
                              found=f"known keys {list(_USER_KEYS)}")
        self.user = user
        entry = LSTMState(int(lstm.num_layers), int(lstm.hidden_size))
        self.state = DecoderState((entry,), inputs=("input_ids",), prompt="stepwise")
        self.step_module = LSTMStep(module).eval()
        batch = Dim(BATCH, min=1, max=MAX_BATCH)
        ids = torch.randint(0, 2, (2, 1))
        state = torch.zeros((2, entry.layers, entry.hidden))
        self.graph = GraphExport("model", self.step_module, (ids, state, state.clone()),
                                 ["input_ids", *self.state.past()], ["logits", *self.state.present()],
                                 ({0: batch}, {0: batch}, {0: batch}))
        self.tokenizer_json = as_tokenizer(src.tokenizer).to_str().encode("utf-8")
        with torch.no_grad():
            vocab = int(self.step_module(ids, state, state)[0].shape[-1])
        self.reference = RecurrentReference(self.step_module, self.graph, vocab, self.state)

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def files(self, calibration: Any) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json}

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        u = self.user
        return GenerateSection(tokenizer="tokenizer.json", add_special_tokens=True,
                               eos_token_id=tuple(token_ids(u.get("eos_token_id"))), bos_token_id=None,
                               pad_token_id=int(u.get("pad_token_id", 0)),
                               max_context=int(u.get("max_context", MAX_LEN)), cache=self.state)


class RecurrentReference:
    """PyTorch side of parity for a recurrent generator: its own greedy loop, one prompt at a time."""

    def __init__(self, step: Any, graph: GraphExport, vocab: int, state: DecoderState) -> None:
        self.step_module, self.graph, self.vocab, self.state = step, graph, vocab, state

    def _zeros(self, batch: int) -> dict[str, np.ndarray]:
        return {t.input: np.zeros(t.shape(batch, 0), np.float32) for t in self.state.tensors()}

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        rows = []
        for row, m in zip(ids, mask):
            x = torch.from_numpy(row[m.astype(bool)][None].copy())
            h = c = torch.from_numpy(next(iter(self._zeros(1).values())))
            out = []
            with torch.no_grad():
                for _ in range(new):
                    logits, h, c = self.step_module(x, h, c)
                    x = logits[:, -1].argmax(-1, keepdim=True)
                    out.append(int(x))
            rows.append(out)
        return np.asarray(rows, dtype=np.int64)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, **self._zeros(ids.shape[0])}  # the torch module takes a whole sequence
        return torch_step(self.step_module, self.graph.input_names, self.graph.output_names, feeds)["logits"]
