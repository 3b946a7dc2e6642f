"""Complex-valued rotary embeddings in real arithmetic while exporting.

Llama 4 and DeepSeek-V2 (transformers' modeling files) rotate queries and keys as complex numbers:
the rotary module returns `torch.polar(1, angle) * scaling`, and the family's `apply_rotary_emb`
multiplies `view_as_complex(pairs)` by it. No ONNX exporter translates complex tensors through
unsqueeze / mul (torch.onnx: "No decompositions registered for the complex-valued input"). While
exporting, the rotary module returns `view_as_real` of its own output (its rope scaling kept) and
the family's `apply_rotary_emb` is the same product written on (real, imaginary) pairs; restored
after the call, and PyTorch runs keep the complex code.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x's last dim as complex pairs (x[2i], x[2i+1]) times cos + i sin, flattened back, in x's dtype."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2).type_as(x)


def _apply(broadcast: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The family's apply_rotary_emb(xq, xk, freqs) on real freqs (..., dim / 2, 2); `broadcast` puts the
    (batch, seq, dim / 2) angles where the family's own code puts them against its query layout."""
    def apply_rotary_emb(xq: torch.Tensor, xk: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = broadcast(freqs[..., 0]), broadcast(freqs[..., 1])
        return _rotate(xq, cos, sin), _rotate(xk, cos, sin)
    return apply_rotary_emb


# model_type -> where the angles go: Llama 4 rotates (batch, seq, heads, dim) before the transpose
# (`freqs_cis[:, :, None, :]`), DeepSeek-V2 (batch, heads, seq, dim) (`freqs_cis.unsqueeze(1)`).
COMPLEX_ROTARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "llama4_text": lambda f: f[:, :, None, :],
    "deepseek_v2": lambda f: f.unsqueeze(1),
}


@contextlib.contextmanager
def real_rotary(model: Any) -> Iterator[None]:
    """While exporting a COMPLEX_ROTARY family: its rotary modules' outputs as (real, imaginary) pairs and
    its modeling module's apply_rotary_emb on them; both restored on exit."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    broadcast = COMPLEX_ROTARY.get(family) if torch.compiler.is_exporting() else None
    if broadcast is None:
        yield
        return
    modeling = sys.modules[type(model).__module__]
    rotaries = [m for m in model.modules()
                if type(m).__module__ == modeling.__name__ and type(m).__name__.endswith("RotaryEmbedding")]
    original = modeling.apply_rotary_emb
    modeling.apply_rotary_emb = _apply(broadcast)
    for m in rotaries:
        m.forward = _as_real(m.forward)
    try:
        yield
    finally:
        modeling.apply_rotary_emb = original
        for m in rotaries:
            del m.forward  # the instance attribute; the class's forward shows again


def _as_real(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def real_forward(x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(forward(x, position_ids))
    return real_forward
