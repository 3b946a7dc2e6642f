"""English -> Chinese translation, trained here: number words to Chinese numerals, served with `generate`.

    python examples/translate_numbers.py [--out models] [--steps 400] [--int8-method dynamic|static]

A Marian-shaped encoder-decoder (transformers' MarianMTModel at a small width) learns to write
"three thousand and five" as 三千零五 from a synthetic corpus of the numbers 1..9999 that needs no
download; a tenth of the numbers is held out. The trained folder is converted with edgekit at fp32
and int8 (each convert passes its parity gate against the PyTorch model) and the held-out exact-match
accuracy of PyTorch (transformers generate), edgekit fp32 and edgekit int8 is printed side by side.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGITS = "零一二三四五六七八九"
PAD, EOS, UNK = 0, 1, 2
HIGHEST = 9999


def english(n: int) -> str:
    """British English number words: 3005 -> "three thousand and five"."""
    def below_100(k: int) -> str:
        return ONES[k] if k < 20 else TENS[k // 10] + (f"-{ONES[k % 10]}" if k % 10 else "")

    thousands, rest = divmod(n, 1000)
    hundreds, tail = divmod(rest, 100)
    parts = [f"{ONES[thousands]} thousand"] * bool(thousands) + [f"{ONES[hundreds]} hundred"] * bool(hundreds)
    if tail:
        parts += ["and"] * bool(parts) + [below_100(tail)]
    return " ".join(parts)


def chinese(n: int) -> str:
    """Chinese numerals: 3005 -> 三千零五, 110 -> 一百一十, 15 -> 十五 (one 零 per run of inner zeros)."""
    if n < 10:
        return DIGITS[n]
    if n < 20:
        return "十" + (DIGITS[n - 10] if n % 10 else "")
    out, gap, started = "", False, False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d == 0:
            gap = gap or started
            continue
        out += ("零" if gap else "") + DIGITS[d] + unit
        gap, started = False, True
    return out


def split(seed: int = 0) -> tuple[list[int], list[int]]:
    """Numbers 1..9999, a seeded tenth held out (never seen in training)."""
    numbers = list(range(1, HIGHEST + 1))
    random.Random(seed).shuffle(numbers)
    held = len(numbers) // 10
    return numbers[held:], sorted(numbers[:held])


def tokenizer() -> Any:
    """One word-level vocabulary for both sides: English words (a hyphen apart) and Chinese characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    words = sorted({w for n in range(1, HIGHEST + 1) for w in english(n).replace("-", " - ").split()})
    vocab = ["<pad>", "</s>", "<unk>", "▁", "-"] + [f"▁{w}" for w in words if w != "-"] + \
        [w for w in ONES[1:10]] + list("零一二三四五六七八九十百千")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex("[\u4e00-\u9fff]|-"), behavior="isolated")])
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    for special in ("<pad>", "</s>", "<unk>"):
        tok.add_special_tokens([special])
    return tok


def make_model(vocab: int) -> Any:
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32,
                       pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS,
                       dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True)
    model = MarianMTModel(cfg)
    model.generation_config.num_beams = 1
    model.generation_config.max_length = 16
    return model


def batch(tok: Any, numbers: list[int]) -> dict[str, Any]:
    import torch

    src = [tok.encode(english(n)).ids for n in numbers]
    tgt = [tok.encode(chinese(n)).ids for n in numbers]
    w, v = max(map(len, src)), max(map(len, tgt))
    return {"input_ids": torch.tensor([s + [PAD] * (w - len(s)) for s in src]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in src]),
            "labels": torch.tensor([t + [-100] * (v - len(t)) for t in tgt])}


def train(model: Any, tok: Any, numbers: list[int], steps: int, batch_size: int = 128, lr: float = 3e-3) -> float:
    """AdamW with a one-cycle schedule on random batches of the training numbers; the last loss."""
    import torch

    rng = random.Random(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small is bound by per-op overhead: more threads only contend
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = model(**batch(tok, rng.sample(numbers, batch_size))).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.set_num_threads(threads)
    return float(loss.detach())


def torch_translations(model: Any, tok: Any, numbers: list[int]) -> list[str]:
    import torch

    model.eval()
    out = []
    for i in range(0, len(numbers), 256):
        b = batch(tok, numbers[i: i + 256])
        with torch.no_grad():
            ids = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        out += [tok.decode(r[1:].tolist(), skip_special_tokens=True) for r in ids]
    return out


def edgekit_translations(path: Path, numbers: list[int]) -> list[str]:
    import edgekit

    model = edgekit.load(path, device="cpu")
    out = []
    for i in range(0, len(numbers), 256):
        out += model.generate([english(n) for n in numbers[i: i + 256]])
    return out


def accuracy(translations: list[str], numbers: list[int]) -> float:
    return sum(t == chinese(n) for t, n in zip(translations, numbers)) / len(numbers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--int8-method", choices=["dynamic", "static"], default=None)
    args = ap.parse_args(argv)
    import edgekit
    from edgekit.converters.pipeline import exported

    t0 = time.time()
    train_set, held_out = split()
    tok = tokenizer()
    model = make_model(tok.get_vocab_size())
    loss = train(model, tok, train_set, args.steps)
    folder = args.out / "numbers-en-zh-source"
    model.eval().save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    trained = time.time() - t0
    calibration = [english(n) for n in train_set[:64]]  # held-out parity texts; static int8 calibrates on them
    with exported(folder) as ex:  # one export, each precision's convert (and parity gate) from it
        fp32 = ex.convert(args.out / "numbers-en-zh", overwrite=True, calibration=calibration)
        int8 = ex.convert(args.out / "numbers-en-zh-int8", precision="int8", overwrite=True,
                          calibration=calibration, int8_method=args.int8_method)
    rows = [("PyTorch (transformers generate)", accuracy(torch_translations(model, tok, held_out), held_out)),
            ("edgekit fp32", accuracy(edgekit_translations(fp32.path, held_out), held_out)),
            (f"edgekit int8 ({int8.manifest.precision.method})",
             accuracy(edgekit_translations(int8.path, held_out), held_out))]
    print(f"\n[translate] trained {args.steps} steps in {trained:.0f} s (final loss {loss:.3f}); "
          f"held-out exact match on {len(held_out)} numbers never seen in training:")
    print("  | model | exact match |\n  |---|---|")
    for name, acc in rows:
        print(f"  | {name} | {100 * acc:.1f}% |")
    lm = edgekit.load(fp32.path)
    for n in held_out[:3] + [3005, 110, 9999]:
        print(f"  {english(n)!r} -> {lm.generate(english(n))!r} (expected {chinese(n)})")
    print(f"  parity fp32: {fp32.manifest.parity.summary}\n  parity int8: {int8.manifest.parity.summary}")
    print(f"  try: edgekit run {fp32.path} --prompt 'three hundred and twenty-one'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
