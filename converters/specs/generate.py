"""What every `generate` spec shares: held-out texts, the parity check, the gates per precision.

Parity against the PyTorch source, through the artifact's own generate loop:
- greedy tokens over 32 new tokens, batch 1 and a left-padded batch of two lengths, against the
  source's own generate (`transformers.generate` for Hugging Face folders);
- the logits of the prompt step and one decode step, fed identically to both sides;
- teacher-forced next-token top-1 agreement over every position of the held-out rows, and, on
  natural text, their perplexity against PyTorch's on the same tokens (`ppl_rel`: relative change);
- on a model with a chat template, greedy answers to a few chat turns (`chat_agreement`: the share
  answered exactly as PyTorch answers them, up to its eos).
The held-out rows are the user's calibration texts, else natural prose (natural_text.py), and
random ids only for a model without a tokenizer: on a real model random ids give near-flat
distributions where top-1 flips on noise. fp32 must reproduce the greedy tokens exactly; lower
precisions are gated on perplexity (what a user reads: the model's confidence in real text) and
top-1 agreement, and report greedy agreement (which, after the first divergence, measures chaos
more than accuracy).
"""
from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from edgekit.contract.generate import ChatTemplate, GenerationDefaults
from edgekit.converters.spec import Calibration, ExportSpec, Gate, Limit
from edgekit.converters.specs.natural_text import CHAT_TURNS, held_out_paragraphs
from edgekit.errors import ConfigError, SourceError
from edgekit.parity_report import ParityReport
from edgekit.tasks.generator import left_pad  # the runtime's own padding: parity pads as users' calls do
from edgekit.tasks.options import GenerateOptions, refuse_unimplemented

if TYPE_CHECKING:
    from edgekit.converters.sources import Source

PARITY_NEW_TOKENS = 32
# The generate call parity compares, as the references make theirs (transformers' generate with the
# model's own generation config for Hugging Face folders): greedy, every new token compared (no eos,
# and no eos forced at the last position, which BART-style configs ask for); an explicit None
# switches a model's setting off, as in transformers.
PARITY_CALL: dict[str, Any] = dict(max_new_tokens=PARITY_NEW_TOKENS, do_sample=False, eos_token_id=[],
                                   forced_eos_token_id=None)
GATES: dict[str, Gate] = {
    "fp32": {"greedy_agreement": Limit(min=1.0), "logits_max_rel": Limit(max=1e-3), "top1_agreement": Limit(min=1.0)},
    "fp16": {"top1_agreement": Limit(min=0.9), "ppl_rel": Limit(max=0.005)},
    "int8": {"top1_agreement": Limit(min=0.85), "ppl_rel": Limit(max=0.01)},
    "int4": {"top1_agreement": Limit(min=0.7), "ppl_rel": Limit(max=0.05)},
}
# Two logits within this share of the logits' scale are a tie for top-1 agreement (float32 rounding over
# a model's depth stays under it, a tenth of the fp32 gate on logits, 1e-3 relative).
TIE_REL = 1e-4
NATURAL_ROWS = 6  # held-out paragraphs of natural text, up to NATURAL_TOKENS each
NATURAL_TOKENS = 128
USER_TOKENS = 64
CHAT_PROMPTS = 4  # chat turns answered greedily (natural_text.CHAT_TURNS)


class Reference(Protocol):
    """The PyTorch side of generate parity."""

    vocab: int

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        """(batch, new) greedy tokens for left-padded prompts, eos ignored."""

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        """Teacher-forced logits (batch, sequence, vocab) of unpadded ids."""


@runtime_checkable
class DecodeReference(Reference, Protocol):
    """A reference whose decode steps compute other logits than a longer prompt would: XLNet's mems
    freeze hidden states as the call that made them saw the sequence; Zamba2's prompt scan floors a
    time step its one-token step does not (state_floor.py). Any other's are `full_logits`."""

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:
        """(batch, positions, vocab) ending with the prompt ids[:, :-steps]'s last position, then
        `steps` decode steps' (parity compares the positions both sides return, from the end)."""


class _Memo:
    """A Reference that answers each distinct call once (PyTorch is the slow side of parity)."""

    def __init__(self, ref: Reference) -> None:
        self.ref, self.vocab = ref, ref.vocab
        self._seen: dict[tuple[Any, ...], np.ndarray] = {}

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        key = ("greedy", ids.shape, ids.tobytes(), mask.tobytes(), new)
        if key not in self._seen:
            self._seen[key] = self.ref.greedy(ids, mask, new)
        return self._seen[key]

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        key = ("logits", ids.shape, ids.tobytes())
        if key not in self._seen:
            self._seen[key] = self.ref.full_logits(ids)
        return self._seen[key]

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:
        """The logits of a prompt then `steps` decode steps, the last positions of `full_logits` where
        decode steps compute what the prompt does (every exact cache)."""
        if not isinstance(self.ref, DecodeReference):
            return self.full_logits(ids)
        key = ("decode", ids.shape, ids.tobytes(), steps)
        if key not in self._seen:
            self._seen[key] = self.ref.decode_logits(ids, steps)
        return self._seen[key]


class GeneratorSpec(ExportSpec):
    task: ClassVar[str] = "generate"
    precisions = ("fp32", "fp16", "int8", "int4")
    default_int8 = "dynamic"
    static_int8 = False  # the attention-mask path collapses under activation Q/DQ
    gates = GATES

    reference: Reference

    def calibrate(self, data: Any) -> Calibration:
        """Held-out texts for parity: a list of strings or a .txt file (None: random token ids)."""
        if data is None:
            return Calibration()
        if isinstance(data, (str, Path)) and Path(data).suffix == ".txt":
            return Calibration(samples=[t for t in Path(data).read_text(encoding="utf-8").splitlines() if t.strip()])
        if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
            return Calibration(samples=list(data))
        raise ConfigError("generate takes calibration= as texts (a list of strings or a .txt file)",
                          found=type(data).__name__)

    @cached_property
    def _memo(self) -> _Memo:
        return _Memo(self.reference)

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        # The PyTorch side is the same for every candidate and graph the convert scores: computed once.
        ref = self._memo
        texts, held_out = held_out_texts(model, calibration)
        rows = _parity_rows(model, ref.vocab, texts, samples)
        pad = model.contract.pad_token_id
        greedy = []
        for batch in (rows[:1], rows[1:3]):  # batch 1, then a left-padded batch of two lengths
            ids, mask = left_pad(batch, pad)
            want = ref.greedy(ids, mask, PARITY_NEW_TOKENS)
            got = model.generate(input_ids=ids, attention_mask=mask, **PARITY_CALL)[:, ids.shape[1]:]
            greedy += [prefix_share(w, g) for w, g in zip(want, got)]
        # Logits of the prompt run and of decode steps (the last tokens fed one by one, through the
        # artifact's own cache loop), against PyTorch's over the same tokens.
        step_err, scale = 0.0, 1e-12
        for r in rows[:2]:
            ids = np.asarray([r], np.int64)
            steps = min(3, len(r) - 1)
            want, got = ref.decode_logits(ids, steps), model.logits(ids, decode_steps=steps)
            # The positions both return, counted from the end: all of them, or fewer where a module
            # returns only the last position's logits (nanoGPT's GPT without targets).
            n = min(want.shape[1], got.shape[1])
            want, got = want[:, -n:], got[:, -n:]
            step_err = max(step_err, float(np.abs(want - got).max()))
            scale = max(scale, float(np.abs(want).max()))
        top1, ppl_ref, ppl = _teacher_forced(ref, model, rows)
        measures: dict[str, Any] = {
            "samples": len(rows), "new_tokens": PARITY_NEW_TOKENS, "greedy_agreement": float(np.mean(greedy)),
            "greedy_rows": [round(g, 4) for g in greedy], "logits_max_abs": step_err,
            "logits_max_rel": step_err / scale, "top1_agreement": top1, "held_out": held_out,
        }
        what = (f"greedy agreement {measures['greedy_agreement']:.3f}, top-1 {top1:.3f}, "
                f"step logits max abs diff {step_err:.3g}")
        if texts and ppl_ref is not None and ppl is not None:  # perplexity means something on text, not on random ids
            measures.update(ppl_reference=ppl_ref, ppl=ppl, ppl_rel=ppl / ppl_ref - 1.0)
            what += f", perplexity {ppl:.3f} vs PyTorch {ppl_ref:.3f} ({100 * (ppl / ppl_ref - 1):+.2f}%)"
        chat_rows = _chat_agreement(ref, model)
        if chat_rows:
            measures.update(chat_agreement=float(np.mean(chat_rows)), chat_prompts=len(chat_rows))
            what += f", chat answers equal {int(sum(chat_rows))}/{len(chat_rows)}"
        return self.report(measures, precision, what)


    def runtime_proof(self, portable: Any, runtime: Any, precision: str,
                      calibration: Calibration | None) -> ParityReport:
        """The stand-in graph against PyTorch (the same gates), and its greedy tokens against the
        portable graph's: fp32 must give the same tokens, or the stand-in is wrong."""
        report = self.parity(runtime, precision, calibration=calibration)
        rows = _parity_rows(runtime, self.reference.vocab, held_out_texts(runtime, calibration)[0], None)
        same = []
        for batch in (rows[:1], rows[1:3]):
            ids, mask = left_pad(batch, runtime.contract.pad_token_id)
            kw = dict(input_ids=ids, attention_mask=mask, **PARITY_CALL)
            same += [prefix_share(a, b) for a, b in zip(portable.generate(**kw), runtime.generate(**kw))]
        report = report.with_measures(tokens_vs_portable=float(np.mean(same)))
        if precision == "fp32" and report.measures["tokens_vs_portable"] < 1.0:
            return report.failed(f"greedy tokens differ from the portable graph's "
                                 f"(agreement {report.measures['tokens_vs_portable']:.3f})")
        return report


def held_out_texts(model: Any, calibration: Calibration | None) -> tuple[list[str], str]:
    """The texts parity scores and what they are: the user's, else natural prose when the model reads
    text, else none (random ids)."""
    if calibration is not None and calibration.samples:
        return list(calibration.samples), "texts"
    if model.tokenizer is not None:
        return held_out_paragraphs(NATURAL_ROWS), "natural text (Python's pydoc topics, held-out paragraphs)"
    return [], "random token ids"


def _parity_rows(model: Any, vocab: int, texts: list[str], samples: int | None) -> list[list[int]]:
    natural = texts == held_out_paragraphs(NATURAL_ROWS)
    n = max(int(samples or (NATURAL_ROWS if natural else 4)), 3)
    if texts:
        limit = NATURAL_TOKENS if natural else USER_TOKENS
        if model.contract.encoder is None:  # a decoder's prompt and the parity's new tokens share its context
            limit = min(limit, model.contract.max_context - PARITY_NEW_TOKENS)
        rows = [r[:limit] for r in model.encode(texts[:n]) if len(r) >= 2] if limit >= 2 else []
        if len(rows) >= 3:
            return rows
    rng = np.random.default_rng(0)
    lengths = [9, 7, 4] + [24] * (n - 3)  # different lengths: the batch is left-padded
    return [rng.integers(0, vocab, size=length).tolist() for length in lengths]


def prefix_share(want: np.ndarray, got: np.ndarray) -> float:
    """Share of tokens identical before the first divergence."""
    diff = np.nonzero(np.asarray(want) != np.asarray(got))[0]
    return (int(diff[0]) if len(diff) else len(want)) / max(len(want), 1)


def _teacher_forced(ref: Reference, model: Any, rows: list[list[int]]) -> tuple[float, float | None, float | None]:
    """Next-token top-1 agreement over every position of every row, and the perplexity of the rows'
    own next tokens under PyTorch and under the artifact (same tokens, so the change is paired).

    A position agrees when the artifact's pick is PyTorch's, or when PyTorch itself scores the two
    within TIE_REL of its logits' scale: a tie that float32 summation order alone may break either way
    (a random model over 600 natural-text positions has several; counting them made fp32 fail).
    Perplexity is None for a model that returns fewer positions than it reads (nanoGPT's GPT without
    targets returns the last one); top-1 is then over the positions both return."""
    agree = total = 0
    nll = np.zeros(2)
    every_position = True
    for r in rows:
        ids = np.asarray([r], dtype=np.int64)
        want, got = ref.full_logits(ids)[0], model.logits(ids)[0]
        n = min(len(want), len(got))
        want, got = want[-n:], got[-n:]
        every_position &= n == len(r)
        pick = got.argmax(-1)
        margin = want.max(-1) - want[np.arange(len(want)), pick]
        agree += int((margin <= TIE_REL * float(np.abs(want).max())).sum())
        total += len(want)
        if every_position:
            nll += [_nll(want, r), _nll(got, r)]
    if not every_position:
        return agree / max(total, 1), None, None
    scored = max(sum(len(r) - 1 for r in rows), 1)
    return agree / max(total, 1), float(np.exp(nll[0] / scored)), float(np.exp(nll[1] / scored))


def _nll(logits: np.ndarray, row: list[int]) -> float:
    """Summed negative log-likelihood of row[1:] given the logits of positions 0..n-2 (float64)."""
    x = np.asarray(logits[: len(row) - 1], np.float64)
    top = x.max(-1, keepdims=True)
    logz = (top + np.log(np.exp(x - top).sum(-1, keepdims=True)))[:, 0]
    return float((logz - x[np.arange(len(row) - 1), row[1:]]).sum())


def _chat_agreement(ref: Reference, model: Any) -> list[float]:
    """Per chat turn, 1.0 when the artifact's greedy answer equals PyTorch's up to PyTorch's eos (or over
    all PARITY_NEW_TOKENS), else 0.0; empty for a model without a chat template."""
    if model.tokenizer is None or model.contract.chat is None or model.is_encoder_decoder:
        return []
    eos = set(model.contract.eos_token_id)
    out = []
    for turn in CHAT_TURNS[:CHAT_PROMPTS]:
        ids = np.asarray(model.encode(model.chat_prompt([{"role": "user", "content": turn}]), special=False),
                         np.int64)
        want = ref.greedy(ids, np.ones_like(ids), PARITY_NEW_TOKENS)[0]
        # The mask given, as the reference gets it: with eos switched off, a mask inferred from the pad
        # id would hide the turn-ending tokens inside the prompt when pad is also eos (SmolLM2).
        got = model.generate(input_ids=ids, attention_mask=np.ones_like(ids), **PARITY_CALL)[0, ids.shape[1]:]
        end = next((i + 1 for i, t in enumerate(want) if int(t) in eos), len(want))
        out.append(float(np.array_equal(want[:end], got[:end])))
    return out


def torch_step(module: Any, input_names: list[str], output_names: list[str],
               feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call of an exported wrapper in PyTorch, with the graph's own input/output names."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names]
    with torch.inference_mode():
        out = module(*args)
    return {n: v.float().numpy() for n, v in zip(output_names, out)}


def generation_defaults(gen: Mapping[str, Any]) -> GenerationDefaults:
    """The model's generation config (transformers' GenerationConfig as a dict) as the contract holds it.

    A setting edgekit does not implement, with a value that changes decoding, is refused here at
    convert time, by name: an artifact must not silently decode differently from its source.
    """
    try:
        refuse_unimplemented(gen, "the model's generation config")
    except ConfigError as e:
        raise SourceError(e.what, found=e.found, fix="remove it from generation_config.json, or set its no-op value") \
            from None
    kept: dict[str, Any] = {}
    for f in dataclasses.fields(GenerationDefaults):
        v = gen.get(f.name)
        if v is None:
            continue
        if f.name == "bad_words_ids":
            v = tuple(tuple(int(t) for t in w) for w in v)
        elif f.name in ("suppress_tokens", "begin_suppress_tokens", "forced_eos_token_id"):
            v = tuple(int(t) for t in ([v] if isinstance(v, int) else v))
        kept[f.name] = v
    defaults = GenerationDefaults(**kept)
    try:
        GenerateOptions.make({}, defaults)  # the same checks a call makes, now
    except ConfigError as e:
        raise SourceError(f"the model's generation config is invalid: {e.what}", found=e.found,
                          fix="correct generation_config.json") from None
    return defaults


def chat_template(src: Source) -> ChatTemplate | None:
    """The tokenizer's chat template and the special tokens transformers renders it with, if any."""
    folder = src.hf_dir
    if folder is None or not any((folder / f).is_file() for f in ("tokenizer_config.json", "chat_template.jinja",
                                                                  "chat_template.json")):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
        template = tok.get_chat_template() if tok.chat_template is not None else None
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # no usable tokenizer config: no chat template either
    if not isinstance(template, str):
        return None
    special = {k: str(v) for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    return ChatTemplate(template, special)
