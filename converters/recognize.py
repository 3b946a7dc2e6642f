"""Export specs for speech recognizers: CTC models (HF `*ForCTC`, plain modules) and Whisper.

CTC: one graph `model`, audio front end in numpy (edgekit/audio.py), logits (batch, frames, vocab).
Whisper: graph `encoder` (log-mel -> cross-attention keys/values of every decoder layer, computed
once per utterance) and graph `decoder`, on the fixed-slot cache contract of edgekit/kvcache.py:
  inputs   input_ids (batch, tokens), attention_mask (batch, total) int64 over past + tokens,
           position_ids (batch, tokens) int64, past_{key,value}_i (batch, heads, past, dim),
           cross_{key,value}_i (batch, heads, encoder frames, dim)
  outputs  logits (batch, tokens, vocab), present_{key,value}_i: the NEW tokens' keys/values only
           (batch, heads, tokens, dim).
So the runtime preallocates the self-attention cache once per chunk, feeds it whole with the
unwritten slots masked, and keeps it and the cross K/V on the backend for the decode steps. The
greedy loop lives in edgekit/recognizer.py, torch-free.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, SourceError, UnsupportedError
from edgekit.converters.export import GraphExport
from edgekit.converters.parity import TOLERANCES, compare_outputs
from edgekit.converters.pipeline import ConvertOptions, Plan
from edgekit.converters.sources import Source

_PARITY_SECONDS = (1.3, 2.2, 3.1)  # lengths not traced with: the samples axis really is dynamic
# Token agreement (share of reference positions with the same id) a precision must reach.
_TOKEN_AGREEMENT = {"fp32": 1.0, "fp16": 0.9, "int8": 0.7, "int4": 0.5}


def plan(src: Source, opts: ConvertOptions) -> Plan:
    return SPECS[_family(src)](src, opts)


def _family(src: Source) -> str:
    if src.kind != "hf":
        return "ctc-module"
    arch = src.architecture
    for suffix, family in (("ForCTC", "hf-ctc"), ("WhisperForConditionalGeneration", "whisper")):
        if arch.endswith(suffix):
            return family
    raise SourceError(f"'{src.description}' is a {arch or 'model without architectures'}, not a speech recognizer",
                      fix="recognize supports *ForCTC folders, WhisperForConditionalGeneration folders and plain "
                          "nn.Module CTC models (task='recognize', labels=vocabulary)")


def synthetic_audio(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Speech-like test signal: formant-ish tones with a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * a
               for f, a in zip(rng.uniform(120, 3000, 5), rng.uniform(0.05, 0.3, 5)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    return (wave * envelope + rng.standard_normal(len(t)) * 0.02).astype(np.float32)


# ---------------------------------------------------------------- CTC


def _hf_ctc(src: Source, opts: ConvertOptions) -> Plan:
    import torch
    from transformers import AutoModelForCTC

    assert src.hf_dir is not None
    model = AutoModelForCTC.from_pretrained(src.hf_dir).eval()
    fe_path = src.hf_dir / "preprocessor_config.json"
    fe = json.loads(fe_path.read_text()) if fe_path.is_file() else {}
    vocab_path = src.hf_dir / "vocab.json"
    if not vocab_path.is_file():
        raise SourceError(f"'{src.hf_dir}' has no vocab.json", fix="save the processor/tokenizer beside the model")
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    if isinstance(next(iter(vocab.values())), dict):  # multi-lingual vocab: {lang: {token: id}}
        vocab = next(iter(vocab.values()))
    n = int(src.config.get("vocab_size", len(vocab)))
    labels = [""] * n
    for token, i in vocab.items():
        if int(i) < n:
            labels[int(i)] = token
    tok_cfg_path = src.hf_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    pre = {"kind": "ctc", "sample_rate": int(fe.get("sampling_rate", 16000)), "features": "waveform",
           "normalize": bool(fe.get("do_normalize", True)), "input": "input_values",
           "chunk_length_s": 20.0, "stride_length_s": 2.0}
    pre.update(src.preprocess or {})
    post = {"vocabulary": labels, "blank_id": int(src.config.get("pad_token_id") or 0),
            "word_delimiter": tok_cfg.get("word_delimiter_token", "|"),
            "skip": sorted({t for t in labels if t.startswith("<") and t.endswith(">") and t != "<unk>"}),
            "output": "logits"}
    wrapper = _Logits(model)
    x = torch.from_numpy(np.stack([synthetic_audio(1.0, pre["sample_rate"], s) for s in (0, 1)]))
    dims = ({0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("samples", min=1600, max=16000 * 120)},)
    graph = GraphExport("model", wrapper, (x,), ["input_values"], ["logits"], dims)
    return _ctc_plan(src.config.get("model_type", "hf-ctc"), graph, pre, post, opts)


def _ctc_module(src: Source, opts: ConvertOptions) -> Plan:
    import torch

    if not src.labels:
        raise ConfigError("a plain PyTorch CTC model needs its vocabulary", found="labels=None",
                          fix="pass labels=[blank, 'a', 'b', ..., ' '] (one string per output index)")
    user = dict(src.preprocess or {})
    pre: dict[str, Any] = {"kind": "ctc", "sample_rate": 16000, "features": "waveform", "normalize": False,
                           "n_fft": 400, "hop_length": 160, "n_mels": 80, "chunk_length_s": 20.0,
                           "stride_length_s": 2.0}
    post_keys = {"blank_id": 0, "word_delimiter": " "}
    unknown = set(user) - set(pre) - set(post_keys)
    if unknown:
        raise ConfigError(f"unknown preprocess keys {sorted(unknown)}", found=f"known keys {sorted(set(pre) | set(post_keys))}")
    post = {"vocabulary": list(src.labels), "blank_id": int(user.pop("blank_id", 0)),
            "word_delimiter": str(user.pop("word_delimiter", " ")), "skip": [], "output": "logits"}
    pre.update(user)
    from edgekit.recognizer import FRONT_ENDS

    if pre["features"] not in FRONT_ENDS:
        raise ConfigError(f"unknown features '{pre['features']}'", found=f"front ends {sorted(FRONT_ENDS)}")
    pre["input"] = "input_values" if pre["features"] == "waveform" else "input_features"
    x = torch.from_numpy(np.stack([ctc_features(synthetic_audio(1.0, pre["sample_rate"], s), pre) for s in (0, 1)]))
    with torch.no_grad():
        y = _Logits(src.module)(x)
    if y.ndim != 3 or y.shape[-1] != len(post["vocabulary"]):
        raise SourceError("a CTC model must return (batch, frames, vocabulary) logits",
                          found=f"output shape {list(y.shape)} for {len(post['vocabulary'])} labels")
    axis = "samples" if pre["features"] == "waveform" else "frames"
    lo = 1600 if axis == "samples" else 16
    dims = ({0: torch.export.Dim("batch", min=1, max=64), x.ndim - 1: torch.export.Dim(axis, min=lo, max=16000 * 120)},)
    # A .pt2 program had its dynamic dims fixed when it was exported.
    graph = GraphExport("model", _Logits(src.module), (x,), [pre["input"]], ["logits"],
                        dims if src.kind != "pt2" else None)
    return _ctc_plan("ctc-module", graph, pre, post, opts)


def ctc_features(wave: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """The numpy front end the runtime uses (edgekit.recognizer), so parity feeds both the same."""
    from edgekit.recognizer import ctc_features as runtime_features

    return runtime_features(wave, pre)


class _Logits:
    """Wrap a model so export sees one tensor in, one logits tensor out."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model.module() if isinstance(model, torch.export.ExportedProgram) else model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                # Exported with eager attention: under torch.export the SDPA path materializes an
                # all-true padding mask and selects over (batch, heads, frames, frames) in every
                # layer (17% of a 4-layer wav2vec2's onnxruntime time); eager computes the same
                # without it. Run in PyTorch (parity, bench --against) it keeps its own default.
                switch = torch.compiler.is_exporting() and hasattr(self.model, "set_attn_implementation")
                if switch:
                    default = self.model.config._attn_implementation
                    self.model.set_attn_implementation("eager")
                try:
                    out = self.model(x)
                finally:
                    if switch:
                        self.model.set_attn_implementation(default)
                out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)
                return out

        return Wrapper().eval()


def _ctc_plan(family: str, graph: GraphExport, pre: dict[str, Any], post: dict[str, Any], opts: ConvertOptions) -> Plan:
    state: dict[str, Any] = {}

    def calibration_feeds(calibration: Any) -> list[dict[str, dict[str, np.ndarray]]]:
        waves = _calibration_waves(calibration, pre["sample_rate"])
        state["calibration"] = waves
        return [{"model": {pre["input"]: ctc_features(w, pre)[None]}} for w in waves]

    def check_parity(plan_: Plan, model: Any, precision: str, samples: int | None = None) -> dict[str, Any]:
        # The user's audio (calibration) is the real distribution: prefer it to synthetic signals.
        if samples is None and "calibration" not in state and opts.calibration is not None:
            state["calibration"] = _calibration_waves(opts.calibration, pre["sample_rate"])
        waves = state.get("calibration") if samples is None else None
        rate = pre["sample_rate"]
        waves = waves or [synthetic_audio(_PARITY_SECONDS[i % 3], rate, i) for i in range(samples or 3)]
        return ctc_parity(graph.module, model, waves, precision)

    return Plan(family=family, graphs=[graph], preprocess=pre, postprocess=post, files={},
                calibration_feeds=calibration_feeds, check_parity=check_parity, default_int8="dynamic")


def ctc_parity(module: Any, model: Any, waves: list[np.ndarray], precision: str) -> dict[str, Any]:
    """Frame argmax ids of PyTorch vs the artifact on the same features, and WER of the texts."""
    import torch

    from edgekit.recognizer import ctc_decode, word_error_rate

    pre, post = model.manifest.preprocess, model.manifest.postprocess
    same, total, diffs, errors, words = 0, 0, [], 0.0, 0
    for w in waves:
        feats = ctc_features(w, pre)[None]
        with torch.inference_mode():
            ref = module(torch.from_numpy(feats)).float().numpy()
        got = model.runners["model"].run({pre["input"]: feats})["logits"].astype(np.float32)
        same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += ref.shape[1]
        diffs.append(compare_outputs(ref[0], got[0]))
        ref_text = ctc_decode(ref[0].argmax(-1), post)
        got_text = ctc_decode(got[0].argmax(-1), post)
        n = max(len(ref_text.split()), 1)
        errors += word_error_rate(ref_text, got_text) * n
        words += n
    agreement = same / max(total, 1)
    report = {"precision": precision, "samples": len(waves), "frame_agreement": agreement,
              "wer_vs_pytorch": errors / max(words, 1),
              "logits": {"max_abs": max(d["max_abs"] for d in diffs), "cosine": min(d["cosine"] for d in diffs)}}
    need = _TOKEN_AGREEMENT[precision]
    report["passed"] = agreement >= need
    report["summary"] = (f"CTC argmax ids agree on {agreement:.2%} of frames (need {need:.0%}); "
                         f"WER vs PyTorch {report['wer_vs_pytorch']:.3f}; logits max abs diff "
                         f"{report['logits']['max_abs']:.3g}")
    return report


def _calibration_waves(calibration: Any, rate: int) -> list[np.ndarray]:
    from pathlib import Path

    from edgekit.audio import load_audio
    from edgekit.errors import InputError

    if calibration is None:
        return []
    if isinstance(calibration, (str, Path)) and Path(calibration).is_dir():
        items: list[Any] = sorted(p for p in Path(calibration).iterdir()
                                  if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    else:
        items = [calibration] if isinstance(calibration, (str, Path)) else list(calibration)
    if not items:
        raise InputError("the calibration data is empty", fix="pass a few audio files or arrays")
    return [load_audio(x, None, rate) for x in items]


# ---------------------------------------------------------------- Whisper


def _whisper(src: Source, opts: ConvertOptions) -> Plan:
    import torch
    from transformers import WhisperForConditionalGeneration

    assert src.hf_dir is not None
    model = WhisperForConditionalGeneration.from_pretrained(src.hf_dir).eval()
    cfg, gen = model.config, model.generation_config
    layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    head_dim = cfg.d_model // heads
    fe_path = src.hf_dir / "preprocessor_config.json"
    fe = json.loads(fe_path.read_text()) if fe_path.is_file() else {}
    frames = 2 * cfg.max_source_positions  # conv2 has stride 2
    pre = {"kind": "whisper", "sample_rate": int(fe.get("sampling_rate", 16000)), "n_mels": cfg.num_mel_bins,
           "n_fft": int(fe.get("n_fft", 400)), "hop_length": int(fe.get("hop_length", 160)),
           "n_samples": int(fe.get("hop_length", 160)) * frames, "chunk_length_s": float(fe.get("chunk_length", 30)),
           "stride_length_s": 5.0}
    post = _whisper_post(src, cfg, gen, layers, heads, head_dim)
    enc_mod, dec_mod = _WhisperEncoder(model), _WhisperDecoder(model)
    batch = torch.export.Dim("batch", min=1, max=16)
    feats = torch.randn(2, cfg.num_mel_bins, frames)
    enc = GraphExport("encoder", enc_mod, (feats,), ["input_features"], post["cross_names"], ({0: batch},))
    with torch.no_grad():
        cross = enc_mod(feats)
    mtp = cfg.max_target_positions
    past_len, tokens = torch.export.Dim("past", min=0, max=mtp), torch.export.Dim("tokens", min=1, max=mtp)
    # The mask's length is its own dim: the graph reads it by index, so it is not tied to past + tokens.
    total = torch.export.Dim("total", min=1, max=2 * mtp)
    # Traced with 4 new tokens after 3 past ones, batch 2: no dim is 0 or 1 (torch.export would specialize).
    past = tuple(torch.randn(2, heads, 3, head_dim) for _ in range(2 * layers))
    ids = torch.randint(0, cfg.vocab_size, (2, 4))
    mask, pos = torch.ones(2, 7, dtype=torch.long), torch.arange(3, 7).expand(2, 4).contiguous()
    kv_dims = tuple({0: batch, 2: past_len} for _ in past) + tuple({0: batch} for _ in cross)
    dec = GraphExport("decoder", dec_mod, (ids, mask, pos, *past, *cross),
                      ["input_ids", "attention_mask", "position_ids", *post["past_names"], *post["cross_names"]],
                      ["logits", *post["present_names"]],
                      ({0: batch, 1: tokens}, {0: batch, 1: total}, {0: batch, 1: tokens}, kv_dims))  # varargs nest
    files = {"tokenizer.json": _whisper_tokenizer(src)}
    state: dict[str, Any] = {}

    def calibration_feeds(calibration: Any) -> list[dict[str, dict[str, np.ndarray]]]:
        raise UnsupportedError("static int8 (Q/DQ) calibration is not implemented for Whisper's two graphs",
                               fix="use int8_method='dynamic' (the default for Whisper on CPU)")

    def check_parity(plan_: Plan, model_: Any, precision: str, samples: int | None = None) -> dict[str, Any]:
        waves = [synthetic_audio(_PARITY_SECONDS[i % 3] * (1 + i), pre["sample_rate"], i) for i in range(samples or 2)]
        state.setdefault("hf", model)
        return whisper_parity(state["hf"], model_, waves, precision)

    return Plan(family="whisper", graphs=[enc, dec], preprocess=pre, postprocess=post, files=files,
                calibration_feeds=calibration_feeds, check_parity=check_parity, default_int8="dynamic")


def _whisper_post(src: Source, cfg: Any, gen: Any, layers: int, heads: int, head_dim: int) -> dict[str, Any]:
    no_ts = getattr(gen, "no_timestamps_token_id", None)
    if no_ts is None:
        raise SourceError(f"'{src.hf_dir}' has no generation_config.json with no_timestamps_token_id",
                          fix="save the model with its Whisper generation config (model.generation_config)")
    return {
        "tokenizer": "tokenizer.json", "layers": layers, "heads": heads, "head_dim": head_dim,
        # The decoder's cache contract (edgekit/kvcache.py); an artifact without it predates it.
        "cache": {"layout": "slots"},
        "past_names": [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")],
        "present_names": [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")],
        "cross_names": [f"cross_{kind}_{i}" for i in range(layers) for kind in ("key", "value")],
        "decoder_start_token_id": int(gen.decoder_start_token_id), "eos_token_id": int(gen.eos_token_id),
        "no_timestamps_token_id": int(no_ts), "is_multilingual": bool(getattr(gen, "is_multilingual", False)),
        "lang_to_id": {k: int(v) for k, v in (getattr(gen, "lang_to_id", None) or {}).items()},
        "task_to_id": {k: int(v) for k, v in (getattr(gen, "task_to_id", None) or {}).items()},
        "suppress_tokens": [int(t) for t in (gen.suppress_tokens or [])],
        "begin_suppress_tokens": [int(t) for t in (gen.begin_suppress_tokens or [])],
        "max_initial_timestamp_index": getattr(gen, "max_initial_timestamp_index", None),
        "max_length": int(min(gen.max_length or cfg.max_target_positions, cfg.max_target_positions)),
        "max_target_positions": int(cfg.max_target_positions), "time_precision": 0.02,
    }


def _whisper_tokenizer(src: Source) -> bytes:
    assert src.hf_dir is not None
    path = src.hf_dir / "tokenizer.json"
    if path.is_file():
        return path.read_bytes()
    from transformers import AutoTokenizer  # vocab.json + merges.txt only: build the fast one once, here

    return AutoTokenizer.from_pretrained(src.hf_dir).backend_tokenizer.to_str().encode("utf-8")


class _WhisperEncoder:
    """log-mel -> the cross-attention keys/values of every decoder layer (once per utterance)."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
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

        return Encoder().eval()


class _WhisperDecoder:
    """Decoder steps on the slot contract (module docstring); Hugging Face's weights and op order."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Decoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.dec = model.model.decoder
                self.proj = model.proj_out
                self.heads = model.config.decoder_attention_heads
                self.scale = self.dec.embed_scale

            def _split(self, x: torch.Tensor) -> torch.Tensor:
                b, t, d = x.shape
                return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

            def _attend(self, attn: Any, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
                q = self._split(attn.q_proj(x) * attn.scaling)  # scale before the matmul, as HF does
                w = torch.matmul(q, k.transpose(2, 3))
                if bias is not None:
                    w = w + bias
                o = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2)
                return attn.out_proj(o.reshape(x.shape[0], x.shape[1], -1))

            def _bias(self, mask: torch.Tensor, p: int, t: int, dtype: torch.dtype) -> torch.Tensor:
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
                for i, layer in enumerate(self.dec.layers):
                    x = layer.self_attn_layer_norm(h)
                    k_new = self._split(layer.self_attn.k_proj(x))
                    v_new = self._split(layer.self_attn.v_proj(x))
                    presents += [k_new, v_new]  # only the new tokens': the runtime writes them into its cache
                    k = torch.cat([past[2 * i], k_new], dim=2)
                    v = torch.cat([past[2 * i + 1], v_new], dim=2)
                    h = h + self._attend(layer.self_attn, x, k, v, bias)
                    h = h + self._attend(layer.encoder_attn, layer.encoder_attn_layer_norm(h), cross[2 * i],
                                         cross[2 * i + 1], None)
                    x = layer.final_layer_norm(h)
                    h = h + layer.fc2(layer.activation_fn(layer.fc1(x)))
                logits = self.proj(self.dec.layer_norm(h))
                return (logits, *presents)

        return Decoder().eval()


def whisper_parity(hf: Any, model: Any, waves: list[np.ndarray], precision: str,
                   max_new_tokens: int | None = None) -> dict[str, Any]:
    """Greedy tokens of `transformers` generate vs the artifact's loop, over the whole output."""
    import torch

    from edgekit.audio import whisper_log_mel
    from edgekit.recognizer import word_error_rate

    pre = model.manifest.preprocess
    same = total = 0
    exact, errors, words = 0, 0.0, 0
    for w in waves:
        feats = whisper_log_mel(w, pre["n_mels"], pre["n_samples"], pre["n_fft"], pre["hop_length"], pre["sample_rate"])
        kw = {"language": "en"} if "<|en|>" in model.manifest.postprocess["lang_to_id"] else {}
        ref = hf_whisper_tokens(hf, torch.from_numpy(feats)[None], max_new_tokens=max_new_tokens, **kw)
        got = model.greedy_tokens(feats, language=kw.get("language"), max_new_tokens=max_new_tokens)
        same += sum(int(a == b) for a, b in zip(ref, got))
        total += max(len(ref), len(got))
        exact += int(ref == got)
        r_text, g_text = model.decode_text(ref), model.decode_text(got)
        n = max(len(r_text.split()), 1)
        errors += word_error_rate(r_text, g_text) * n
        words += n
    agreement = same / max(total, 1)
    need = _TOKEN_AGREEMENT[precision]
    report = {"precision": precision, "samples": len(waves), "token_agreement": agreement,
              "identical_sequences": exact, "wer_vs_pytorch": errors / max(words, 1), "tolerances": TOLERANCES[precision]}
    report["passed"] = agreement >= need and (precision != "fp32" or exact == len(waves))
    report["summary"] = (f"greedy tokens vs transformers generate: {exact}/{len(waves)} sequences identical, "
                         f"{agreement:.2%} of positions agree (need {need:.0%}); WER vs PyTorch {report['wer_vs_pytorch']:.3f}")
    return report


def hf_whisper_tokens(hf: Any, features: Any, max_new_tokens: int | None = None, return_timestamps: bool = False,
                      **kw: Any) -> list[int]:
    """The raw greedy token stream of one `generate` call (prompt included), as a list."""
    import torch

    with torch.inference_mode():
        out = hf.generate(features, return_dict_in_generate=True, return_timestamps=return_timestamps,
                          max_new_tokens=max_new_tokens, **kw)
    if isinstance(out, dict) and "segments" in out:  # timestamps: the one call's raw output sits in the segments
        seqs = out["segments"][0][0]["result"]["sequences"] if out["segments"][0] else out["sequences"][0]
        return [int(t) for t in seqs]
    return [int(t) for t in out.sequences[0]]


SPECS: dict[str, Callable[[Source, ConvertOptions], Plan]] = {
    "ctc-module": _ctc_module,
    "hf-ctc": _hf_ctc,
    "whisper": _whisper,
}
