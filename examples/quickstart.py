"""The main job on the CPU default: train, convert and run one model per task, in a few minutes.

    python examples/quickstart.py [--out models] [--gpt-steps 300] [--digits-epochs 4] [--translate-steps 400]

1. classify:  the MNIST-style CNN trained on scikit-learn's digits -> models/digits-int8 -> predictions
2. generate:  a character-level GPT trained on Python's own docs (pydoc_data) -> models/char-gpt -> text
3. recognize: the spoken-digits CTC model shipped in examples/speech -> models/digits-asr -> transcripts
4. translate: a Marian-shaped English -> Chinese model trained on number words -> models/numbers-en-zh
   -> held-out exact match of PyTorch, edgekit fp32 and int8 side by side (examples/translate_numbers.py)
Each artifact passed its parity gate against the PyTorch model at convert time; the figures are
printed beside the results.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "speech")]  # examples.* and the speech model module


def classify_demo(out: Path, epochs: int) -> None:
    import torch

    import edgekit
    from examples.models import small_cnn
    from examples.train_digits import digits_pictures, split, to_tensor, train

    pics, labels = digits_pictures(28, 1)
    train_idx, test_idx = split(len(labels))
    model = train(small_cnn(1, 28, 10), to_tensor(pics)[train_idx], labels[train_idx], epochs)
    art = edgekit.convert(model, out / "digits-int8", example_inputs=torch.rand(1, 1, 28, 28),
                          labels=[str(i) for i in range(10)], precision="int8",
                          calibration=list(pics[train_idx[:200]]), overwrite=True)
    clf = edgekit.load(art.path)
    picks = test_idx[:5]
    preds = clf.classify(list(pics[picks]), top_k=2)
    print(f"\n[classify] {art.path} ({clf.device}, int8; parity: {art.manifest.parity.summary})")
    for i, p in zip(picks, preds):
        print(f"  digit {labels[i]} -> " + ", ".join(f"{q.label} ({q.score:.2f})" for q in p))
    everything = clf.classify(list(pics[test_idx]), top_k=1)
    acc = np.mean([int(p[0].label) == t for p, t in zip(everything, labels[test_idx])])
    print(f"  held-out accuracy: {100 * acc:.1f}% of {len(test_idx)} images")


def generate_demo(out: Path, steps: int) -> None:
    import numpy as np

    import edgekit
    from examples.train_char_gpt import char_tokenizer, corpus, make_gpt, train

    tok = char_tokenizer()
    text, _ = corpus()
    ids = np.asarray(tok.encode(text).ids, dtype=np.int64)
    gpt = make_gpt(tok.get_vocab_size())
    train(gpt, ids, steps, lr=3e-3)
    folder = out / "char-gpt-source"
    gpt.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    art = edgekit.convert(folder, out / "char-gpt", overwrite=True)
    lm = edgekit.load(art.path)
    print(f"\n[generate] {art.path} ({lm.device}, fp32; parity: {art.manifest.parity.summary})")
    for prompt in ("The for statement", "A class definition"):
        print(f"  {prompt!r} -> {lm.generate(prompt, max_new_tokens=60)!r}")


def recognize_demo(out: Path) -> None:
    import edgekit
    from model import LABELS, PREPROCESS, load_weights

    speech = ROOT / "examples" / "speech"
    model = load_weights(str(speech / "digits_ctc.npz"))
    art = edgekit.convert(model, out / "digits-asr", task="recognize", labels=LABELS, preprocess=PREPROCESS,
                          overwrite=True)
    asr = edgekit.load(art.path)
    print(f"\n[recognize] {art.path} ({asr.device}, fp32; parity: {art.manifest.parity.summary})")
    for wav in sorted((speech / "heldout").glob("*.wav"))[:4]:
        truth = wav.stem.split("_", 1)[1].replace("-", " ")
        print(f"  {wav.name}: {asr.recognize(wav).text!r} (said: {truth!r})")


def translate_demo(out: Path, steps: int) -> None:
    import subprocess

    from examples.translate_numbers import main as translate

    translate(["--out", str(out), "--steps", str(steps)])
    cmd = ["edgekit", "run", str(out / "numbers-en-zh"), "--prompt", "three thousand and five"]
    print(f"  $ {' '.join(cmd[:3])} --prompt 'three thousand and five'")
    run = subprocess.run([sys.executable, "-m", "edgekit.cli", *cmd[1:]], capture_output=True, text=True, check=True)
    print(f"  {run.stdout.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--digits-epochs", type=int, default=8)
    ap.add_argument("--gpt-steps", type=int, default=800)
    ap.add_argument("--translate-steps", type=int, default=400)
    args = ap.parse_args()
    t = time.time()
    classify_demo(args.out, args.digits_epochs)
    generate_demo(args.out, args.gpt_steps)
    recognize_demo(args.out)
    translate_demo(args.out, args.translate_steps)
    print(f"\ndone in {time.time() - t:.0f} s; try: edgekit info {args.out / 'digits-int8'}")


if __name__ == "__main__":
    main()
