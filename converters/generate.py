"""Export specs for `generate`: Hugging Face causal LMs (KV cache) and recurrent generators (LSTM state).

One causal-LM spec serves every decoder whose forward takes `input_ids`, `attention_mask`,
`position_ids` and a cache: the cache geometry (layers, KV heads, head size) is read from one
probe forward, not from per-family config keys. `FAMILIES` holds the few facts that truly differ
per family; a new family needs no entry unless it breaks one of the defaults.

The graph (`model`), for both the prompt step (past length 0) and decode steps:
  inputs   input_ids (batch, sequence), attention_mask (batch, total_sequence),
           position_ids (batch, sequence), past_key_values.{i}.key/value (batch, heads, past_sequence, dim)
  outputs  logits (batch, sequence, vocab), present.{i}.key/value (batch, heads, sequence, dim)
`present` holds only the keys/values of the tokens of this call, not past + new: the runtime keeps
one preallocated cache and writes them into it (see `edgekit/generator.py`), so nothing grows per
step. `attention_mask` covers past + current tokens; masked past slots are never attended, which
lets the runtime feed the whole preallocated buffer with its unfilled slots masked.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, SourceError, UnsupportedError
from edgekit.converters.export import GraphExport
from edgekit.converters.pipeline import ConvertOptions, Plan
from edgekit.converters.sources import Source
from edgekit.generator import left_pad  # the runtime's own padding: parity pads exactly as users' calls do

_MAX_BATCH = 256
_MAX_LEN = 32768
_PARITY_NEW_TOKENS = 32
GENERATION_KEYS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")

# Pass/fail per precision. fp32 must reproduce PyTorch's greedy tokens exactly; lower precisions
# are gated on teacher-forced next-token top-1 agreement (a stable measure) and report greedy
# agreement (which, after the first divergence, measures chaos more than accuracy).
GENERATE_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"greedy_agreement": 1.0, "logits_max_rel": 1e-3, "top1_agreement": 1.0},
    "fp16": {"top1_agreement": 0.9},
    "int8": {"top1_agreement": 0.85},
    "int4": {"top1_agreement": 0.7},
}


@dataclass(frozen=True)
class FamilySpec:
    """What differs between causal-LM families. Defaults fit GPT-2, Llama, Qwen2, Mistral, Phi-3..."""

    quant_exclude_ops: list[str] = field(default_factory=list)
    # Config keys naming the longest context, first found wins (GPT-2 aliases n_positions).
    context_keys: tuple[str, ...] = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


FAMILIES: dict[str, FamilySpec] = {
    "default": FamilySpec(),
    # Gemma 2/3 cap logits with tanh; keep it in float under int8 (the cap is sensitive to scale).
    "gemma2": FamilySpec(quant_exclude_ops=["Tanh"]),
    "gemma3_text": FamilySpec(quant_exclude_ops=["Tanh"]),
}


def plan(src: Source, opts: ConvertOptions) -> Plan:
    spec = SPECS.get(src.kind)
    if spec is not None:
        return spec(src, opts)
    raise UnsupportedError(
        f"generate cannot convert a {src.kind} source ('{src.description}')",
        fix="pass a Hugging Face causal-LM folder, or an nn.Module recurrent generator with tokenizer=",
    )


# ---------------------------------------------------------------- Hugging Face causal LMs


def _hf_causal_lm(src: Source, opts: ConvertOptions) -> Plan:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
    model_type = str(getattr(config, "model_type", "") or "causal-lm")
    spec = FAMILIES.get(model_type, FAMILIES["default"])
    layers, heads, dim = _cache_geometry(model)
    wrapper = _KVWrapper(model, layers)
    names = _kv_names(layers)
    graph = GraphExport("model", wrapper, _kv_example(model, layers, heads, dim), names[0], names[1],
                        _kv_dynamic_shapes(layers), quant_exclude_ops=list(spec.quant_exclude_ops))
    tok_json = _hf_tokenizer_json(src)
    post = _hf_postprocess(src, config, spec, layers, heads, dim)
    pre = {"kind": "text", "tokenizer": "tokenizer.json" if tok_json else None, "add_special_tokens": True}
    files = {"tokenizer.json": tok_json} if tok_json else {}
    reference = _HFReference(model, wrapper, graph)
    return _plan(model_type, graph, pre, post, files, reference, opts)


def _cache_geometry(model: Any) -> tuple[int, int, int]:
    """(layers, KV heads, head size) from one probe forward: no per-family config knowledge needed."""
    import torch
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=model.config)
    ids = torch.zeros((1, 2), dtype=torch.long)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True)
    k = cache.layers[0].keys
    if k is None or k.ndim != 4:
        raise SourceError(f"'{model.config.model_type}' does not keep a (batch, heads, seq, dim) KV cache",
                          fix="generate supports decoders with a standard Hugging Face cache")
    return len(cache.layers), int(k.shape[1]), int(k.shape[3])


class _KVWrapper:
    """Positional tensors in (ids, mask, positions, *flat past), (logits, *new keys/values) out."""

    def __new__(cls, model: Any, layers: int) -> Any:
        import torch
        from transformers.cache_utils import DynamicCache

        class KVWrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                        *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
                # transformers 5.x: the cache object is built from the flat tensors (export-notes.md).
                cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)],
                                     config=self.model.config)
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 past_key_values=cache, use_cache=True)
                start = past[0].shape[2]
                new: list[torch.Tensor] = []
                for layer in cache.layers:
                    new += [layer.keys[:, :, start:], layer.values[:, :, start:]]
                return (out.logits.float(), *new)

        return KVWrapper().eval()


def _kv_names(layers: int) -> tuple[list[str], list[str]]:
    kv = [(i, k) for i in range(layers) for k in ("key", "value")]
    inputs = ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{i}.{k}" for i, k in kv]
    return inputs, ["logits"] + [f"present.{i}.{k}" for i, k in kv]


def _kv_example(model: Any, layers: int, heads: int, dim: int) -> tuple[Any, ...]:
    import torch

    # Traced at batch 2, 4 new tokens after 3 past ones: no dim is 0 or 1 (torch.export would
    # specialize those); past length 0 still runs through the same graph (export-notes.md).
    b, s, p = 2, 4, 3
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (b, s), generator=gen)
    mask = torch.ones((b, p + s), dtype=torch.long)
    pos = torch.arange(p, p + s).expand(b, s).contiguous()
    past = tuple(torch.zeros((b, heads, p, dim)) for _ in range(2 * layers))
    return (ids, mask, pos, *past)


def _kv_dynamic_shapes(layers: int) -> tuple[Any, ...]:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=_MAX_BATCH)
    seq = Dim("sequence", min=1, max=_MAX_LEN)
    past = Dim("past_sequence", min=0, max=_MAX_LEN)
    total = Dim("total_sequence", min=1, max=2 * _MAX_LEN)
    kv = tuple({0: batch, 2: past} for _ in range(2 * layers))  # varargs nest as one tuple
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, kv)


def _hf_tokenizer_json(src: Source) -> bytes | None:
    if src.tokenizer is not None:
        from edgekit.converters.classify import _as_tokenizer

        return _as_tokenizer(src.tokenizer).to_str().encode("utf-8")
    tok_file = src.hf_dir / "tokenizer.json"
    if tok_file.is_file():
        return tok_file.read_bytes()
    if not any((src.hf_dir / f).is_file() for f in ("vocab.json", "tokenizer.model", "vocab.txt")):
        return None  # weights only: the artifact takes input_ids (generate raises on text, saying so)
    from transformers import AutoTokenizer

    # Only vocab files: transformers builds the fast tokenizer once, here; the runtime never needs it.
    return AutoTokenizer.from_pretrained(src.hf_dir).backend_tokenizer.to_str().encode("utf-8")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _hf_postprocess(src: Source, config: Any, spec: FamilySpec, layers: int, heads: int,
                    dim: int) -> dict[str, Any]:
    gen_path = src.hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    eos = _ids(gen.get("eos_token_id", getattr(config, "eos_token_id", None)))
    pad = gen.get("pad_token_id", getattr(config, "pad_token_id", None))
    bos = gen.get("bos_token_id", getattr(config, "bos_token_id", None))
    context = next((int(getattr(config, k)) for k in spec.context_keys if getattr(config, k, None)), _MAX_LEN)
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < context:
        # The runtime's cache keeps unfilled slots between past and current tokens; a sliding
        # window counted in slots would cut too early past this length, so it is the limit.
        context = window
    return {
        "eos_token_id": eos, "bos_token_id": None if bos is None else int(bos),
        "pad_token_id": int(pad) if pad is not None else (eos[0] if eos else 0),
        "max_context": min(context, _MAX_LEN),
        "generation": {k: gen[k] for k in GENERATION_KEYS if gen.get(k) is not None},
        "cache": {"kind": "kv", "layers": layers, "heads": heads, "head_dim": dim},
    }


def _torch_step(wrapper: Any, graph: GraphExport, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call of the exported wrapper in PyTorch, with the graph's own input/output names."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in graph.input_names]
    with torch.inference_mode():
        out = wrapper(*args)
    return {n: v.float().numpy() for n, v in zip(graph.output_names, out)}


class _HFReference:
    """PyTorch side of parity for a causal LM: `transformers` generate and the wrapper's step logits."""

    def __init__(self, model: Any, wrapper: Any, graph: GraphExport) -> None:
        self.model, self.wrapper, self.graph = model, wrapper, graph

    @property
    def vocab(self) -> int:
        return int(self.model.config.vocab_size)

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        import copy

        import torch

        # No eos: every one of the `new` tokens is compared. transformers fills unset fields from
        # the model's own generation config, so that one is swapped for the call.
        saved = self.model.generation_config
        cfg = copy.deepcopy(saved)
        cfg.eos_token_id = None
        cfg.pad_token_id = 0
        cfg.max_new_tokens, cfg.do_sample = new, False
        self.model.generation_config = cfg
        try:
            with torch.no_grad():
                out = self.model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        finally:
            self.model.generation_config = saved
        return out[:, ids.shape[1]:].numpy()

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _torch_step(self.wrapper, self.graph, feeds)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.cumsum(mask, axis=1) - 1}
        for i, name in enumerate(self.graph.input_names[3:]):
            shape = self.graph.args[3 + i].shape
            feeds[name] = np.zeros((ids.shape[0], shape[1], 0, shape[3]), np.float32)
        return self.step(feeds)["logits"]


# ---------------------------------------------------------------- recurrent generators (LSTM)


def _recurrent(src: Source, opts: ConvertOptions) -> Plan:
    import torch

    module = src.module
    lstm = next((m for m in module.modules() if isinstance(m, torch.nn.LSTM)), None)
    if lstm is None:
        raise UnsupportedError(
            f"generate cannot convert the plain module {type(module).__name__}",
            found="no torch.nn.LSTM inside",
            fix="pass a Hugging Face causal-LM folder, or a module with an nn.LSTM whose forward(input_ids, "
                "(h, c)) returns (logits, (h, c))",
        )
    if src.tokenizer is None:
        raise ConfigError("a plain-module generator needs tokenizer=",
                          fix="pass a tokenizers.Tokenizer or tokenizer.json path")
    if not lstm.batch_first or lstm.bidirectional or lstm.proj_size:
        raise UnsupportedError("the LSTM must be batch_first, one-directional and without projection",
                               found=f"batch_first={lstm.batch_first}, bidirectional={lstm.bidirectional}")
    layers, hidden = int(lstm.num_layers), int(lstm.hidden_size)
    wrapper = _LSTMWrapper(module)
    from torch.export import Dim

    # One token per call: torch.export unrolls the LSTM over time and would fix the traced length,
    # so the graph is the step and the runtime feeds a prompt token by token (the state carries it).
    batch = Dim("batch", min=1, max=_MAX_BATCH)
    ids = torch.randint(0, 2, (2, 1))
    state = torch.zeros((layers, 2, hidden))
    graph = GraphExport("model", wrapper, (ids, state, state.clone()), ["input_ids", "state.h", "state.c"],
                        ["logits", "state_out.h", "state_out.c"], ({0: batch}, {1: batch}, {1: batch}))
    from edgekit.converters.classify import _as_tokenizer

    tok = _as_tokenizer(src.tokenizer)
    with torch.no_grad():
        vocab = int(wrapper(ids, state, state)[0].shape[-1])
    user = dict(src.preprocess or {})
    eos = _ids(user.get("eos_token_id"))
    post = {
        "eos_token_id": eos, "bos_token_id": None, "pad_token_id": int(user.get("pad_token_id", 0)),
        "max_context": int(user.get("max_context", _MAX_LEN)), "generation": {},
        "cache": {"kind": "recurrent", "layers": layers, "hidden": hidden,
                  "inputs": ["state.h", "state.c"], "outputs": ["state_out.h", "state_out.c"]},
    }
    pre = {"kind": "text", "tokenizer": "tokenizer.json", "add_special_tokens": True}
    files = {"tokenizer.json": tok.to_str().encode("utf-8")}
    return _plan("lstm", graph, pre, post, files, _RecurrentReference(wrapper, graph, vocab, layers, hidden), opts)


class _LSTMWrapper:
    def __new__(cls, module: Any) -> Any:
        import torch

        class LSTMWrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.module = module

            def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
                logits, (h2, c2) = self.module(ids, (h, c))
                return logits.float(), h2, c2

        return LSTMWrapper().eval()


class _RecurrentReference:
    """PyTorch side of parity for a recurrent generator: its own greedy loop, one prompt at a time."""

    def __init__(self, wrapper: Any, graph: GraphExport, vocab: int, layers: int, hidden: int) -> None:
        self.wrapper, self.graph, self.vocab = wrapper, graph, vocab
        self.layers, self.hidden = layers, hidden

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        import torch

        rows = []
        for row, m in zip(ids, mask):
            x = torch.from_numpy(row[m.astype(bool)][None].copy())
            h = c = torch.zeros((self.layers, 1, self.hidden))
            out = []
            with torch.no_grad():
                for _ in range(new):
                    logits, h, c = self.wrapper(x, h, c)
                    x = logits[:, -1].argmax(-1, keepdim=True)
                    out.append(int(x))
            rows.append(out)
        return np.asarray(rows, dtype=np.int64)

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _torch_step(self.wrapper, self.graph, feeds)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        zeros = np.zeros((self.layers, ids.shape[0], self.hidden), np.float32)
        return self.step({"input_ids": ids, "state.h": zeros, "state.c": zeros})["logits"]


# ---------------------------------------------------------------- parity and the plan


Reference = _HFReference | _RecurrentReference


def _plan(family: str, graph: GraphExport, pre: dict[str, Any], post: dict[str, Any], files: dict[str, bytes],
          ref: Reference, opts: ConvertOptions) -> Plan:
    texts = _texts(opts.calibration)

    def calibration_feeds(calibration: Any) -> list[dict[str, dict[str, np.ndarray]]]:
        raise UnsupportedError(
            "static Q/DQ int8 is not offered for generate",
            fix="use the default int8 (dynamic, int8_method='dynamic') or int4 weight-only",
        )

    def check_parity(plan_: Plan, model: Any, precision: str, samples: int | None = None) -> dict[str, Any]:
        return generate_parity(ref, model, precision, GENERATE_TOLERANCES[precision], texts, samples,
                               _PARITY_NEW_TOKENS)

    return Plan(family=family, graphs=[graph], preprocess=pre, postprocess=post, files=files,
                calibration_feeds=calibration_feeds, check_parity=check_parity, default_int8="dynamic",
                supported_precisions=("fp32", "fp16", "int8", "int4"))


def _texts(calibration: Any) -> list[str]:
    """Held-out texts for parity (calibration= a list of strings or a .txt file); [] for random ids."""
    from pathlib import Path

    if calibration is None:
        return []
    if isinstance(calibration, (str, Path)) and Path(calibration).suffix == ".txt":
        return [t for t in Path(calibration).read_text(encoding="utf-8").splitlines() if t.strip()]
    if isinstance(calibration, (list, tuple)) and all(isinstance(t, str) for t in calibration):
        return list(calibration)
    raise ConfigError("generate takes calibration= as texts (a list of strings or a .txt file)",
                      found=type(calibration).__name__)




def generate_parity(ref: Reference, model: Any, precision: str, tol: dict[str, float], texts: list[str],
                    samples: int | None, new: int) -> dict[str, Any]:
    """Greedy token agreement, step logits error and teacher-forced top-1 agreement vs PyTorch."""
    rows = _parity_rows(model, ref.vocab, texts, samples)
    greedy = []
    for batch in (rows[:1], rows[1:3]):  # batch 1, then a left-padded batch of two lengths
        ids, mask = left_pad(batch, int(model.manifest.postprocess.get("pad_token_id", 0)))
        want = ref.greedy(ids, mask, new)
        got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, eos_token_id=[])[:, ids.shape[1]:]
        greedy += [_prefix_share(w, g) for w, g in zip(want, got)]
    ids, mask = left_pad(rows[:2], int(model.manifest.postprocess.get("pad_token_id", 0)))
    if isinstance(ref, _RecurrentReference):  # its graph takes one token per call
        ids, mask = ids[:, -1:], mask[:, -1:]
    step_err = 0.0
    scale = 1e-12
    for feeds in _step_feeds(ref, model, ids, mask):
        r = ref.step(feeds)["logits"]
        g = model.runners["model"].run(feeds, outputs=["logits"])["logits"].astype(np.float32)
        m = feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))[:, -feeds["input_ids"].shape[1]:]
        step_err = max(step_err, float(np.abs(r - g)[m.astype(bool)].max()))
        scale = max(scale, float(np.abs(r).max()))
    top1 = _top1(ref, model, rows)
    report: dict[str, Any] = {
        "precision": precision, "samples": len(rows), "tolerances": tol, "new_tokens": new,
        "greedy_agreement": float(np.mean(greedy)), "greedy_rows": [round(g, 4) for g in greedy],
        "logits_max_abs": step_err, "logits_max_rel": step_err / scale, "top1_agreement": top1,
        "held_out": "texts" if texts else "random token ids",
    }
    failures = [f"{k}={report[k]:.4g} (limit {v})" for k, v in tol.items()
                if (report[k] > v if k == "logits_max_rel" else report[k] < v)]
    report["passed"] = not failures
    report["summary"] = ("; ".join(failures) if failures else
                         f"greedy agreement {report['greedy_agreement']:.3f}, top-1 {top1:.3f}, "
                         f"step logits max abs diff {step_err:.3g}")
    return report


def _parity_rows(model: Any, vocab: int, texts: list[str], samples: int | None) -> list[list[int]]:
    n = max(int(samples or 4), 3)
    if texts:
        rows = [r[:64] for r in model.encode(texts[: n]) if len(r) >= 2]
        if len(rows) >= 3:
            return rows
    rng = np.random.default_rng(0)
    lengths = [9, 7, 4] + [24] * (n - 3)  # different lengths: the batch is left-padded
    return [rng.integers(0, vocab, size=length).tolist() for length in lengths]


def _prefix_share(want: np.ndarray, got: np.ndarray) -> float:
    """Share of tokens identical before the first divergence."""
    diff = np.nonzero(np.asarray(want) != np.asarray(got))[0]
    return (int(diff[0]) if len(diff) else len(want)) / max(len(want), 1)


def _step_feeds(ref: Reference, model: Any, ids: np.ndarray, mask: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The prompt step (past length 0) and one decode step after it, fed identically to both sides."""
    first = _prompt_feeds(ref, model, ids, mask)
    out = ref.step(first)
    nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    if isinstance(ref, _RecurrentReference):
        return [first, {"input_ids": nxt, "state.h": out["state_out.h"], "state.c": out["state_out.c"]}]
    second = {"input_ids": nxt, "attention_mask": np.concatenate([mask, np.ones_like(nxt)], axis=1),
              "position_ids": first["position_ids"][:, -1:] + 1}
    for name in first:
        if name.startswith("past_key_values."):
            second[name] = out[name.replace("past_key_values.", "present.")]
    return [first, second]


def _prompt_feeds(ref: Reference, model: Any, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(ref, _RecurrentReference):
        zeros = np.zeros((ref.layers, ids.shape[0], ref.hidden), np.float32)
        return {"input_ids": ids, "state.h": zeros, "state.c": zeros}
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None)}
    for s in model.runners["model"].inputs:
        if s.name.startswith("past_key_values."):
            feeds[s.name] = np.zeros((ids.shape[0], s.shape[1], 0, s.shape[3]), np.float32)
    return feeds


def _top1(ref: Reference, model: Any, rows: list[list[int]]) -> float:
    """Teacher-forced next-token top-1 agreement over every position of every row."""
    agree = total = 0
    for r in rows:
        ids = np.asarray([r], dtype=np.int64)
        want = ref.full_logits(ids)[0].argmax(-1)
        got = model.logits(ids)[0].argmax(-1)
        agree += int((want == got).sum())
        total += len(want)
    return agree / max(total, 1)


# source kind -> spec. A Hugging Face folder is any causal LM; a plain module is a recurrent generator.
SPECS: dict[str, Callable[[Source, ConvertOptions], Plan]] = {
    "hf": _hf_causal_lm,
    "module": _recurrent,
    "factory": _recurrent,
}
