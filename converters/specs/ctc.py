"""CTC speech recognizers: Hugging Face `*ForCTC` folders and plain nn.Module CTC models.

One graph "model": the numpy front end's output (edgekit/tasks/ctc.py: the waveform, or log-mel
features) in, logits (batch, frames, vocabulary) out. Parity compares frame argmax ids and the
decoded text with PyTorch on the same features: the user's audio when given, else synthetic
speech-like signals of lengths not traced with.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, FRAMES, SAMPLES
from edgekit.contract.recognize import Chunking, CtcSection
from edgekit.converters.export import GraphExport
from edgekit.converters.parity import OUTPUT_GATES, compare_outputs
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.squeezed_encoders import DEFERRED_GUARDS
from edgekit.converters.spec import Calibration, ConvertOptions, ExportSpec, Gate, Limit
from edgekit.converters.wrappers import Logits
from edgekit.errors import ConfigError, InputError, SourceError, UnsupportedError
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck
from edgekit.preprocess.audio import load_audio
from edgekit.tasks.ctc import ctc_features, ctc_inputs, decode_with
from edgekit.tasks.recognizer import word_error_rate

PARITY_SECONDS = (1.3, 2.2, 3.1)  # lengths not traced with: the samples axis really is dynamic
# edgekit's numpy front end against the source's feature extractor, per front end (largest abs difference).
PREPROCESS_MAX_ABS: dict[str, float] = {
    "waveform": 1e-4,  # float32 mean/variance of the same samples: measured about 1e-6
    "log-mel": 1e-4,
    # torch.stft in float32: the quietest mel bands (power ~1e-7 of the frame's) carry its FFT rounding,
    # ~1e-4 relative, into the log; measured up to 3.1e-4 after normalization (a 3.1 s parity signal).
    "parakeet-fbank": 1e-3,
    "lasr-fbank": 1e-4,  # float64 on both sides: measured 0
    "kaldi-fbank": 1e-4,  # numpy on both sides, float32 normalization: measured up to 2.5e-5
    "speech2text-fbank": 1e-4,  # Speech2Text's extractor without torchaudio: numpy on both sides
}
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Share of frames whose argmax id agrees with PyTorch's (near ties counted, `agreeing_frames`), per
# precision; fp32 also needs the transcript equal to PyTorch's wherever it does not hang on a tie.
GATES: dict[str, Gate] = {p: {"frame_agreement": Limit(min=v)}
                          for p, v in {"fp32": 1.0, "fp16": 0.9, "int8": 0.7, "int4": 0.5}.items()}
GATES["fp32"]["wer_determined"] = Limit(max=0.0)
# A frame whose ids differ still agrees when PyTorch's own logits there cannot tell the two ids apart at
# this precision. Each logit may carry the precision's expected error e (a share of the logits' largest
# magnitude); two logits g apart can swap order once each moves by g / 2 the other way, so g <= 2e is
# a tie. e is a tenth of the precision's gate on logits (parity.OUTPUT_GATES max_rel, the most error a
# precision is admitted), as for generate, where fp32's tenth is TIE_REL (1e-4): float32 rounding in
# PyTorch's and onnxruntime's different summation orders over a model's depth. Measured: SEW at real
# head sizes (random, initializer_range 0.5, logits up to 157) flips one frame of 1314 whose top two were
# 5.6e-3 apart (3.6e-5 of the scale), while that frame's logits moved by up to 2.6e-2 (fp32, one thread).
TIE_SHARE: dict[str, float] = {p: 2 * OUTPUT_GATES[p]["max_rel"].max / 10 for p in GATES}  # type: ignore[operator]


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


def agreeing_frames(ref: np.ndarray, got_ids: np.ndarray, tie_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames that agree, frames that agree only as a tie) for reference logits (frames, vocabulary)
    and the artifact's ids: a frame agrees when its id is PyTorch's argmax, or when PyTorch's logit for
    the artifact's id is within `tie_share` x (its logits' largest magnitude) of its top one (TIE_SHARE)."""
    top = ref.argmax(-1)
    margin = ref.max(-1) - ref[np.arange(len(ref)), got_ids]
    tied = (got_ids != top) & (margin <= tie_share * float(np.abs(ref).max()))
    return (got_ids == top) | tied, tied


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
        return Calibration([{"model": ctc_inputs(w, self.section)} for w in waves], waves)

    def parity(self, model: Any, precision: str, samples: int | None = None,
               calibration: Calibration | None = None) -> ParityReport:
        # The user's audio (calibration) is the real distribution: prefer it to synthetic signals.
        waves = calibration.samples if calibration is not None and calibration.samples and samples is None else [
            synthetic_audio(PARITY_SECONDS[i % 3], self.section.audio.sample_rate, i) for i in range(samples or 3)]
        c = model.contract
        same, ties, total, diffs, errors, determined, words = 0, 0, 0, [], 0.0, 0.0, 0
        for w in waves:
            feeds = ctc_inputs(w, c)
            with torch.inference_mode():
                ref = self.graph.module(*(torch.from_numpy(feeds[n]) for n in self.graph.input_names)).float().numpy()
            got = model.runners["model"].run(feeds)["logits"].astype(np.float32)
            agree, tied = agreeing_frames(ref[0], got[0].argmax(-1), TIE_SHARE[precision])
            same, ties, total = same + int(agree.sum()), ties + int(tied.sum()), total + ref.shape[1]
            diffs.append(compare_outputs(ref[0], got[0]))
            # PyTorch's ids with its ties taken the artifact's way: the transcript where it is determined.
            resolved = np.where(tied, got[0].argmax(-1), ref[0].argmax(-1))
            ref_text, got_text = decode_with(c, ref[0].argmax(-1)), decode_with(c, got[0].argmax(-1))
            n = max(len(ref_text.split()), 1)
            errors += word_error_rate(ref_text, got_text) * n
            determined += word_error_rate(decode_with(c, resolved), got_text) * n
            words += n
        agreement = same / max(total, 1)
        pre = self.preprocess_check(waves, c)
        measures = {"samples": len(waves), "frame_agreement": agreement, "tied_frames": ties,
                    "wer_vs_pytorch": errors / max(words, 1), "wer_determined": determined / max(words, 1),
                    "logits": {"max_abs": max(d["max_abs"] for d in diffs), "cosine": min(d["cosine"] for d in diffs)},
                    "preprocess_max_abs": pre.max_abs}
        report = self.report(measures, precision, f"CTC argmax ids agree on {agreement:.2%} of frames; WER vs "
                                                  f"PyTorch {measures['wer_vs_pytorch']:.3f}; logits max abs diff "
                                                  f"{measures['logits']['max_abs']:.3g}; {ties} frames agree "
                                                  f"as near ties")
        report = dataclasses.replace(report, end_to_end=EndToEnd(len(waves), preprocess=pre, reference=self.extractor))
        return report if pre.passed else report.failed("pre-processing differs from the source's feature extractor")

    extractor: str = "edgekit's own front end (the same steps)"

    def preprocess_check(self, waves: list[np.ndarray], c: CtcSection) -> PreprocessCheck:
        """edgekit's front end against the source's own (a plain module declares edgekit's: the same steps)."""
        return PreprocessCheck(True, "same steps (declared by preprocess=)")


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """A folder's feature extractor as CtcSection's front-end fields, and how its mask reaches the model."""

    features: str
    input: str
    normalize: bool = False
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    win_length: int = 0
    preemphasis: float = 0.0
    stack: int = 1
    mask: str | None = None
    mask_is_bool: bool = False  # the extractor's mask dtype (bool for Parakeet/LASR, integers for SeamlessM4T)

    def section_fields(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "mask_is_bool"}


def front_end(kind: str, fe: dict[str, Any]) -> FrontEnd:
    """The feature extractor `kind` with its preprocessor_config.json values, or UnsupportedError."""
    mask = "attention_mask"
    if kind == "Wav2Vec2FeatureExtractor":
        return FrontEnd("waveform", "input_values", normalize=bool(fe.get("do_normalize", True)))
    if kind == "ParakeetFeatureExtractor":
        return FrontEnd("parakeet-fbank", "input_features", n_fft=int(fe.get("n_fft", 512)),
                        hop_length=int(fe.get("hop_length", 160)), n_mels=int(fe.get("feature_size", 80)),
                        win_length=int(fe.get("win_length", 400)), preemphasis=float(fe.get("preemphasis", 0.97) or 0.0),
                        mask=mask, mask_is_bool=True)
    if kind == "LasrFeatureExtractor":
        return FrontEnd("lasr-fbank", "input_features", n_fft=int(fe.get("n_fft", 512)),
                        hop_length=int(fe.get("hop_length", 160)), n_mels=int(fe.get("feature_size", 128)),
                        win_length=int(fe.get("win_length", 400)), mask=mask, mask_is_bool=True)
    if kind == "SeamlessM4TFeatureExtractor":  # frames of 400 every 160 samples, 512-point FFT: fixed in its code
        return FrontEnd("kaldi-fbank", "input_features", n_fft=512, hop_length=160, win_length=400, preemphasis=0.97,
                        n_mels=int(fe.get("num_mel_bins", 80)), stack=int(fe.get("stride", 2)), mask=mask)
    raise UnsupportedError(f"edgekit cannot reproduce the feature extractor {kind}",
                           found="edgekit's CTC front ends: Wav2Vec2FeatureExtractor (the waveform), "
                                 "ParakeetFeatureExtractor, LasrFeatureExtractor, SeamlessM4TFeatureExtractor",
                           fix="convert a CTC model with one of those feature extractors")


class MaskedLogits(torch.nn.Module):
    """(features, int64 frame mask) -> logits: the mask reaches the model in its extractor's dtype."""

    def __init__(self, model: Any, front: FrontEnd) -> None:
        super().__init__()
        self.logits = Logits(model, [front.input, "attention_mask"])
        self.as_bool = front.mask_is_bool

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.logits(features, mask.bool() if self.as_bool else mask)


class HFCtc(_Ctc):
    """Any `*ForCTC` folder (wav2vec2, HuBERT, Data2VecAudio, WavLM, Parakeet, LASR, wav2vec2-BERT, ...)
    with its vocab.json; its feature extractor is ported to numpy (`front_end`)."""

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
        self.extractor = fe.get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
        front = front_end(self.extractor, fe)
        model = AutoModelForCTC.from_pretrained(folder).eval()
        self.family = str(src.config.get("model_type", "hf-ctc"))
        if model.main_input_name != front.input:
            raise UnsupportedError(f"'{self.family}' takes {model.main_input_name}, but its {self.extractor} makes "
                                   f"{front.input}", found=f"{type(model).__name__}.main_input_name",
                                   fix="save the model's own feature extractor beside it (preprocessor_config.json)")
        self.section = CtcSection(**self._section_fields(src, folder, fe), **front.section_fields())
        rate = self.section.audio.sample_rate
        feeds = [ctc_inputs(synthetic_audio(1.0, rate, s), self.section) for s in (0, 1)]
        x = tuple(torch.from_numpy(np.concatenate([f[n] for f in feeds])) for n in feeds[0])
        batch = torch.export.Dim(BATCH, min=1, max=64)
        if front.mask is None:
            samples: Any = SAMPLES if self.family in DEFERRED_GUARDS else torch.export.Dim(SAMPLES, min=1600,
                                                                                             max=16000 * 120)
            # Logits takes *args: torch.export sees one varargs argument, so its shapes nest in a tuple.
            dims: Any = (({0: batch, 1: samples},),)
            self.graph = GraphExport("model", Logits(model), x, [front.input], ["logits"], dims)
        else:  # (batch, frames, width) features and their (batch, frames) mask
            frames = torch.export.Dim(FRAMES, min=8, max=100 * 120)
            self.graph = GraphExport("model", MaskedLogits(model, front), x, [front.input, "attention_mask"], ["logits"],
                                     ({0: batch, 1: frames}, {0: batch, 1: frames}))

    def _section_fields(self, src: Source, folder: Path, fe: dict[str, Any]) -> dict[str, Any]:
        """The vocabulary, its conventions and the chunking: every CtcSection field but the front end's."""
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
        user = dict(src.preprocess or {})
        return dict(audio=Chunking(int(fe.get("sampling_rate", 16000)), float(user.get("chunk_length_s", 20.0)),
                                   float(user.get("stride_length_s", 2.0))),
                    vocabulary=tuple(labels), blank_id=int(src.config.get("pad_token_id") or 0),
                    word_delimiter=tok_cfg.get("word_delimiter_token", "|"),
                    skip=tuple(sorted({t for t in labels if t.startswith("<") and t.endswith(">") and t != "<unk>"})))

    def preprocess_check(self, waves: list[np.ndarray], c: CtcSection) -> PreprocessCheck:
        """edgekit's front end against the folder's feature extractor, features and mask. Chunks run one
        at a time, unpadded, as the extractor sees a single waveform."""
        from transformers import AutoFeatureExtractor

        assert self.src.hf_dir is not None
        fe = AutoFeatureExtractor.from_pretrained(self.src.hf_dir)
        worst, problems = 0.0, []
        for w in waves:
            theirs = fe(w, sampling_rate=c.audio.sample_rate, return_tensors="np", return_attention_mask=True)
            mine = ctc_inputs(w, c)
            a, b = mine[c.input][0], np.asarray(theirs[c.input][0], dtype=np.float32)
            if a.shape != b.shape:
                problems.append(f"{c.input} shape {list(a.shape)} vs {list(b.shape)}")
                continue
            worst = max(worst, float(np.abs(a - b).max()))
            want = np.asarray(theirs["attention_mask"][0]).astype(bool)
            got = mine[c.mask][0].astype(bool) if c.mask else np.ones(len(want), bool)
            if got.shape != want.shape or (got != want).any():
                problems.append(f"the frame mask differs ({int(got.sum())} vs {int(want.sum())} real frames)")
        limit = PREPROCESS_MAX_ABS[c.features]
        summary = "; ".join(problems) if problems else f"max abs difference {worst:.3g} (limit {limit:g})"
        return PreprocessCheck(not problems and worst <= limit, f"{summary} against transformers {self.extractor}",
                               max_abs=worst if not problems else float("inf"))


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
        if u["features"] not in ("waveform", "log-mel"):  # the others are Hugging Face extractors' (HFCtc)
            raise ConfigError(f"unknown features '{u['features']}'", found="front ends ['log-mel', 'waveform']")
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
