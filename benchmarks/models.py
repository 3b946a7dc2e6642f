"""Seeded benchmark models, one per task, built in process (no downloads).

Bigger than the test models so that the figures mean something, small enough for a 2-core CPU:
a ResNet-18 (224x224) classifier, a 4-layer GPT-2-shaped LM (d=256) with a BPE tokenizer trained
on Python's pydoc topics, a Marian-shaped translation model (2+2 layers, d=256) with such a
tokenizer, and a 4-layer Wav2Vec2-shaped CTC recognizer (d=256); also a GPT-2-small-shaped LM
without tokenizer for the GPU check. Weights are random
but conditioned (classifier) or scaled (LM) so that parity and agreement figures are not trivial.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for examples.models


def structured_images(n: int, size: int = 224, seed: int = 0) -> Any:
    """NCHW images in [0, 1] with blobs and gradients (pixel noise would average out in a CNN)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    up = torch.nn.functional.interpolate
    coarse, mid = torch.rand(n, 3, 4, 4, generator=g), torch.rand(n, 3, 8, 8, generator=g)
    return (0.7 * up(coarse, size=(size, size), mode="bilinear") + 0.3 * up(mid, size=(size, size), mode="bilinear")).clamp(0, 1)


def _condition(net: Any, x: Any) -> Any:
    """Batch-norm statistics from real activations and a head scaled to unit-spread logits, as
    training would leave them: random-init logits are all bias, and parity on them proves nothing."""
    import torch

    with torch.no_grad():
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        net(x)
        net.eval()
        head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        logits = net(x)
        mean, std = logits.mean(0), logits.std(0).clamp_min(1e-6)
        head.weight.div_(std[:, None])
        head.bias.sub_(mean).div_(std)
    return net.eval()


def resnet18(width: int = 64, size: int = 224) -> dict[str, Any]:
    """`benchmarks.models:resnet18`: ResNet-18, 10 classes, conditioned on structured images
    (`width`/`size` shrink it for quick checks; the defaults are the benchmark's shape)."""
    import torch

    from examples.models import resnet18 as build

    net = _condition(build(classes=10, width=width, seed=0), structured_images(64, size=size, seed=1))
    return {"model": net, "example_inputs": torch.rand(1, 3, size, size), "labels": [f"class_{i}" for i in range(10)]}


def calibration_images(n: int = 32) -> list[Any]:
    """HxWx3 uint8 images like the ones the classifier was conditioned on (int8 calibration)."""
    x = structured_images(n, seed=2)
    return list((x * 255).round().byte().permute(0, 2, 3, 1).numpy())


def gpt2_folder(folder: Path) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if (folder / "config.json").is_file():
        return folder
    import pydoc_data.topics

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(pydoc_data.topics.topics.values()), trainer=trainer)
    eos, pad = tok.token_to_id("<eos>"), tok.token_to_id("<pad>")
    cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=256, n_layer=4, n_head=4, n_positions=512,
                                  initializer_range=0.1, eos_token_id=eos, bos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def gpt2_random_folder(folder: Path, **config: Any) -> Path:
    """A GPT-2-shaped LM with random weights and no tokenizer (ids in, ids out): GPT-2 small unless
    `config` says otherwise (12 layers, d=768, 12 heads, vocab 50257). initializer_range 0.2 spreads
    the logits, so that greedy agreement is not decided by near-ties; eos/bos sit inside the vocab."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if (folder / "config.json").is_file():
        return folder
    cfg = GPT2Config(**{"initializer_range": 0.2, **config})
    cfg.eos_token_id = cfg.bos_token_id = cfg.vocab_size - 1
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    return folder


def marian_folder(folder: Path, vocab: int = 2000, **config: Any) -> Path:
    """A Marian-shaped translation model with random weights and a BPE tokenizer trained on the pydoc
    topics (inputs end with </s>): 2+2 layers, d=256 unless `config` says otherwise (opus-mt-en-zh
    is 6+6 layers, d=512, 8 heads, ffn 2048, vocab 65001). init_std 0.05 keeps greedy output from
    collapsing onto one token, so that parity and agreement figures are not trivial."""
    import pydoc_data.topics
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel

    if (folder / "config.json").is_file():
        return folder
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(pydoc_data.topics.topics.values()), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    shape = dict(d_model=256, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=512)
    cfg = MarianConfig(vocab_size=max(vocab, tok.get_vocab_size()), pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, forced_eos_token_id=1, init_std=0.05, scale_embedding=True,
                       **{**shape, **config})
    torch.manual_seed(0)
    MarianMTModel(cfg).eval().save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


_CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]


def wav2vec2_folder(folder: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(_CTC_VOCAB)}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    cfg = Wav2Vec2Config(vocab_size=len(_CTC_VOCAB), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=1024, conv_dim=(256,) * 5, conv_stride=(5, 2, 2, 2, 2),
                         conv_kernel=(10, 3, 3, 3, 2), num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
                         pad_token_id=0, initializer_range=0.2)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(folder)
    return folder
