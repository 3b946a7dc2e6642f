"""Whisper-tiny-shaped (random weights), 30 s of audio: real-time factor of transformers vs edgekit.

Same process, same thread count, same features path (edgekit computes its own log-mel in numpy;
transformers uses WhisperFeatureExtractor; both timings include feature extraction). Greedy,
<|notimestamps|>, language forced to English, `--tokens` new tokens (the random model rarely emits
<|endoftext|>, so both decode exactly that many). Usage:
    python benchmarks/bench_recognize.py [--threads 2] [--tokens 64] [--runs 3]
faster-whisper / CTranslate2 are not installed here (see the report); they are not in the table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "speech"))


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: first-call allocations are not what a service pays per utterance
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"

    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.utils import logging

    import edgekit
    from edgekit.converters.specs.ctc import synthetic_audio
    from tiny_whisper import make_tiny_whisper

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-recognize-"))
    folder = make_tiny_whisper(work / "whisper-tiny-shaped", d_model=384, layers=4, heads=6, vocab_size=51865,
                               init_std=0.05)
    wave = synthetic_audio(args.seconds - 0.5, 16000, 0)  # just under one 30 s window: one encoder pass
    hf = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    fe = WhisperFeatureExtractor.from_pretrained(folder)

    def run_hf() -> list[int]:
        feats = fe(wave, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            out = hf.generate(feats, language="en", max_new_tokens=args.tokens,
                              return_dict_in_generate=True)
        return out.sequences[0].tolist()

    rows = [("transformers (PyTorch fp32)", _median_seconds(run_hf, args.runs), run_hf())]
    for precision in ("fp32", "int8"):
        out = work / f"edgekit-{precision}"
        art = edgekit.convert(folder, out, precision=precision, strict=False)
        model = edgekit.load(out, device="cpu")
        print(f"edgekit {precision}: parity {art.manifest.parity.summary}", flush=True)

        def run_ek(m: object = model) -> list[int]:
            return m.greedy_tokens(m.features(wave), language="en", max_new_tokens=args.tokens)  # type: ignore[attr-defined]

        def run_ek_text(m: object = model) -> object:
            return m.recognize(wave, language="en", max_new_tokens=args.tokens)  # type: ignore[attr-defined]

        rows.append((f"edgekit {precision} (onnxruntime CPU)", _median_seconds(run_ek_text, args.runs), run_ek()))
    base = rows[0][1]
    ref_tokens = rows[0][2]
    print(f"\nWhisper-tiny-shaped (d=384, 4+4 layers, vocab 51865, random), {args.seconds:.0f} s audio, "
          f"{args.tokens} tokens, {args.threads} threads, median of {args.runs}")
    print(f"{'backend':36s} {'seconds':>8s} {'RTF':>7s} {'speed-up':>9s} {'tokens = transformers':>22s}")
    for name, sec, tokens in rows:
        same = sum(a == b for a, b in zip(tokens, ref_tokens)) / max(len(ref_tokens), 1)
        print(f"{name:36s} {sec:8.3f} {sec / args.seconds:7.4f} {base / sec:8.2f}x {same:21.0%}")


if __name__ == "__main__":
    main()
