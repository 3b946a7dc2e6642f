"""Whisper (`WhisperForConditionalGeneration` folders): an encoder graph and a cached decoder graph.

    encoder  log-mel (batch, mels, frames) -> cross.{i}.key / .value of every decoder layer,
             computed once per 30 s chunk
    decoder  the slot-cache decoder of edgekit/contract/generate.py, the cross keys/values as
             extra inputs (resident on the backend for the chunk); with the model's alignment
             heads, also their cross-attention weights ("alignment", for word timestamps)
The greedy loop lives in edgekit/tasks/whisper.py, torch-free. Parity: greedy tokens of
`transformers` generate vs the artifact's loop over the whole output, on synthetic audio.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

import torch

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, TOTAL
from edgekit.contract.generate import STEP_INPUTS
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.contract.recognize import ALIGNMENT, Chunking, WhisperSection
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec, Gate, Limit
from edgekit.converters.specs.classify import hf_tokenizer_json
from edgekit.converters.specs.ctc import PARITY_SECONDS, synthetic_audio
from edgekit.errors import SourceError
from edgekit.parity_report import ParityReport
from edgekit.preprocess.audio import whisper_log_mel
from edgekit.converters.token_tally import TokenTally

# Share of token positions equal to transformers' (fp32: and every sequence identical).
GATES: dict[str, Gate] = {
    "fp32": {"token_agreement": Limit(min=1.0), "identical_share": Limit(min=1.0)},
    "fp16": {"token_agreement": Limit(min=0.9)},
    "int8": {"token_agreement": Limit(min=0.7)},
    "int4": {"token_agreement": Limit(min=0.5)},
}


class WhisperEncoder(torch.nn.Module):
    """log-mel -> the cross-attention keys/values of every decoder layer (once per utterance)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.layers = model.model.decoder.layers
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.encoder(input_features).last_hidden_state
        b, s, d = h.shape
        out = []
        for layer in self.layers:
            attn = layer.encoder_attn
            out.append(attn.k_proj(h).view(b, s, self.heads, d // self.heads).transpose(1, 2))
            out.append(attn.v_proj(h).view(b, s, self.heads, d // self.heads).transpose(1, 2))
        return tuple(out)


class WhisperDecoder(torch.nn.Module):
    """Decoder steps on the slot contract, with Hugging Face's weights and op order."""

    def __init__(self, model: Any, alignment_heads: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__()
        self.dec = model.model.decoder
        self.proj = model.proj_out
        self.heads = model.config.decoder_attention_heads
        self.scale = self.dec.embed_scale
        self.alignment_heads = alignment_heads

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def _attend(self, attn: Any, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention's output and its weights (batch, heads, tokens, keys), after the softmax."""
        q = self._split(attn.q_proj(x) * attn.scaling)  # scale before the matmul, as HF does
        w = torch.matmul(q, k.transpose(2, 3))
        if bias is not None:
            w = w + bias
        p = torch.softmax(w, dim=-1)
        o = torch.matmul(p, v).transpose(1, 2)
        return attn.out_proj(o.reshape(x.shape[0], x.shape[1], -1)), p

    @staticmethod
    def _bias(mask: torch.Tensor, p: int, t: int, dtype: torch.dtype) -> torch.Tensor:
        """(batch, 1, tokens, past + tokens): 0 where a key is visible, the dtype's min elsewhere.
        A past slot is visible iff its mask is 1; the new tokens see each other causally."""
        cols = torch.arange(p + t, device=mask.device)
        # index_select, not a slice: reading the mask by index keeps its length a free dim.
        seen = mask.index_select(1, cols) != 0
        causal = cols[None, :] <= (torch.arange(t, device=mask.device) + p)[:, None]
        allowed = seen[:, None, :] & causal[None]
        return torch.where(allowed, 0.0, torch.finfo(dtype).min)[:, None]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.dec.layers)
        past, cross = kv[: 2 * n], kv[2 * n :]
        h = self.dec.embed_tokens(input_ids) * self.scale + self.dec.embed_positions.weight[position_ids]
        bias = self._bias(attention_mask, past[0].shape[2], input_ids.shape[1], h.dtype)
        presents = []
        cross_weights = []
        for i, layer in enumerate(self.dec.layers):
            x = layer.self_attn_layer_norm(h)
            k_new = self._split(layer.self_attn.k_proj(x))
            v_new = self._split(layer.self_attn.v_proj(x))
            presents += [k_new, v_new]  # only the new tokens': the runtime writes them into its cache
            k = torch.cat([past[2 * i], k_new], dim=2)
            v = torch.cat([past[2 * i + 1], v_new], dim=2)
            h = h + self._attend(layer.self_attn, x, k, v, bias)[0]
            out, weights = self._attend(layer.encoder_attn, layer.encoder_attn_layer_norm(h), cross[2 * i],
                                        cross[2 * i + 1], None)
            h = h + out
            cross_weights.append(weights)
            x = layer.final_layer_norm(h)
            h = h + layer.fc2(layer.activation_fn(layer.fc1(x)))
        logits = self.proj(self.dec.layer_norm(h))
        if not self.alignment_heads:
            return (logits, *presents)
        # (batch, pairs, tokens, frames): what transformers stacks from output_attentions for its DTW
        alignment = torch.stack([cross_weights[layer][:, head] for layer, head in self.alignment_heads], dim=1)
        return (logits, *presents, alignment)


class Whisper(ExportSpec):
    task: ClassVar[str] = "recognize"
    precisions = ("fp32", "fp16", "int8")
    default_int8 = "blockwise"  # per-block activation scales: see converters/precision.py _int8_blockwise
    static_int8 = False  # no calibration path through the two graphs yet
    gates = GATES

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return not src.is_plain and task in (None, "recognize") and \
            src.architecture.endswith("WhisperForConditionalGeneration")

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import WhisperForConditionalGeneration

        assert src.hf_dir is not None
        self.family = "whisper"
        self.model = WhisperForConditionalGeneration.from_pretrained(src.hf_dir).eval()
        cfg = self.model.config
        heads = cfg.decoder_attention_heads
        self.cache = KVGeometry(cfg.decoder_layers, heads, cfg.d_model // heads)
        fe_path = src.hf_dir / "preprocessor_config.json"
        self.fe = json.loads(fe_path.read_text()) if fe_path.is_file() else {}
        self.frames = 2 * cfg.max_source_positions  # conv2 has stride 2
        self.section = self._section()
        enc_mod = WhisperEncoder(self.model).eval()
        dec_mod = WhisperDecoder(self.model, self.section.alignment_heads).eval()
        batch = torch.export.Dim(BATCH, min=1, max=16)
        feats = torch.randn(2, cfg.num_mel_bins, self.frames)
        cross_names = self.cache.cross()
        self.encoder = GraphExport("encoder", enc_mod, (feats,), ["input_features"], cross_names, ({0: batch},))
        with torch.no_grad():
            cross = enc_mod(feats)
        mtp = cfg.max_target_positions
        past_len, tokens = torch.export.Dim(PAST, min=0, max=mtp), torch.export.Dim(SEQUENCE, min=1, max=mtp)
        # The mask's length is its own dim: the graph reads it by index, so it is not tied to past + tokens.
        total = torch.export.Dim(TOTAL, min=1, max=2 * mtp)
        # Traced with 4 new tokens after 3 past ones, batch 2: no dim is 0 or 1 (torch.export would specialize).
        past = tuple(torch.randn(2, heads, 3, self.cache.head_dim) for _ in range(2 * cfg.decoder_layers))
        ids = torch.randint(0, cfg.vocab_size, (2, 4))
        mask, pos = torch.ones(2, 7, dtype=torch.long), torch.arange(3, 7).expand(2, 4).contiguous()
        kv_dims = tuple({0: batch, 2: past_len} for _ in past) + tuple({0: batch} for _ in cross)
        alignment = [ALIGNMENT] if self.section.alignment_heads else []  # only a model with alignment heads
        self.decoder = GraphExport("decoder", dec_mod, (ids, mask, pos, *past, *cross),
                                   [*STEP_INPUTS, *self.cache.past(), *cross_names],
                                   ["logits", *self.cache.present(), *alignment],
                                   ({0: batch, 1: tokens}, {0: batch, 1: total}, {0: batch, 1: tokens}, kv_dims))

    def graphs(self) -> list[GraphExport]:
        return [self.encoder, self.decoder]

    def files(self, calibration: Calibration | None) -> dict[str, bytes]:
        return {"tokenizer.json": hf_tokenizer_json(self.src)}

    def contract(self, graphs: dict[str, GraphSpec]) -> WhisperSection:
        return self.section

    def _section(self) -> WhisperSection:
        cfg, gen, fe = self.model.config, self.model.generation_config, self.fe
        no_ts = getattr(gen, "no_timestamps_token_id", None)
        if no_ts is None:
            raise SourceError(f"'{self.src.hf_dir}' has no generation_config.json with no_timestamps_token_id",
                              fix="save the model with its Whisper generation config (model.generation_config)")
        hop = int(fe.get("hop_length", 160))
        return WhisperSection(
            audio=Chunking(int(fe.get("sampling_rate", 16000)), float(fe.get("chunk_length", 30)), 5.0),
            n_mels=cfg.num_mel_bins, n_fft=int(fe.get("n_fft", 400)), hop_length=hop, n_samples=hop * self.frames,
            tokenizer="tokenizer.json", cache=self.cache.state(),
            decoder_start_token_id=int(gen.decoder_start_token_id), eos_token_id=int(gen.eos_token_id),
            no_timestamps_token_id=int(no_ts), is_multilingual=bool(getattr(gen, "is_multilingual", False)),
            lang_to_id={k: int(v) for k, v in (getattr(gen, "lang_to_id", None) or {}).items()},
            task_to_id={k: int(v) for k, v in (getattr(gen, "task_to_id", None) or {}).items()},
            suppress_tokens=tuple(int(t) for t in (gen.suppress_tokens or [])),
            begin_suppress_tokens=tuple(int(t) for t in (gen.begin_suppress_tokens or [])),
            max_initial_timestamp_index=getattr(gen, "max_initial_timestamp_index", None),
            max_length=int(min(gen.max_length or cfg.max_target_positions, cfg.max_target_positions)),
            max_target_positions=int(cfg.max_target_positions), time_precision=0.02,
            alignment_heads=self._alignment_heads(), median_filter_width=int(getattr(cfg, "median_filter_width", 7)),
            startofprev=_startofprev(gen))

    def _alignment_heads(self) -> tuple[tuple[int, int], ...]:
        cfg, heads = self.model.config, getattr(self.model.generation_config, "alignment_heads", None) or []
        pairs = tuple((int(layer), int(head)) for layer, head in heads)
        bad = [p for p in pairs if not (0 <= p[0] < cfg.decoder_layers and 0 <= p[1] < cfg.decoder_attention_heads)]
        if bad:
            raise SourceError(f"'{self.src.hf_dir}' names alignment heads outside the decoder",
                              found=f"{bad} of {cfg.decoder_layers} layers x {cfg.decoder_attention_heads} heads",
                              fix="fix generation_config.alignment_heads ([layer, head] pairs)")
        return pairs

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None, max_new_tokens: int | None = None) -> ParityReport:
        """Greedy tokens of `transformers` generate vs the artifact's loop, over the whole output."""
        rate = self.section.audio.sample_rate
        waves = [synthetic_audio(PARITY_SECONDS[i % 3] * (1 + i), rate, i) for i in range(samples or 2)]
        c = model.contract
        tally = TokenTally()
        for w in waves:
            feats = whisper_log_mel(w, c.n_mels, c.n_samples, c.n_fft, c.hop_length, rate)
            kw = {"language": "en"} if "<|en|>" in c.lang_to_id else {}
            ref = hf_whisper_tokens(self.model, torch.from_numpy(feats)[None], max_new_tokens=max_new_tokens, **kw)
            got = model.greedy_tokens(feats, language=kw.get("language"), max_new_tokens=max_new_tokens)
            tally.add(ref, got, model.decode_text)
        return self.report(tally.measures(len(waves)), precision,
                           f"greedy tokens vs transformers generate: {tally.summary()}")


def _startofprev(gen: Any) -> tuple[int, ...]:
    """<|startofprev|> as transformers' `_prepare_decoder_input_ids` finds it: the generation config's
    prev_sot_token_id, else the second-last suppressed token (where OpenAI's list keeps it), else none."""
    prev = getattr(gen, "prev_sot_token_id", None)
    if prev is None and gen.suppress_tokens is not None and len(gen.suppress_tokens) >= 2:
        prev = gen.suppress_tokens[-2]
    return () if prev is None else (int(prev),)


def hf_whisper_tokens(hf: Any, features: Any, max_new_tokens: int | None = None, return_timestamps: bool = False,
                      **kw: Any) -> list[int]:
    """The raw greedy token stream of one `generate` call (prompt included), as a list."""
    with torch.inference_mode():
        out = hf.generate(features, return_dict_in_generate=True, return_timestamps=return_timestamps,
                          max_new_tokens=max_new_tokens, **kw)
    if isinstance(out, dict) and "segments" in out:  # timestamps: the one call's raw output sits in the segments
        seqs = out["segments"][0][0]["result"]["sequences"] if out["segments"][0] else out["sequences"][0]
        return [int(t) for t in seqs]
    return [int(t) for t in out.sequences[0]]
