"""Speech encoder-decoders other than Whisper (Moonshine, Moonshine Streaming, SpeechT5 and
SpeechEncoderDecoderModel's wav2vec2-style encoders on the waveform, Speech2Text and SeamlessM4T on Kaldi
fbank features, Canary and Cohere ASR on Parakeet's filterbank and its frame mask): the encoder once per
chunk, then the encoder-decoders' slot-cache decoder (seq2seq_graphs.BartDecoder, seq2seq.decoder_graph).

    encoder  input_values (batch, samples) or input_features (batch, frames, mels) -> cross.{i}.key / .value
             (where the section names a `mask`: the frame mask in, the encoder's own `encoder_attention_mask` out)
    decoder  the slot-cache decoder with `encoder_attention_mask` and the cross keys/values resident
The loop is tasks/speech_seq2seq.py (Whisper's, from the one start token). Parity: the tokens of
`transformers` generate (greedy, and beam search) against the artifact's on synthetic audio, the
feature extractor's output against edgekit's front end.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar

import numpy as np
import torch

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, FRAMES, SAMPLES
from edgekit.contract.generate import ENCODER_MASK
from edgekit.contract.recognize import Chunking, SpeechSeq2SeqSection
from edgekit.converters.export import GraphExport
from edgekit.converters.kv_geometry import KVGeometry
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec
from edgekit.converters.specs.classify import hf_tokenizer_json
from edgekit.converters.specs.ctc import PARITY_SECONDS, PREPROCESS_MAX_ABS, synthetic_audio
from edgekit.converters.specs.whisper import GATES
from edgekit.errors import SourceError, UnsupportedError
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck
from edgekit.converters.token_tally import TokenTally
from edgekit.tasks.speech_seq2seq import encoder_feeds

BEAMS = 4
# Each family's front end: (its feature extractor's class, the encoder's input, SpeechSeq2SeqSection.features).
FRONT_ENDS: dict[str, tuple[str, str, str]] = {
    "moonshine": ("Wav2Vec2FeatureExtractor", "input_values", "waveform"),
    "speech_to_text": ("Speech2TextFeatureExtractor", "input_features", "speech2text-fbank"),
    "seamless_m4t": ("SeamlessM4TFeatureExtractor", "input_features", "kaldi-fbank"),
    "seamless_m4t_v2": ("SeamlessM4TFeatureExtractor", "input_features", "kaldi-fbank"),
    # SpeechEncoderDecoderModel: the checkpoints pair a wav2vec2-style encoder with a text decoder.
    "speech-encoder-decoder": ("Wav2Vec2FeatureExtractor", "input_values", "waveform"),
    "speecht5": ("SpeechT5FeatureExtractor", "input_values", "waveform"),
    "canary": ("ParakeetFeatureExtractor", "input_features", "parakeet-fbank"),
    # The waveform in whole 5 ms frames (HFSpeechSeq2Seq._frames); its processor's extractor is Moonshine's.
    "moonshine_streaming": ("Wav2Vec2FeatureExtractor", "input_values", "waveform"),
    # Parakeet's filterbank (with the frame mask its encoder reads), less the dither (DITHER_DROPPED).
    "cohere_asr": ("CohereAsrFeatureExtractor", "input_features", "parakeet-fbank"),
}
# Extractors whose `dither` (Gaussian noise of that amplitude added to the waveform, a training-style
# augmentation: CohereAsrFeatureExtractor's 1e-5, seeded from torch's generator by the waveform length)
# edgekit's front end leaves out, so that a transcript depends on the audio alone. The convert-time checks
# run the extractor with dither=0.0 as the reference (README, speech).
DITHER_DROPPED = frozenset({"CohereAsrFeatureExtractor"})
FRAME_MASK = "attention_mask"  # the extractor's mask of real frames or samples, named as the encoders name it
DEFAULT_NEW_TOKENS = 20  # transformers' generate without a max_length (its default config's 20, all new)
MAX_SECONDS = 64  # the longest input the encoder graph is declared for; recognize's chunks are half of it


class SpeechEncoder(torch.nn.Module):
    """The waveform (or fbank features) -> every decoder layer's cross keys and values; given the
    extractor's frame mask (Canary, Cohere ASR, Moonshine Streaming), the encoder's own frame mask after
    them (Canary's and Cohere ASR's FastConformers subsample it with the frames)."""

    def __init__(self, model: Any) -> None:
        from edgekit.converters.specs.seq2seq_graphs import Encoder, text_decoder

        super().__init__()
        self.inner = Encoder(model)
        dec = text_decoder(model)
        # SpeechEncoderDecoderModel maps the encoder's width to the decoder's where they differ; Cohere ASR's
        # and Moonshine Streaming's decoders project the encoder states themselves (`proj`, on every call),
        # once per chunk here.
        self.to_decoder = getattr(model, "enc_to_dec_proj", None) or getattr(dec, "proj", None)
        # Moonshine Streaming's decoder adds its learned table to the encoder states before `proj` (its
        # decoder's pos_emb is as wide as the encoder; Cohere ASR's pos_emb positions the tokens).
        streaming = model.config.model_type == "moonshine_streaming"
        self.source_positions = dec.pos_emb if streaming else None
        # ... and its encoder cuts the waveform into frames of 5 ms (frame_len samples).
        self.frame = int(model.get_encoder().embedder.frame_len) if streaming else 1

    def forward(self, input_values: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        from edgekit.converters.specs.seq2seq_graphs import _split, eager_while_exporting

        if self.frame > 1:  # whole frames (the recognizer pads to them): a length torch.export sees divides
            n = input_values.shape[1] // self.frame * self.frame
            input_values, mask = input_values[:, :n], None if mask is None else mask[:, :n]
        given = {} if mask is None else {"attention_mask": mask.bool()}  # as the extractors' masks
        with eager_while_exporting(self.inner.hf[0]):
            enc = self.inner.encoder(input_values, **given)
        h = enc.last_hidden_state
        if self.source_positions is not None:
            h = h + self.source_positions(torch.arange(h.shape[1], device=h.device))
        if self.to_decoder is not None:
            h = self.to_decoder(h)
        out: list[torch.Tensor] = []
        for k, v, heads in self.inner.proj:
            out += [_split(k(h), heads), _split(v(h), heads)]
        return tuple(out) if mask is None else (*out, enc.attention_mask.long())


class _SpeechT5Layer(torch.nn.Module):
    """A SpeechT5 decoder layer called as BartDecoder calls one: SpeechT5Attention checks that a mask is
    exactly (batch, 1, tokens, keys), so the (batch, 1, 1, source) cross bias is expanded over the tokens;
    the layer returns a tuple (hidden states, attention weights...), of which the hidden states are kept."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, h: torch.Tensor, encoder_attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        bias = encoder_attention_mask.expand(-1, -1, h.shape[1], -1)
        return self.layer(h, encoder_attention_mask=bias, **kwargs)[0]


class _TextDecoderView(torch.nn.Module):
    """SpeechT5's text decoder as BartDecoder reads a decoder: the embedding, its scale and the positions
    from the text pre-net, the layers from the wrapped decoder (which has no final norm: its layers are
    post-norm)."""

    def __init__(self, text: Any) -> None:
        super().__init__()
        self.embed_tokens = text.prenet.embed_tokens
        self.embed_positions = text.prenet.embed_positions
        self.embed_scale = float(text.prenet.embed_scale)
        self.layers = torch.nn.ModuleList(_SpeechT5Layer(layer) for layer in text.wrapped_decoder.layers)


class _CanaryDecoderView(torch.nn.Module):
    """Canary's decoder as BartDecoder reads a decoder: CanaryPositionalEmbedding's table divided by
    sqrt(width) as it divides each row it returns, added to the token embedding, then the embedding
    layer norm (BartDecoder's layernorm_embedding); pre-norm layers and the final norm are Canary's."""

    def __init__(self, dec: Any) -> None:
        super().__init__()
        self.embed_tokens = dec.embed_tokens
        table = dec.pos_emb.positional_embedding / math.sqrt(dec.pos_emb.channels)
        self.embed_positions = torch.nn.Embedding.from_pretrained(table, freeze=True)
        self.layernorm_embedding = dec.embedding_layernorm
        self.layers = dec.layers


def speech_decoder(model: Any, family: str) -> torch.nn.Module:
    """BartDecoder on the family's decoder. SpeechT5's sinusoidal positions are padding-aware as M2M100's
    (SpeechT5SinusoidalPositionalEmbedding: a token at p reads row p + pad + 1, a pad token the zero
    row), which BartDecoder.positions computes from the table's `weights` and `padding_idx`."""
    from edgekit.converters.specs.seq2seq_graphs import BartDecoder

    dec = BartDecoder(model)
    if family == "speecht5":
        dec.dec = _TextDecoderView(model.get_decoder())
        dec.scale = dec.dec.embed_scale
    elif family == "canary":
        dec.dec = _CanaryDecoderView(model.get_decoder())
    return dec


class HFSpeechSeq2Seq(ExportSpec):
    task: ClassVar[str] = "recognize"
    precisions = ("fp32", "fp16", "int8")
    default_int8 = "dynamic"
    static_int8 = False
    gates = GATES

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        from edgekit.converters.specs.audio_lm import FAMILIES  # audio-language models: their own spec

        return (not src.is_plain and task in (None, "recognize") and not src.architecture.startswith("Whisper")
                and src.architecture not in FAMILIES
                and src.architecture in auto_architectures("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForSpeechSeq2Seq

        from edgekit.converters.specs.seq2seq import _cross_geometry, decoder_graph

        assert src.hf_dir is not None
        self.family = str(src.config["model_type"])
        fe_path = src.hf_dir / "preprocessor_config.json"
        self.fe = json.loads(fe_path.read_text()) if fe_path.is_file() else {}
        _refuse_audio_lm(src)
        self.extractor, name, features = _front_end(src.description, self.family, self.fe)
        self.tokenizer_json = _tokenizer_json(src)
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        cfg = self.model.config.get_text_config(decoder=True)  # the model's own but a SpeechEncoderDecoder's
        _check_decoder(src.description, self.model)
        self.cache = KVGeometry(*_cross_geometry(self.model))
        self.positions = _decoder_positions(cfg)
        rate = int(self.fe.get("sampling_rate", 16000))
        self.section = self._section(rate, name, features)
        batch = torch.export.Dim(BATCH, min=1, max=16)
        self.encoder, cross = self._encoder_graph(SpeechEncoder(self.model).eval(), batch)
        frames = torch.export.Dim(FRAMES, min=1, max=rate * MAX_SECONDS)
        self.decoder = decoder_graph(speech_decoder(self.model, self.family).eval(), self.cache, int(cfg.vocab_size),
                                     cross, batch, frames, self.positions, [])

    def _encoder_graph(self, enc: SpeechEncoder, batch: Any) -> tuple[GraphExport, tuple[torch.Tensor, ...]]:
        """The encoder's graph, traced on two 1 s clips, and its cross keys/values (the decoder's trace)."""
        c = self.section
        rate = c.audio.sample_rate
        feeds = [encoder_feeds(self.front_end(synthetic_audio(1.0, rate, s))[None], c) for s in (0, 1)]
        xs = tuple(torch.from_numpy(np.concatenate([f[n] for f in feeds])) for n in feeds[0])
        if c.features == "waveform":
            axis = torch.export.Dim(SAMPLES, min=1600, max=rate * MAX_SECONDS)
        else:  # 10 ms frames
            axis = torch.export.Dim(FRAMES, min=8, max=100 * MAX_SECONDS)
        names, outs = [c.input], list(self.cache.cross())
        if c.mask:
            names, outs = [*names, c.mask], [*outs, ENCODER_MASK]
        graph = GraphExport("encoder", enc, xs, names, outs, tuple({0: batch, 1: axis} for _ in xs))
        with torch.no_grad():
            return graph, enc(*xs)[: len(self.cache.cross())]

    def front_end(self, wave: np.ndarray) -> np.ndarray:
        """edgekit's features of one waveform (tasks/speech_seq2seq.py), as the artifact computes them."""
        from edgekit.tasks.speech_seq2seq import features

        return features(wave, self.section)

    def graphs(self) -> list[GraphExport]:
        return [self.encoder, self.decoder]

    def files(self, calibration: Calibration | None) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json}

    def contract(self, graphs: dict[str, GraphSpec]) -> SpeechSeq2SeqSection:
        return self.section

    def _section(self, rate: int, name: str, features: str) -> SpeechSeq2SeqSection:
        cfg, gen = self.model.config, self.model.generation_config
        start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else cfg.decoder_start_token_id
        # A SpeechEncoderDecoderConfig may name eos only in its decoder's config, as transformers' generate reads it.
        eos = next((e for e in (gen.eos_token_id, getattr(cfg, "eos_token_id", None),
                                cfg.get_text_config(decoder=True).eos_token_id)
                    if e is not None), None)
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        if start is None or eos is None:
            raise SourceError(f"'{self.src.description}' names no decoder_start_token_id or eos_token_id",
                              fix="set both in its generation_config.json")
        return SpeechSeq2SeqSection(
            audio=Chunking(rate, float(MAX_SECONDS // 2), 2.0), features=features,  # type: ignore[arg-type]
            normalize=bool(self.fe.get("do_normalize", False)), input=name, tokenizer="tokenizer.json",
            **({} if features == "parakeet-fbank" else {"n_mels": int(self.fe.get("num_mel_bins", 80))}),
            stack=int(self.fe.get("stride", 2)) if features == "kaldi-fbank" else 1,
            cache=self.cache.state(), decoder_start_token_id=int(start), eos_token_id=int(eos),
            suppress_tokens=tuple(int(t) for t in (gen.suppress_tokens or [])),
            begin_suppress_tokens=tuple(int(t) for t in (gen.begin_suppress_tokens or [])),
            max_length=self._new_tokens(gen.max_length), max_target_positions=self.positions,
            forced_eos_token_id=None if gen.forced_eos_token_id is None else int(gen.forced_eos_token_id),
            lang_to_id={str(k): int(v) for k, v in (getattr(gen, "text_decoder_lang_to_code_id", None) or {}).items()},
            **(self._stft() if features == "parakeet-fbank" else {}),
            **(self._frames() if self.family == "moonshine_streaming" else {}))

    def _frames(self) -> dict[str, Any]:
        """Moonshine Streaming: whole 5 ms frames, as its processor pads the waveform; the encoder's sliding
        windows apply where the folder's extractor returns a mask (its encoder attends to every frame
        without one), so the artifact does what generate(**processor(audio)) does with this folder."""
        enc = self.model.config.encoder_config
        frame = int(round(enc.sample_rate * enc.frame_ms / 1000.0))
        mask = FRAME_MASK if self.fe.get("return_attention_mask", False) else None
        return dict(pad_to_multiple_of=frame, mask=mask)

    def _stft(self) -> dict[str, Any]:
        """parakeet-fbank's settings, as the folder's extractor holds them (its class's defaults where the
        saved config names none: ParakeetFeatureExtractor's 80 mels, CohereAsrFeatureExtractor's 128);
        its encoder reads the frame mask."""
        from transformers import AutoFeatureExtractor

        assert self.src.hf_dir is not None
        fe = AutoFeatureExtractor.from_pretrained(self.src.hf_dir)
        return dict(n_mels=int(fe.feature_size), n_fft=int(fe.n_fft), win_length=int(fe.win_length),
                    hop_length=int(fe.hop_length), preemphasis=float(fe.preemphasis or 0.0), mask=FRAME_MASK)

    def _new_tokens(self, max_length: int | None) -> int:
        """The tokens generate makes after the start token: a set max_length counts the start token;
        without one transformers makes DEFAULT_NEW_TOKENS (generation/utils.py _prepare_generated_length);
        either way within the decoder's positions."""
        new = DEFAULT_NEW_TOKENS if max_length is None else int(max_length) - 1
        return max(min(new, self.positions - 1), 1)

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None, max_new_tokens: int | None = None) -> ParityReport:
        """Greedy and beam-search tokens of `transformers` generate vs the artifact's loop."""
        rate = self.section.audio.sample_rate
        waves = [synthetic_audio(PARITY_SECONDS[i % 3], rate, i) for i in range(samples or 2)]
        table = self.section.lang_to_id  # SeamlessM4T: decoded into English where it can be, as users call it
        lang = "eng" if "eng" in table else min(table, default=None)
        tally = TokenTally()
        for beams in (1, BEAMS):
            for w in waves:
                feats = model.features(w)
                ref = hf_speech_tokens(self.model, encoder_feeds(feats[None], self.section), max_new_tokens, beams,
                                       lang)
                got = model.decode_tokens(feats, lang, max_new_tokens=max_new_tokens, num_beams=beams)
                tally.add(ref, got, model.decode_text)
        pre = self.preprocess_check(waves, model)
        measures = {**tally.measures(len(waves)), "preprocess_max_abs": pre.max_abs}
        report = self.report(measures, precision,
                             f"greedy and {BEAMS}-beam tokens vs transformers generate: {tally.summary()}")
        report = dataclasses.replace(report, end_to_end=EndToEnd(len(waves), preprocess=pre, reference=self.extractor))
        return report if pre.passed else report.failed("pre-processing differs from the source's feature extractor")

    def preprocess_check(self, waves: list[np.ndarray], model: Any) -> PreprocessCheck:
        """edgekit's front end (and frame mask) against the folder's feature extractor on each unpadded waveform."""
        from transformers import AutoFeatureExtractor

        assert self.src.hf_dir is not None
        no_dither = {"dither": 0.0} if self.extractor in DITHER_DROPPED else {}
        fe = AutoFeatureExtractor.from_pretrained(self.src.hf_dir, **no_dither)
        name, worst = self.section.input, 0.0
        c = self.section
        # Moonshine Streaming's processor pads to whole 5 ms frames (MoonshineStreamingProcessor's audio kwargs).
        pad = {"padding": True, "pad_to_multiple_of": c.pad_to_multiple_of} if c.pad_to_multiple_of > 1 else {}
        for w in waves:
            out = fe(w, sampling_rate=c.audio.sample_rate, return_tensors="np", **pad)
            feeds = encoder_feeds(model.features(w)[None], c)
            theirs, mine = np.asarray(out[name][0]), feeds[name][0]
            if theirs.shape != mine.shape:
                return PreprocessCheck(False, f"{name} shape {list(mine.shape)} vs {list(theirs.shape)} against "
                                              f"transformers {self.extractor}", max_abs=float("inf"))
            if c.mask and ((mask := feeds[c.mask][0]) != (want := np.asarray(out[c.mask][0]))).any():
                return PreprocessCheck(False, f"the frame mask differs from transformers {self.extractor}'s "
                                              f"({int(mask.sum())} vs {int(want.sum())} real frames)",
                                       max_abs=float("inf"))
            worst = max(worst, float(np.abs(mine - theirs).max()))
        limit = PREPROCESS_MAX_ABS[self.section.features]
        return PreprocessCheck(worst <= limit, f"max abs difference {worst:.3g} (limit {limit:g}) against "
                                               f"transformers {self.extractor}", max_abs=worst)


def _refuse_audio_lm(src: Source) -> None:
    """An audio-language model (its config names the audio placeholder token the encoder's rows replace)
    that converters/specs/audio_lm.py has no prompt and encoder port of: refused as what it is."""
    from edgekit.converters.specs.audio_lm import FAMILIES

    if any(k in src.config for k in ("audio_token_id", "audio_token_index")):
        raise UnsupportedError(f"'{src.description}' is a {src.config.get('model_type')} audio-language model (a speech "
                               "encoder and projector whose rows fill a causal LM's prompt), whose encoder and "
                               "transcription prompt edgekit has no port of yet",
                               found=f"architecture {src.architecture!r}",
                               fix=f"audio-language recognize converts {sorted(FAMILIES)}; speech encoder-decoders "
                                   f"{sorted(FRONT_ENDS)} and Whisper")


def _tokenizer_json(src: Source) -> bytes:
    """The folder's tokenizer as tokenizer.json (the runtime decodes with `tokenizers` only). SpeechT5's
    checkpoints ship a sentencepiece model only (SpeechT5Tokenizer, a SentencePieceBackend transformers
    has no `tokenizers` converter for): edgekit builds one, refused unless it decodes as the original."""
    from edgekit.converters.sentencepiece_tokenizer import decodes_alike, sentencepiece_json

    assert src.hf_dir is not None
    if (src.hf_dir / "tokenizer.json").is_file():
        return hf_tokenizer_json(src)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.hf_dir)
    if hasattr(tok, "backend_tokenizer"):
        return hf_tokenizer_json(src)
    if not hasattr(tok, "sp_model"):
        raise SourceError(f"'{src.description}' has no tokenizer.json, and its {type(tok).__name__} has no "
                          "tokenizers form", found=f"{type(tok).__name__} (neither fast nor sentencepiece)",
                          fix="save a tokenizers tokenizer.json with the same vocabulary beside the model")
    built = sentencepiece_json(tok)
    if problem := decodes_alike(tok, built):
        raise SourceError(f"edgekit's tokenizer.json for the {type(tok).__name__} of '{src.description}' decodes "
                          "differently", found=problem,
                          fix="save a tokenizers tokenizer.json with the same vocabulary beside the model")
    return built


def _decoder_positions(cfg: Any) -> int:
    """The decoder's position table: max_position_embeddings (Moonshine; Canary's decoder_config),
    max_target_positions (Speech2Text) or max_text_positions (SpeechT5)."""
    for c in (cfg, cfg.get_text_config()):
        for key in ("max_position_embeddings", "max_target_positions", "max_text_positions"):
            if getattr(c, key, None):
                return int(getattr(c, key))
    raise SourceError("the model's config names no decoder position table size",
                      found=f"{type(cfg).__name__} without max_position_embeddings / max_target_positions",
                      fix="set max_target_positions in its config.json")


def _front_end(description: str, family: str, fe: dict[str, Any]) -> tuple[str, str, str]:
    """(the feature extractor, the encoder's input, SpeechSeq2SeqSection.features) of a family edgekit
    converts with the extractor it has a numpy port of; else UnsupportedError, by name."""
    if family not in FRONT_ENDS:
        raise UnsupportedError(f"'{description}' is a {family} speech encoder-decoder, which edgekit cannot convert "
                               "yet", found=f"model_type {family!r}",
                               fix=f"recognize converts Whisper and the speech encoder-decoders {sorted(FRONT_ENDS)}")
    kind, name, features = FRONT_ENDS[family]
    extractor = str(fe.get("feature_extractor_type", kind))
    # Speech2Text: dithering is random, and edgekit's CMVN is the default one (means and variances).
    odd = {k: fe[k] for k in ("dither", "do_ceptral_normalize", "normalize_means", "normalize_vars")
           if k in fe and fe[k] != {"dither": 0.0}.get(k, True) and not (k == "dither" and kind in DITHER_DROPPED)}
    if extractor != kind or odd:
        raise UnsupportedError(f"edgekit cannot reproduce the {extractor} of this {family} model",
                               found=f"preprocessor_config.json feature_extractor_type {extractor!r} {odd or ''}",
                               fix=f"save the {kind} {family} checkpoints ship beside the model")
    return extractor, name, features


def _check_decoder(description: str, model: Any) -> None:
    """The decoder graph runs BART-style layers (seq2seq_graphs.BartDecoder: self-attention, then a
    cross-attention with k/v projections); a SpeechEncoderDecoderModel may pair its encoder with a decoder
    of another kind (BERT, GPT-2), which edgekit refuses by name."""
    from edgekit.converters.specs.seq2seq_graphs import text_decoder

    dec = text_decoder(model)
    layers = getattr(getattr(dec, "wrapped_decoder", dec), "layers", None)  # SpeechT5's sit under its pre-net's wrapper
    if layers is None or not all(hasattr(x, "encoder_attn") or hasattr(x, "cross_attention") for x in layers):
        kind = model.config.get_text_config(decoder=True).model_type
        raise UnsupportedError(f"'{description}' decodes with a {kind} decoder, whose layers edgekit's speech "
                               "decoder graph does not run", found=f"decoder model_type {kind!r}",
                               fix="a speech encoder-decoder with a BART-style decoder (bart, mbart, marian, ...)")


def hf_speech_tokens(hf: Any, feeds: dict[str, np.ndarray], max_new_tokens: int | None, num_beams: int,
                     tgt_lang: str | None = None) -> list[int]:
    """transformers' generate on one input (start token first), as a list: the encoder graph's feeds
    (tasks/speech_seq2seq.encoder_feeds), its frame mask where it takes one, as generate(**processor(audio))."""
    extra: dict[str, Any] = {} if tgt_lang is None else {"tgt_lang": tgt_lang}
    # the graph's input names are the model's own (input_features, attention_mask); masks as the extractors' (bool)
    name, *masks = feeds
    inputs = {k: torch.from_numpy(v).bool() if k in masks else torch.from_numpy(v) for k, v in feeds.items()}
    with torch.inference_mode():
        out = hf.generate(inputs.pop(name), max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                          **inputs, **extra)
    return [int(t) for t in out[0]]
