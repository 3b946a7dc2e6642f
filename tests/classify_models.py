"""Models for the classify tests, built once per test run (functools caches = session scope).

Random-init CNNs are useless for parity: every input lands in one class with tiny margins, so
top-1 agreement is trivially 1.0 and int8 error hides under the bias terms. The CNNs here are
trained briefly on scikit-learn's digits (seconds each), so features and logits really depend on
the input and the held-out pictures are a representative calibration and parity set.
Hugging Face models are tiny random configs saved to folders, with their tokenizer/processor.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

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
def cnn_artifact(base: Path, name: str, precision: str) -> Path:
    import edgekit

    out = base / f"{name}-{precision}"
    edgekit.convert(trained_cnn(name), out, example_inputs=example_input(name), labels=LABELS, precision=precision,
                    calibration=calibration(name) if precision == "int8" else None)
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
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


@functools.cache
def bert_folder(base: Path) -> Path:
    """A tiny random BertForSequenceClassification with a fast WordPiece tokenizer, offline."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = base / "hf-bert"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_vocab(folder)
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3, initializer_range=0.2,
                     id2label={0: "negative", 1: "neutral", 2: "positive"},
                     label2id={"negative": 0, "neutral": 1, "positive": 2}, pad_token_id=0)
    model = BertForSequenceClassification(cfg).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    spread_head(model, model.classifier, lambda: model(**enc))
    model.save_pretrained(folder)
    return folder


def spread_head(model: Any, head: Any, forward: Any) -> None:
    """Rescale a random model's last Linear so its logits spread over typical inputs.

    Random weights put every input in one class with tiny margins (the bias-like common part of
    the features dominates), so a top-1 comparison would prove nothing. Subtracting the mean logit
    and dividing by the spread over `forward()`'s inputs is what a trained head looks like.
    """
    import torch

    seen: list[Any] = []
    hook = head.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        forward()
        hook.remove()
        logits = seen[0]
        mean, std = logits.mean(0), logits.std(0).clamp_min(1e-6)
        head.weight.div_(std[:, None])
        head.bias.sub_(mean).div_(std)


SENTENCES = [
    "the movie was good", "this film is the worst i have ever seen", "really fun story!",
    "boring plot and bad actor", "i love it", "not very good but quite fun", "awful", "best film ever",
    "it was an awful, boring movie and i hate that actor", "great", "the story is not bad",
    "i really love this film and the plot was quite great and fun",
]


@functools.cache
def vit_folder(base: Path) -> Path:
    """A tiny random ViTForImageClassification with its ViTImageProcessor saved beside it."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = base / "hf-vit"
    torch.manual_seed(0)
    labels = ["cat", "dog", "owl", "fox"]
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=4, initializer_range=0.2,
                    id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    model = ViTForImageClassification(cfg).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
                                  image_std=[0.2, 0.25, 0.3])
    x = processor(images=pictures(32, seed=3), return_tensors="pt")["pixel_values"]
    spread_head(model, model.classifier, lambda: model(pixel_values=x))
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
