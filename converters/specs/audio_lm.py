"""Audio-language models in recognize (Voxtral, Qwen3-ASR, VibeVoice-ASR): a speech encoder + projector whose rows
replace the audio placeholder tokens of a causal LM's transcription prompt; the LM then writes the
transcript.

    audio  input_features (chunks, n_mels, frames) -> audio_features (rows, hidden): Voxtral's
           get_audio_features (encoder, frame stacking, projector), every 30 s window at once;
           Qwen3-ASR's windowed encoder rewritten traceable (converters/audio_lm_encoders.py), with
           its row mask; VibeVoice-ASR's two convolutional tokenizer encoders + projector on the
           waveform (converters/audio_lm_encoders.VibeVoiceAsrAudio), without the random noise its
           acoustic latents get by default: the path of transformers' sample=False, which parity runs
    model  the causal LM's slot-cache decoder with the rows merged at the placeholder tokens
           (vision_lm.MediaKVDecoder: the image-text mechanism, fed audio rows)
The loop is tasks/audio_lm.py. The prompt: Voxtral's transcription request from its tokenizer's
control tokens (mistral-common writes it; transformers' VoxtralProcessor needs that package), Qwen3-ASR's
from its processor's apply_transcription_request (chat template), per language; VibeVoice-ASR's
also, its request naming the recording's length (a text format the runtime fills and tokenizes). Parity: the greedy
tokens of transformers' generate on the family's inputs against the artifact's from the raw waveform,
and edgekit's numpy log-mel against the folder's feature extractor.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.audio_lm import AUDIO_CHUNKS, AUDIO_FEATURES, AUDIO_ROWS, ROW_MASK, AudioLMSection
from edgekit.contract.generate import STEP_INPUTS
from edgekit.contract.recognize import Chunking
from edgekit.contract.state import AttentionKV
from edgekit.converters.audio_lm_encoders import Qwen3AsrWindows, VibeVoiceAsrAudio
from edgekit.converters.audio_lm_realtime import (MIMI_MIN_FRAMES, STREAMING_PAD, AddedRowsDecoder, KyutaiText, MimiRows,
                                                  RealtimeEncoder, RealtimeText, added_example, kyutai_inputs,
                                                  realtime_inputs, streaming)
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec
from edgekit.converters.specs.causal_lm import MAX_LEN, decoder_state, depends_on_slots
from edgekit.converters.specs.classify import hf_tokenizer_json
from edgekit.converters.specs.ctc import PARITY_SECONDS, PREPROCESS_MAX_ABS, synthetic_audio
from edgekit.converters.specs.vision_lm import MediaKVDecoder, _dynamic_shapes, _example
from edgekit.converters.specs.whisper import GATES
from edgekit.errors import SourceError, UnsupportedError
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck
from edgekit.tasks.audio_lm import conv_rows
from edgekit.converters.token_tally import TokenTally

PARITY_NEW_TOKENS = 32  # new tokens compared per waveform (eos may end both sooner)


@dataclass(frozen=True)
class Family:
    """What differs per family: the front end, the feature extractor it reproduces, and the prompt.
    `prefix`/`audio`/`suffix` name tokens (Voxtral: mistral-common's encode_transcription,
    [BOS][INST][BEGIN_AUDIO] one [AUDIO] per row [/INST] "lang:xx"? [TRANSCRIBE]); empty `audio`: the
    folder's processor writes the prompt (apply_transcription_request)."""

    front_end: str
    extractor: str
    prefix: tuple[str, ...] = ()
    audio: str = ""
    suffix: tuple[str, ...] = ()
    language_format: str = ""
    language_before: int = 1
    text_after: str = ""
    transcript: str = "text"


FAMILIES: dict[str, Family] = {
    "VoxtralForConditionalGeneration": Family("whisper-windows", "WhisperFeatureExtractor", ("<s>", "[INST]", "[BEGIN_AUDIO]"),
                                              "[AUDIO]", ("[/INST]", "[TRANSCRIBE]"), "lang:{}", 1),
    "Qwen3ASRForConditionalGeneration": Family("qwen3-asr", "Qwen3ASRFeatureExtractor", text_after="<asr_text>"),
    # converters/audio_lm_realtime.py: [BOS] + [STREAMING_PAD] x (left pad + delay), rows added per position.
    "VoxtralRealtimeForConditionalGeneration": Family("voxtral-realtime", "VoxtralRealtimeFeatureExtractor", ("<s>",),
                                                      STREAMING_PAD),
    # converters/audio_lm_realtime.py: Mimi's codes of each frame summed with the text token, from [BOS].
    "KyutaiSpeechToTextForConditionalGeneration": Family("mimi", "KyutaiSpeechToTextFeatureExtractor"),
    "VibeVoiceAsrForConditionalGeneration": Family("waveform", "VibeVoiceAcousticTokenizerFeatureExtractor",
                                                   language_before=0, transcript="json-segments"),
}


class AudioEncoder(torch.nn.Module):
    """input_features (windows, mels, frames) -> (rows, hidden) float: the family's get_audio_features."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        rows = self.model.get_audio_features(input_features, return_dict=True).pooler_output
        return rows.reshape(-1, rows.shape[-1]).float()


def _passes_keywords(model: Any) -> bool:
    """VibeVoice-ASR's forward names no position_ids, so transformers' generate passes none and its LM
    counts positions from the cache length: the tokens so far, one unpadded recording, which are the
    positions the runtime feeds. Its forward hands keywords on to the LM, so the graph passes them
    explicitly, and the slot cache's empty slots do not count as tokens."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())


class NoRows(torch.nn.Module):
    """A media decoder called as a text one (ids, mask, positions, *past), with no audio rows: the form
    depends_on_slots probes."""

    def __init__(self, media: MediaKVDecoder) -> None:
        super().__init__()
        self.media, self.model = media, SimpleNamespace(config=media.model.config.get_text_config())

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, *past: torch.Tensor) -> Any:
        hidden = int(self.media.model.get_input_embeddings().embedding_dim)
        return self.media(ids, mask, pos, torch.zeros(0, hidden), *past)


class HFAudioLM(ExportSpec):
    task: ClassVar[str] = "recognize"
    precisions = ("fp32", "fp16", "int8")
    default_int8 = "dynamic"
    static_int8 = False
    gates = GATES

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return not src.is_plain and task in (None, "recognize") and src.architecture in FAMILIES

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        import transformers

        assert src.hf_dir is not None
        self.family = str(src.config["model_type"])
        self.kind = FAMILIES[src.architecture]
        self.fe = _extractor_config(src.hf_dir)
        found = self.fe.get("feature_extractor_type")
        if found != self.kind.extractor or float(self.fe.get("dither", 0.0)) != 0.0:  # dithering is random
            raise UnsupportedError(f"edgekit reads this {self.family} model's audio with the {self.kind.extractor} "
                                   "its checkpoints ship only", found=f"feature_extractor_type {found!r}, dither "
                                                                      f"{self.fe.get('dither', 0.0)}",
                                   fix=f"save the {self.kind.extractor} of the checkpoint beside the model")
        self.tokenizer_json = self._tokenizer_json()
        self.model = getattr(transformers, src.architecture).from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.lm = self.model  # Voxtral Realtime: its language model alone, delay-conditioned
        if self.kind.front_end == "voxtral-realtime":
            self.lm = RealtimeText(self.model, streaming(src.hf_dir, int(self.fe.get("hop_length", 160))).delay_tokens)
        elif self.kind.front_end == "mimi":
            self.lm = KyutaiText(self.model)
        self.cache = decoder_state(self.lm)
        if not all(isinstance(e, AttentionKV) for e in self.cache.entries):
            raise UnsupportedError(f"'{self.family}' keeps a decoder state other than keys/values",
                                   fix="audio-language recognize supports key/value decoders")
        self.section = self._section()
        s = self.section
        names = ([*STEP_INPUTS, AUDIO_FEATURES, *self.cache.past()], ["logits", *self.cache.present()])
        kv = tuple(e.layer for e in self.cache.entries)
        if s.added:
            shapes = _dynamic_shapes(len(self.cache.past()))
            self.decoder = GraphExport("model", AddedRowsDecoder(self.lm, kv), added_example(self.cache, s.hidden),
                                       *names, (*shapes[:3], shapes[0], *shapes[4:]))  # the rows: (batch, seq)
        else:
            wrapper = MediaKVDecoder(self.model, kv, s.audio_token_id)
            wrapper.positions = wrapper.positions or _passes_keywords(self.model)
            if depends_on_slots(NoRows(wrapper), self.cache):
                raise UnsupportedError(f"the {self.family} decoder's step depends on where the cache's empty slots sit",
                                       found="positions counted from the cache length",
                                       fix="audio-language recognize supports decoders that take position_ids")
            self.decoder = GraphExport("model", wrapper, _example(self.model, self.cache, s.hidden, s.audio_token_id),
                                       *names, _dynamic_shapes(len(self.cache.past()), AUDIO_ROWS))
        self.audio = self._audio_graph()

    def _encoder(self) -> torch.nn.Module:
        encoders = {"whisper-windows": AudioEncoder, "qwen3-asr": Qwen3AsrWindows, "voxtral-realtime": RealtimeEncoder,
                    "mimi": MimiRows, "waveform": VibeVoiceAsrAudio}
        return encoders[self.kind.front_end](self.model).eval()

    def _audio_graph(self) -> GraphExport:
        # Two chunks traced (a dim of 1 would be specialised); up to the most one prompt holds.
        s = self.section
        least = MIMI_MIN_FRAMES if s.front_end == "mimi" else 1
        chunks = Dim(AUDIO_CHUNKS, min=least, max=max(least + 1, s.max_chunks))
        x = torch.randn(max(2, least), s.n_mels, s.chunk_frames)
        if s.front_end != "qwen3-asr":
            return GraphExport("audio", self._encoder(), (x,), ["input_features"], [AUDIO_FEATURES], ({0: chunks},))
        mask = torch.ones(2, s.rows_per_chunk, dtype=torch.long)
        mask[1, s.rows_per_chunk // 2:] = 0  # a last chunk part padding: the mask traced as it runs
        return GraphExport("audio", self._encoder(), (x, mask), ["input_features", ROW_MASK], [AUDIO_FEATURES],
                           ({0: chunks}, {0: chunks}))

    def _section(self) -> AudioLMSection:
        if self.kind.front_end == "voxtral-realtime":
            return self._realtime_section()
        if self.kind.front_end == "mimi":
            return self._kyutai_section()
        cfg, gen, fe, kind = self.model.config, self.model.generation_config, self.fe, self.kind
        prefix, audio_id, suffix, languages = self._prompt()
        named = getattr(cfg, "audio_token_id", None)
        if named is not None and named != audio_id:
            raise SourceError(f"the prompt's audio token is id {audio_id}, the model's config says {named}",
                              fix="save the tokenizer and model of one checkpoint together")
        hop, rate, mels = int(fe.get("hop_length", 160)), int(fe.get("sampling_rate", 16000)), int(fe.get("feature_size", 80))
        if kind.front_end == "whisper-windows":
            frames = int(fe.get("nb_max_frames", 3000))
            with torch.no_grad():
                rows = int(self._encoder()(torch.zeros(1, mels, frames)).shape[0])
        elif kind.front_end == "waveform":  # one row per hop of samples; a frame is a sample
            frames, rows, hop, mels = self._hop(), 1, 1, 1
        else:  # Qwen3-ASR: chunks of 2 * n_window frames, the three convolutions' rows each
            frames = 2 * int(self.model.config.audio_config.n_window)
            rows = conv_rows(frames)
            if int(fe.get("n_window", frames // 2)) * 2 != frames:
                raise SourceError("the feature extractor's n_window differs from the encoder's",
                                  found=f"{fe.get('n_window')} vs {frames // 2}", fix="save the checkpoint's own pair")
        text = cfg.get_text_config()
        context = min(int(getattr(text, "max_position_embeddings", MAX_LEN) or MAX_LEN), MAX_LEN)
        fixed = len(prefix) + max([len(suffix), *(len(v) for v in languages.values())])
        request = self._suffix_format() if kind.front_end == "waveform" else ""
        if request:  # the request's length in tokens at the longest recording the context could hold
            fixed = len(prefix) + max(len(suffix), self._request_tokens(request, (context - fixed - 1) * frames / rate))
            suffix = ()
        eos = gen.eos_token_id if gen.eos_token_id is not None else text.eos_token_id
        if eos is None:
            raise SourceError(f"'{self.src.description}' names no eos_token_id", fix="set it in its generation_config.json")
        most = (context - fixed - 1) // rows
        if most < 1:
            raise UnsupportedError(f"one {frames * hop / rate:g} s chunk is {rows} audio tokens, more than the "
                                   f"{context}-token context holds", found=f"max_position_embeddings {context}")
        spans = {"whisper-windows": frames * hop / rate, "waveform": most * frames / rate}
        span = spans.get(kind.front_end, float(fe.get("chunk_length", 30)))
        return AudioLMSection(
            audio=Chunking(rate, span, 0.0), n_mels=mels, n_fft=0 if request else int(fe.get("n_fft", 400)),
            hop_length=hop,
            tokenizer="tokenizer.json", cache=self.cache, hidden=int(self.model.get_input_embeddings().embedding_dim),
            chunk_frames=frames, rows_per_chunk=rows, max_chunks=most, audio_token_id=audio_id, prefix=prefix,
            suffix=suffix, eos_token_id=tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])),
            max_context=context, max_new_tokens=None if gen.max_new_tokens is None else int(gen.max_new_tokens),
            front_end=kind.front_end,  # type: ignore[arg-type]
            min_samples=int(fe.get("min_length", 0)), language_format=kind.language_format,
            language_before=kind.language_before, language_suffixes=languages, text_after=kind.text_after,
            target_dbfs=float(fe.get("target_dB_FS", -25)) if request and fe.get("normalize_audio", True) else None,
            norm_eps=float(fe.get("eps", 1e-6)) if request else 0.0, suffix_format=request,
            transcript=kind.transcript)  # type: ignore[arg-type]

    def _realtime_section(self) -> AudioLMSection:
        """Voxtral Realtime: one row per token (chunk) of the padded waveform, added per position;
        the prompt [BOS] + [STREAMING_PAD] x (left pad + delay) (converters/audio_lm_realtime.py)."""
        assert self.src.hf_dir is not None
        cfg, fe, k = self.model.config, self.fe, self.kind
        hop, rate = int(fe.get("hop_length", 160)), int(fe.get("sampling_rate", 16000))
        st = streaming(self.src.hf_dir, hop)
        if st.frames_per_token != int(cfg.audio_length_per_tok) or int(fe.get("win_length", 400)) != int(fe.get("n_fft", 400)):
            raise SourceError("the tekken.json audio settings differ from the model's config",
                              found=f"{st.frames_per_token} log-mel frames per token vs audio_length_per_tok "
                                    f"{cfg.audio_length_per_tok}; win_length {fe.get('win_length')}, n_fft {fe.get('n_fft')}",
                              fix="save the checkpoint's own tekken.json and preprocessor_config.json")
        ids = self._token_ids((*k.prefix, k.audio))
        prefix = (*(ids[t] for t in k.prefix), *[ids[k.audio]] * (st.left_pad_tokens + st.delay_tokens))
        text = cfg.get_text_config()
        # Within the text model's sliding window too: the graph's keys/values attend to the whole past.
        context = min(int(getattr(text, "max_position_embeddings", MAX_LEN) or MAX_LEN), MAX_LEN,
                      int(getattr(text, "sliding_window", None) or MAX_LEN))
        eos = self.model.generation_config.eos_token_id or text.eos_token_id
        if eos is None:
            raise SourceError(f"'{self.src.description}' names no eos_token_id", fix="set it in its generation_config.json")
        ceiling = fe.get("global_log_mel_max")
        return AudioLMSection(
            audio=Chunking(rate, (context - st.left_pad_tokens - st.right_pad_tokens - 1) * st.samples_per_token / rate, 0.0),
            n_mels=int(fe.get("feature_size", 128)), n_fft=int(fe.get("n_fft", 400)), hop_length=hop,
            tokenizer="tokenizer.json", cache=self.cache, hidden=int(self.model.get_input_embeddings().embedding_dim),
            chunk_frames=st.frames_per_token, rows_per_chunk=1, max_chunks=context, audio_token_id=ids[k.audio],
            prefix=prefix, suffix=(), eos_token_id=tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])),
            max_context=context, max_new_tokens=None, front_end="voxtral-realtime",
            left_pad_samples=st.left_pad_tokens * st.samples_per_token, right_pad_tokens=st.right_pad_tokens,
            language_before=0, log_mel_max=None if ceiling is None else float(ceiling))

    def _kyutai_section(self) -> AudioLMSection:
        """Kyutai STT: the prompt [BOS]; rows (converters/audio_lm_realtime.MimiRows) added per position,
        within the LM's sliding window (the graph's keys/values attend to the whole past)."""
        cfg, fe = self.model.config, self.fe
        rate, frame = int(fe.get("sampling_rate", 24000)), int(cfg.codec_config.frame_size)
        if rate != int(cfg.codec_config.sampling_rate):
            raise SourceError("the feature extractor's sampling rate differs from the Mimi codec's",
                              found=f"{rate} vs {cfg.codec_config.sampling_rate}", fix="save the checkpoint's own pair")
        bos = self.model.generation_config.bos_token_id
        if bos is None:
            raise SourceError(f"'{self.src.description}' names no bos_token_id", fix="set it in its generation_config.json")
        context = min(int(cfg.max_position_embeddings), MAX_LEN, int(cfg.sliding_window or MAX_LEN))
        left = int(float(fe.get("audio_silence_prefix_seconds") or 0.0) * rate)
        right = int((float(fe.get("audio_delay_seconds") or 0.0) + 1.0) * rate)  # the extractor's: delay + 1 s
        eos = self.model.generation_config.eos_token_id
        return AudioLMSection(
            audio=Chunking(rate, max(frame, (context - 1) * frame - left - right) / rate, 0.0), n_mels=1,
            n_fft=1, hop_length=1, tokenizer="tokenizer.json", cache=self.cache, min_samples=MIMI_MIN_FRAMES * frame,
            hidden=int(cfg.hidden_size), chunk_frames=frame, rows_per_chunk=1, max_chunks=context - 1,
            audio_token_id=int(cfg.audio_bos_token_id), prefix=(int(bos),), suffix=(),
            eos_token_id=tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])),
            max_context=context, max_new_tokens=None, front_end="mimi", language_before=0,
            left_pad_samples=left, right_pad_samples=right)

    def _prompt(self) -> tuple[tuple[int, ...], int, tuple[int, ...], dict[str, tuple[int, ...]]]:
        """(prefix, audio token id, suffix, suffix per language): from the family's token names, or from
        the folder's processor (apply_transcription_request on a probe, the audio run cut out)."""
        k = self.kind
        if k.audio:
            ids = self._token_ids((*k.prefix, k.audio, *k.suffix))
            return tuple(ids[t] for t in k.prefix), ids[k.audio], tuple(ids[t] for t in k.suffix), {}
        from transformers import AutoProcessor

        assert self.src.hf_dir is not None
        try:
            proc = AutoProcessor.from_pretrained(self.src.hf_dir)
        except Exception as e:  # transformers raises OSError/ValueError/KeyError for missing or unknown processors
            raise SourceError(f"cannot load the processor of '{self.src.description}' ({type(e).__name__}: {str(e)[:200]})",
                              fix="save the model's processor beside it (processor.save_pretrained(folder)): its "
                                  "chat template writes the transcription prompt") from None
        audio_id = int(proc.audio_token_id)
        probe = synthetic_audio(1.0, int(self.fe.get("sampling_rate", 16000)), 0)

        def cut(language: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
            ids = [int(t) for t in proc.apply_transcription_request(probe, language=language)["input_ids"][0]]
            at = [i for i, t in enumerate(ids) if t == audio_id]
            return tuple(ids[: at[0]]), tuple(ids[at[-1] + 1:])

        prefix, suffix = cut(None)
        languages: dict[str, tuple[int, ...]] = {}
        for code, name in _processor_languages(proc).items():
            head, languages[code] = cut(code)
            languages[name] = languages[code]
            if head != prefix:
                raise UnsupportedError(f"the {self.family} processor's prompt for language {code!r} changes what "
                                       "comes before the audio", found=f"{list(head)} vs {list(prefix)}")
        return prefix, audio_id, suffix, languages

    def _hop(self) -> int:
        """VibeVoice-ASR's samples per audio row: both encoders' downsampling, and the processor's padding."""
        cfg = self.model.config
        hops = {int(c.hop_length) for c in (cfg.acoustic_tokenizer_encoder_config, cfg.semantic_tokenizer_encoder_config)}
        if len(hops) != 1:
            raise UnsupportedError("VibeVoice-ASR's acoustic and semantic encoders downsample differently",
                                   found=f"hop lengths {sorted(hops)}", fix="convert a checkpoint whose encoders match")
        return hops.pop()

    def _suffix_format(self) -> str:
        """VibeVoice-ASR's request after the audio as a format naming the recording's length: the processor's
        prompt untokenized (its <|AUDIO_DURATION|> unfilled), checked against its tokens for a 1 s probe."""
        from transformers import AutoProcessor

        assert self.src.hf_dir is not None
        proc = AutoProcessor.from_pretrained(self.src.hf_dir)
        rate, hop = int(self.fe.get("sampling_rate", 24000)), self._hop()
        probe = synthetic_audio(1.0, rate, 0)
        text = proc.apply_transcription_request(probe, tokenize=False)[0]
        after = text.split(proc.audio_token)[-1].replace("{", "{{").replace("}", "}}")
        request = after.replace(proc.audio_duration_token, "{seconds:.2f}")
        ids = [int(t) for t in proc.apply_transcription_request(probe)["input_ids"][0]]
        rows = sum(t == proc.audio_token_id for t in ids)
        if rows != -(-len(probe) // hop):
            raise UnsupportedError(f"the {self.family} processor writes {rows} audio tokens for {len(probe)} samples; "
                                   f"the encoders make one per {hop}", found="a processor padding to another hop",
                                   fix="save the checkpoint's own processor beside the model")
        tail = ids[len(ids) - ids[::-1].index(proc.audio_token_id):]
        if self._request_ids(request, len(probe) / rate) != tail:
            raise SourceError(f"the {self.family} request tokenized alone differs from the processor's prompt",
                              found=f"{request!r}", fix="save the checkpoint's own processor beside the model")
        return request

    def _request_ids(self, request: str, seconds: float) -> list[int]:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer_json.decode("utf-8"))
        return list(tok.encode(request.format(seconds=seconds), add_special_tokens=False).ids)

    def _request_tokens(self, request: str, seconds: float) -> int:
        return len(self._request_ids(request, seconds))

    def _tokenizer_json(self) -> bytes:
        assert self.src.hf_dir is not None
        if self.kind.audio and not (self.src.hf_dir / "tokenizer.json").is_file():
            # Voxtral checkpoints ship mistral-common's tekken.json; transformers reads it only through
            # mistral-common (MistralCommonBackend), which edgekit does not depend on.
            raise SourceError(f"'{self.src.description}' has no tokenizer.json", found="a tekken.json tokenizer, or none",
                              fix="write one beside the model: transformers.integrations.mistral.tokenizer."
                                  "convert_tekken_tokenizer('tekken.json').save_pretrained(folder)")
        return hf_tokenizer_json(self.src)

    def _token_ids(self, names: tuple[str, ...]) -> dict[str, int]:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer_json.decode("utf-8"))
        ids = {n: tok.token_to_id(n) for n in names}
        missing = sorted(n for n, i in ids.items() if i is None)
        if missing:
            raise SourceError(f"the tokenizer of '{self.src.description}' lacks the {self.family} prompt's tokens",
                              found=f"no {missing} in tokenizer.json",
                              fix="save the checkpoint's tokenizer.json (with its control tokens) beside the model")
        return {n: int(i) for n, i in ids.items()}

    def graphs(self) -> list[GraphExport]:
        return [self.audio, self.decoder]

    def files(self, calibration: Calibration | None) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json}

    def contract(self, graphs: dict[str, GraphSpec]) -> AudioLMSection:
        return self.section

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        """Greedy tokens of transformers' generate on the family's own inputs (hf_inputs) vs the artifact's
        from the raw waveform, PARITY_NEW_TOKENS at most; the prompt ids and log-mel against them."""
        assert self.src.hf_dir is not None
        rate = self.section.audio.sample_rate
        waves = [synthetic_audio(PARITY_SECONDS[i % 3], rate, i) for i in range(samples or 2)]
        tally, prompts, worst = TokenTally(), 0, 0.0
        for w in waves:
            inputs = hf_inputs(self.src.hf_dir, w, model.prompt_ids, self.section.rows_per_chunk)
            ours = model.prompt_ids(len(model.audio_rows(w)), seconds=len(w) / rate)
            prompts += int(inputs["input_ids"][0].tolist() == ours)
            theirs, mine = graph_features(inputs, self.section), model.features(w)
            mine = mine[: len(theirs)] if self.section.front_end == "mimi" else mine  # less the silence to min_samples
            worst = max(worst, float(np.abs(mine - theirs).max()) if mine.shape == theirs.shape else float("inf"))
            ref = hf_audio_lm_tokens(self.model, inputs, PARITY_NEW_TOKENS)
            got = model.decode_tokens(w, max_new_tokens=PARITY_NEW_TOKENS)
            tally.add(ref, got, model.decode_text)
        limit = PREPROCESS_MAX_ABS["waveform" if self.section.front_end == "waveform" else "log-mel"]
        pre = PreprocessCheck(worst <= limit, f"max abs difference {worst:.3g} (limit {limit:g}) against transformers "
                                              f"{self.kind.extractor}", max_abs=worst)
        measures = {**tally.measures(len(waves)), "preprocess_max_abs": worst, "prompt_ids_equal": prompts / len(waves)}
        report = self.report(measures, precision, f"greedy tokens vs transformers generate: {tally.summary()}")
        report = dataclasses.replace(report, end_to_end=EndToEnd(len(waves), preprocess=pre, reference=self.kind.extractor))
        if prompts < len(waves):
            return report.failed("the transcription prompt differs from the processor's")
        return report if pre.passed else report.failed("pre-processing differs from the source's feature extractor")


def hf_inputs(folder: Path, wave: np.ndarray, prompt_ids: Callable[[int, str | None], list[int]], rows_per_chunk: int,
              language: str | None = None) -> dict[str, Any]:
    """transformers' generate inputs for one recording, made by the family's own code: Qwen3-ASR's
    processor (apply_transcription_request); Voxtral's feature extractor as VoxtralProcessor calls it
    (padded to whole windows, one spectrogram, cut per window) with edgekit's prompt ids (its processor
    writes the prompt with mistral-common, which edgekit does not depend on)."""
    import transformers

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    if FAMILIES[arch].front_end == "mimi":
        return {**kyutai_inputs(folder, wave), "input_ids": torch.tensor([prompt_ids(0, language)])}
    if FAMILIES[arch].front_end == "voxtral-realtime":
        hop = int(_extractor_config(folder).get("hop_length", 160))
        return realtime_inputs(folder, wave, prompt_ids(0, language), streaming(folder, hop))
    if FAMILIES[arch].front_end == "waveform":  # no language; the acoustic latents' noise off (sample=False)
        proc = transformers.AutoProcessor.from_pretrained(folder)
        return {**proc.apply_transcription_request(wave), "sample": False}
    if not FAMILIES[arch].audio:
        proc = transformers.AutoProcessor.from_pretrained(folder)
        return dict(proc.apply_transcription_request(wave, language=language))
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    out = fe(wave, sampling_rate=fe.sampling_rate, padding=True, truncation=False, pad_to_multiple_of=fe.n_samples,
             return_tensors="np")["input_features"]
    feats = np.ascontiguousarray(out.reshape(fe.feature_size, -1, fe.nb_max_frames).transpose(1, 0, 2), np.float32)
    ids = torch.tensor([prompt_ids(len(feats) * rows_per_chunk, language)])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": torch.from_numpy(feats)}


def graph_features(inputs: dict[str, Any], section: AudioLMSection) -> np.ndarray:
    """The reference's input_features laid out as the audio graph takes them (chunks, mels, chunk_frames)."""
    if section.front_end == "waveform":
        return np.ascontiguousarray(inputs["input_values"].numpy().reshape(-1, 1, section.chunk_frames))
    x = inputs["input_values" if section.front_end == "mimi" else "input_features"].numpy()
    if section.front_end == "whisper-windows":
        return x
    if section.front_end == "mimi":  # (1, 1, samples) -> whole frames
        frames = x.shape[-1] // section.chunk_frames
        return np.ascontiguousarray(x[0, :, : frames * section.chunk_frames].reshape(1, frames, -1).transpose(1, 0, 2))
    if section.added:  # (1, mels, frames) -> per token
        tokens = x.shape[-1] // section.chunk_frames
        return np.ascontiguousarray(x[0, :, : tokens * section.chunk_frames].reshape(
            section.n_mels, tokens, section.chunk_frames).transpose(1, 0, 2))
    return np.ascontiguousarray(x[0].reshape(section.n_mels, -1, section.chunk_frames).transpose(1, 0, 2))


def hf_audio_lm_tokens(hf: Any, inputs: dict[str, Any], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate on one recording's inputs: the new tokens, as a list."""
    with torch.inference_mode():
        out = hf.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, inputs["input_ids"].shape[1]:]]


def _processor_languages(proc: Any) -> dict[str, str]:
    """The language codes and names the family's processor takes (Qwen3-ASR: LANGUAGE_CODE_TO_NAME)."""
    import importlib

    module = importlib.import_module(type(proc).__module__)
    return dict(getattr(module, "LANGUAGE_CODE_TO_NAME", {}))


def _extractor_config(folder: Path) -> dict[str, Any]:
    """The feature extractor's saved config: preprocessor_config.json, or the "feature_extractor" of the
    processor_config.json transformers 5 writes for a processor."""
    alone, joint = folder / "preprocessor_config.json", folder / "processor_config.json"
    if alone.is_file():
        return dict(json.loads(alone.read_text()))
    return dict(json.loads(joint.read_text()).get("feature_extractor", {})) if joint.is_file() else {}
