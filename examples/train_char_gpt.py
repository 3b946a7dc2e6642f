"""Train a character-level GPT and an LSTM generator on the pydoc topics, convert, compare.

The text ships with every Python (`pydoc_data.topics`): 95% trains, the last 5% is held out.
Both models are converted to edgekit artifacts (fp32, int8, int4 for the GPT; fp32 and int8 for
the LSTM), and the held-out perplexity and next-token top-1 agreement of PyTorch and of each
precision are printed side by side, with a greedy sample.

    python examples/train_char_gpt.py --steps 600 --out /tmp/char-models     # a few minutes on 2 cores
    EDGEKIT_TRAIN_STEPS=60 python examples/train_char_gpt.py                 # a quick smoke run
"""
from __future__ import annotations

import argparse
import math
import os
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

WINDOW = 64  # characters per training / evaluation window
ALPHABET = sorted(set(string.printable) - set("\x0b\x0c\r"))


def corpus() -> tuple[str, str]:
    """(train, held-out) text: the pydoc topics restricted to printable ASCII."""
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    text = "".join(c for c in text if c in ALPHABET)
    cut = int(len(text) * 0.95)
    return text[:cut], text[cut:]


def char_tokenizer() -> Any:
    """One token per character (`tokenizers` WordLevel over single characters), <eos> = 0."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(ALPHABET)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<eos>"])
    return tok


class CharLSTM(torch.nn.Module):
    """Embedding -> LSTM -> Linear over the vocabulary; forward(ids, (h, c)) -> (logits, (h, c))."""

    def __init__(self, vocab: int, dim: int = 48, hidden: int = 128, layers: int = 1) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.lstm = torch.nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> Any:
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def make_gpt(vocab: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def batches(ids: np.ndarray, steps: int, batch: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - WINDOW - 1, size=batch)
        yield torch.from_numpy(np.stack([ids[s : s + WINDOW + 1] for s in starts]))


def train(model: torch.nn.Module, ids: np.ndarray, steps: int, lr: float) -> None:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    for step, xy in enumerate(batches(ids, steps, 32, seed=0)):
        logits = torch_logits(model, xy[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), xy[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  {type(model).__name__} step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()


def torch_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out[0]


def held_out_windows(ids: np.ndarray, count: int) -> np.ndarray:
    n = min(count, len(ids) // WINDOW)
    return np.stack([ids[i * WINDOW : (i + 1) * WINDOW] for i in range(n)]).astype(np.int64)


def perplexity(logits: np.ndarray, windows: np.ndarray) -> float:
    x = logits[:, :-1].astype(np.float64)
    z = x - x.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, windows[:, 1:, None], axis=-1).mean()
    return float(math.exp(nll))


def graphs_mb(artifact: Path) -> float:
    """The artifact's graphs and the weights file they share, in MB."""
    return sum(f.stat().st_size for f in [*artifact.glob("*.onnx"), artifact / "weights.data"] if f.is_file()) / 1e6


def evaluate(name: str, reference: np.ndarray, artifacts: dict[str, Path], windows: np.ndarray,
             prompt: str) -> dict[str, dict[str, float]]:
    """Held-out perplexity and top-1 agreement with PyTorch, per precision; prints a table."""
    import edgekit

    rows = {"pytorch": {"perplexity": perplexity(reference, windows), "top1_agreement": 1.0}}
    for precision, path in artifacts.items():
        model = edgekit.load(path, device="cpu")
        logits = model.logits(windows)
        rows[precision] = {"perplexity": perplexity(logits, windows),
                           "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
                           "size_mb": graphs_mb(Path(path))}
        sample = model.generate(prompt, max_new_tokens=60)
        print(f"  {name} {precision} greedy: {prompt!r} -> {sample!r}")
    base = rows["pytorch"]["perplexity"]
    print(f"  {name}: held-out perplexity over {windows.size} characters")
    for k, r in rows.items():
        extra = f"  top-1 vs PyTorch {r['top1_agreement']:.4f}" + (f"  {r['size_mb']:.2f} MB" if "size_mb" in r else "")
        print(f"    {k:8s} {r['perplexity']:7.3f}  ({100 * (r['perplexity'] / base - 1):+.2f}%){extra}")
    return rows


def convert_each(source: Any, stem: Path, precisions: tuple[str, ...], held: list[str],
                 **source_kwargs: Any) -> dict[str, Path]:
    """`source` converted at each precision into `<stem>-<precision>`, exported once: each convert is
    `edgekit.convert`'s (parity gate included) less the export, which no precision reads."""
    from edgekit.converters.pipeline import exported

    with exported(source, **source_kwargs) as ex:
        return {p: ex.convert(f"{stem}-{p}", precision=p, calibration=held, overwrite=True, strict=False).path
                for p in precisions}


def main(steps: int, out: Path, eval_windows: int = 64) -> dict[str, Any]:
    torch.set_num_threads(int(os.environ.get("EDGEKIT_THREADS", "0")) or torch.get_num_threads())
    tok = char_tokenizer()
    train_text, test_text = corpus()
    train_ids = np.asarray(tok.encode(train_text).ids, dtype=np.int64)
    test_ids = np.asarray(tok.encode(test_text).ids, dtype=np.int64)
    windows = held_out_windows(test_ids, eval_windows)
    vocab = tok.get_vocab_size()
    prompt = "The for statement"
    results: dict[str, Any] = {}

    t = time.time()
    gpt = make_gpt(vocab)
    train(gpt, train_ids, steps, lr=3e-3)
    print(f"trained the char GPT ({sum(p.numel() for p in gpt.parameters()) / 1e6:.2f}M parameters) "
          f"in {time.time() - t:.0f} s")
    folder = out / "char-gpt-hf"
    gpt.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    held = [test_text[i : i + WINDOW] for i in range(0, 8 * WINDOW, WINDOW)]
    arts = convert_each(folder, out / "char-gpt", ("fp32", "int8", "int4"), held)
    with torch.no_grad():
        ref = torch_logits(gpt, torch.from_numpy(windows)).numpy()
    results["gpt"] = evaluate("char GPT", ref, arts, windows, prompt)
    results["gpt_artifacts"] = arts

    t = time.time()
    lstm = CharLSTM(vocab)
    train(lstm, train_ids, steps, lr=1e-2)
    print(f"trained the char LSTM in {time.time() - t:.0f} s")
    arts = convert_each(lstm, out / "char-lstm", ("fp32", "int8"), held, task="generate", tokenizer=tok)
    with torch.no_grad():
        ref = torch_logits(lstm, torch.from_numpy(windows)).numpy()
    results["lstm"] = evaluate("char LSTM", ref, arts, windows, prompt)
    results["lstm_artifacts"] = arts
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("EDGEKIT_TRAIN_STEPS", "600")))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    main(args.steps, args.out or Path(tempfile.mkdtemp(prefix="edgekit-char-")))
