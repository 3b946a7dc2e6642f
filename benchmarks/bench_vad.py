"""Long audio with voice activity detection: real Whisper base on an espeak-ng recording with long silences.

The recording: the six sentences of benchmarks/real_speech.py spoken by espeak-ng (en-us / en-gb) in turn,
between silences of 4-20 s (seeded) under -60 dBFS noise, to the length asked (10 minutes by default).
Whisper base (pretrained, the PyPI wheels) is converted once and transcribes it with `vad=True` (spans
packed into shared 30 s windows), with each span in a window of its own, and without VAD; printed per
mode: the encoder's 30 s windows, the real-time factor (seconds of wall time per second of audio), the
CPU seconds (all threads) per second of audio, the WER against the spoken text, and the segments outside
every spoken sentence (beyond the VAD's pad): text in a silence. Word timestamps: bench_vad_words.py.
Usage:
    python benchmarks/bench_vad.py [--minutes 10] [--precision int8] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.real_speech import RATE, SENTENCES, VOICES, speak, wer  # noqa: E402


@dataclass(frozen=True)
class Recording:
    wave: np.ndarray  # float32 mono at RATE
    texts: list[str]  # the spoken sentences, in order
    spans: list[tuple[int, int]]  # each sentence's samples (espeak-ng's own lead-in and tail included)


def recording(seconds: float, silence: tuple[float, float] = (4.0, 20.0), seed: int = 0,
              sentences: tuple[int, ...] = tuple(range(len(SENTENCES))),
              spoken: list[np.ndarray] | None = None) -> Recording:
    """`sentences` (indices of SENTENCES) in turn between seeded silences of `silence` seconds until
    `seconds` are filled; `spoken`: their audio at RATE (else espeak-ng speaks them now)."""
    rng = np.random.default_rng(seed)
    said = [SENTENCES[i] for i in sentences]
    if spoken is None:
        spoken = [speak(SENTENCES[i], VOICES[i % len(VOICES)]) for i in sentences]
    parts, texts, spans, at = [], [], [], 0
    gap = int(rng.uniform(*silence) * RATE)
    while at + gap + len(spoken[len(texts) % len(spoken)]) < seconds * RATE:
        say = spoken[len(texts) % len(spoken)]
        parts += [np.zeros(gap, np.float32), say]
        spans.append((at + gap, at + gap + len(say)))
        texts.append(said[len(texts) % len(said)])
        at += gap + len(say)
        gap = int(rng.uniform(*silence) * RATE)
    parts.append(np.zeros(int(seconds * RATE) - at, np.float32))
    wave = np.concatenate(parts)
    return Recording(wave + rng.standard_normal(len(wave)).astype(np.float32) * 1e-3, texts, spans)


def in_silence(segments: list, spans: list[tuple[int, int]], margin: float) -> list:
    """Segments that reach more than `margin` seconds outside every spoken sentence."""
    def inside(s: object) -> bool:
        return any(a / RATE - margin <= s.start and s.end <= b / RATE + margin for a, b in spans)  # type: ignore[attr-defined]
    return [s for s in segments if not inside(s)]


def windows(model: Any, wave: np.ndarray, vad: Any) -> int:
    """The 30 s windows the encoder reads: the chunks holding sound without VAD; with it, the spans
    laid into windows as WhisperRecognizer._transcribe_spans lays them."""
    from edgekit.preprocess.audio import is_silence
    from edgekit.preprocess.vad import detect
    from edgekit.tasks.span_packing import pack

    if vad is None:
        return sum(not is_silence(c.wave) for c in model.chunks(wave))
    n = model.contract.n_samples
    spans = detect(wave, RATE, vad.capped(model.chunking.chunk_length_s))
    short = [i for i, s in enumerate(spans) if s.end - s.start <= n]
    return len(pack(spans, short, n, vad.pack is not False)) + len(spans) - len(short)  # no words asked here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--out", type=Path, help="where the artifact goes (default: a temp dir)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import edgekit
    from edgekit.preprocess.vad import FOR_RECOGNITION, WINDOW
    from real_models import whisper_base

    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-vad-"))) / f"whisper-base-{args.precision}"
    if not (out / "edgekit.json").is_file():
        edgekit.convert(whisper_base(), out, precision=args.precision)
    model = edgekit.load(out, device="cpu")
    rec = recording(args.minutes * 60)
    seconds = len(rec.wave) / RATE
    print(f"{seconds:.0f} s of audio, {len(rec.texts)} sentences ({sum(b - a for a, b in rec.spans) / RATE:.0f} s "
          f"spoken), Whisper base {args.precision}, greedy, English, CPU\n")
    # Wall time is what a user waits; CPU time (all threads) is the work, steadier on a busy machine.
    print("| mode | encoder windows | real-time factor | CPU s per audio s | WER vs spoken text "
          "| segments outside the sentences |")
    print("|---|---|---|---|---|---|")
    # Without VAD a segment is a whole 30 s window unless Whisper's timestamps are asked for: the last
    # row shows where its text lands then.
    # A VAD span reaches its pad and one 32 ms decision window past the speech.
    margin = FOR_RECOGNITION.speech_pad_ms / 1000 + WINDOW / RATE
    modes = (("VAD off", False, False), ("VAD on, one span a window", replace(FOR_RECOGNITION, pack=False), False),
             ("VAD on, spans packed", FOR_RECOGNITION, False),
             ("VAD on, spans packed, timestamps", FOR_RECOGNITION, True), ("VAD off, timestamps", False, True))
    for mode, vad, stamps in modes:
        t, cpu = time.perf_counter(), time.process_time()
        got = model.recognize(rec.wave, sample_rate=RATE, language="en", vad=vad, return_timestamps=stamps)
        rtf, cpu = (time.perf_counter() - t) / seconds, (time.process_time() - cpu) / seconds
        stray = f"{len(in_silence(got.segments, rec.spans, margin))} of {len(got.segments)}" if vad or stamps else "-"
        print(f"| {mode} | {windows(model, rec.wave, vad or None)} | {rtf:.3f} | {cpu:.3f} | "
              f"{wer(' '.join(rec.texts), got.text):.3f} | {stray} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
