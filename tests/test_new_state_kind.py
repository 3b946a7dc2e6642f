"""A new kind of decoder state needs its class and its spec, and no edit anywhere else.

Both are defined here, outside the package: `DecayState` (one (batch, hidden) tensor replaced by
every step) and `DecaySpec` (a plain module h' = a*h + (1-a)*emb(x), logits = W h'). `match` finds
the spec, the manifest codec writes and reads the kind by its tag, the one decode loop feeds it
(stepwise prompt, row by row for a left-padded batch, beams reordered), and the tokens are the
module's own greedy / beam tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch.export import Dim

import edgekit
from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH
from edgekit.contract.generate import GenerateSection
from edgekit.contract.state import REPLACE, DecoderState, StateEntry, StateTensor
from edgekit.converters.export import GraphExport
from edgekit.converters.specs.generate import GeneratorSpec

VOCAB, HIDDEN = 24, 16


@dataclass(frozen=True)
class DecayState(StateEntry):
    tag: ClassVar[str] = "test_decay_state"
    hidden: int

    def tensors(self) -> tuple[StateTensor, ...]:
        return (StateTensor("decay.state", "decay.state_out", (BATCH, self.hidden), REPLACE),)


class DecayLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, HIDDEN, generator=g))
        self.out = torch.nn.Parameter(torch.randn(HIDDEN, VOCAB, generator=g))

    def forward(self, ids: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = 0.7 * h + 0.3 * torch.tanh(self.emb[ids[:, 0]])
        return (h @ self.out)[:, None], h


class DecayReference:
    """The module's own greedy loop, one unpadded row at a time."""

    def __init__(self, module: DecayLM) -> None:
        self.module, self.vocab = module, VOCAB

    def _run(self, row: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        h, logits = torch.zeros((1, HIDDEN)), []
        for t in row:
            out, h = self.module(torch.tensor([[int(t)]]), h)
            logits.append(out[:, 0])
        return torch.stack(logits, 1), h

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for row, m in zip(ids, mask):
                logits, h = self._run(row[m.astype(bool)])
                got = []
                for _ in range(new):
                    got.append(int(logits[0, -1].argmax()))
                    logits, h = self.module(torch.tensor([[got[-1]]]), h)
                rows.append(got)
        return np.asarray(rows, np.int64)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([self._run(r)[0].numpy() for r in ids])


class DecaySpec(GeneratorSpec):
    @classmethod
    def matches(cls, src: Any, task: str | None) -> bool:
        return src.is_plain and task == "generate" and isinstance(src.module, DecayLM)

    def __init__(self, src: Any, options: Any) -> None:
        super().__init__(src, options)
        self.family = "decay-lm"
        self.state = DecoderState((DecayState(HIDDEN),), inputs=("input_ids",), prompt="stepwise")
        batch = Dim(BATCH, min=1, max=64)
        example = (torch.zeros((2, 1), dtype=torch.long), torch.zeros((2, HIDDEN)))
        self.graph = GraphExport("model", src.module.eval(), example, ["input_ids", *self.state.past()],
                                 ["logits", *self.state.present()], ({0: batch}, {0: batch}))
        self.reference = DecayReference(src.module)

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        return GenerateSection(tokenizer=None, add_special_tokens=False, eos_token_id=(), bos_token_id=None,
                               pad_token_id=0, max_context=64, cache=self.state)


@pytest.fixture(scope="module")
def decay(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecayLM, Path]:
    module = DecayLM().eval()
    out = tmp_path_factory.mktemp("decay") / "art"
    edgekit.convert(module, out, task="generate")  # fp32 parity gate: greedy tokens identical
    return module, out


def test_a_new_state_kind_is_its_class_and_its_spec(decay: tuple[DecayLM, Path]) -> None:
    module, out = decay
    manifest = json.loads((out / "edgekit.json").read_text())
    assert manifest["family"] == "decay-lm" and manifest["parity"]["passed"]
    assert manifest["contract"]["cache"]["entries"] == [{"type": "test_decay_state", "hidden": HIDDEN}]
    model = edgekit.load(out, device="cpu")
    assert model.contract.cache.entries == (DecayState(HIDDEN),)
    ids = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]], np.int64)  # row 0 left-padded
    mask = (np.arange(5) >= np.array([[2], [0]])).astype(np.int64)
    got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)[:, 5:]
    np.testing.assert_array_equal(got, DecayReference(module).greedy(ids, mask, 12))


def test_beam_search_reorders_the_new_state(decay: tuple[DecayLM, Path]) -> None:
    """Beams carry their own state: 3 beams over the module's exact scores, recomputed here."""
    module, out = decay
    model = edgekit.load(out, device="cpu")
    ids = np.array([[5, 6, 7]], np.int64)
    got = model.generate(input_ids=ids, max_new_tokens=4, num_beams=3, do_sample=False, length_penalty=0.0)[0, 3:]
    ref = DecayReference(module)
    with torch.no_grad():  # exhaustive beam search of width 3 on log-probabilities, length penalty 0
        logits, h = ref._run(ids[0])
        beams = [(0.0, [], h, logits[0, -1])]
        for _ in range(4):
            cand = []
            for score, toks, hb, lg in beams:
                logp = torch.log_softmax(lg, -1)
                for t in torch.topk(logp, 3).indices.tolist():
                    cand.append((score + float(logp[t]), toks + [t], hb))
            cand.sort(key=lambda c: -c[0])
            beams = []
            for score, toks, hb in cand[:3]:
                lg, h2 = module(torch.tensor([[toks[-1]]]), hb)
                beams.append((score, toks, h2, lg[0, -1]))
    assert got.tolist() == beams[0][1]
