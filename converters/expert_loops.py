"""Mixture-of-experts layers with their own expert loop, made exportable.

DBRX (`DbrxExperts`) and LongCat-Flash (`LongcatFlashExperts`, with its zero-computation identity
experts) keep transformers' old eager loop: `nonzero()` over the experts any token chose, then a
`torch.where` per expert. The loop's length is data-dependent, so torch.export stops at "Could not
guard on data-dependent expression Eq(u0, 0)". Neither class is decorated with
`use_experts_implementation`, so `set_experts_implementation("batched_mm")` (wrappers.export_experts)
cannot reach them. While exporting, their forward is swapped, per instance and restored after, for
the same products per (token, chosen expert) with that expert's weights gathered, as transformers'
`batched_mm_experts_forward` computes them. PyTorch runs (parity's reference) keep the model's loop.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

Act = Callable[[torch.Tensor], torch.Tensor]


def gathered_glu(x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, gate: torch.Tensor,
                 up: torch.Tensor, down: torch.Tensor, act: Act) -> torch.Tensor:
    """sum_k weights[t, k] * down_e(act(gate_e x_t) * up_e x_t), e = index[t, k], for x (T, H),
    index and weights (T, k), gate and up (E, I, H), down (E, H, I). Ids >= E are identity experts
    (LongCat's zero-computation experts): they add weights[t, k] * x_t."""
    tokens, k = index.shape
    experts = gate.shape[0]
    ids = index.reshape(-1)
    chosen = ids.clamp(max=experts - 1)  # identity ids gather any expert; where() drops its product
    xs = x.repeat_interleave(k, dim=0)[..., None]  # (T*k, H, 1)
    hidden = act(torch.bmm(gate[chosen], xs)) * torch.bmm(up[chosen], xs)
    out = torch.bmm(down[chosen], hidden)[..., 0]
    out = torch.where((ids >= experts)[:, None], xs[..., 0], out)
    return (out * weights.reshape(-1, 1)).view(tokens, k, -1).sum(dim=1).to(x.dtype)


def _dbrx(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
          top_k_weights: torch.Tensor) -> torch.Tensor:
    # DbrxExpertGLU stores every expert's rows stacked: w1, v1, w2 (E * ffn, hidden); w2 is applied
    # as x @ w2 (ffn -> hidden), so per expert it is down transposed.
    mlp, batch = self.mlp, hidden_states.shape[0]
    shape = (self.num_experts, self.ffn_hidden_size, self.hidden_size)
    x = hidden_states.reshape(-1, self.hidden_size)
    out = gathered_glu(x, top_k_index, top_k_weights, mlp.w1.view(shape), mlp.v1.view(shape),
                       mlp.w2.view(shape).transpose(1, 2), mlp.activation_fn)
    return out.view(batch, -1, self.hidden_size)


def _longcat(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
             top_k_weights: torch.Tensor) -> torch.Tensor:
    # gate_up_proj has rows for every expert (routed + zero); only the routed ones compute, and
    # down_proj has only those: ids from num_routed_experts on are the identity experts.
    routed = self.num_routed_experts
    if self.gate_up_proj is None:  # no routed experts: every id is an identity expert
        return (hidden_states * top_k_weights.sum(dim=-1, keepdim=True)).to(hidden_states.dtype)
    gate, up = self.gate_up_proj[:routed].chunk(2, dim=1)
    return gathered_glu(hidden_states, top_k_index, top_k_weights, gate, up, self.down_proj, self.act_fn)


# The expert classes whose own loop is swapped while exporting, by class name (no model import).
GATHERED: dict[str, Callable[..., torch.Tensor]] = {"DbrxExperts": _dbrx, "LongcatFlashExperts": _longcat}


@contextlib.contextmanager
def gathered_expert_loops(model: Any) -> Iterator[None]:
    """While torch.export traces: GATHERED's forward on each such expert module of `model`."""
    with swapped_forwards(model, GATHERED):
        yield


@contextlib.contextmanager
def swapped_forwards(model: Any, table: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """While torch.export traces: table's forward (by class name) on each such module of `model`."""
    swapped: list[tuple[torch.nn.Module, Any]] = []
    if torch.compiler.is_exporting() and isinstance(model, torch.nn.Module):
        for module in model.modules():
            fn = table.get(type(module).__name__)
            if fn is not None:
                swapped.append((module, module.__dict__.get("forward")))
                module.forward = fn.__get__(module)
    try:
        yield
    finally:
        for module, own in swapped:
            if own is None:
                del module.forward
            else:
                module.forward = own
