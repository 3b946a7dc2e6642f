"""Small `nn.Module` wrappers that give the exporter positional tensors in and plain tensors out."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from edgekit.converters.expert_loops import gathered_expert_loops
from edgekit.converters.squeezed_encoders import padded_upsampling


def callable_module(model: Any) -> Any:
    """A .pt2 source is an ExportedProgram; its `.module()` is the callable graph."""
    return model.module() if isinstance(model, torch.export.ExportedProgram) else model


def first_output(out: Any) -> torch.Tensor:
    """A model's main output: a tensor, the first of a tuple, or a Hugging Face output's logits."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return getattr(out, "logits", out)


def filled_cache(config: Any, past: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """transformers' DynamicCache for `config` holding `past`, each sliding-window layer as a full one.

    A DynamicSlidingWindowLayer crops what it keeps to the last window - 1 tokens and sizes the mask
    by `cumulative_length >= sliding_window`: branches on the past length, which torch.export turns
    into a guard (past < window) that violates the graph's dynamic past (Granite-MoE-SWA's window of
    128 failed the export; Gemma 2 only passed because the ONNX exporter narrowed the dim). The full
    layer returns the same keys and values while past + new tokens < window, which the generate
    contract's max_context keeps; the window itself is still applied, by the sliding-window mask
    (masking_utils reads it from the config, not from the layer). A hybrid layer (a sliding window
    beside a linear-attention state) becomes the full-attention hybrid with as many states."""
    from transformers import cache_utils as cu

    cache = cu.DynamicCache(config=config)
    cache.layers = [_full_window(layer, cu) for layer in cache.layers]
    for layer, (keys, values) in zip(cache.layers, past, strict=True):
        layer.update(keys, values)
    return cache


def _full_window(layer: Any, cu: Any) -> Any:
    """`layer` (an empty cache layer) without its sliding window; any other layer as it is."""
    if type(layer) is cu.DynamicSlidingWindowLayer:
        return cu.DynamicLayer()
    if type(layer) is cu.LinearAttentionAndSlidingWindowAttentionLayer:
        return cu.LinearAttentionAndFullAttentionLayer(number_of_states=layer.number_of_states)
    return layer


@contextlib.contextmanager
def export_experts(model: Any) -> Iterator[None]:
    """While exporting, mixture-of-experts layers run transformers' "batched_mm" experts: each
    token's k experts' weights gathered, then batched matmuls. The default kernels sort tokens per
    expert into data-dependent groups (`transformers.grouped_mm_fallback`, a custom op no ONNX
    exporter translates). The same products, so the same tokens; PyTorch runs keep the default.
    A gather per token: prefill memory grows with tokens x k x expert size. Expert classes outside
    transformers' experts interface (DBRX, LongCat-Flash) get the same: expert_loops.py."""
    default = getattr(getattr(model, "config", None), "_experts_implementation", None)
    switch = (torch.compiler.is_exporting() and default not in (None, "batched_mm")
              and hasattr(model, "set_experts_implementation") and model._can_set_experts_implementation())
    if switch:
        model.set_experts_implementation("batched_mm")
    try:
        with gathered_expert_loops(model):
            yield
    finally:
        if switch:
            model.set_experts_implementation(default)


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
            with export_experts(self.model), padded_upsampling(self.model):
                out = self.model(**dict(zip(self.names, args))) if self.names else self.model(*args)
        finally:
            if switch:
                self.model.set_attn_implementation(default)
        return first_output(out).float()
