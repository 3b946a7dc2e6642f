"""Mamba-2 mixers whose prompt scan floors the time step and whose one-token step does not, and the
step graph that runs both programs, as transformers' generate does.

In transformers 5.23 every Mamba-2 mixer's scan (`mamba2_chunk_scan`: the prompt of `generate`)
clamps dt = softplus(dt + dt_bias) to the mixer's `time_step_limit`, and its one-token step
(`mamba2_selective_state_update`: every new token) takes no limit. Zamba2 and NemotronH set that
limit to (time_step_min, inf), 0.001 by default; Mamba-2, Bamba, Falcon-H1 and GraniteMoeHybrid to
config.time_step_limit, (0, inf) by default, where the clamp changes nothing.

edgekit's step graph feeds a prompt through the one-token step. For these mixers it takes the
decoder input `prompt_flag` (edgekit/contract/state/base.py) and floors dt in the flagged rows: the
prompt's state is then the scan's and the new tokens' the step's, as in generate.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from edgekit.errors import UnsupportedError


@dataclass(frozen=True)
class ScanOnlyFloor:
    """A Mamba-2 mixer (`module`) whose prompt scan floors the time step at `floor` and whose
    one-token step does not floor it."""

    module: str
    floor: float


def scan_only_floors(model: Any) -> tuple[ScanOnlyFloor, ...]:
    """The mixers for which transformers' prompt path and its one-token step compute different things."""
    return tuple(ScanOnlyFloor(name, float(m.time_step_limit[0])) for name, m in model.named_modules()
                 if isinstance(getattr(m, "time_step_limit", None), tuple) and m.time_step_limit[0] > 0)


@contextmanager
def floored_prompt_steps(model: Any, floors: tuple[ScanOnlyFloor, ...], flag: torch.Tensor | None) -> Iterator[None]:
    """While the model runs one token per row: each floored mixer's time step floored in the rows
    where `flag` (batch, 1) is 1. Hooks on the mixers' input projections, removed on exit."""
    if not floors:
        yield
        return
    assert flag is not None, "a step over floored mixers takes the prompt flag (StateDecoder declares it)"
    handles = []
    try:
        for f in floors:
            mixer = model.get_submodule(f.module)
            handles.append(mixer.in_proj.register_forward_hook(_floor_hook(mixer, f, flag)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _floor_hook(mixer: Any, f: ScanOnlyFloor, flag: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A forward hook on `mixer.in_proj`, whose output's last `num_heads` columns are the raw time
    steps the mixer splits off (transformers 5.23: gate, conv input, dt).

    The one-token step computes softplus(dt + dt_bias) itself and takes no limit (the kernel wrapper
    drops keywords its signature lacks), so the floor goes on its input: softplus is increasing, so
    softplus(max(dt, c - dt_bias) + dt_bias) = max(softplus(dt + dt_bias), floor) for c = softplus^-1(floor),
    up to one fp32 rounding of (c - dt_bias) + dt_bias (about 1e-6 of the floor)."""
    heads = int(mixer.num_heads)
    if mixer.in_proj.out_features != mixer.intermediate_size + mixer.conv_dim + heads:
        raise UnsupportedError(f"the Mamba-2 mixer '{f.module}' splits its input projection in an unknown way",
                               found=f"{mixer.in_proj.out_features} outputs, not intermediate_size + conv_dim + "
                                     f"num_heads = {mixer.intermediate_size + mixer.conv_dim + heads}",
                               fix="convert with the transformers version edgekit supports (5.23)")
    lowest = math.log(math.expm1(f.floor))  # softplus^-1(floor), in float64

    def hook(module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        dt = out[..., -heads:]
        floored = torch.maximum(dt, lowest - mixer.dt_bias.to(dt.dtype))
        return torch.cat([out[..., :-heads], torch.where(flag[:, :, None].bool(), floored, dt)], dim=-1)

    return hook
