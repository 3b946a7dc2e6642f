"""Models for the classify tests, built once per test run (functools caches = session scope).

Random-init CNNs are useless for parity: every input lands in one class with tiny margins, so
top-1 agreement is trivially 1.0 and int8 error hides under the bias terms. The CNNs here are
trained briefly on scikit-learn's digits (seconds each), so features and logits really depend on
the input and the held-out pictures are a representative calibration and parity set.
The tiny Hugging Face ViT and BERT are trained the same way, on rule-based tasks (seconds each), and
saved to folders with their processor/tokenizer: random-init transformers have activations no trained
model has, and their int8 error says nothing about int8 on real models.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared_exports import exported_once

if TYPE_CHECKING:
    from edgekit.converters.pipeline import ExportedSource

LABELS = [str(i) for i in range(10)]

# name -> (builder, channels, side, epochs). Small widths: the tests check conversion, not accuracy.
CNNS: dict[str, tuple[str, int, int, int]] = {
    "mnist": ("small_cnn_1", 1, 28, 3),
    "cifar": ("small_cnn_3", 3, 32, 2),
    "resnet18": ("resnet18", 3, 32, 1),
    "mobilenet": ("mobilenet", 3, 32, 2),
}


@functools.cache
def digits(side: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 pictures, labels, train indices, held-out indices)."""
    from examples.train_digits import digits_pictures, split

    pics, labels = digits_pictures(side, channels)
    train_idx, test_idx = split(len(labels))
    return pics, labels, train_idx, test_idx


def _build(builder: str) -> Any:
    from examples import models

    table = {
        "small_cnn_1": lambda: models.small_cnn(1, 28, 10),
        "small_cnn_3": lambda: models.small_cnn(3, 32, 10),
        "resnet18": lambda: models.resnet18(10, width=8),
        "mobilenet": lambda: models.mobilenet(10, width=8),
    }
    return table[builder]()


@functools.cache
def trained_cnn(name: str) -> Any:
    import torch

    from examples.train_digits import to_tensor, train

    builder, channels, side, epochs = CNNS[name]
    pics, labels, train_idx, _ = digits(side, channels)
    torch.set_num_threads(2)
    subset = train_idx[:640]
    return train(_build(builder), to_tensor(pics[subset]), labels[subset], epochs)


def example_input(name: str) -> Any:
    import torch

    _, channels, side, _ = CNNS[name]
    return torch.rand(1, channels, side, side)


def calibration(name: str, n: int = 64) -> list[np.ndarray]:
    """uint8 training pictures: edgekit pre-processes them as it will at run time."""
    _, channels, side, _ = CNNS[name]
    pics, _, train_idx, _ = digits(side, channels)
    return list(pics[train_idx[-n:]])


def held_out(name: str, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    _, channels, side, _ = CNNS[name]
    pics, labels, _, test_idx = digits(side, channels)
    return pics[test_idx[:n]], labels[test_idx[:n]]


@functools.cache
def cnn_exported(name: str) -> ExportedSource:
    return exported_once(trained_cnn(name), example_inputs=example_input(name), labels=LABELS)


@functools.cache
def cnn_artifact(base: Path, name: str, precision: str) -> Path:
    out = base / f"{name}-{precision}"
    cnn_exported(name).convert(out, precision=precision, calibration=calibration(name) if precision == "int8" else None)
    return out


# ---------------------------------------------------------------- Hugging Face folders

WORDS = ("the a an is was good bad great awful movie film plot actor story fun boring love hate "
         "not very really quite best worst ever seen i it this that and but").split()


def write_wordpiece_vocab(folder: Path) -> Path:
    """A BERT vocabulary: specials, whole words, '##' pieces and single characters."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + chars + [f"##{c}" for c in chars[:26]]
    vocab += ["##ing", "##ed", "##s", "##ly"]
    path = folder / "vocab.txt"
    # Once each: "a" and "i" are words and characters, and a repeated line would give ids past the embedding.
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


@functools.cache
def bert_folder(base: Path) -> Path:
    """A tiny BertForSequenceClassification trained on `sentiment` labels, with a fast WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = base / "hf-bert"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(folder)
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3,
                     id2label=dict(enumerate(SENTIMENTS)), label2id={k: i for i, k in enumerate(SENTIMENTS)},
                     pad_token_id=0)
    model = BertForSequenceClassification(cfg)
    texts = SENTENCES + word_soup(BERT_TRAIN[0], seed=5)
    enc = tok(texts, padding=True, return_tensors="pt")
    fit(model, lambda i: model(input_ids=enc["input_ids"][i], attention_mask=enc["attention_mask"][i]).logits,
        [sentiment(t) for t in texts], BERT_TRAIN[1])
    model.save_pretrained(folder)
    return folder


OUTLIER = (7, 1000.0)  # hidden unit, factor


@functools.cache
def outlier_bert_folder(base: Path) -> Path:
    """`bert_folder`'s model with one activation outlier channel: the same function in float, one layer int8 cannot do.

    Hidden unit `OUTLIER[0]` of the last encoder LayerNorm is scaled by `OUTLIER[1]` (its weight and
    bias) and the pooler's weights reading it by the inverse, so the float model answers as before
    (LLM.int8()'s outlier features, by design). The pooler's input is then quantized per tensor on a
    range 1000x the other units': they round to one or two levels, and only keeping the pooler's
    Gemm in float brings int8 back within budget.
    """
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast

    folder = base / "hf-bert-outlier"
    unit, factor = OUTLIER
    model = BertForSequenceClassification.from_pretrained(bert_folder(base)).eval()
    norm = model.bert.encoder.layer[-1].output.LayerNorm
    with torch.no_grad():
        norm.weight[unit] *= factor
        norm.bias[unit] *= factor
        model.bert.pooler.dense.weight[:, unit] /= factor
    model.save_pretrained(folder)
    BertTokenizerFast.from_pretrained(bert_folder(base)).save_pretrained(folder)
    return folder


def fit(model: Any, logits: Any, labels: list[int], epochs: int, lr: float = 3e-3) -> None:
    """Seeded Adam on cross-entropy, batches of 64; `logits(indices)` runs the model on those samples.

    One thread: these models are so small that two threads only add synchronisation (a 2-layer,
    32-wide ViT step took 0.4 s with two threads on a busy 2-core machine, 10 ms with one).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        target = torch.tensor(labels)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(target))
            for i in range(0, len(order), 64):
                idx = order[i : i + 64]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(logits(idx), target[idx]).backward()
                opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)


SENTIMENTS = ["negative", "neutral", "positive"]
POLARITY = {"good": 1, "great": 1, "fun": 1, "love": 1, "best": 1,
            "bad": -1, "awful": -1, "boring": -1, "hate": -1, "worst": -1}
BERT_TRAIN = (1024, 10)  # generated sentences, epochs: 2 s, 88% on 400 fresh sentences (chance 36%)


def sentiment(text: str) -> int:
    """The BERT's task: the sign of the summed word polarities, "not" flipping the next polar word."""
    total, sign = 0, 1
    for w in re.findall(r"[a-z]+", text.lower()):
        if w == "not":
            sign = -1
        elif w in POLARITY:
            total += sign * POLARITY[w]
            sign = 1
    return 1 + (total > 0) - (total < 0)


def word_soup(n: int, seed: int) -> list[str]:
    """`n` sentences of 1 to 12 vocabulary words: training data for `sentiment`."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 13))) for _ in range(n)]


SENTENCES = [
    "the movie was good", "this film is the worst i have ever seen", "really fun story!",
    "boring plot and bad actor", "i love it", "not very good but quite fun", "awful", "best film ever",
    "it was an awful, boring movie and i hate that actor", "great", "the story is not bad",
    "i really love this film and the plot was quite great and fun",
]

VIT_LABELS = ["cat", "dog", "owl", "fox"]
VIT_TRAIN = (512, 20)  # pictures, epochs: 6 s, 84% on 400 fresh pictures (chance 27%)


def picture_label(pic: np.ndarray) -> int:
    """The ViT's task: "fox" for a dark picture (mean < 120 of 255), else its dominant colour channel."""
    means = pic.reshape(-1, 3).mean(0)
    return 3 if means.mean() < 120 else int(means.argmax())


@functools.cache
def vit_folder(base: Path) -> Path:
    """A tiny ViTForImageClassification trained on `picture_label`, its ViTImageProcessor beside it."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = base / "hf-vit"
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=4,
                    id2label=dict(enumerate(VIT_LABELS)), label2id={k: i for i, k in enumerate(VIT_LABELS)})
    model = ViTForImageClassification(cfg)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
                                  image_std=[0.2, 0.25, 0.3])
    pics = pictures(VIT_TRAIN[0], seed=11)
    x = processor(images=pics, return_tensors="pt")["pixel_values"]
    fit(model, lambda i: model(pixel_values=x[i]).logits, [picture_label(p) for p in pics], VIT_TRAIN[1])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def pictures(n: int, seed: int = 0, size: tuple[int, int] = (45, 37)) -> list[np.ndarray]:
    """RGB uint8 pictures of a size the model was not built for (resize is exercised)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        from PIL import Image

        img = Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR)
        noisy = np.asarray(img).astype(np.int16) + rng.integers(-20, 21, size=(size[0], size[1], 3))
        out.append(noisy.clip(0, 255).astype(np.uint8))
    return out


def mnist_factory() -> dict[str, Any]:
    """`edgekit convert classify_models:mnist_factory`: the trained digits CNN with its metadata."""
    return {"model": trained_cnn("mnist"), "example_inputs": example_input("mnist"), "labels": LABELS}
