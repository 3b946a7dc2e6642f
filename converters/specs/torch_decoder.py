"""Plain `nn.Module` transformer decoders for `generate`, two ways.

Without a cache (`TorchDecoder`): any `forward(input_ids) -> logits` module (nanoGPT's GPT, which
returns `(logits, loss)` and, at inference, only the last position's logits). The graph is the
module itself; the runtime feeds the whole sequence every step (edgekit/tasks/fullseq.py): correct,
and O(n^2) over a generation, as the module itself generates without a cache.

With its own cache (`TorchKVDecoder`), a module following this protocol:

    forward(input_ids, attention_mask, position_ids, past_key_values)
        input_ids, position_ids   (batch, sequence) int64; positions count real tokens from 0
        attention_mask            (batch, past + sequence) int64: past slot j is attended iff 1
        past_key_values           None, or one (key, value) per layer, each (batch, heads, past, head_dim)
        returns (logits (batch, sequence, vocab),
                 one (key, value) per layer for THIS call's tokens only, (batch, heads, sequence, head_dim))
    (the new tokens attend to the attended past slots and causally to each other)

is exported with the cache like the Hugging Face decoders (the slot cache of
edgekit/contract/generate.py): one graph for the prompt and every step, the runtime writing each
step's keys/values into preallocated slots. `preprocess=` may give eos_token_id, pad_token_id,
max_context (else the module's `block_size`, or its config's).
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, SEQUENCE
from edgekit.contract.generate import STEP_INPUTS, FullSequence, GenerateSection
from edgekit.contract.state import DecoderState
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import ConvertOptions
from edgekit.converters.specs.causal_lm import MAX_BATCH, HFReference, _dynamic_shapes
from edgekit.converters.specs.classify import as_tokenizer
from edgekit.converters.specs.generate import GeneratorSpec, torch_step
from edgekit.converters.wrappers import first_output
from edgekit.errors import ConfigError, SourceError
from edgekit.tasks.generator import token_ids

_USER_KEYS = ("eos_token_id", "pad_token_id", "max_context")


def _context(module: Any, user: dict[str, Any]) -> int:
    """The longest sequence the module takes: preprocess= max_context, else its block size."""
    if "max_context" in user:
        return int(user["max_context"])
    config = getattr(module, "config", None)
    for owner, key in ((module, "block_size"), (config, "block_size"), (config, "n_positions"),
                       (config, "max_position_embeddings")):
        value = getattr(owner, key, None)
        if isinstance(value, int) and value > 1:
            return value
    raise ConfigError("a plain-module decoder needs its longest context",
                      found=f"no block_size on {type(module).__name__} or its config",
                      fix="pass preprocess={'max_context': N} (the length of its position table)")


class _PlainDecoder(GeneratorSpec):
    """What both plain decoders share: user keys, tokenizer, the contract's special ids."""

    cache: DecoderState | FullSequence

    def _setup(self, src: Source) -> None:
        user = dict(src.preprocess or {})
        if set(user) - set(_USER_KEYS):
            raise ConfigError(f"unknown preprocess keys {sorted(set(user) - set(_USER_KEYS))}",
                              found=f"known keys {list(_USER_KEYS)}")
        self.user = user
        self.max_context = _context(src.module, user)
        self.tokenizer_json = as_tokenizer(src.tokenizer).to_str().encode("utf-8") if src.tokenizer is not None else None

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def files(self, calibration: Any) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json} if self.tokenizer_json else {}

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        u = self.user
        return GenerateSection(tokenizer="tokenizer.json" if self.tokenizer_json else None, add_special_tokens=True,
                               eos_token_id=tuple(token_ids(u.get("eos_token_id"))), bos_token_id=None,
                               pad_token_id=int(u.get("pad_token_id", 0)), max_context=self.max_context,
                               cache=self.cache)


# ---------------------------------------------------------------- without a cache


class FullStep(torch.nn.Module):
    """input_ids -> float logits (batch, positions, vocab), whatever the module returns beside them."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.module = module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return first_output(self.module(ids)).float()


class TorchDecoder(_PlainDecoder):
    # Any plain forward(input_ids) -> logits module: a spec for a module with a state of its own
    # (one file, converters/specs or the user's code) is asked first.
    generic = True

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return src.is_plain and task == "generate" and not _has_lstm(src.module) and not takes_past(src.module)

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.family = "torch-decoder"
        self._setup(src)
        self.step_module = FullStep(src.module).eval()
        ids = torch.randint(0, 2, (2, min(4, self.max_context)))
        with torch.no_grad():
            out = self.step_module(ids)
        if out.ndim != 3 or out.shape[0] != 2:
            raise SourceError("a decoder's forward(input_ids) must return logits (batch, positions, vocab)",
                              found=f"output shape {list(out.shape)}")
        self.cache = FullSequence()
        seq = Dim(SEQUENCE, min=1, max=self.max_context)
        self.graph = GraphExport("model", self.step_module, (ids,), ["input_ids"], ["logits"],
                                 ({0: Dim(BATCH, min=1, max=MAX_BATCH), 1: seq},))
        self.reference = FullReference(self.step_module, int(out.shape[-1]))


class FullReference:
    """PyTorch side of parity: the module's own greedy loop over the whole sequence, row by row."""

    def __init__(self, step: Any, vocab: int) -> None:
        self.step_module, self.vocab = step, vocab

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        rows = []
        for row, m in zip(ids, mask):
            x = torch.from_numpy(row[m.astype(bool)][None].copy())
            with torch.no_grad():
                for _ in range(new):
                    x = torch.cat([x, self.step_module(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
            rows.append(x[0, -new:].tolist())
        return np.asarray(rows, dtype=np.int64)

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {"logits": self.step_module(torch.from_numpy(np.ascontiguousarray(feeds["input_ids"]))).numpy()}

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        return self.step({"input_ids": ids})["logits"]



# ---------------------------------------------------------------- with the module's own cache


def takes_past(module: Any) -> bool:
    """Whether `module.forward` follows the past_key_values protocol above."""
    try:
        return "past_key_values" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _has_lstm(module: Any) -> bool:
    return hasattr(module, "modules") and any(isinstance(m, torch.nn.LSTM) for m in module.modules())


class KVStep(torch.nn.Module):
    """The protocol's module with flat tensors: (ids, mask, positions, *past) -> (logits, *present)."""

    def __init__(self, module: Any, layers: int) -> None:
        super().__init__()
        self.module, self.layers = module, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pairs = tuple((past[2 * i], past[2 * i + 1]) for i in range(self.layers))
        logits, present = self.module(input_ids, attention_mask, position_ids, pairs)
        return (logits.float(), *[t for kv in present for t in kv])


class TorchKVDecoder(_PlainDecoder):
    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return src.is_plain and task == "generate" and takes_past(src.module)

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.family = "torch-kv-decoder"
        self._setup(src)
        module = src.module.eval()
        ids = torch.zeros((1, 2), dtype=torch.long)
        with torch.no_grad():
            out = module(ids, torch.ones_like(ids), torch.arange(2)[None], None)
        try:
            logits, present = out
            k = present[0][0]
            geometry = KVGeometry(len(present), int(k.shape[1]), int(k.shape[3]))
        except (TypeError, ValueError, IndexError, AttributeError) as e:
            raise SourceError("the module does not follow the past_key_values protocol",
                              found=f"forward(ids, mask, positions, None) returned {type(out).__name__} ({e})",
                              fix="return (logits, ((key, value) per layer)); see edgekit.converters.specs."
                                  "torch_decoder") from None
        self.cache = geometry.state()
        self.wrapper = KVStep(module, geometry.layers).eval()
        b, s, p = 2, 4, 3
        example = (torch.randint(0, int(logits.shape[-1]), (b, s)), torch.ones((b, p + s), dtype=torch.long),
                   torch.arange(p, p + s).expand(b, s).contiguous(),
                   *[torch.zeros((b, geometry.heads, p, geometry.head_dim)) for _ in range(2 * geometry.layers)])
        self.graph = GraphExport("model", self.wrapper, example, [*STEP_INPUTS, *geometry.past()],
                                 ["logits", *geometry.present()], _dynamic_shapes(2 * geometry.layers))
        self.reference = KVReference(self.wrapper, self.graph, int(logits.shape[-1]))


class KVReference(HFReference):
    """PyTorch side of parity: the module's own cached greedy loop (its past grows by concatenation)."""

    def __init__(self, wrapper: Any, graph: GraphExport, vocab: int) -> None:
        self.model, self.graph, self.vocab = wrapper, graph, vocab

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        g = self.graph
        past_names = g.input_names[3:]
        empty = {n: np.zeros((ids.shape[0], a.shape[1], 0, a.shape[3]), np.float32) for n, a in zip(past_names, g.args[3:])}
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None), **empty}
        out_tokens = []
        for _ in range(new):
            out = torch_step(g.module, g.input_names, g.output_names, feeds)
            token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
            out_tokens.append(token)
            feeds = {"input_ids": token, "attention_mask": np.concatenate([feeds["attention_mask"], np.ones_like(token)], 1),
                     "position_ids": feeds["position_ids"][:, -1:] + 1,
                     **{n: np.concatenate([feeds[n], out[n.replace("past_key_values.", "present.")]], axis=2)
                        for n in past_names}}
        return np.concatenate(out_tokens, axis=1)
