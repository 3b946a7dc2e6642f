"""Hugging Face decoders whose cache holds recurrent state (Mamba, Mamba-2, hybrids of attention and state).

transformers 5 keeps their state in its unified `DynamicCache(config=...)`: per layer a
`LinearAttentionLayer` (conv_states / recurrent_states, one pair per state index) or an attention
layer (keys/values), mixed per layer in hybrids. The prompt path of a state layer (a chunked scan)
is not one graph for all lengths, but its decode path (`has_previous_state`, one token) is static,
so the graph is a STEP graph: one token per call, the runtime feeding a prompt token by token.
A state that starts at zero and takes a prompt token by token equals transformers' prefill: the
conv window of the first token is zero-padded (LinearAttentionLayer.update_conv_state pads the
prefill with zeros to the kernel) and the scan's initial state is zero. Rows of a left-padded
batch are fed on their own, pads skipped (edgekit/tasks/state_loop.py): transformers zeroes padded
positions' inputs (apply_mask_to_padding_states) so that a state starting at zero stays zero
through leading pads, which is the same thing. Where the prefill and the step compute different
things (a floor on the time step in the scan alone: state_floor.py), the step takes a prompt flag.

    inputs   input_ids (batch, 1); with attention layers attention_mask (batch, slots + 1) and
             position_ids (batch, 1); with floors prompt_flag (batch, 1); per attention layer i
             past_key_values.{i}.key / .value (batch, heads, slots, dim), and indexer_keys.{i}
             (batch, 1, slots, dim) where a sparse-attention indexer keeps its keys beside them (Qwen4-Exp);
             per state layer i and state index k conv_state.{i}.{k} / ssm_state.{i}.{k} (batch, ...)
    outputs  logits (batch, 1, vocab); present.{i}.key / .value and present_indexer_keys.{i} (this
             call's token); conv_state_out.{i}.{k} / ssm_state_out.{i}.{k} (the whole next state)

Qwen4-Exp also keeps every token's positions on its first indexed layer (the indexer rotates each
block of keys to its first position): the graph derives them from the mask (`_put`), and exports its
QSA indexer's selection in a form torch.export can trace (converters/indexers.py).
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions, RuntimeGraphExport
from edgekit.converters.specs.causal_lm import (MAX_BATCH, MAX_LEN, Family, HFCausalLM, HFReference, _tokenizer_json,
                                                indexer_dim, new_indexer_keys, put_indexer_keys, takes_positions)
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.converters.specs.state_floor import ScanOnlyFloor, floored_prompt_steps, scan_only_floors
from edgekit.converters.specs.state_slots import aligned, aligned_mask, choose_layout, right_aligned
from edgekit.converters.indexers import exportable_indexers
from edgekit.converters.wrappers import export_experts
from torch.export import Dim
from transformers.cache_utils import DynamicCache, LinearAttentionCacheLayerMixin

from edgekit.contract.base import BATCH, PAST, TOTAL
from edgekit.contract.state import AttentionKV, ConvState, DecoderState, IndexerKeys, SSMState, StateEntry
from edgekit.contract.state.base import PROMPT_FLAG, STEP_INPUTS
from edgekit.errors import UnsupportedError


@dataclass(frozen=True)
class LayerState:
    """What one decoder layer keeps: keys/values (heads, key dim, value dim), a sparse-attention
    indexer's keys (their dim) and/or state tensors (state index -> dims after batch) for its conv and
    recurrent (SSM) states. `positions`: the dims of the token positions the layer keeps for every
    indexer (Qwen4-Exp's first indexed layer: (3, batch, past)), 0 where it keeps none."""

    index: int
    kv: tuple[int, int, int] | None = None
    conv: tuple[tuple[int, tuple[int, ...]], ...] = ()
    ssm: tuple[tuple[int, tuple[int, ...]], ...] = ()
    indexer: int | None = None
    positions: int = 0


def cache_keyword(model: Any) -> str:
    """The forward keyword the cache goes in: Mamba-style models name it `cache_params`."""
    params = inspect.signature(model.forward).parameters
    return "cache_params" if "cache_params" in params else "past_key_values"


def has_state_layers(model_config: Any) -> bool:
    """Whether `DynamicCache(config)` of this config holds linear-attention (state) layers: the layer
    types transformers reads from the config (MiniMax, which builds a cache of its own, is claimed and
    refused by `probe_layers`, saying why)."""
    try:
        cache = DynamicCache(config=model_config)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in cache.layers)


def probe_layers(model: Any) -> tuple[LayerState, ...]:
    """Every layer's state from one two-token prefill on the cache the model makes itself: shapes read
    off the filled cache, no per-family config knowledge (a layer the model never fills keeps nothing)."""
    ids = torch.zeros((1, 2), dtype=torch.long)
    try:
        with torch.no_grad():
            out = model(**_forward_kwargs(model, ids, torch.ones_like(ids), torch.arange(2)[None], None))
    except (ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise UnsupportedError(f"'{model.config.model_type}' does not run a two-token prompt with its cache",
                               found=f"{type(e).__name__}: {str(e)[:200]}",
                               fix="generate supports state-space decoders whose cache is transformers' "
                                   "DynamicCache") from None
    cache = getattr(out, "cache_params", None)
    cache = getattr(out, "past_key_values", None) if cache is None else cache
    if cache is None:  # a model keeping its state in its modules (Recurrent Gemma has a spec of its own)
        raise UnsupportedError(f"'{model.config.model_type}' returns no cache from its forward",
                               found=f"{type(out).__name__} without past_key_values or cache_params",
                               fix="generate supports state-space decoders whose cache is transformers' DynamicCache; "
                                   "this family is not supported")
    if type(cache) is not DynamicCache:  # MiniMax's MiniMaxCache has a spec of its own (specs/minimax.py)
        raise UnsupportedError(f"'{model.config.model_type}' keeps its own cache class, {type(cache).__name__}",
                               found="edgekit's step graph fills the layers of transformers' DynamicCache only",
                               fix="generate supports state-space decoders whose cache is transformers' DynamicCache; "
                                   "this family is not supported")
    layers = []
    for i, layer in enumerate(cache.layers):
        kv = None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor) and keys.numel():
            kv = (int(keys.shape[1]), int(keys.shape[3]), int(values.shape[3]))
        conv: tuple[tuple[int, tuple[int, ...]], ...] = ()
        ssm: tuple[tuple[int, tuple[int, ...]], ...] = ()
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            conv = tuple((k, tuple(v.shape[1:])) for k, v in layer.conv_states.items() if v is not None)
            ssm = tuple((k, tuple(v.shape[1:])) for k, v in layer.recurrent_states.items() if v is not None)
        positions = getattr(layer, "indexer_position_ids", None)
        positions = int(positions.shape[0]) if isinstance(positions, torch.Tensor) else 0
        layers.append(LayerState(i, kv, conv, ssm, indexer_dim(layer), positions))
    return tuple(layers)


def _forward_kwargs(model: Any, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None,
                    cache: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
    if cache is not None:
        kwargs[cache_keyword(model)] = cache
    if pos is not None and takes_positions(model):
        kwargs["position_ids"] = pos
    return kwargs


class StateDecoder(torch.nn.Module):
    """(input_ids, attention_mask, position_ids, prompt_flag, *flat state) in, (logits, *this step's
    state) out: one token. The small inputs are those `state.inputs` names, in that order."""

    def __init__(self, model: Any, layers: tuple[LayerState, ...], floors: tuple[ScanOnlyFloor, ...] = ()) -> None:
        super().__init__()
        self.model, self.layers, self.floors = model, layers, floors
        self.state = decoder_state(layers, flagged=bool(floors))  # the flat tensors' order, names and dims
        self.attends = self.state.slotted
        self.align = False  # keys/values right-aligned before the model reads them (state_slots.choose_layout)

    def small(self, mask: torch.Tensor, position: torch.Tensor, prompt: bool) -> tuple[torch.Tensor, ...]:
        """The inputs after input_ids for an eager call (one token per row), in the graph's order."""
        given = {"attention_mask": mask, "position_ids": position,
                 PROMPT_FLAG: torch.full((position.shape[0], 1), int(prompt))}
        return tuple(given[n] for n in self.state.inputs[1:])

    def forward(self, input_ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # With attention layers: the mask over past slots + this token, and its position; without,
        # neither (transformers' own decode steps pass Mamba no mask: a generated token is never
        # padding, and the runtime never feeds a pad). The prompt flag where floors need it; then the state.
        small = dict(zip(self.state.inputs[1:], rest))
        mask, position, flat = small.get("attention_mask"), small.get("position_ids"), rest[len(small):]
        cache = self.new_cache()
        order = right_aligned(mask) if self.align and mask is not None else None
        mask = aligned_mask(mask, order) if order is not None and mask is not None else mask
        given = iter(flat)
        for spec in self.layers:
            self.put(cache, spec, given, order, mask)
        with (export_experts(self.model), exportable_indexers(self.model),
              floored_prompt_steps(self.model, self.floors, small.get(PROMPT_FLAG))):
            out = self.model(**_forward_kwargs(self.model, input_ids, mask, position, cache))
        new: list[torch.Tensor] = []
        for spec in self.layers:
            new += self.take(cache, spec)
        return (out.logits.float(), *new)

    def new_cache(self) -> Any:
        return DynamicCache(config=self.model.config)  # its layers typed per layer, as the model makes it

    def put(self, cache: Any, spec: LayerState, given: Iterator[torch.Tensor], order: torch.Tensor | None,
            mask: torch.Tensor | None) -> None:
        _put(cache, spec, given, order, mask)

    def take(self, cache: Any, spec: LayerState) -> list[torch.Tensor]:
        return _take(cache, spec)


def _put(cache: DynamicCache, spec: LayerState, given: Iterator[torch.Tensor], order: torch.Tensor | None,
         mask: torch.Tensor | None) -> None:
    if spec.kv:
        keys, values = next(given), next(given)
        if order is not None:
            keys, values = aligned(keys, order), aligned(values, order)
        cache.layers[spec.index].update(keys, values)
    if spec.indexer:
        keys = next(given)
        put_indexer_keys(cache.layers[spec.index], aligned(keys, order) if order is not None else keys)
    if spec.positions and mask is not None:
        # The past slots' positions as the runtime numbers a row's tokens (edgekit/tasks/state_loop.py):
        # its filled slots count from 0, as transformers' cumsum of the mask does; an unfilled slot is
        # masked, so never indexed, whatever its number.
        past = (mask[:, :-1].cumsum(1) - 1).clamp(min=0)
        cache.layers[spec.index].indexer_position_ids = past[None].expand(spec.positions, -1, -1)
    for k, _ in spec.conv:
        _set_state(cache.layers[spec.index], "conv", k, next(given))
    for k, _ in spec.ssm:
        _set_state(cache.layers[spec.index], "recurrent", k, next(given))


def _take(cache: DynamicCache, spec: LayerState) -> list[torch.Tensor]:
    layer = cache.layers[spec.index]
    new = [layer.keys[:, :, -1:], layer.values[:, :, -1:]] if spec.kv else []  # this call's one token
    new += [new_indexer_keys(layer, -1)] if spec.indexer else []
    return new + [layer.conv_states[k] for k, _ in spec.conv] + [layer.recurrent_states[k] for k, _ in spec.ssm]


def _set_state(layer: Any, kind: str, index: int, value: torch.Tensor) -> None:
    """Put a decode-time state into a LinearAttentionLayer, as its own prefill leaves it (initialized,
    `has_previous_state`); a copy, since the model's decode path updates the state in place."""
    getattr(layer, f"{kind}_states")[index] = value.clone()
    getattr(layer, f"is_{kind}_states_initialized")[index] = True
    layer.has_previous_state[index] = True
    if kind == "conv":
        layer.conv_kernel_size[index] = int(value.shape[-1])
    layer.dtype, layer.device = value.dtype, value.device


def small_inputs(layers: tuple[LayerState, ...], flagged: bool) -> tuple[str, ...]:
    """What each call takes beside the state: the mask and positions only where attention reads them,
    the prompt flag only where a floor needs it (state_floor.py)."""
    names = STEP_INPUTS if any(layer.kv for layer in layers) else ("input_ids",)
    return (*names, PROMPT_FLAG) if flagged else names


def example(model: Any, state: DecoderState) -> tuple[torch.Tensor, ...]:
    """Traced at batch 2 after 3 past slots (no dim 0 or 1 that torch.export would specialize), random
    state; one prompt row and one generated row."""
    b, p = 2, 3
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (b, 1), generator=gen)
    small = {"attention_mask": torch.ones((b, p + 1), dtype=torch.long), "position_ids": torch.full((b, 1), p),
             PROMPT_FLAG: torch.tensor([[1], [0]])}
    flat = [torch.randn(t.shape(b, p), generator=gen) for t in state.tensors()]
    return (ids, *(small[n] for n in state.inputs[1:]), *flat)


def dynamic_shapes(state: DecoderState) -> tuple[Any, ...]:
    """Batch everywhere, the slots of attention layers; the token axis stays 1 (one token per call)."""
    batch = Dim(BATCH, min=1, max=MAX_BATCH)
    past = Dim(PAST, min=0, max=MAX_LEN)
    total = Dim(TOTAL, min=1, max=MAX_LEN + 1)
    small = {"attention_mask": {0: batch, 1: total}, "position_ids": {0: batch}, PROMPT_FLAG: {0: batch}}
    flat = [{0: batch, 2: past} if PAST in t.dims else {0: batch} for t in state.tensors()]
    return ({0: batch}, (*(small[n] for n in state.inputs[1:]), *flat))  # varargs nest as one tuple


# ---------------------------------------------------------------- the spec


class HFStateSpaceLM(HFCausalLM):
    """Hugging Face causal LMs whose cache holds state layers: the step graph above, the state declared
    per layer (attention keys/values, conv and SSM states), prompts fed stepwise. The contract,
    tokenizer and transformers' generate as the reference are the generic causal LM's."""

    generic = False
    probe = staticmethod(probe_layers)  # the layers' states, read off the model's own cache
    decoder: type[StateDecoder] = StateDecoder
    floors: tuple[ScanOnlyFloor, ...] = ()  # transformers' scan-only time-step floors (state_floor.py)

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        # Recurrent Gemma's config names linear-attention layers too, but its recurrent blocks keep their
        # state in their modules, not in the cache: specs/recurrent_gemma.py. MiniMax keeps a cache class
        # of its own: specs/minimax.py.
        return (HFCausalLM.matches(src, task) and src.hf_dir is not None
                and src.config.get("model_type") not in ("recurrent_gemma", "minimax") and _keeps_state(src.hf_dir))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)  # not HFCausalLM's: its probe wants keys/values everywhere
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family = str(getattr(self.model.config, "model_type", "") or "state-space")
        self.facts = Family()
        self.layers = self.probe(self.model)
        self.floors = scan_only_floors(self.model)
        decoder = self.decoder(self.model, self.layers, self.floors)
        self.cache = decoder.state
        choose_layout(decoder)
        self.graph = GraphExport("model", decoder, example(self.model, self.cache),
                                 [*self.cache.inputs, *self.cache.past()], ["logits", *self.cache.present()],
                                 dynamic_shapes(self.cache))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = self.make_reference()

    def runtime_graphs(self, target: str) -> list[RuntimeGraphExport]:
        return []  # onnxruntime's fused-attention stand-in holds keys/values only, not these states

    def make_reference(self) -> StateReference:
        return (CachedStepsReference if self.floors else StateReference)(self.model, self.graph)


def decoder_state(layers: tuple[LayerState, ...], flagged: bool = False) -> DecoderState:
    """The contract's entries, layer by layer: keys/values, indexer keys, then conv and SSM states (dims
    after batch); `flagged`: the step takes the prompt flag."""
    entries: list[StateEntry] = []
    for spec in layers:
        if spec.kv:
            entries.append(AttentionKV(spec.index, *spec.kv))
        if spec.indexer:
            entries.append(IndexerKeys(spec.index, spec.indexer))
        entries += [ConvState(spec.index, k, shape) for k, shape in spec.conv]
        entries += [SSMState(spec.index, k, shape) for k, shape in spec.ssm]
    return DecoderState(tuple(entries), inputs=small_inputs(layers, flagged), prompt="stepwise")


def _keeps_state(folder: Path) -> bool:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError):
        return False  # not this spec's to explain: the generic spec reports what is wrong with the folder
    return has_state_layers(config)


class StateReference(HFReference):
    """transformers' generate (HFReference.greedy), and teacher-forced logits from the model's own
    forward over whole rows: the prefill (chunked scan) that the artifact's stepwise feed must equal."""

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()



class CachedStepsReference(StateReference):
    """Where a floor parts transformers' prompt scan from its one-token step (state_floor.py), parity's
    decode steps are compared with transformers' own cached steps, as generate runs them, not with
    its whole-row forward (the scan over every token): even generate itself parts from that one.
    Measured on the sweep's seeded models, two natural-text rows of 96 tokens, max abs difference
    over the logits' scale: transformers' cached steps against its whole-row forward after 1 and 3
    decode steps, 1.1e-3 and 3.9e-3 (Zamba2 real), 2.2e-3 and 1.1e-2 (NemotronH real), 6.8e-5 and
    1.3e-4 (Zamba2 tiny), above or near the fp32 gate (1e-3); the prompt's last position 2.7e-6 at most."""

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:
        """Logits (batch, sequence, vocab) of transformers' cached decode as generate runs it: the prefill
        over all but the last `steps` tokens, then one token per call."""
        cache = DynamicCache(config=self.model.config)
        tokens = torch.from_numpy(ids)
        b, n = tokens.shape
        out = []
        with torch.no_grad():
            for start, end in [(0, n - steps), *((i, i + 1) for i in range(n - steps, n))]:
                mask, position = torch.ones((b, end), dtype=torch.long), torch.arange(start, end)[None].expand(b, -1)
                out.append(self.model(**_forward_kwargs(self.model, tokens[:, start:end], mask, position, cache)).logits)
        return torch.cat(out, 1).float().numpy()


class RowsAloneReference(StateReference):
    """transformers' generate on each row alone, unpadded: a row's answer where transformers' batched
    generate is not one (RWKV and xLSTM ignore attention_mask, so pads would be read as tokens; RWKV's
    batched step also mixes rows), and the whole-row forward for teacher-forced logits."""

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        return self.greedy_alone(ids, mask, new)
