"""Train the digit CTC recognizer on features made by make_data.py; save weights as .npz.

Usage: python examples/speech/train.py --data /tmp/digits/train.npz --out examples/speech/digits_ctc.npz
`--data` may also be a folder of WAVs named like `00_three-one-four.wav` (e.g. the committed held-out
files, for a quick smoke run with `--steps 3`). Bounded by `--steps`, seeded, CPU only.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from model import LABELS, build, encode, features, save_weights


def load_data(path: Path) -> tuple[list[np.ndarray], list[str]]:
    if path.is_dir():
        import soundfile as sf

        files = sorted(path.glob("*.wav"))
        waves = [sf.read(f, dtype="float32")[0] for f in files]
        return [features(w) for w in waves], [f.stem.split("_", 1)[1].replace("-", " ") for f in files]
    with np.load(path, allow_pickle=False) as d:
        packed, lengths, texts = d["features"], d["lengths"], d["texts"]  # each access decompresses: once
    return [packed[i, :, :n].astype(np.float32) for i, n in enumerate(lengths)], [str(t) for t in texts]


def train(feats: list[np.ndarray], texts: list[str], steps: int, batch: int = 32, seed: int = 0) -> "torch.nn.Module":  # noqa: F821
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(steps, 1), pct_start=0.15)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    t0 = time.time()
    for step in range(steps):
        idx = rng.choice(len(feats), size=min(batch, len(feats)), replace=False)
        longest = max(feats[i].shape[1] for i in idx)
        x = np.zeros((len(idx), feats[0].shape[0], longest), np.float32)
        for j, i in enumerate(idx):
            x[j, :, : feats[i].shape[1]] = feats[i]
            x[j, :, feats[i].shape[1] :] = feats[i].min()  # pad with silence-level energy
        targets = [torch.tensor(encode(texts[i])) for i in idx]
        log_probs = model(torch.from_numpy(x)).log_softmax(-1).transpose(0, 1)  # (frames, batch, labels)
        out_len = torch.full((len(idx),), log_probs.shape[0], dtype=torch.long)
        loss = ctc(log_probs, torch.cat(targets), out_len, torch.tensor([len(t) for t in targets]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  ctc loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--batch", type=int, default=24)
    args = ap.parse_args()
    feats, texts = load_data(args.data)
    model = train(feats, texts, args.steps, args.batch)
    save_weights(model, str(args.out))
    print(f"saved {args.out} ({len(LABELS)} labels, {sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
