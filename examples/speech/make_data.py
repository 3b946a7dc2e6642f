"""Synthesize spoken digit sequences with espeak-ng (Debian: apt-get install espeak-ng).

Several voices, speeds and pitches, random gain, leading/trailing silence and white noise at
10-30 dB SNR; resampled 22050 -> 16000 Hz with soxr. Writes
  <out>/train.npz        log-mel features + transcripts of the training set (not committed: big)
  <out>/heldout/*.wav    held-out utterances (different seeds), transcript in the file name
Usage: python examples/speech/make_data.py --out /tmp/digits --train 1500 --heldout 10
"""
from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from edgekit.preprocess.audio import resample
from model import features

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+f3", "en-us+m3", "en-gb+f2",
          "en+f4", "en-us-nyc")
RATE = 16_000


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    wave, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(wave, rate, RATE)


def utterance(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    words = [DIGITS[i] for i in rng.integers(0, 10, rng.integers(3, 6))]
    text = " ".join(words)
    wave = synthesize(text, str(rng.choice(VOICES)), int(rng.integers(130, 220)), int(rng.integers(20, 80)))
    pad = [np.zeros(int(rng.uniform(0.05, 0.4) * RATE), np.float32) for _ in range(2)]
    wave = np.concatenate([pad[0], wave, pad[1]]) * rng.uniform(0.3, 1.0)
    snr_db = rng.uniform(10, 30)
    noise = rng.standard_normal(len(wave)) * np.sqrt(np.mean(wave**2) / 10 ** (snr_db / 10))
    return text, np.clip(wave + noise, -1, 1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--heldout", type=int, default=10)
    args = ap.parse_args()
    (args.out / "heldout").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    feats, texts = [], []
    for _ in range(args.train):
        text, wave = utterance(rng)
        feats.append(features(wave))
        texts.append(text)
    lengths = np.array([f.shape[1] for f in feats])
    packed = np.zeros((len(feats), feats[0].shape[0], lengths.max()), np.float16)
    for i, f in enumerate(feats):
        packed[i, :, : f.shape[1]] = f
    np.savez_compressed(args.out / "train.npz", features=packed, lengths=lengths, texts=np.array(texts))
    held = np.random.default_rng(12345)  # a different stream: no training utterance repeats
    for i in range(args.heldout):
        text, wave = utterance(held)
        sf.write(args.out / "heldout" / f"{i:02d}_{text.replace(' ', '-')}.wav", wave, RATE, subtype="PCM_16")
    print(f"wrote {args.train} training utterances and {args.heldout} held-out WAVs to {args.out}")


if __name__ == "__main__":
    main()
