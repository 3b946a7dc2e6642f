"""Hugging Face causal LMs (`*ForCausalLM`, `*LMHeadModel`): one spec for every decoder with a KV cache.

The state (per layer: KV heads, key and value head sizes) comes from one probe forward, not from
per-family config keys; `FAMILIES` holds the few facts that truly differ per family. The graph is the
slot-cache decoder of edgekit/contract/generate.py: the prompt (past length 0) and every decode
step through one graph, `present` holding only this call's keys/values.
"""
from __future__ import annotations

import copy
import inspect
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from edgekit.converters.export import GraphExport
from edgekit.converters.ort_attention import shared_kv_graph
from edgekit.converters.ort_graph import finish_for_onnxruntime
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.spec import ConvertOptions, NoRuntimeGraph, RuntimeGraphExport
from edgekit.converters.specs.classify import as_tokenizer
from edgekit.converters.specs.generate import GeneratorSpec, chat_template, generation_defaults, torch_step
from edgekit.converters.rotary import real_rotary
from edgekit.converters.wrappers import export_experts, filled_cache
from torch.export import Dim
from transformers.cache_utils import DynamicCache

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, TOTAL
from edgekit.contract.generate import STEP_INPUTS, GenerateSection
from edgekit.contract.state import AttentionKV, DecoderState, IndexerKeys, StateEntry
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.errors import UnsupportedError
from edgekit.tasks.generator import token_ids

MAX_BATCH = 256
MAX_LEN = 32768


@dataclass(frozen=True)
class Family:
    """What differs between causal-LM families. Defaults fit GPT-2, Llama, Qwen2, Mistral, Phi-3..."""

    quant_exclude_ops: list[str] = field(default_factory=list)
    # Config keys naming the longest context, first found wins (GPT-2 aliases n_positions).
    context_keys: tuple[str, ...] = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
    # Why the family's cached forward cannot be the decoder graph (new tokens beside a key/value
    # cache, one program for the prompt and every step); empty where it can.
    not_a_kv_decoder: str = ""


FAMILIES: dict[str, Family] = {
    # Gemma 2/3 cap logits with tanh; keep it in float under int8 (the cap is sensitive to scale).
    "gemma2": Family(quant_exclude_ops=["Tanh"]),
    "gemma3_text": Family(quant_exclude_ops=["Tanh"]),
    # transformers' CpmAntForCausalLM.prepare_inputs_for_generation passes the whole sequence at
    # every step (forward drops the cached prefix itself). CpmAntModel attends bidirectionally (its
    # `context` is all ones: every position sees every other) and masks padding by counting the ids
    # != 0 (that many last positions are real). Its cached generate keeps each token's keys/values
    # from when they were computed (the prompt's at the prefill), so its steps are no whole-sequence
    # recompute either (FullSequence): on a seeded tiny CpmAnt a cached step's logits differ from the
    # uncached forward's by 0.24 at a logit scale of 15, and a generated id 0 moves the padding window.
    "cpmant": Family(not_a_kv_decoder="it attends bidirectionally (CpmAntModel's context is all ones), so its "
                                      "cached generate, which keeps each token's keys from when they were computed, "
                                      "is neither a causal key/value decoder nor a whole-sequence recompute; and it "
                                      "masks padding by counting token ids != 0, not by attention_mask"),
    # ProphetNetDecoder asserts one token per call once its cache holds tokens, and then builds no
    # attention mask: the prompt and the steps are two different programs.
    "prophetnet": Family(not_a_kv_decoder="with a cache its decoder takes one token per call and ignores "
                                          "attention_mask; the prompt runs a different program than the steps"),
    # BltModel.forward with a cache runs its entropy patcher, its global transformer (which keeps no
    # cache) and its local decoder on the new tokens alone, so each step's patches see none of the
    # earlier ones; transformers' own BLT tests generate with use_cache=False.
    "blt": Family(not_a_kv_decoder="with a cache each step patches and runs its global transformer over the new "
                                   "tokens alone (that transformer keeps no cache), so its cached generate is not "
                                   "the model of the whole sequence: its tokens part from use_cache=False's"),
}


class KVDecoder(torch.nn.Module):
    """(input_ids, attention_mask, position_ids, *flat past) in, (logits, *this call's keys/values) out.

    The flat past: keys and values of the `kv` layers (the others reuse earlier layers' keys/values:
    Gemma 3n's shared-KV layers), then the sparse-attention indexer's keys of the `indexed` layers
    ((batch, 1, past, dim): transformers keeps them (batch, past, dim))."""

    def __init__(self, model: Any, kv: tuple[int, ...], indexed: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.model, self.kv, self.indexed = model, kv, indexed
        self.layers = len(DynamicCache(config=model.config).layers) or len(kv)
        self.positions = takes_positions(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.run(past, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    def run(self, past: tuple[torch.Tensor, ...], **inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The model on `inputs` (input_ids or inputs_embeds, mask, positions) beside the flat past."""
        # transformers 5.x caches are built from the flat tensors; the present is read back per layer.
        given = {layer: (past[2 * j], past[2 * j + 1]) for j, layer in enumerate(self.kv)}
        cache = filled_cache(self.model.config, [given.get(i, (None, None)) for i in range(self.layers)])
        n = len(self.kv)
        for j, i in enumerate(self.indexed):
            put_indexer_keys(cache.layers[i], past[2 * n + j])
        with export_experts(self.model), real_rotary(self.model):
            if not self.positions:
                inputs.pop("position_ids")
            out = self.model(**inputs, past_key_values=cache, use_cache=True)
        start = past[0].shape[2]
        new: list[torch.Tensor] = []
        for i in self.kv:
            new += [cache.layers[i].keys[:, :, start:], cache.layers[i].values[:, :, start:]]
        new += [new_indexer_keys(cache.layers[i], start) for i in self.indexed]
        return (out.logits.float(), *new)


def indexer_dim(layer: Any) -> int | None:
    """The key size of a sparse-attention indexer in one probed cache layer, or None where it has none:
    transformers' DynamicIndexedLayer keeps one indexer key per token, (batch, past, dim)."""
    keys = getattr(layer, "indexer_keys", None)
    return int(keys.shape[-1]) if isinstance(keys, torch.Tensor) and keys.ndim == 3 else None


def put_indexer_keys(layer: Any, keys: torch.Tensor) -> None:
    """The contract's (batch, 1, past, dim) indexer keys (IndexerKeys) into a DynamicIndexedLayer."""
    layer.indexer_keys = keys[:, 0]
    layer.is_indexer_initialized = True


def new_indexer_keys(layer: Any, start: int) -> torch.Tensor:
    """The indexer keys a forward added to `layer` from slot `start` on, (batch, 1, new, dim)."""
    return layer.indexer_keys[:, None, start:]


class HFCausalLM(GeneratorSpec):
    generic = True
    # Per-block int8 (MatMulNBits 8-bit): per-tensor dynamic int8 fails on real LMs' outlier channels
    # (SmolLM2-135M held-out perplexity +57%); precision.py's _int8_blockwise says why.
    default_int8 = "blockwise"

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        arch = src.architecture
        return not src.is_plain and task in (None, "generate") and (
            arch.endswith(("ForCausalLM", "LMHeadModel")) or arch in auto_architectures("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family = str(getattr(self.model.config, "model_type", "") or "causal-lm")
        self.facts = FAMILIES.get(self.family, Family())
        if self.facts.not_a_kv_decoder:
            raise UnsupportedError(f"'{self.family}' cannot run as edgekit's decoder graph",
                                   found=self.facts.not_a_kv_decoder,
                                   fix="run this family with transformers; edgekit's generate supports decoders whose "
                                       "forward takes only the new tokens beside a key/value cache (docs/coverage.md)")
        self.cache = decoder_state(self.model)
        indexed = tuple(e.layer for e in self.cache.entries if isinstance(e, IndexerKeys))
        kv = tuple(e.layer for e in self.cache.entries if isinstance(e, AttentionKV))
        self.wrapper = KVDecoder(self.model, kv, indexed)
        if depends_on_slots(self.wrapper, self.cache):
            self.cache = DecoderState(tuple(dataclasses.replace(e, compact=True) for e in self.cache.entries))
        inputs = [*STEP_INPUTS, *self.cache.past()]
        self.graph = GraphExport("model", self.wrapper, _example(self.model, self.cache), inputs,
                                 ["logits", *self.cache.present()], _dynamic_shapes(len(self.cache.past())),
                                 quant_exclude_ops=list(self.facts.quant_exclude_ops))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = HFReference(self.model, self.graph)

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def runtime_graphs(self, target: str) -> list[RuntimeGraphExport]:
        """For onnxruntime targets: the decoder with fused GroupQueryAttention over shared cache buffers."""
        if target not in ("cpu", "cuda"):
            return []  # TensorRT builds from the portable graph
        return [RuntimeGraphExport(self._shared_kv_graph, "model", ("cpu", "cuda"), "shared", finish_for_onnxruntime)]

    def _shared_kv_graph(self) -> GraphExport:
        if self.cache.compact:
            raise NoRuntimeGraph("attention depends on where past slots sit (the past must stay compact); "
                                 "the fused graph keeps fixed slots")
        geometry = KVGeometry.of(self.cache)
        if geometry is None:
            raise NoRuntimeGraph("the layers' keys/values differ in head count or size (GroupQueryAttention's "
                                 "stand-in takes one shape in every layer)")
        return shared_kv_graph(self.model, geometry, list(self.facts.quant_exclude_ops))

    def files(self, calibration: Any) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json} if self.tokenizer_json else {}

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        assert self.src.hf_dir is not None
        config = self.model.config.get_text_config()  # a vision-language model's decoder holds these
        gen_path = self.src.hf_dir / "generation_config.json"
        gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
        eos = token_ids(gen.get("eos_token_id", getattr(config, "eos_token_id", None)))
        pad = gen.get("pad_token_id", getattr(config, "pad_token_id", None))
        bos = gen.get("bos_token_id", getattr(config, "bos_token_id", None))
        context = position_table(config, self.facts)
        window = getattr(config, "sliding_window", None)
        if isinstance(window, int) and 0 < window < context:
            # The runtime's cache keeps unfilled slots between past and current tokens; a sliding
            # window counted in slots would cut too early past this length, so it is the limit. One
            # less: transformers' sliding layers keep window - 1 past tokens, so a call whose past
            # already holds that many returns no new keys/values (an empty present, which fails).
            context = window - 1
        # Padding only fills masked slots, but it is still looked up in the embedding table: an id
        # outside the vocabulary (GPT2Config's default 50256 on a small vocab) would fail the Gather.
        vocab = int(config.vocab_size)
        pad = next((int(i) for i in (pad, *eos) if i is not None and 0 <= int(i) < vocab), 0)
        return GenerateSection(
            tokenizer="tokenizer.json" if self.tokenizer_json else None, add_special_tokens=True,
            eos_token_id=tuple(eos), bos_token_id=None if bos is None else int(bos), pad_token_id=pad,
            max_context=min(context, MAX_LEN), cache=self.cache,
            generation=generation_defaults(gen), chat=chat_template(self.src))


def takes_positions(model: Any) -> bool:
    """Whether transformers' generate passes position_ids: only to a forward that names them. The
    others (WhisperForCausalLM) take positions from the cache length, pads counted, and so must the
    graph (which then depends on where slots sit: `depends_on_slots` makes its past compact)."""
    return "position_ids" in inspect.signature(model.forward).parameters


def position_table(config: Any, facts: Family) -> int:
    """The longest context the config names (its position table), else MAX_LEN; a non-positive value
    names none (XLNet's max_position_embeddings is -1: relative positions, no table)."""
    return next((v for k in facts.context_keys if isinstance(v := getattr(config, k, None), int) and v > 0), MAX_LEN)


def decoder_state(model: Any) -> DecoderState:
    """Each layer's keys/values (KV heads, key and value head sizes) from one probe forward: no
    per-family config knowledge needed, and layers may differ (sliding and global layers with their
    own heads; latent attention's keys hold the rotary part, so they are wider than the values)."""
    cache = DynamicCache(config=model.config)
    ids = torch.zeros((1, 2), dtype=torch.long)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True)
    except (ValueError, TypeError, AttributeError) as e:  # a cache of the model's own kind
        raise UnsupportedError(f"'{model.config.model_type}' keeps a cache edgekit's decoder graph cannot hold",
                               found=f"{type(e).__name__}: {str(e)[:200]}",
                               fix="generate supports decoders whose transformers cache holds keys/values "
                                   "and conv/SSM states (DynamicCache)") from None
    # A DummyLayer keeps nothing: it reads an earlier layer's keys/values (Gemma 3n's shared-KV layers).
    own = [(i, layer) for i, layer in enumerate(cache.layers) if type(layer).__name__ != "DummyLayer"]
    kinds = [_layer_kv(layer) for _, layer in own]
    if not kinds or None in kinds:
        found = [type(layer).__name__ for (_, layer), k in zip(own, kinds) if k is None][:3]
        raise UnsupportedError(f"'{model.config.model_type}' keeps something other than keys/values in some layers",
                               found=f"{len(kinds)} cache layers, not keys/values alone: {found or 'all'}",
                               fix="generate supports decoders whose layers each cache keys and values, and "
                                   "state-space hybrids (edgekit.converters.specs.state_space)")
    window = getattr(model.config, "sliding_window", None)
    types = getattr(model.config, "layer_types", None) or []
    entries: list[StateEntry] = []
    for (i, _), (heads, kd, vd) in zip(own, (k for k in kinds if k is not None)):
        sliding = i < len(types) and "sliding" in str(types[i]) and isinstance(window, int)
        entries.append(AttentionKV(i, heads, kd, vd, window=window if sliding else None))
    # Sparse-attention indexers (DynamicIndexedLayer) keep one more key per token: (batch, past, dim).
    entries += [IndexerKeys(i, dim) for i, layer in enumerate(cache.layers) if (dim := indexer_dim(layer))]
    return DecoderState(tuple(entries))


def _layer_kv(layer: Any) -> tuple[int, int, int] | None:
    """(KV heads, key head size, value head size) of one cache layer after the probe, or None where
    it keeps more: conv / recurrent state beside the keys/values (transformers' LinearAttention*Layer;
    ZAYA's CCA keeps its q/k convolution window and the delayed value), which a KV graph would drop."""
    if any(isinstance(v, torch.Tensor) for a in ("conv_states", "recurrent_states")
           for v in (getattr(layer, a, None) or {}).values()):
        return None
    k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor) and k.ndim == v.ndim == 4):
        return None
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        return None
    return int(k.shape[1]), int(k.shape[3]), int(v.shape[3])


def depends_on_slots(wrapper: KVDecoder, state: DecoderState) -> bool:
    """Whether the model's step logits change when masked, unfilled slots sit between the past and
    the current token (positions from the cache length, ALiBi by key index): then the runtime must
    keep the past compact (AttentionKV.compact). One prompt step and the next token twice, in PyTorch."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(wrapper.model.config.vocab_size), (1, 5), generator=g)
    empty = [torch.zeros(t.shape(1, 0)) for t in state.tensors()]
    with torch.no_grad():
        present = wrapper(ids[:, :4], torch.ones((1, 4), dtype=torch.long), torch.arange(4)[None], *empty)[1:]
        pos = torch.tensor([[4]])
        compact = wrapper(ids[:, 4:], torch.ones((1, 5), dtype=torch.long), pos, *present)[0]
        gap = [torch.cat([p, torch.zeros(t.shape(1, 3))], dim=2) for p, t in zip(present, state.tensors())]
        mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 1]])
        slotted = wrapper(ids[:, 4:], mask, pos, *gap)[0]
    return not torch.allclose(compact, slotted, rtol=1e-4, atol=1e-5)


def _example(model: Any, state: DecoderState) -> tuple[Any, ...]:
    # Traced at batch 2, 4 new tokens after 3 past ones: no dim is 0 or 1 (torch.export would
    # specialize those); past length 0 still runs through the same graph, no 0/1 specialization.
    b, s, p = 2, 4, 3
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (b, s), generator=gen)
    mask = torch.ones((b, p + s), dtype=torch.long)
    pos = torch.arange(p, p + s).expand(b, s).contiguous()
    past = tuple(torch.zeros(t.shape(b, p)) for t in state.tensors())
    return (ids, mask, pos, *past)


def _dynamic_shapes(tensors: int) -> tuple[Any, ...]:
    batch = Dim(BATCH, min=1, max=MAX_BATCH)
    seq = Dim(SEQUENCE, min=1, max=MAX_LEN)
    past = Dim(PAST, min=0, max=MAX_LEN)
    total = Dim(TOTAL, min=1, max=2 * MAX_LEN)
    kv = tuple({0: batch, 2: past} for _ in range(tensors))  # varargs nest as one tuple
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, kv)


def _tokenizer_json(src: Source) -> bytes | None:
    assert src.hf_dir is not None
    if src.tokenizer is not None:
        return as_tokenizer(src.tokenizer).to_str().encode("utf-8")
    tok_file = src.hf_dir / "tokenizer.json"
    if tok_file.is_file():
        return tok_file.read_bytes()
    if not any((src.hf_dir / f).is_file() for f in ("vocab.json", "tokenizer.model", "vocab.txt")):
        return None  # weights only: the artifact takes input_ids (generate raises on text, saying so)
    from transformers import AutoTokenizer

    # Only vocab files: transformers builds the fast tokenizer once, here; the runtime never needs it.
    return AutoTokenizer.from_pretrained(src.hf_dir).backend_tokenizer.to_str().encode("utf-8")


class HFReference:
    """PyTorch side of parity for a causal LM: `transformers` generate and the wrapper's step logits."""

    def __init__(self, model: Any, graph: GraphExport) -> None:
        self.model, self.graph = model, graph
        self.vocab = int(model.config.vocab_size)

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        # No eos: every one of the `new` tokens is compared. transformers fills unset fields from
        # the model's own generation config, so that one is swapped for the call.
        saved = self.model.generation_config
        cfg = copy.deepcopy(saved)
        cfg.eos_token_id = cfg.forced_eos_token_id = None  # eos ignored, forced at the end too (BART-family)
        cfg.pad_token_id = 0
        cfg.max_new_tokens, cfg.do_sample = new, False
        self.model.generation_config = cfg
        try:
            with torch.no_grad():
                out = self.model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        finally:
            self.model.generation_config = saved
        return out[:, ids.shape[1]:].numpy()

    def greedy_alone(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        """`greedy` on each row alone, unpadded: the row's own answer where transformers' batched generate
        is not one (it drops the mask and reads the pads, or mixes rows)."""
        rows = [row[m.astype(bool)][None] for row, m in zip(ids, mask)]
        return np.concatenate([HFReference.greedy(self, r, np.ones_like(r), new) for r in rows])

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.cumsum(mask, axis=1) - 1}
        for i, name in enumerate(self.graph.input_names[3:]):
            shape = self.graph.args[3 + i].shape
            feeds[name] = np.zeros((ids.shape[0], shape[1], 0, shape[3]), np.float32)
        return torch_step(self.graph.module, self.graph.input_names, self.graph.output_names, feeds)["logits"]
