"""Expert classes with their own loop (DBRX, LongCat-Flash): the gathered forward used while exporting
computes what the model's loop computes, exports with a dynamic token count, and is restored after."""
from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from edgekit.converters.expert_loops import GATHERED
from edgekit.converters.wrappers import export_experts

H, FFN, EXPERTS, K = 32, 16, 6, 3
# float32, summed in another order: each output element is k weighted sums of FFN products of H-wide
# dot products, so reordering moves it by a few (H + FFN + K) x 2^-24 of its scale; 1e-5 bounds that.
REL = 1e-5


def _dbrx() -> torch.nn.Module:
    from transformers import DbrxConfig
    from transformers.models.dbrx.modeling_dbrx import DbrxExperts

    config = DbrxConfig(d_model=H, n_heads=4, ffn_config={"ffn_hidden_size": FFN, "moe_num_experts": EXPERTS,
                                                           "moe_top_k": K})
    return DbrxExperts(config.ffn_config).eval()


def _longcat(zero: int = 3, routed: int = EXPERTS) -> torch.nn.Module:
    from transformers import LongcatFlashConfig
    from transformers.models.longcat_flash.modeling_longcat_flash import LongcatFlashExperts

    config = LongcatFlashConfig(hidden_size=H, n_routed_experts=routed, zero_expert_num=zero,
                                expert_ffn_hidden_size=FFN, num_experts_per_tok=K)
    return LongcatFlashExperts(config).eval()


def _routing(tokens: int, experts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k distinct experts per token out of `experts` (LongCat's identity ids included), random weights."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(experts, generator=g)[:K] for _ in range(tokens)])
    return index, torch.rand((tokens, K), generator=g)


def _randomized(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return module


CASES = {
    "dbrx": (lambda: _randomized(_dbrx()), EXPERTS, (1, 10, H)),  # (batch, seq, hidden) in
    "longcat_flash": (lambda: _randomized(_longcat()), EXPERTS + 3, (10, H)),
    "longcat_flash_identity_only": (lambda: _longcat(zero=4, routed=0), 4, (10, H)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gathered_forward_equals_the_models_loop(case: str) -> None:
    build, experts, shape = CASES[case]
    module = build()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    index, weights = _routing(x.numel() // H, experts, seed=2)
    if experts > EXPERTS:  # LongCat: the identity experts are exercised
        assert bool((index >= EXPERTS).any()) and bool((index < EXPERTS).any())
    with torch.no_grad():
        want = module(x, index, weights)
        got = GATHERED[type(module).__name__](module, x, index, weights)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=REL * float(want.abs().max()))


class _Block(torch.nn.Module):
    def __init__(self, experts: torch.nn.Module) -> None:
        super().__init__()
        self.experts = experts

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        with export_experts(self):
            return self.experts(x, index, weights)


@pytest.mark.parametrize("case", ["dbrx", "longcat_flash"])
def test_exports_with_dynamic_tokens_and_restores_the_loop(case: str) -> None:
    build, experts, shape = CASES[case]
    block = _Block(build()).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    index, weights = _routing(x.numel() // H, experts, seed=2)
    tokens = Dim("tokens", min=2, max=4096)
    dims = ({x.ndim - 2: tokens}, {0: tokens}, {0: tokens})  # routing is per token: (tokens, k)
    program = torch.export.export(block, (x, index, weights), dynamic_shapes=dims)
    assert "forward" not in block.experts.__dict__  # the instance runs its own loop again
    with torch.no_grad():
        want = block(x, index, weights)
        got = program.module()(x, index, weights)
    torch.testing.assert_close(got, want, rtol=0, atol=REL * float(want.abs().max()))
