"""Tiny seeded models shared by the reliability tests (threads, soak, fuzz, artifact safety, bench).

Each artifact is converted once per pytest session: the first test that asks converts it into the
session's base temp folder, later ones (in any module) reuse the folder.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shared_exports import exported_once

if TYPE_CHECKING:
    from edgekit.converters.pipeline import ExportedSource

WORDS = ("the a cat dog owl sat ran on mat log tree fast slow red blue green big small happy sad "
         "über naïve 東京 ☃ 🙂").split()
TEXT_LABELS = ["animal", "place", "mood"]
IMAGE_LABELS = ["cat", "dog", "owl"]


def image_net() -> dict[str, Any]:
    """A small CNN on 24x24 RGB; factory form so bench --against can rebuild it."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()
    return {"model": net, "example_inputs": torch.rand(1, 3, 24, 24), "labels": IMAGE_LABELS}


def word_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def text_net() -> dict[str, Any]:
    """Bag-of-embeddings text classifier with a word-level tokenizer (unicode words included)."""
    import torch

    class BagOfWords(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # 128 rows, more than the vocabulary: the converter's parity samples ids below 100.
            self.emb = torch.nn.Embedding(128, 16)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(ids).mean(dim=1))

    torch.manual_seed(0)
    return {"model": BagOfWords().eval(), "example_inputs": torch.randint(0, len(WORDS) + 2, (1, 8)),
            "tokenizer": word_tokenizer(), "labels": TEXT_LABELS, "preprocess": {"max_length": 64}}


def tensor_net() -> dict[str, Any]:
    """A plain-tensor classifier: 8 features in, 3 logits out (classify takes one row per item)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    return {"model": net, "example_inputs": torch.rand(1, 8), "labels": IMAGE_LABELS}


FACTORIES = {"image": image_net, "text": text_net, "tensor": tensor_net}


def converted(factory: pytest.TempPathFactory, kind: str, precision: str = "fp32") -> Path:
    """The artifact for `kind`, converted at most once per session."""
    import edgekit

    out = factory.getbasetemp() / "reliability-models" / f"{kind}-{precision}"
    if not (out / "edgekit.json").is_file():
        spec = FACTORIES[kind]()
        model = spec.pop("model")
        edgekit.convert(model, out, precision=precision, **spec)
    return out


@functools.cache
def _exported(folder: Path) -> ExportedSource:
    return exported_once(folder)  # a session's folders have their own paths: one export per folder


def gpt2_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 Hugging Face folder with a BPE tokenizer (tests/generate_models.py)."""
    from generate_models import save_tiny, train_tokenizer

    folder = factory.getbasetemp() / "reliability-models" / "gpt2-hf"
    if not (folder / "config.json").is_file():
        save_tiny("gpt2", folder, train_tokenizer())
    return folder


def gpt2_exported(factory: pytest.TempPathFactory) -> ExportedSource:
    """gpt2_folder exported once per session, for its converts at every precision."""
    return _exported(gpt2_folder(factory))


def converted_gpt2(factory: pytest.TempPathFactory, precision: str = "fp32") -> Path:
    """gpt2_folder converted once per session; fp32 by edgekit.convert itself (test_generate checks that a
    convert from gpt2_exported writes the same files), other precisions from gpt2_exported."""
    import edgekit

    out = factory.getbasetemp() / "reliability-models" / f"gpt2-{precision}"
    if not (out / "edgekit.json").is_file():
        if precision == "fp32":
            edgekit.convert(gpt2_folder(factory), out)
        else:
            gpt2_exported(factory).convert(out, precision=precision)
    return out


def llama_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama of the GPT-2's tokenizer (tests/generate_models.py): a different model of
    the same vocabulary (speculative decoding's assistant; test_generate's Llama)."""
    from generate_models import save_tiny, train_tokenizer

    folder = factory.getbasetemp() / "reliability-models" / "llama-hf"
    if not (folder / "config.json").is_file():
        save_tiny("llama", folder, train_tokenizer())
    return folder


def converted_llama(factory: pytest.TempPathFactory) -> Path:
    import edgekit

    out = factory.getbasetemp() / "reliability-models" / "llama-fp32"
    if not (out / "edgekit.json").is_file():
        edgekit.convert(llama_folder(factory), out)
    return out


CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]


def w2v_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny random Wav2Vec2-CTC Hugging Face folder (tests/test_recognize.py uses it too)."""
    import json

    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    folder = factory.getbasetemp() / "reliability-models" / "w2v-hf"
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(CTC_VOCAB)}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    cfg = Wav2Vec2Config(vocab_size=len(CTC_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
                         initializer_range=0.5)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(folder)
    return folder


def w2v_exported(factory: pytest.TempPathFactory) -> ExportedSource:
    """w2v_folder exported once per session, for its converts at every precision."""
    return _exported(w2v_folder(factory))


def converted_w2v(factory: pytest.TempPathFactory) -> Path:
    out = factory.getbasetemp() / "reliability-models" / "w2v-fp32"
    if not (out / "edgekit.json").is_file():
        w2v_exported(factory).convert(out)
    return out


def whisper_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper folder (examples/speech/tiny_whisper.py), saved once per session."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "speech"))
    from tiny_whisper import make_tiny_whisper

    folder = factory.getbasetemp() / "reliability-models" / "whisper-hf"
    if not (folder / "config.json").is_file():
        make_tiny_whisper(folder)
    return folder


def whisper_exported(factory: pytest.TempPathFactory) -> ExportedSource:
    """whisper_folder exported once per session, for its converts at every precision."""
    return _exported(whisper_folder(factory))


def converted_whisper(factory: pytest.TempPathFactory) -> Path:
    out = factory.getbasetemp() / "reliability-models" / "whisper-fp32"
    if not (out / "edgekit.json").is_file():
        whisper_exported(factory).convert(out)
    return out


def t5_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny random T5 Hugging Face folder (tests/seq2seq_models.py), saved once per session."""
    from seq2seq_models import save_tiny, train_tokenizer

    folder = factory.getbasetemp() / "reliability-models" / "t5-hf"
    if not (folder / "config.json").is_file():
        save_tiny("t5", folder, train_tokenizer())
    return folder


def converted_seq2seq(factory: pytest.TempPathFactory) -> Path:
    """The tiny random T5 (t5_folder), converted once per session."""
    import edgekit

    out = factory.getbasetemp() / "reliability-models" / "t5-fp32"
    if not (out / "edgekit.json").is_file():
        edgekit.convert(t5_folder(factory), out)
    return out


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def converted_chat(factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama whose tokenizer has a chat template, converted once per session."""
    import json

    import edgekit
    from generate_models import save_tiny, train_tokenizer

    out = factory.getbasetemp() / "reliability-models" / "chat-fp32"
    if not (out / "edgekit.json").is_file():
        tok = train_tokenizer()
        tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
        src = save_tiny("llama", factory.getbasetemp() / "reliability-models" / "chat-hf", tok)
        (src / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>",
            "pad_token": "<pad>"}))
        edgekit.convert(src, out)
    return out
