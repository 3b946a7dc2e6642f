"""The digit recognizer end to end: PyTorch weights -> edgekit fp32 and int8 -> WER on held-out WAVs.

Usage: python examples/speech/run.py [--weights digits_ctc.npz] [--wavs heldout/] [--out /tmp/digits-art]
The committed weights were trained by train.py on 1500 utterances from make_data.py; the WAVs are
held-out utterances (never trained on), their transcript in the file name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import edgekit
from edgekit.preprocess.audio import load_audio
from edgekit.tasks.ctc import ctc_decode
from edgekit.tasks.recognizer import word_error_rate
from model import LABELS, PREPROCESS, features, load_weights

HERE = Path(__file__).parent


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    errors = sum(word_error_rate(r, h) * len(r.split()) for r, h in zip(refs, hyps))
    return errors / sum(len(r.split()) for r in refs)


def pytorch_transcripts(model: "torch.nn.Module", waves: list[np.ndarray]) -> list[str]:  # noqa: F821
    import torch

    with torch.inference_mode():
        return [ctc_decode(model(torch.from_numpy(features(w))[None])[0].argmax(-1).numpy(), LABELS, blank_id=0)
                for w in waves]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, default=HERE / "digits_ctc.npz")
    ap.add_argument("--wavs", type=Path, default=HERE / "heldout")
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgekit-digits"))
    args = ap.parse_args()
    files = sorted(args.wavs.glob("*.wav"))
    refs = [f.stem.split("_", 1)[1].replace("-", " ") for f in files]
    waves = [load_audio(f, None, PREPROCESS["sample_rate"]) for f in files]
    model = load_weights(str(args.weights))
    results = {"pytorch": corpus_wer(refs, pytorch_transcripts(model, waves))}
    for precision in ("fp32", "int8"):
        out = args.out / precision
        art = edgekit.convert(model, out, task="recognize", precision=precision, labels=LABELS,
                              preprocess=PREPROCESS, calibration=[*waves], overwrite=True)
        rec = edgekit.load(out, device="cpu")
        hyps = [rec.recognize(f).text for f in files]
        results[f"edgekit-{precision}"] = corpus_wer(refs, hyps)
        print(f"{precision}: parity {art.manifest.parity.summary}")
    print(f"held-out utterances: {len(files)}, words: {sum(len(r.split()) for r in refs)}")
    for name, wer in results.items():
        print(f"WER {name:14s} {100 * wer:5.1f} %")
    print(f"int8 - pytorch: {100 * (results['edgekit-int8'] - results['pytorch']):+.1f} points")


if __name__ == "__main__":
    main()
