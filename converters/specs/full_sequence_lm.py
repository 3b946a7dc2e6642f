"""Hugging Face causal LMs that generate without a key/value cache: OpenAI-GPT, XLM, XLNet with mems off.

transformers' `generate` runs these over the whole sequence every step: their `forward` takes no
cache argument that `generate` fills (`past_key_values`, `cache_params`, `state`...), so nothing
carries over between steps. The graph is the same computation, `input_ids -> logits`, through the
inputs `generate` builds from the ids (`prepare_inputs_for_generation`: XLM appends its mask token
and a language row, XLNet a dummy token with `perm_mask` / `target_mapping`) and the runtime's
full-sequence loop (edgekit/tasks/fullseq.py: rows unpadded, every step runs the whole row).

Left padding: XLM's and XLNet's `prepare_inputs_for_generation` drop the attention mask (XLMModel
then takes the first `count(ids != pad_index)` positions as the real ones, i.e. right padding), so
transformers' answer for a left-padded row depends on its pads. edgekit answers each row as if it
were alone; parity compares with transformers' generate per row for such models, and with its
padded batch for models whose generate keeps the mask (OpenAI-GPT).

XLNet keeps `mems` when `config.use_mems_eval` is true (its default): each step then recomputes only
the last two tokens against hidden states frozen at earlier steps, so its tokens depend on where the
prompt ended, which a full-sequence graph cannot see; specs/xlnet.py converts those.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, SEQUENCE
from edgekit.contract.generate import FullSequence, GenerateSection
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions, RuntimeGraphExport
from edgekit.converters.specs.causal_lm import (FAMILIES, MAX_BATCH, MAX_LEN, Family, HFCausalLM, HFReference,
                                                _tokenizer_json, position_table)
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.converters.specs.xlnet import uses_mems
from edgekit.converters.wrappers import Logits

# What `generate` passes a cache through (transformers.generation.utils.ALL_CACHE_NAMES, without XLNet's
# `mems`: specs/xlnet.py's when on, see above) and `use_cache` (a model that takes it keeps one somewhere,
# e.g. Gemma 4's assistant reads its target's keys/values).
_CACHE_ARGS = frozenset({"past_key_values", "cache_params", "state", "past_buckets_states", "use_cache"})


def model_class(src: Source) -> type | None:
    """The transformers class of the folder's architecture, without building it (None: not in transformers)."""
    import transformers

    try:
        cls = getattr(transformers, src.architecture, None)
    except (ImportError, AttributeError):  # a dependency of that model is missing: loading it reports that
        return None
    return cls if inspect.isclass(cls) else None


def takes_no_cache(cls: type) -> bool:
    """Whether `generate` runs this model class over the whole sequence each step (its forward takes no cache)."""
    try:
        params = set(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return False
    return not params & _CACHE_ARGS


class GenerateStep(torch.nn.Module):
    """input_ids (batch, sequence) -> float logits: every position's where the model is causal and
    `generate` feeds the ids as they are, else the last position's (batch, 1, vocab), the one
    `generate` reads."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        ids = torch.zeros((2, 4), dtype=torch.long)
        prepared = model.prepare_inputs_for_generation(ids)
        self.names = [k for k, v in prepared.items() if isinstance(v, torch.Tensor)]
        self.appended = int(prepared["input_ids"].shape[1]) - ids.shape[1]  # tokens generate adds (XLM, XLNet: 1)
        self.logits = Logits(model, self.names)  # eager attention while exporting
        self.every_position = self.appended == 0
        if self.every_position:  # the probe reads every position, then keeps them only where causal
            self.every_position = _is_causal(self, int(model.config.vocab_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        prepared = self.model.prepare_inputs_for_generation(input_ids)
        out = self.logits(*[prepared[n] for n in self.names])
        return out if self.every_position else out[:, -1:]


def _is_causal(step: GenerateStep, vocab: int) -> bool:
    """Whether each position's logits ignore the tokens after it (then each is a next-token prediction)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, 6), generator=g)
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % vocab
    with torch.no_grad():
        a, b = step(ids), step(other)
    # float32 rounding moves the earlier positions by under 1e-6 relative, if at all; a bidirectional
    # model's move with the changed token, by orders of magnitude more
    return a.shape[1] == ids.shape[1] and torch.allclose(a[:, :-1], b[:, :-1], rtol=1e-5, atol=1e-6)


class HFFullSequenceLM(HFCausalLM):
    generic = False

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        if not HFCausalLM.matches(src, task):
            return False
        model_cls = model_class(src)
        return model_cls is not None and takes_no_cache(model_cls) and not uses_mems(src.config)

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        GeneratorSpec.__init__(self, src, options)
        from transformers import AutoModelForCausalLM

        assert src.hf_dir is not None
        self.model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        config = self.model.config
        self.family = str(getattr(config, "model_type", "") or "causal-lm")
        self.facts = FAMILIES.get(self.family, Family())
        self.cache = FullSequence()
        self.step_module = GenerateStep(self.model).eval()
        context = self._max_context()
        ids = torch.randint(0, int(config.vocab_size), (2, 4), generator=torch.Generator().manual_seed(0))
        shapes = ({0: Dim(BATCH, min=1, max=MAX_BATCH), 1: Dim(SEQUENCE, min=1, max=context)},)
        self.graph = GraphExport("model", self.step_module, (ids,), [self.cache.input], ["logits"], shapes,
                                 quant_exclude_ops=list(self.facts.quant_exclude_ops))
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = FullSequenceReference(self.model, self.graph)

    def runtime_graphs(self, target: str) -> list[RuntimeGraphExport]:
        return []  # the fused stand-in is a key/value-cache decoder; there is no cache here

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        return dataclasses.replace(super().contract(graphs), max_context=self._max_context())

    def _max_context(self) -> int:
        """The longest prompt + answer: the position table less the tokens generate appends to each call
        (XLM's mask token takes a position)."""
        return min(position_table(self.model.config, self.facts), MAX_LEN) - self.step_module.appended


class FullSequenceReference(HFReference):
    """transformers' generate, and the exported step's logits in PyTorch."""

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        if mask.all() or _generate_keeps_mask(self.model, ids, mask):
            return super().greedy(ids, mask, new)
        # generate would drop the mask and read the pads (see the module doc): each row alone, as edgekit runs it
        return self.greedy_alone(ids, mask, new)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.graph.module(torch.from_numpy(np.ascontiguousarray(ids))).float().numpy()


def _generate_keeps_mask(model: Any, ids: np.ndarray, mask: np.ndarray) -> bool:
    """Whether transformers' generate passes the attention mask on to the model's forward."""
    prepared = model.prepare_inputs_for_generation(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return prepared.get("attention_mask") is not None
