"""Complex rotary embeddings (Llama 4, DeepSeek-V2) in real arithmetic while exporting:
converters/rotary.py. The real product must equal the family's own complex one, the exported program
must compute the model's logits, and the patch must be gone after the export."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from edgekit.converters.rotary import COMPLEX_ROTARY, _apply, real_rotary

from tolerances import fp32_atol, transformer_stages

# family -> (query layout for its apply_rotary_emb: heads before or after seq, the rotary module's config)
_CASES = {
    "llama4_text": ("seq_first", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8)),
    "deepseek_v2": ("heads_first", dict(hidden_size=32, num_attention_heads=4, qk_rope_head_dim=8)),
}


def _tiny(family: str, **extra: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, **_CASES[family][1], vocab_size=64, intermediate_size=64,
                                  intermediate_size_mlp=64, num_hidden_layers=1, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", sorted(COMPLEX_ROTARY))
def test_real_product_is_the_complex_one(family: str) -> None:
    model = _tiny(family)
    modeling = sys.modules[type(model).__module__]
    rotary = model.model.rotary_emb
    b, s, heads, dim = 2, 5, 4, 8
    positions = torch.arange(3, 3 + s).expand(b, s)
    freqs = rotary(torch.zeros(1), positions)  # complex (b, s, dim / 2)
    shape = (b, s, heads, dim) if _CASES[family][0] == "seq_first" else (b, heads, s, dim)
    q, k = torch.randn(shape), torch.randn(shape)
    want = modeling.apply_rotary_emb(q, k, freqs)
    got = _apply(COMPLEX_ROTARY[family])(q, k, torch.view_as_real(freqs))
    for g, w in zip(got, want):
        # One complex product per value: two products summed, one stage.
        torch.testing.assert_close(g, w, rtol=0, atol=fp32_atol(w.numpy(), 2, 1))


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        with real_rotary(self.model):
            return self.model(input_ids=ids, use_cache=False).logits


def test_onnx_export_runs_real_and_restores(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = _tiny("llama4_text")
    modeling = sys.modules[type(model).__module__]
    original = modeling.apply_rotary_emb
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # Without the patch: "No decompositions registered for the complex-valued input".
        torch.onnx.export(_Logits(model), (ids,), str(tmp_path / "m.onnx"), dynamo=True, input_names=["ids"])
        want = model(input_ids=ids, use_cache=False).logits.numpy()
    assert modeling.apply_rotary_emb is original and "forward" not in vars(model.model.rotary_emb)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"ids": ids.numpy()})[0]
    # One layer: the projections, attention, feed-forward and head of a width-32 network.
    np.testing.assert_allclose(got, want, rtol=0, atol=fp32_atol(want, 32, transformer_stages(1)))
