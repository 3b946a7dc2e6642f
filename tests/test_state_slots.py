"""The step graph's slot layout (converters/specs/state_slots.py): filled slots moved last, so that a
model taking positions from its cache length (Inkling's relative logits) sees each row's own distances;
and the refusal of hybrids whose cache keeps indexer keys (Qwen4-Exp). PyTorch only, no export."""
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

from edgekit.converters.specs.state_slots import aligned_mask, choose_layout, depends_on_slots, right_aligned  # noqa: E402
from edgekit.converters.specs.state_space import StateDecoder, probe_layers  # noqa: E402
from edgekit.errors import UnsupportedError  # noqa: E402


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
    flat: list[Any] = []
    for spec in dec.layers:
        if spec.kv:
            heads, kd, vd = spec.kv
            flat += [torch.zeros(1, heads, slots, kd), torch.zeros(1, heads, slots, vd)]
        flat += [torch.zeros(1, *shape) for _, shape in (*spec.conv, *spec.ssm)]
    kv = [k for spec in dec.layers for k in [True] * (2 if spec.kv else 0) + [False] * (len(spec.conv) + len(spec.ssm))]
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


def test_hybrid_with_indexer_keys_is_refused() -> None:
    # The sweep's Qwen4-Exp indexer settings (coverage_models._FAMILY_KW).
    config = tiny_config("qwen4_exp_text", "generate", vocab=32)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(UnsupportedError, match="indexer"):
        probe_layers(model)
