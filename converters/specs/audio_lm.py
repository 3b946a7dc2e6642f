"""Audio-language models in recognize (Voxtral): a speech encoder + projector whose rows replace the
audio placeholder tokens of a causal LM's transcription prompt; the LM then writes the transcript.

    audio  input_features (windows, n_mels, frames) -> audio_features (rows, hidden): the family's
           get_audio_features (encoder, frame stacking, projector), every 30 s window at once
    model  the causal LM's slot-cache decoder with the rows merged at the placeholder tokens
           (vision_lm.MediaKVDecoder: the image-text mechanism, fed audio rows)
The loop is tasks/audio_lm.py. Parity: the greedy tokens of transformers' generate on the same prompt
ids and the folder's feature extractor's features against the artifact's from the raw waveform, and
edgekit's numpy log-mel against that extractor.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.audio_lm import AUDIO_CHUNKS, AUDIO_FEATURES, AUDIO_ROWS, AudioLMSection
from edgekit.contract.generate import STEP_INPUTS
from edgekit.contract.recognize import Chunking
from edgekit.contract.state import AttentionKV
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec
from edgekit.converters.specs.causal_lm import MAX_LEN, decoder_state
from edgekit.converters.specs.classify import hf_tokenizer_json
from edgekit.converters.specs.ctc import PARITY_SECONDS, PREPROCESS_MAX_ABS, synthetic_audio
from edgekit.converters.specs.vision_lm import MediaKVDecoder, _dynamic_shapes, _example
from edgekit.converters.specs.whisper import GATES
from edgekit.errors import SourceError, UnsupportedError
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck
from edgekit.tasks.recognizer import word_error_rate

PARITY_NEW_TOKENS = 32  # new tokens compared per waveform (eos may end both sooner)


@dataclass(frozen=True)
class Prompt:
    """A family's transcription request, by its tokens' names (mistral-common's encode_transcription for
    Voxtral: [BOS][INST][BEGIN_AUDIO] one [AUDIO] per row [/INST] "lang:xx"? [TRANSCRIBE])."""

    prefix: tuple[str, ...]
    audio: str
    suffix: tuple[str, ...]
    language_format: str = ""
    language_before: int = 1


PROMPTS: dict[str, Prompt] = {
    "VoxtralForConditionalGeneration": Prompt(("<s>", "[INST]", "[BEGIN_AUDIO]"), "[AUDIO]", ("[/INST]", "[TRANSCRIBE]"),
                                              "lang:{}", 1),
}


class AudioEncoder(torch.nn.Module):
    """input_features (windows, mels, frames) -> (rows, hidden) float: the family's get_audio_features."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        rows = self.model.get_audio_features(input_features, return_dict=True).pooler_output
        return rows.reshape(-1, rows.shape[-1]).float()


class HFAudioLM(ExportSpec):
    task: ClassVar[str] = "recognize"
    precisions = ("fp32", "fp16", "int8")
    default_int8 = "dynamic"
    static_int8 = False
    gates = GATES

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return not src.is_plain and task in (None, "recognize") and src.architecture in PROMPTS

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        import transformers

        assert src.hf_dir is not None
        self.family = str(src.config["model_type"])
        fe_path = src.hf_dir / "preprocessor_config.json"
        self.fe = json.loads(fe_path.read_text()) if fe_path.is_file() else {}
        if self.fe.get("feature_extractor_type") != "WhisperFeatureExtractor":
            raise UnsupportedError(f"edgekit reads this {self.family} model's audio with Whisper's log-mel only",
                                   found=f"feature_extractor_type {self.fe.get('feature_extractor_type')!r}",
                                   fix="save the WhisperFeatureExtractor its checkpoints ship beside the model")
        self.model = getattr(transformers, src.architecture).from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.tokenizer_json = hf_tokenizer_json(src)
        self.cache = decoder_state(self.model)
        if not all(isinstance(e, AttentionKV) for e in self.cache.entries):
            raise UnsupportedError(f"'{self.family}' keeps a decoder state other than keys/values",
                                   fix="audio-language recognize supports key/value decoders")
        self.section = self._section(PROMPTS[src.architecture])
        s = self.section
        wrapper = MediaKVDecoder(self.model, tuple(e.layer for e in self.cache.entries), s.audio_token_id)
        self.decoder = GraphExport("model", wrapper, _example(self.model, self.cache, s.hidden, s.audio_token_id),
                                   [*STEP_INPUTS, AUDIO_FEATURES, *self.cache.past()], ["logits", *self.cache.present()],
                                   _dynamic_shapes(len(self.cache.past()), AUDIO_ROWS))
        # Two windows traced (a dim of 1 would be specialised); up to the most one prompt holds.
        x = torch.randn(2, s.n_mels, s.chunk_frames)
        windows = Dim(AUDIO_CHUNKS, min=1, max=max(2, s.max_chunks))
        self.audio = GraphExport("audio", AudioEncoder(self.model).eval(), (x,), ["input_features"], [AUDIO_FEATURES],
                                 ({0: windows},))

    def _section(self, prompt: Prompt) -> AudioLMSection:
        cfg, gen, fe = self.model.config, self.model.generation_config, self.fe
        ids = self._token_ids((*prompt.prefix, prompt.audio, *prompt.suffix))
        audio_id = ids[prompt.audio]
        named = getattr(cfg, "audio_token_id", None)
        if named is not None and named != audio_id:
            raise SourceError(f"the tokenizer's {prompt.audio} is id {audio_id}, the model's config says {named}",
                              fix="save the tokenizer and model of one checkpoint together")
        hop, rate = int(fe.get("hop_length", 160)), int(fe.get("sampling_rate", 16000))
        frames = int(fe.get("nb_max_frames", 3000))
        with torch.no_grad():
            rows = int(AudioEncoder(self.model)(torch.zeros(1, int(fe.get("feature_size", 80)), frames)).shape[0])
        text = cfg.get_text_config()
        context = min(int(getattr(text, "max_position_embeddings", MAX_LEN) or MAX_LEN), MAX_LEN)
        fixed = len(prompt.prefix) + len(prompt.suffix)
        eos = gen.eos_token_id if gen.eos_token_id is not None else text.eos_token_id
        if eos is None:
            raise SourceError(f"'{self.src.description}' names no eos_token_id", fix="set it in its generation_config.json")
        most = (context - fixed - 1) // rows
        if most < 1:
            raise UnsupportedError(f"one {frames * hop / rate:g} s window is {rows} audio tokens, more than the "
                                   f"{context}-token context holds", found=f"max_position_embeddings {context}")
        longest = fixed + rows * most
        return AudioLMSection(
            audio=Chunking(rate, frames * hop / rate, 0.0), n_mels=int(fe.get("feature_size", 80)),
            n_fft=int(fe.get("n_fft", 400)), hop_length=hop, tokenizer="tokenizer.json", cache=self.cache,
            hidden=int(self.model.get_input_embeddings().embedding_dim), rows_per_chunk=rows, max_chunks=most,
            audio_token_id=audio_id, prefix=tuple(ids[t] for t in prompt.prefix),
            suffix=tuple(ids[t] for t in prompt.suffix),
            eos_token_id=tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])),
            max_context=context, max_new_tokens=int(getattr(gen, "max_new_tokens", None) or context - longest),
            language_format=prompt.language_format, language_before=prompt.language_before)

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
        """Greedy tokens of transformers' generate (the folder's extractor, edgekit's prompt ids) vs the
        artifact's from the raw waveform, PARITY_NEW_TOKENS at most."""
        rate = self.section.audio.sample_rate
        waves = [synthetic_audio(PARITY_SECONDS[i % 3], rate, i) for i in range(samples or 2)]
        same = total = exact = words = 0
        errors = 0.0
        for w in waves:
            feats = self.extractor_features(w)
            ids = model.prompt_ids(len(feats) * self.section.rows_per_chunk)
            ref = hf_audio_lm_tokens(self.model, feats, ids, PARITY_NEW_TOKENS)
            got = model.decode_tokens(w, max_new_tokens=PARITY_NEW_TOKENS)
            same += sum(int(a == b) for a, b in zip(ref, got))
            total += max(len(ref), len(got))
            exact += int(ref == got)
            r_text, g_text = model.decode_text(ref), model.decode_text(got)
            n = max(len(r_text.split()), 1)
            errors += word_error_rate(r_text, g_text) * n
            words += n
        agreement = same / max(total, 1)
        pre = self.preprocess_check(waves, model)
        measures = {"samples": len(waves), "token_agreement": agreement, "identical_sequences": exact,
                    "identical_share": exact / len(waves), "wer_vs_pytorch": errors / max(words, 1),
                    "preprocess_max_abs": pre.max_abs}
        report = self.report(measures, precision, f"greedy tokens vs transformers generate: {exact}/{len(waves)} "
                                                  f"sequences identical, {agreement:.2%} of positions agree; WER vs "
                                                  f"PyTorch {measures['wer_vs_pytorch']:.3f}")
        report = dataclasses.replace(report, end_to_end=EndToEnd(len(waves), preprocess=pre,
                                                                 reference="WhisperFeatureExtractor"))
        return report if pre.passed else report.failed("pre-processing differs from the source's feature extractor")

    def extractor_features(self, wave: np.ndarray) -> np.ndarray:
        """The folder's WhisperFeatureExtractor as the family's processor calls it: the waveform padded to
        a multiple of the window, one spectrogram, cut into windows (windows, mels, frames)."""
        from transformers import WhisperFeatureExtractor

        assert self.src.hf_dir is not None
        fe = WhisperFeatureExtractor.from_pretrained(self.src.hf_dir)
        s = self.section
        out = fe(wave, sampling_rate=s.audio.sample_rate, padding=True, truncation=False,
                 pad_to_multiple_of=s.audio.window, return_tensors="np")["input_features"]
        return np.ascontiguousarray(out.reshape(s.n_mels, -1, s.chunk_frames).transpose(1, 0, 2), np.float32)

    def preprocess_check(self, waves: list[np.ndarray], model: Any) -> PreprocessCheck:
        worst = 0.0
        for w in waves:
            theirs, mine = self.extractor_features(w), model.features(w)
            if theirs.shape != mine.shape:
                return PreprocessCheck(False, f"input_features shape {list(mine.shape)} vs {list(theirs.shape)} "
                                              "against transformers WhisperFeatureExtractor", max_abs=float("inf"))
            worst = max(worst, float(np.abs(mine - theirs).max()))
        limit = PREPROCESS_MAX_ABS["log-mel"]
        return PreprocessCheck(worst <= limit, f"max abs difference {worst:.3g} (limit {limit:g}) against "
                                               "transformers WhisperFeatureExtractor", max_abs=worst)


def hf_audio_lm_tokens(hf: Any, features: np.ndarray, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate on one recording's features and prompt: the new tokens, as a list."""
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=torch.from_numpy(features),
                          max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, ids.shape[1]:]]
