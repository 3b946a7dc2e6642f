"""Hugging Face encoder-decoders for `generate`: Marian, BART/mBART, M2M100/NLLB, Pegasus, T5/mT5/UMT5.

Two graphs (seq2seq_graphs.py): the encoder, once per input, and the slot-cache decoder with the
encoder's cross keys/values resident on the backend. The contract is the one `GenerateSection`
with its `encoder` part. Parity against `transformers.generate` on the same inputs: greedy tokens
(batch 1 and a padded batch of two lengths) and beam search (4 beams), step logits, and
teacher-forced next-token agreement; fp32 must give transformers' tokens exactly.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, SOURCE, TOTAL
from edgekit.contract.generate import ENCODER_MASK, STEP_INPUTS, EncoderPart, GenerateSection
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.spec import Calibration, ConvertOptions, Gate, Limit
from edgekit.converters.specs.classify import as_tokenizer
from edgekit.converters.specs.generate import (GATES, PARITY_NEW_TOKENS, GeneratorSpec, chat_template,
                                               generation_defaults, prefix_share, torch_step)
from edgekit.errors import SourceError
from edgekit.parity_report import ParityReport
from edgekit.tasks.generator import token_ids
from edgekit.tasks.prompts import right_pad

MAX_BATCH = 64
MAX_LEN = 4096
BEAMS = 4

# fp32 must also reproduce beam search; lower precisions report it.
SEQ2SEQ_GATES: dict[str, Gate] = {**GATES, "fp32": {**GATES["fp32"], "beam_agreement": Limit(min=1.0)}}

M2M_CODE = r"^__[a-z]{2,3}(_[A-Za-z]+)?__$"  # M2M100: "__zh__"
NLLB_CODE = r"^[a-z]{3}_[A-Z][a-z]{3}$"  # NLLB: "zho_Hans"
MBART_CODE = r"^[a-z]{2}_[A-Z]{2}$"  # mBART-50: "zh_CN"
MARIAN_CODE = r"^>>[a-z]{2,3}(_[A-Za-z]+)?<<$"  # multilingual Marian: ">>zho<<" starts the source


@dataclass(frozen=True)
class Family:
    """What differs between encoder-decoder families."""

    kind: str  # "bart": HF decoder layers with a cache | "t5": T5 blocks, relative position bias
    scale_output: Callable[[Any], bool] = lambda config: False  # hidden * d_model**-0.5 before the LM head
    languages: tuple[str, ...] = ()  # patterns of the tokenizer's language-code tokens
    language_prefix: bool = False  # the code starts the source (Marian), else it is the forced first token


FAMILIES: dict[str, Family] = {
    "marian": Family("bart", languages=(MARIAN_CODE,), language_prefix=True),
    "bart": Family("bart"),
    "mbart": Family("bart", languages=(MBART_CODE,)),
    "pegasus": Family("bart"),
    "m2m_100": Family("bart", languages=(M2M_CODE, NLLB_CODE)),  # NLLB is model_type m2m_100
    # T5 v1.0 scales before its tied head, v1.1 does not (transformers 5: config.scale_decoder_outputs).
    "t5": Family("t5", scale_output=lambda c: bool(getattr(c, "scale_decoder_outputs", True))),
    "mt5": Family("t5"),
    "umt5": Family("t5", scale_output=lambda c: bool(c.tie_word_embeddings)),
}


class HFSeq2Seq(GeneratorSpec):
    gates = SEQ2SEQ_GATES
    static_int8 = True  # offered so that both int8 methods can be measured; dynamic stays the default

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return (not src.is_plain and task in (None, "generate") and bool(src.config.get("is_encoder_decoder"))
                and src.architecture not in auto_architectures("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES")
                and (src.architecture.endswith("ForConditionalGeneration") or src.architecture.endswith("MTModel")))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForSeq2SeqLM

        assert src.hf_dir is not None
        self.family = str(src.config.get("model_type", ""))
        if self.family not in FAMILIES:
            raise SourceError(f"'{src.description}' is a {self.family} encoder-decoder, which edgekit cannot convert yet",
                              found=f"model_type {self.family!r}",
                              fix=f"generate converts encoder-decoders of types {sorted(FAMILIES)}")
        self.facts = FAMILIES[self.family]
        self.model = AutoModelForSeq2SeqLM.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        cfg = self.model.config
        proj = _cross_geometry(self.model)
        self.cache = KVGeometry(*proj)
        self.tokenizer = _tokenizer(src)
        from edgekit.converters.specs.seq2seq_graphs import BartDecoder, Encoder, T5Decoder

        enc = Encoder(self.model).eval()
        dec = (T5Decoder(self.model, self.facts.scale_output(cfg)) if self.facts.kind == "t5"
               else BartDecoder(self.model)).eval()
        self.graph_encoder, self.graph_decoder = _graphs(enc, dec, self.cache, int(cfg.vocab_size))
        self.positions = _positions(cfg)

    def graphs(self) -> list[GraphExport]:
        return [self.graph_encoder, self.graph_decoder]

    def files(self, calibration: Any) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer.to_str().encode("utf-8")} if self.tokenizer is not None else {}

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        cfg, gen = self.model.config, self.model.generation_config.to_dict()
        eos = token_ids(gen.get("eos_token_id", cfg.eos_token_id))
        vocab = int(cfg.vocab_size)
        pad = next((int(i) for i in (gen.get("pad_token_id", cfg.pad_token_id), *eos)
                    if i is not None and 0 <= int(i) < vocab), 0)
        start = gen.get("decoder_start_token_id", getattr(cfg, "decoder_start_token_id", None))
        if start is None:
            start = gen.get("bos_token_id", cfg.bos_token_id)
        if start is None:
            raise SourceError(f"'{self.src.description}' has no decoder_start_token_id (nor bos_token_id)",
                              fix="set decoder_start_token_id in its generation_config.json")
        languages = _languages(self.tokenizer, self.facts)
        return GenerateSection(
            tokenizer="tokenizer.json" if self.tokenizer is not None else None, add_special_tokens=True,
            eos_token_id=tuple(eos), bos_token_id=None, pad_token_id=pad, max_context=self.positions,
            cache=self.cache.state(), generation=generation_defaults(gen),
            encoder=EncoderPart(int(start), self.positions, languages, self.facts.language_prefix and bool(languages)),
            chat=chat_template(self.src))

    def calibrate(self, data: Any) -> Calibration:
        """Held-out texts for parity; for static int8 also graph feeds: each text's encoder input, and
        for transformers' own greedy translation of it the decoder's prompt step (empty past) and a
        decode step (the past filled), so that both phases' activation ranges are seen."""
        cal = super().calibrate(data)
        if self.options.precision != "int8" or self.options.int8_method != "static" or not cal.samples:
            return cal
        if self.tokenizer is None:
            raise SourceError("static int8 calibrates on texts, and this model has no tokenizer",
                              fix="use int8_method='dynamic'")
        pad = int(self.model.config.pad_token_id or 0)
        for i in range(0, min(len(cal.samples), 64), 8):
            rows = [e.ids[: self.positions] for e in self.tokenizer.encode_batch(cal.samples[i: i + 8])]
            ids, mask = right_pad(rows, pad)
            dec = self.hf_generate(ids, mask, min(16, self.positions - 1))
            enc = {"input_ids": ids, "attention_mask": mask}
            cross = torch_step(self.graph_encoder.module, self.graph_encoder.input_names,
                               self.graph_encoder.output_names, enc)
            b, t = dec.shape
            empty = {n: np.zeros((b, self.cache.heads, 0, self.cache.head_dim), np.float32) for n in self.cache.past()}
            prompt = {"input_ids": dec[:, :-1], "attention_mask": np.ones_like(dec[:, :-1]),
                      "position_ids": np.tile(np.arange(t - 1), (b, 1)), **empty, ENCODER_MASK: mask, **cross}
            out = torch_step(self.graph_decoder.module, self.graph_decoder.input_names,
                             self.graph_decoder.output_names, prompt)
            step = {**prompt, "input_ids": dec[:, -1:], "attention_mask": np.ones_like(dec),
                    "position_ids": np.full((b, 1), t - 1), **{p: out[q] for p, q in zip(self.cache.past(),
                                                                                          self.cache.present())}}
            cal.feeds += [{"encoder": enc, "decoder": prompt}, {"decoder": step}]
        return cal

    # ---------------------------------------------------------------- parity

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        texts = list(calibration.samples) if calibration is not None else []
        rows = _source_rows(model, int(self.model.config.vocab_size), texts, samples)
        pad, start = model.contract.pad_token_id, model.contract.encoder.decoder_start_token_id
        new = min(PARITY_NEW_TOKENS, model.max_context - 1)  # a small model's positions may end sooner
        greedy, beams = [], []
        for batch in (rows[:1], rows[1:3]):  # batch 1, then a right-padded batch of two lengths
            ids, mask = right_pad(batch, pad)
            want = self.hf_generate(ids, mask, new)
            got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, eos_token_id=[])
            greedy += [prefix_share(w, g) for w, g in zip(want, got)]
        ids, mask = right_pad(rows[:2], pad)
        want = self.hf_generate(ids, mask, new // 2, num_beams=BEAMS)
        got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new // 2, eos_token_id=[],
                             num_beams=BEAMS)
        beams += [prefix_share(w, g) for w, g in zip(want, got)]
        step_err, scale = self._step_error(model, ids, mask, start)
        top1 = self._top1(model, rows, start)
        measures = {
            "samples": len(rows), "new_tokens": new, "greedy_agreement": float(np.mean(greedy)),
            "greedy_rows": [round(g, 4) for g in greedy], "beam_agreement": float(np.mean(beams)),
            "logits_max_abs": step_err, "logits_max_rel": step_err / scale, "top1_agreement": top1,
            "held_out": "texts" if texts else "random token ids",
        }
        return self.report(measures, precision, f"greedy agreement {measures['greedy_agreement']:.3f}, beam "
                                                f"({BEAMS}) agreement {measures['beam_agreement']:.3f}, top-1 "
                                                f"{top1:.3f}, step logits max abs diff {step_err:.3g}")

    def hf_generate(self, ids: np.ndarray, mask: np.ndarray, new: int, **kw: Any) -> np.ndarray:
        """transformers' sequences (decoder start token first), every one of `new` tokens (no eos)."""
        with torch.no_grad():
            out = self.model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                          max_new_tokens=new, do_sample=False, eos_token_id=None, **kw)
        return out.numpy()

    def _step_error(self, model: Any, ids: np.ndarray, mask: np.ndarray, start: int) -> tuple[float, float]:
        """Max |logits| difference of the decoder's prompt step and one decode step, fed identically."""
        enc_in = {"input_ids": ids, "attention_mask": mask}
        cross = torch_step(self.graph_encoder.module, self.graph_encoder.input_names, self.graph_encoder.output_names,
                           enc_in)
        b = ids.shape[0]
        empty = {n: np.zeros((b, self.cache.heads, 0, self.cache.head_dim), np.float32) for n in self.cache.past()}
        first = {"input_ids": np.full((b, 1), start, np.int64), "attention_mask": np.ones((b, 1), np.int64),
                 "position_ids": np.zeros((b, 1), np.int64), **empty, ENCODER_MASK: mask, **cross}
        step = lambda feeds: torch_step(self.graph_decoder.module, self.graph_decoder.input_names,  # noqa: E731
                                        self.graph_decoder.output_names, feeds)
        out = step(first)
        nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        second = {**first, "input_ids": nxt, "attention_mask": np.ones((b, 2), np.int64),
                  "position_ids": np.ones((b, 1), np.int64),
                  **{p: out[q] for p, q in zip(self.cache.past(), self.cache.present())}}
        err, scale = 0.0, 1e-12
        for feeds in (first, second):
            want = step(feeds)["logits"]
            got = model.runners["decoder"].run(feeds, outputs=["logits"])["logits"].astype(np.float32)
            err, scale = max(err, float(np.abs(want - got).max())), max(scale, float(np.abs(want).max()))
        return err, scale

    def _top1(self, model: Any, rows: list[list[int]], start: int) -> float:
        """Teacher-forced next-token agreement over transformers' own greedy continuation of each row."""
        agree = total = 0
        for r in rows:
            ids = np.asarray([r], np.int64)
            dec = self.hf_generate(ids, np.ones_like(ids), min(PARITY_NEW_TOKENS, model.max_context - 1) // 2)
            with torch.no_grad():
                want = self.model(input_ids=torch.from_numpy(ids), decoder_input_ids=torch.from_numpy(dec)).logits
            got = model.logits(ids, dec)
            agree += int((want[0].argmax(-1).numpy() == got[0].argmax(-1)).sum())
            total += dec.shape[1]
        return agree / max(total, 1)


def _cross_geometry(model: Any) -> tuple[int, int, int]:
    """(decoder layers, heads, head size): one probe of the cross projections' output."""
    from edgekit.converters.specs.seq2seq_graphs import cross_projections

    proj = cross_projections(model)
    k, _, heads = proj[0]
    width = int(k.out_features)
    if width % heads:
        raise SourceError(f"the cross-attention width {width} does not split into {heads} heads")
    return len(proj), int(heads), width // int(heads)


def _positions(cfg: Any) -> int:
    """The longest decoder (and encoder) sequence: learned/sinusoidal tables bound it; T5 has none."""
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 512
    return int(min(n, MAX_LEN))


def _graphs(enc: Any, dec: Any, cache: KVGeometry, vocab: int) -> tuple[GraphExport, GraphExport]:
    # Traced at batch 2, source 5, 4 new tokens after 3 past ones: no dim is 0 or 1, none equal
    # (torch.export would specialize or tie them); past length 0 runs through the same graph.
    b, s = 2, 5
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, vocab, (b, s), generator=gen)
    src_mask = torch.ones((b, s), dtype=torch.long)
    batch, source = Dim(BATCH, min=1, max=MAX_BATCH), Dim(SOURCE, min=1, max=MAX_LEN)
    cross_names = cache.cross()
    # Static int8 keeps every Add in float: the attention masks are added as the dtype's min, and
    # an Add's calibrated range [min, scores] overflows uint8-asymmetric scales (the numbers
    # example: 0.2% held-out exact match with them quantized, 99.8% without; dynamic int8 99.9%).
    keep = ["Add"]
    encoder = GraphExport("encoder", enc, (src, src_mask), ["input_ids", "attention_mask"], cross_names,
                          ({0: batch, 1: source}, {0: batch, 1: source}), quant_exclude_ops=keep)
    with torch.no_grad():
        cross = enc(src, src_mask)
    return encoder, decoder_graph(dec, cache, vocab, cross, batch, source, MAX_LEN, keep)


def decoder_graph(dec: Any, cache: KVGeometry, vocab: int, cross: tuple[torch.Tensor, ...], batch: Any,
                  source: Any, positions: int, keep: list[str]) -> GraphExport:
    """The slot-cache decoder over an encoder's cross keys/values `cross` (batch 2, `source` frames or
    tokens long), traced with 4 new tokens after 3 past ones: no dim 0 or 1, none equal to another."""
    b, t, p = 2, 4, 3
    gen = torch.Generator().manual_seed(1)
    seq, past_len, total = Dim(SEQUENCE, min=1, max=positions), Dim(PAST, min=0, max=positions), \
        Dim(TOTAL, min=1, max=2 * positions)
    ids = torch.randint(4, vocab, (b, t), generator=gen)
    mask, pos = torch.ones((b, p + t), dtype=torch.long), torch.arange(p, p + t).expand(b, t).contiguous()
    past = tuple(torch.randn(b, cache.heads, p, cache.head_dim, generator=gen) for _ in cache.past())
    src_mask = torch.ones((b, cross[0].shape[2]), dtype=torch.long)
    rest = tuple({0: batch, 2: past_len} for _ in past) + ({0: batch, 1: source},) + \
        tuple({0: batch, 2: source} for _ in cross)
    return GraphExport("decoder", dec, (ids, mask, pos, *past, src_mask, *cross),
                       [*STEP_INPUTS, *cache.past(), ENCODER_MASK, *cache.cross()], ["logits", *cache.present()],
                       ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, rest), quant_exclude_ops=keep)


def _tokenizer(src: Source) -> Any:
    """The `tokenizers.Tokenizer`: the one given, the folder's tokenizer.json, or built by transformers."""
    assert src.hf_dir is not None
    if src.tokenizer is not None:
        return as_tokenizer(src.tokenizer)
    from tokenizers import Tokenizer

    path = src.hf_dir / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    vocab_files = ("vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "source.spm")
    if not any((src.hf_dir / f).is_file() for f in vocab_files):
        return None  # weights only: the artifact takes and returns ids
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.hf_dir)
    except Exception as e:  # transformers raises many types (a missing sentencepiece, ...)
        raise SourceError(f"cannot build the tokenizer of '{src.description}': {type(e).__name__}: {e}"[:400],
                          fix="save a tokenizer.json beside the model, or pass tokenizer=") from None
    if not hasattr(tok, "backend_tokenizer"):  # Marian's two SentencePiece models have no fast form
        raise SourceError(f"the {type(tok).__name__} of '{src.description}' has no tokenizer.json form",
                          fix="save a tokenizer.json (the tokenizers library) beside the model, or pass tokenizer=")
    return tok.backend_tokenizer


def _languages(tok: Any, facts: Family) -> dict[str, int]:
    if tok is None or not facts.languages:
        return {}
    pats = [re.compile(p) for p in facts.languages]
    return {t: int(i) for t, i in sorted(tok.get_vocab(with_added_tokens=True).items())
            if any(p.match(t) for p in pats)}


def _source_rows(model: Any, vocab: int, texts: list[str], samples: int | None) -> list[list[int]]:
    n = max(int(samples or 4), 3)
    if texts and model.tokenizer is not None:
        rows = [r[:64] for r in model.encode(texts[:n]) if len(r) >= 2]
        if len(rows) >= 3:
            return rows
    rng = np.random.default_rng(0)
    lengths = [9, 7, 4] + [16] * (n - 3)  # different lengths: the batch is padded
    # Ids from 4 up: clear of the usual special tokens (pad, eos, unk, bos) inside a source.
    return [rng.integers(min(4, vocab - 1), vocab, size=length).tolist() for length in lengths]
