"""Real Whisper base (pretrained, from PyPI wheels) on real speech: edgekit fp32 / fp16 / int8 vs PyTorch.

espeak-ng speaks English sentences (Debian: apt-get install espeak-ng); each precision is converted
with `edgekit.convert` and transcribes every file greedily (English, transcribe, no timestamps).
Every engine reads the same log-mel features (edgekit's numpy log-mel), so only the model math
differs. Printed per precision: WER vs PyTorch's transcript, WER vs the spoken text, files whose
tokens equal PyTorch's, size on disk, convert time; CTranslate2 (faster-whisper's engine, on the
wheels' own model.bin) at float32 and int8 beside them when `ctranslate2` is installed.
Usage:
    python benchmarks/real_speech.py [--precisions fp32 fp16 int8 int8-dynamic] [--out DIR] [--verbose]
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is cold and windy, so remember to wear a warm coat.",
    "She sells sea shells by the sea shore.",
    "We will meet at the station after lunch and take the train to the city.",
    "Artificial intelligence is changing how people work and learn.",
)
VOICES = ("en-us", "en-gb")
# The sentences tests/data/speech holds: those where PyTorch's greedy choice is clearest (smallest top-1 minus
# top-2 logit gap along the transcript 0.22, 0.68, 0.17; the other three have near-ties of 0.065-0.097,
# where any rounding may pick the runner-up, as CTranslate2's own int8 does on one of them).
TEST_SENTENCES = (3, 4, 5)


@dataclass(frozen=True)
class Utterance:
    text: str
    wave: np.ndarray  # float32 mono at RATE


def speak(text: str, voice: str, speed: int = 150) -> np.ndarray:
    """espeak-ng's WAV (22050 Hz) resampled to 16 kHz."""
    import soundfile as sf

    from edgekit.preprocess.audio import resample

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    wave, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(wave, rate, RATE).astype(np.float32)


def utterances(count: int = len(SENTENCES)) -> list[Utterance]:
    return [Utterance(t, speak(t, VOICES[i % len(VOICES)])) for i, t in enumerate(SENTENCES[:count])]


def save_flac(speech: list[Utterance], folder: Path) -> None:
    """Write utterances as 16 kHz FLAC, the spoken text as the file name (tests/data/speech is made so)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i, u in enumerate(speech):
        sf.write(folder / f"{i}-{normalize(u.text).replace(' ', '_')}.flac", u.wave, RATE, subtype="PCM_16")


def load_flac(folder: Path) -> list[Utterance]:
    """The utterances save_flac wrote, in order."""
    import soundfile as sf

    files = sorted(folder.glob("*.flac"), key=lambda f: int(f.name.split("-", 1)[0]))
    return [Utterance(f.stem.split("-", 1)[1].replace("_", " "), sf.read(f, dtype="float32")[0]) for f in files]


def normalize(text: str) -> str:
    """Lower case, punctuation dropped: WER counts words, not commas."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").split())


def wer(ref: str, hyp: str) -> float:
    from edgekit.tasks.recognizer import word_error_rate

    return float(word_error_rate(normalize(ref), normalize(hyp)))


def mean_wer(refs: list[str], hyps: list[str]) -> float:
    return float(np.mean([wer(r, h) for r, h in zip(refs, hyps)]))


def log_mel(speech: list[Utterance]) -> list[np.ndarray]:
    """Whisper base's (80, 3000) log-mel of each utterance, as edgekit's runtime computes it."""
    from edgekit.preprocess.audio import whisper_log_mel

    return [whisper_log_mel(u.wave, 80, 480_000, 400, 160, RATE) for u in speech]


def text_ids(tokens: list[int], eot: int = 50257) -> list[int]:
    """The text tokens of a stream (ids below <|endoftext|>): prompt and end dropped."""
    return [t for t in tokens if t < eot]


def pytorch_tokens(folder: Path, feats: list[np.ndarray]) -> list[list[int]]:
    """transformers' greedy token streams (English, no timestamps), as edgekit's parity gate calls it."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from edgekit.converters.specs.whisper import hf_whisper_tokens

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return [hf_whisper_tokens(model, torch.from_numpy(f)[None], language="en") for f in feats]


def ctranslate2_tokens(ct2_dir: Path, feats: list[np.ndarray], compute_type: str) -> list[list[int]] | None:
    """CTranslate2's greedy tokens (faster-whisper's engine and its default suppression: the config's
    suppress ids, blank at the start) on the same features; None when ctranslate2 is not installed."""
    try:
        import ctranslate2
    except ImportError:
        return None
    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type=compute_type, intra_threads=2)
    prompt = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    out = []
    for f in feats:
        r = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(f[None])), [prompt], beam_size=1)
        out.append(prompt + list(r[0].sequences_ids[0]))
    return out


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


@dataclass(frozen=True)
class Row:
    engine: str
    wer_pytorch: float
    wer_text: float
    identical: int  # files whose text tokens equal PyTorch's
    files: int
    size_mb: float
    convert_s: float | None


def score(engine: str, tokens: list[list[int]], ref: list[list[int]], decode: Any, speech: list[Utterance],
          size_mb: float, convert_s: float | None) -> Row:
    hyps, refs = [decode(text_ids(t)) for t in tokens], [decode(text_ids(t)) for t in ref]
    same = sum(int(text_ids(a) == text_ids(b)) for a, b in zip(tokens, ref))
    return Row(engine, mean_wer(refs, hyps), mean_wer([u.text for u in speech], hyps), same, len(speech), size_mb,
               convert_s)


def edgekit_tokens(folder: Path, out: Path, precision: str, feats: list[np.ndarray]) -> tuple[list[list[int]], float]:
    """`precision` is fp32 | fp16 | int8, or int8-<method> (int8-dynamic: the per-tensor form Whisper used before)."""
    import edgekit

    precision, _, method = precision.partition("-")
    t = time.perf_counter()
    edgekit.convert(folder, out, precision=precision, int8_method=method or None, overwrite=True, strict=False)
    seconds = time.perf_counter() - t
    m = edgekit.load(out, device="cpu")
    return [m.greedy_tokens(f, language="en") for f in feats], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8", "int8-dynamic"])
    parser.add_argument("--out", type=Path, default=None, help="where converted artifacts go (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="print every transcript")
    parser.add_argument("--save-audio", type=Path, help="only write TEST_SENTENCES as FLAC there (tests)")
    args = parser.parse_args(argv)
    if args.save_audio:
        save_flac([utterances()[i] for i in TEST_SENTENCES], args.save_audio)
        return 0
    sys.path.insert(0, str(ROOT / "scripts"))
    from real_models import whisper_base, whisper_ct2_dir
    from tokenizers import Tokenizer

    folder, speech = whisper_base(), utterances()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    decode = lambda ids: tok.decode(ids).strip()  # noqa: E731
    feats = log_mel(speech)
    ref = pytorch_tokens(folder, feats)
    out = args.out or Path(tempfile.mkdtemp(prefix="real-speech-"))
    rows = [score("PyTorch fp32", ref, ref, decode, speech, folder_mb(folder), None)]
    outputs = {"PyTorch fp32": ref}
    for p in args.precisions:
        tokens, seconds = edgekit_tokens(folder, out / p, p, feats)
        rows.append(score(f"edgekit {p}", tokens, ref, decode, speech, folder_mb(out / p), seconds))
        outputs[f"edgekit {p}"] = tokens
    ct2 = whisper_ct2_dir(out / "ct2")
    for compute in ("float32", "int8"):
        tokens = ctranslate2_tokens(ct2, feats, compute)
        if tokens is None:
            print("ctranslate2 (faster-whisper) not installed: no CTranslate2 rows")
            break
        rows.append(score(f"CTranslate2 {compute}", tokens, ref, decode, speech, folder_mb(ct2), None))
        outputs[f"CTranslate2 {compute}"] = tokens
    if args.verbose:
        for i, u in enumerate(speech):
            print(f"spoken: {u.text!r}")
            for engine, tokens in outputs.items():
                print(f"  {engine:>20}: {decode(text_ids(tokens[i]))!r}")
    print(f"\n{len(speech)} espeak-ng utterances, greedy, English, no timestamps. CTranslate2 reads the wheels'"
          " fp16 model.bin (its size) and quantizes at load for int8.\n")
    print("| engine | WER vs PyTorch | WER vs spoken text | tokens = PyTorch | size MB | convert s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        conv = f"{r.convert_s:.0f}" if r.convert_s is not None else "-"
        print(f"| {r.engine} | {r.wer_pytorch:.3f} | {r.wer_text:.3f} | {r.identical}/{r.files} | {r.size_mb:.0f} "
              f"| {conv} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
