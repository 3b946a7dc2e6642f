"""Small `nn.Module` wrappers that give the exporter positional tensors in and plain tensors out."""
from __future__ import annotations

from typing import Any

import torch


def callable_module(model: Any) -> Any:
    """A .pt2 source is an ExportedProgram; its `.module()` is the callable graph."""
    return model.module() if isinstance(model, torch.export.ExportedProgram) else model


def first_output(out: Any) -> torch.Tensor:
    """A model's main output: a tensor, the first of a tuple, or a Hugging Face output's logits."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return getattr(out, "logits", out)


class Logits(torch.nn.Module):
    """Positional tensors in (as `names` keywords for a Hugging Face model), one tensor out.

    Exported with eager attention: under torch.export the SDPA path of Hugging Face models
    materializes an all-true padding mask and selects over (batch, heads, frames, frames) in
    every layer (17% of a 4-layer wav2vec2's onnxruntime time); eager computes the same without
    it. Run in PyTorch (parity, bench --against) the model keeps its own default.
    """

    def __init__(self, model: Any, names: list[str] | None = None) -> None:
        super().__init__()
        self.model = callable_module(model)
        self.names = names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        switch = torch.compiler.is_exporting() and hasattr(self.model, "set_attn_implementation")
        if switch:
            default = self.model.config._attn_implementation
            self.model.set_attn_implementation("eager")
        try:
            out = self.model(**dict(zip(self.names, args))) if self.names else self.model(*args)
        finally:
            if switch:
                self.model.set_attn_implementation(default)
        return first_output(out).float()
