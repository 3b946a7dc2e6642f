"""Streaming CTC recognition latency: a recording fed in real-time-sized pieces to `recognize_stream`.

Pieces of `--chunk-ms` arrive at the pace a microphone gives them (piece k at (k + 1) * chunk
seconds); each is processed when it has arrived and the previous one is done (a queue, so a model
slower than real time shows as growing latency). Measured:
  compute      seconds per piece (`recognize_stream`'s step: windows run, words settled)
  emission     wall time at which a word became final minus the word's end in the audio
  vs offline   WER of the streamed final text against `recognize` on the whole recording
Models (random weights, no download): `burst` (a tone-burst detector whose words are the bursts:
emission latency has real word ends) and `wav2vec2-base` (Wav2Vec2ForCTC at base size, 95M
parameters: per-piece compute of a real-sized model; its random "words" are long, so emission
there says little). Usage:
    python benchmarks/bench_stream.py [--model burst|wav2vec2-base] [--chunk-ms 320] [--lookahead 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
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


def stream_timed(model: Any, wave: np.ndarray, chunk: int, lookahead_s: float,
                 left_s: float | None) -> tuple[list[float], list[float], str]:
    """Per-piece compute seconds, per-word emission latency (s), the final text."""
    pieces = [wave[i:i + chunk] for i in range(0, len(wave), chunk)]
    computes: list[float] = []
    latencies: list[float] = []
    done_at = 0.0  # when the previous piece finished (seconds on the stream's clock)
    updates = model.recognize_stream(iter(pieces), lookahead_s=lookahead_s, left_context_s=left_s)
    final = ""
    for k in range(len(pieces) + 1):  # the last step is the end of the stream (arrives with the last piece)
        t = time.perf_counter()
        u = next(updates)
        spent = time.perf_counter() - t
        arrival = min(k + 1, len(pieces)) * chunk / RATE
        done_at = max(arrival, done_at) + spent
        computes.append(spent)
        latencies += [done_at - w.end for w in u.words]
        final = u.text_final
    return computes[:-1], latencies, final


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("burst", "wav2vec2-base"), default="burst")
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--lookahead", type=float, default=0.5)
    ap.add_argument("--left", type=float, help="left context, seconds [the artifact's chunk overlap]")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)  # onnxruntime sessions read it when created
    import torch

    import edgekit  # noqa: F401  (loaded before timing)
    from edgekit.tasks.recognizer import word_error_rate

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    model, wave = (_burst_model if args.model == "burst" else _w2v_base)(work)
    chunk = args.chunk_ms * RATE // 1000
    stream_timed(model, wave[:RATE * 3], chunk, args.lookahead, args.left)  # warm-up
    computes, lat, final = stream_timed(model, wave, chunk, args.lookahead, args.left)
    t = time.perf_counter()
    offline = model.recognize(wave).text
    offline_s = time.perf_counter() - t
    left = model.chunking.stride_length_s if args.left is None else args.left
    print(f"{args.model}: {len(wave) / RATE:.2f} s of audio in {args.chunk_ms} ms pieces, lookahead "
          f"{args.lookahead} s, left context {left} s, {args.threads} thread(s)")
    print(f"  compute per piece: median {1000 * statistics.median(computes):.1f} ms, p95 "
          f"{1000 * _pct(computes, 95):.1f} ms, max {1000 * max(computes):.1f} ms "
          f"(real-time factor {sum(computes) / (len(wave) / RATE):.3f}; offline recognize "
          f"{offline_s / (len(wave) / RATE):.3f})")
    print(f"  emission latency ({len(lat)} words): median {1000 * statistics.median(lat) if lat else float('nan'):.0f} ms, "
          f"p95 {1000 * _pct(lat, 95):.0f} ms, max {1000 * max(lat, default=float('nan')):.0f} ms")
    print(f"  final text vs offline recognize: WER {word_error_rate(offline, final):.3f} "
          f"({len(offline.split())} offline words)")


if __name__ == "__main__":
    main()
