"""CTC speech recognizers: Hugging Face `*ForCTC` folders and plain nn.Module CTC models.

One graph "model": the numpy front end's output (edgekit/tasks/ctc.py: the waveform, or log-mel
features) in, logits (batch, frames, vocabulary) out. Parity compares frame argmax ids and the
decoded text with PyTorch on the same features: the user's audio when given, else synthetic
speech-like signals of lengths not traced with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, FRAMES, SAMPLES
from edgekit.contract.recognize import Chunking, CtcSection
from edgekit.converters.export import GraphExport
from edgekit.converters.parity import compare_outputs
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.squeezed_encoders import DEFERRED_GUARDS
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec, Gate, Limit
from edgekit.converters.wrappers import Logits
from edgekit.errors import ConfigError, InputError, SourceError, UnsupportedError
from edgekit.parity_report import ParityReport
from edgekit.preprocess.audio import load_audio
from edgekit.tasks.ctc import FRONT_ENDS, ctc_features, decode_with
from edgekit.tasks.recognizer import word_error_rate

PARITY_SECONDS = (1.3, 2.2, 3.1)
PREPROCESS_MAX_ABS = 1e-4  # float32 mean/variance of the same samples: measured about 1e-6  # lengths not traced with: the samples axis really is dynamic
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Share of frames whose argmax id agrees with PyTorch's, per precision.
GATES: dict[str, Gate] = {p: {"frame_agreement": Limit(min=v)}
                          for p, v in {"fp32": 1.0, "fp16": 0.9, "int8": 0.7, "int4": 0.5}.items()}


def synthetic_audio(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Speech-like test signal: formant-ish tones with a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * a
               for f, a in zip(rng.uniform(120, 3000, 5), rng.uniform(0.05, 0.3, 5)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    return (wave * envelope + rng.standard_normal(len(t)) * 0.02).astype(np.float32)


def calibration_waves(data: Any, rate: int) -> list[np.ndarray]:
    """Audio files, a folder of them, or arrays (at the model's rate) -> waveforms."""
    if data is None:
        return []
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        items: list[Any] = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in _AUDIO_SUFFIXES)
    else:
        items = [data] if isinstance(data, (str, Path)) else list(data)
    if not items:
        raise InputError("the calibration data is empty", fix="pass a few audio files or arrays")
    return [load_audio(x, None, rate) for x in items]


class _Ctc(ExportSpec):
    task: ClassVar[str] = "recognize"
    default_int8 = "dynamic"
    gates = GATES

    graph: GraphExport
    section: CtcSection

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def contract(self, graphs: dict[str, GraphSpec]) -> CtcSection:
        return self.section

    def calibrate(self, data: Any) -> Calibration:
        waves = calibration_waves(data, self.section.audio.sample_rate)
        return Calibration([{"model": {self.section.input: ctc_features(w, self.section)[None]}} for w in waves], waves)

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        # The user's audio (calibration) is the real distribution: prefer it to synthetic signals.
        waves = calibration.samples if calibration is not None and calibration.samples and samples is None else [
            synthetic_audio(PARITY_SECONDS[i % 3], self.section.audio.sample_rate, i) for i in range(samples or 3)]
        c = model.contract
        same, total, diffs, errors, words = 0, 0, [], 0.0, 0
        for w in waves:
            feats = ctc_features(w, c)[None]
            with torch.inference_mode():
                ref = self.graph.module(torch.from_numpy(feats)).float().numpy()
            got = model.runners["model"].run({c.input: feats})["logits"].astype(np.float32)
            same += int((ref.argmax(-1) == got.argmax(-1)).sum())
            total += ref.shape[1]
            diffs.append(compare_outputs(ref[0], got[0]))
            ref_text, got_text = decode_with(c, ref[0].argmax(-1)), decode_with(c, got[0].argmax(-1))
            n = max(len(ref_text.split()), 1)
            errors += word_error_rate(ref_text, got_text) * n
            words += n
        agreement = same / max(total, 1)
        pre = self.preprocess_difference(waves, c)
        measures = {"samples": len(waves), "frame_agreement": agreement, "wer_vs_pytorch": errors / max(words, 1),
                    "logits": {"max_abs": max(d["max_abs"] for d in diffs), "cosine": min(d["cosine"] for d in diffs)},
                    "preprocess_max_abs": pre}
        report = self.report(measures, precision, f"CTC argmax ids agree on {agreement:.2%} of frames; WER vs "
                                                  f"PyTorch {measures['wer_vs_pytorch']:.3f}; logits max abs diff "
                                                  f"{measures['logits']['max_abs']:.3g}; pre-processing max abs "
                                                  f"difference {pre:.3g} (limit {PREPROCESS_MAX_ABS:g})")
        if pre > PREPROCESS_MAX_ABS:
            return report.failed("pre-processing differs from the source's feature extractor")
        return report

    def preprocess_difference(self, waves: list[np.ndarray], c: CtcSection) -> float:
        """Largest difference between edgekit's front end and the source's own (0: the same steps)."""
        return 0.0


class HFCtc(_Ctc):
    """Any `*ForCTC` folder (wav2vec2, HuBERT, Data2VecAudio, WavLM, ...) with its vocab.json."""

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return not src.is_plain and task in (None, "recognize") and (
            src.architecture.endswith("ForCTC") or src.architecture in auto_architectures("MODEL_FOR_CTC_MAPPING_NAMES"))

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        from transformers import AutoModelForCTC

        folder = src.hf_dir
        assert folder is not None
        fe = _json(folder / "preprocessor_config.json")
        kind = fe.get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
        if kind != "Wav2Vec2FeatureExtractor":  # fbank / mel front ends: not edgekit's waveform front end
            raise UnsupportedError(f"edgekit cannot reproduce the feature extractor {kind} of '{folder.name}'",
                                   found="edgekit's CTC front end is the raw waveform (Wav2Vec2FeatureExtractor)",
                                   fix="convert a waveform CTC model (wav2vec2, HuBERT, WavLM, ...)")
        model = AutoModelForCTC.from_pretrained(folder).eval()
        self.family = str(src.config.get("model_type", "hf-ctc"))
        if model.main_input_name != "input_values":
            raise UnsupportedError(f"'{self.family}' takes {model.main_input_name} (filterbank features), not the waveform",
                                   found=f"{type(model).__name__}.main_input_name = {model.main_input_name!r}",
                                   fix="convert a waveform CTC model (wav2vec2, HuBERT, WavLM, ...)")
        if not (folder / "vocab.json").is_file():
            raise SourceError(f"'{folder}' has no vocab.json", fix="save the processor/tokenizer beside the model")
        vocab = _json(folder / "vocab.json")
        if isinstance(next(iter(vocab.values())), dict):  # multi-lingual vocab: {lang: {token: id}}
            vocab = next(iter(vocab.values()))
        n = int(src.config.get("vocab_size", len(vocab)))
        labels = [""] * n
        for token, i in vocab.items():
            if int(i) < n:
                labels[int(i)] = token
        tok_cfg = _json(folder / "tokenizer_config.json")
        rate = int(fe.get("sampling_rate", 16000))
        user = dict(src.preprocess or {})
        self.section = CtcSection(
            audio=Chunking(rate, float(user.get("chunk_length_s", 20.0)), float(user.get("stride_length_s", 2.0))),
            features="waveform", normalize=bool(fe.get("do_normalize", True)), n_fft=400, hop_length=160, n_mels=80,
            input="input_values", vocabulary=tuple(labels), blank_id=int(src.config.get("pad_token_id") or 0),
            word_delimiter=tok_cfg.get("word_delimiter_token", "|"),
            skip=tuple(sorted({t for t in labels if t.startswith("<") and t.endswith(">") and t != "<unk>"})))
        x = torch.from_numpy(np.stack([synthetic_audio(1.0, rate, s) for s in (0, 1)]))
        # Logits takes *args: torch.export sees one varargs argument, so its shapes nest in a tuple.
        samples: Any = SAMPLES if self.family in DEFERRED_GUARDS else torch.export.Dim(SAMPLES, min=1600, max=16000 * 120)
        dims = (({0: torch.export.Dim(BATCH, min=1, max=64), 1: samples},),)
        self.graph = GraphExport("model", Logits(model), (x,), ["input_values"], ["logits"], dims)

    def preprocess_difference(self, waves: list[np.ndarray], c: CtcSection) -> float:
        """edgekit's waveform front end against the folder's feature extractor (its normalization).
        Chunks run one at a time, unpadded, so the extractor's attention mask is all ones there."""
        from transformers import AutoFeatureExtractor

        assert self.src.hf_dir is not None
        fe = AutoFeatureExtractor.from_pretrained(self.src.hf_dir)
        worst = 0.0
        for w in waves:
            theirs = np.asarray(fe(w, sampling_rate=c.audio.sample_rate, return_tensors="np")["input_values"][0])
            mine = ctc_features(w, c)
            worst = max(worst, float(np.abs(mine - theirs).max()) if mine.shape == theirs.shape else float("inf"))
        return worst


class TorchCtc(_Ctc):
    """A plain nn.Module CTC model: labels= is its vocabulary (index 0 the blank by default).

    `preprocess=` keys: sample_rate, features ("waveform" | "log-mel"), normalize, n_fft,
    hop_length, n_mels, chunk_length_s, stride_length_s, blank_id, word_delimiter.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"sample_rate": 16000, "features": "waveform", "normalize": False,
                                          "n_fft": 400, "hop_length": 160, "n_mels": 80, "chunk_length_s": 20.0,
                                          "stride_length_s": 2.0, "blank_id": 0, "word_delimiter": " "}

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return src.is_plain and task == "recognize"

    def __init__(self, src: Source, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.family = "ctc-module"
        if not src.labels:
            raise ConfigError("a plain PyTorch CTC model needs its vocabulary", found="labels=None",
                              fix="pass labels=[blank, 'a', 'b', ..., ' '] (one string per output index)")
        user = dict(src.preprocess or {})
        unknown = set(user) - set(self.DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown preprocess keys {sorted(unknown)}", found=f"known keys {sorted(self.DEFAULTS)}")
        u = {**self.DEFAULTS, **user}
        if u["features"] not in FRONT_ENDS:
            raise ConfigError(f"unknown features '{u['features']}'", found=f"front ends {sorted(FRONT_ENDS)}")
        try:
            self.section = CtcSection(
                audio=Chunking(int(u["sample_rate"]), float(u["chunk_length_s"]), float(u["stride_length_s"])),
                features=u["features"], normalize=bool(u["normalize"]), n_fft=int(u["n_fft"]),
                hop_length=int(u["hop_length"]), n_mels=int(u["n_mels"]),
                input="input_values" if u["features"] == "waveform" else "input_features",
                vocabulary=tuple(src.labels), blank_id=int(u["blank_id"]), word_delimiter=str(u["word_delimiter"]),
                skip=())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"preprocess= is malformed ({e})", found=f"{user!r:.200}") from None
        rate = self.section.audio.sample_rate
        x = torch.from_numpy(np.stack([ctc_features(synthetic_audio(1.0, rate, s), self.section) for s in (0, 1)]))
        module = Logits(src.module)
        with torch.no_grad():
            y = module(x)
        if y.ndim != 3 or y.shape[-1] != len(src.labels):
            raise SourceError("a CTC model must return (batch, frames, vocabulary) logits",
                              found=f"output shape {list(y.shape)} for {len(src.labels)} labels")
        axis, lo = (SAMPLES, 1600) if self.section.features == "waveform" else (FRAMES, 16)
        dims = (({0: torch.export.Dim(BATCH, min=1, max=64), x.ndim - 1: torch.export.Dim(axis, min=lo, max=16000 * 120)},),)
        # A .pt2 program had its dynamic dims fixed when it was exported.
        self.graph = GraphExport("model", module, (x,), [self.section.input], ["logits"],
                                 dims if src.origin != "pt2" else None)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
