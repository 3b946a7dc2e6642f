"""Word timestamps on long audio with VAD: edgekit against transformers on the same speech spans.

The recording is benchmarks/bench_vad.py's (espeak-ng sentences between 4-20 s silences, 10 minutes by
default); Whisper base (scripts/real_models.py). Silero VAD's spans (`vad=True`'s options) are cut from
the wave and each goes through transformers as its ASR pipeline runs `return_timestamps="word"` on
audio of one window: `WhisperForConditionalGeneration.generate(return_timestamps=True,
return_token_timestamps=True)` on WhisperFeatureExtractor's features and attention mask (the DTW over
the alignment heads, cropped to the span's frames), then the tokenizer's `_decode_asr` groups tokens
into words. edgekit runs `recognize(vad=..., word_timestamps=True)` on the whole recording, its spans
unpacked (each its own window: like for like) and packed (spans sharing 30 s windows).
Printed per precision and packing: CPU s per audio s, WER vs the spoken text, spans whose words equal
transformers', |start/end difference| per word over the words of those spans (max and mean; "within
0.1 s" is issue #21's bound on these), words elsewhere aligned by text (max: a span heard differently
moves the DTW path of its other words too), and words outside every spoken sentence (text in a silence).
Usage:
    python benchmarks/bench_vad_words.py [--minutes 10] [--precisions fp32 int8] [--out DIR]
"""
from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_vad import in_silence, recording  # noqa: E402
from benchmarks.real_speech import RATE, wer  # noqa: E402

LIMIT = 0.1  # s: issue #21's bound on |edgekit - transformers| per word boundary

Words = list[tuple[str, float, float]]  # (word as decoded, start s, end s) in the recording's time


def transformers_words(folder: Path, wave: np.ndarray, offset: float) -> Words:
    """One span through transformers, as its pipeline(return_timestamps="word") does for one window."""
    import torch

    hf, tok, extractor = _hf(folder)
    inputs = extractor(wave, sampling_rate=RATE, return_tensors="pt",
                                                             return_attention_mask=True)
    with torch.inference_mode():
        out = hf.generate(inputs.input_features, attention_mask=inputs.attention_mask, language="en",
                          return_timestamps=True, return_token_timestamps=True, force_unique_generate_call=True)
    prompt = 3  # <|startoftranscript|> <|en|> <|transcribe|>
    _, chunks = tok._decode_asr([{"tokens": out["sequences"][:, prompt:],
                                  "token_timestamps": out["token_timestamps"][:, prompt:]}],
                                return_timestamps="word", return_language=False, time_precision=0.02)
    return [(c["text"], offset + c["timestamp"][0], offset + c["timestamp"][1]) for c in chunks["chunks"]]


@lru_cache(maxsize=1)
def _hf(folder: Path) -> tuple[Any, Any, Any]:
    """transformers' model, tokenizer and feature extractor for `folder`, loaded once."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    return (WhisperForConditionalGeneration.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder),
            WhisperFeatureExtractor.from_pretrained(folder))


def compare(mine: list[Words], ref: list[Words]) -> tuple[int, list[float], list[float]]:
    """(spans whose word texts are equal, |differences| over those spans' words, |differences| over
    words that difflib aligns by text in the other spans)."""
    same, exact, aligned = 0, [], []
    for a, b in zip(mine, ref):
        if [w for w, _, _ in a] == [w for w, _, _ in b]:
            same += 1
            exact += _gaps(a, b)
            continue
        blocks = difflib.SequenceMatcher(a=[w for w, _, _ in a], b=[w for w, _, _ in b], autojunk=False)
        for i, j, n in blocks.get_matching_blocks():
            aligned += _gaps(a[i:i + n], b[j:j + n])
    return same, exact, aligned


def _gaps(a: Words, b: Words) -> list[float]:
    """|start difference| and |end difference| of each pair of words."""
    return [abs(x - y) for wa, wb in zip(a, b) for x, y in ((wa[1], wb[1]), (wa[2], wb[2]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--out", type=Path, help="where the artifacts go (default: a temp dir)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import edgekit
    from edgekit.preprocess.vad import FOR_RECOGNITION, WINDOW, detect
    from real_models import whisper_base

    folder, out = whisper_base(), args.out or Path(tempfile.mkdtemp(prefix="bench-vad-words-"))
    rec = recording(args.minutes * 60)
    seconds = len(rec.wave) / RATE
    spans = detect(rec.wave, RATE, FOR_RECOGNITION.capped(30.0))  # what recognize(vad=True) cuts
    t = time.process_time()
    ref = [transformers_words(folder, rec.wave[s.start:s.end], s.start / RATE) for s in spans]
    print(f"{seconds:.0f} s of audio, {len(rec.texts)} sentences, {len(spans)} VAD spans; transformers fp32 "
          f"(PyTorch): {sum(map(len, ref))} words, {(time.process_time() - t) / seconds:.3f} CPU s per audio s, "
          f"WER {wer(' '.join(rec.texts), ' '.join(w for r in ref for w, _, _ in r)):.3f}\n")
    margin = FOR_RECOGNITION.speech_pad_ms / 1000 + WINDOW / RATE  # a span's pad and one VAD window
    print("| precision | spans | CPU s per audio s | WER vs spoken | spans = transformers' | words compared "
          "| max / mean abs diff (s) | aligned words elsewhere: max (s) | within 0.1 s | words in silence |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for precision in args.precisions:
        art = out / f"whisper-base-{precision}"
        if not (art / "edgekit.json").is_file():
            edgekit.convert(folder, art, precision=precision)
        model = edgekit.load(art, device="cpu")
        for pack in (False, True):
            cpu = time.process_time()
            got = model.recognize(rec.wave, sample_rate=RATE, language="en", word_timestamps=True,
                                  vad=replace(FOR_RECOGNITION, pack=pack))
            cpu = (time.process_time() - cpu) / seconds
            words = [w for s in got.segments for w in s.words or []]
            mine = [[(w.word, w.start, w.end) for w in words if s.start / RATE <= w.start <= s.end / RATE]
                    for s in spans]
            same, exact, aligned = compare(mine, ref)
            within = same > 0 and max(exact) <= LIMIT  # the bound: words of matching transcripts
            ok = ok and within
            print(f"| {precision} | {'packed' if pack else 'one a window'} | {cpu:.3f} | "
                  f"{wer(' '.join(rec.texts), got.text):.3f} | {same} of {len(spans)} | {len(exact) // 2} | "
                  f"{max(exact, default=0):.3f} / {np.mean(exact) if exact else 0:.4f} | "
                  f"{max(aligned, default=0):.3f} ({len(aligned) // 2} words) | {'yes' if within else 'NO'} | "
                  f"{len(in_silence(words, rec.spans, margin))} of {len(words)} |", flush=True)
    print(f"\nall word boundaries within {LIMIT} s of transformers': {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
