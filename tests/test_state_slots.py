"""The step graph's slot layout (converters/specs/state_slots.py): filled slots moved last, so that a
model taking positions from its cache length (Inkling's relative logits) sees each row's own distances;
and a hybrid whose cache keeps a sparse-attention indexer's keys (Qwen4-Exp), its QSA selection as the
exported graph computes it (converters/indexers.py). PyTorch only, no export."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import tiny_config  # noqa: E402

torch = pytest.importorskip("torch")

from edgekit.contract.state import SLOTS, IndexerKeys  # noqa: E402
from edgekit.converters.indexers import SELECTORS  # noqa: E402
from edgekit.converters.specs.state_slots import aligned_mask, choose_layout, depends_on_slots, right_aligned  # noqa: E402
from edgekit.converters.specs.state_space import StateDecoder, probe_layers  # noqa: E402


def _model(family: str) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(family, "generate", vocab=32)).eval()


def test_right_aligned_puts_masked_slots_first_in_order() -> None:
    # A short row of a left-padded prompt: 2 prompt slots, 2 unfilled, a generated token, one unfilled.
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1, 1]])
    order = right_aligned(mask)
    assert order.tolist() == [[2, 3, 5, 0, 1, 4], [0, 1, 2, 3, 4, 5]]
    assert aligned_mask(mask, order).tolist() == [[0, 0, 0, 1, 1, 1, 1], [1] * 7]


def _stepped(dec: StateDecoder, ids: Any, slots: int) -> Any:
    """Logits of `ids` fed one token per call into `slots` preallocated slots, as the runtime does."""
    flat = [torch.zeros(t.shape(1, slots)) for t in dec.state.tensors()]
    kv = [t.update == SLOTS for t in dec.state.tensors()]
    logits = []
    for t in range(ids.shape[1]):
        mask = torch.zeros(1, slots + 1, dtype=torch.long)
        mask[:, :t] = 1
        mask[:, -1] = 1
        with torch.no_grad():
            out = dec(ids[:, t : t + 1], mask, torch.tensor([[t]]), *flat)
        logits.append(out[0])
        for i, (new, is_kv) in enumerate(zip(out[1:], kv)):
            if is_kv:
                flat[i] = flat[i].clone()
                flat[i][:, :, t] = new[:, :, 0]
            else:
                flat[i] = new
    return torch.cat(logits, dim=1)


def test_inkling_steps_over_unfilled_slots_match_its_forward() -> None:
    model = _model("inkling_text")
    dec = StateDecoder(model, probe_layers(model))
    assert depends_on_slots(dec)  # its relative logits place the query at the cache length
    choose_layout(dec)
    assert dec.align
    ids = torch.tensor([[1, 7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
    got = _stepped(dec, ids, slots=ids.shape[1] + 5)
    # fp32, two layers: the same products summed in other orders, a few roundings of the logits' scale;
    # an unfilled slot counted into a distance moved them by ~60% of it before (state_slots.py).
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_qwen4_steps_with_indexer_keys_match_its_forward() -> None:
    # The sweep's Qwen4-Exp settings (coverage_models._FAMILY_KW): the indexer keeps 4 blocks of 4 tokens,
    # so from 21 tokens on each step attends a selection of its past.
    model = _model("qwen4_exp_text")
    dec = StateDecoder(model, probe_layers(model))
    assert [e.layer for e in dec.state.entries if isinstance(e, IndexerKeys)] == [1]
    ids = torch.randint(3, 32, (1, 28), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
    got = _stepped(dec, ids, slots=ids.shape[1] + 5)
    # fp32, two layers: the same products summed in other orders, a few roundings of the logits' scale.
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_exported_qsa_selection_equals_the_models() -> None:
    """The QSA selection the graph is exported with (converters/indexers.py) picks the keys the model's
    own per-row loop picks: masks with holes (unfilled slots, pads), one query and several."""
    model = _model("qwen4_exp_text")
    indexer = next(m for m in model.modules() if type(m).__name__ == "Qwen4ExpTextQSAIndexer")
    exported = SELECTORS[type(indexer).__name__].__get__(indexer)
    gen = torch.Generator().manual_seed(0)
    dim, hidden = indexer.index_head_dim, int(model.config.hidden_size)

    class Past:  # the cache's indexer keys before this call
        def __init__(self, keys: Any) -> None:
            self.keys = keys

        def update_indexer(self, new: Any, layer: int) -> Any:
            return torch.cat([self.keys, new], dim=1)

    for keys, seq in ((40, 1), (45, 1), (9, 1), (30, 5), (3, 2)):
        states = torch.randn(3, seq, hidden, generator=gen)
        rotary = (torch.randn(3, keys, dim, generator=gen), torch.randn(3, keys, dim, generator=gen))
        visible = torch.rand(3, 1, seq, keys, generator=gen) < 0.8
        past = torch.randn(3, keys - seq, dim, generator=gen)
        with torch.no_grad():
            want = indexer(states, rotary, visible, Past(past))
            got = exported(states, rotary, visible, Past(past))
        assert torch.equal(got, want), (keys, seq)
