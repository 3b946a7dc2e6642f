"""Tiny seeded encoder-decoders (Marian, BART, mBART, M2M100, Pegasus, T5, mT5, UMT5) and their tokenizer.

Built in process, no downloads: random weights of each family's real layout at a tiny width, and
a byte-level BPE trained on Python's pydoc topics whose post-processor ends every input with
</s>, as these models' tokenizers do. Language-code tokens of the M2M100 form are added specials.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

PAD, EOS, UNK, BOS = 0, 1, 2, 3
LANGS = ["__en__", "__zh__", "__fr__"]
VOCAB = 300


def train_tokenizer(vocab: int = VOCAB) -> Any:
    import pydoc_data.topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>", "<s>", *LANGS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(pydoc_data.topics.topics.values())[:200], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return tok


_BART = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128)
_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
           relative_attention_num_buckets=8, relative_attention_max_distance=20)

# family -> (config class, model class, kwargs): decoder start as each family's checkpoints have it,
# and an init scale at which greedy output varies (at the defaults a tiny random model repeats one
# token, which would test little).
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "marian": ("MarianConfig", "MarianMTModel", dict(_BART, decoder_start_token_id=PAD, init_std=0.05)),
    "bart": ("BartConfig", "BartForConditionalGeneration", dict(_BART, decoder_start_token_id=EOS, init_std=0.2)),
    "mbart": ("MBartConfig", "MBartForConditionalGeneration", dict(_BART, decoder_start_token_id=EOS, init_std=1.0)),
    "m2m_100": ("M2M100Config", "M2M100ForConditionalGeneration", dict(_BART, decoder_start_token_id=EOS,
                                                                       init_std=1.0)),
    "pegasus": ("PegasusConfig", "PegasusForConditionalGeneration", dict(_BART, decoder_start_token_id=PAD,
                                                                         init_std=1.0)),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(_T5, decoder_start_token_id=PAD, initializer_factor=10.0)),
    "mt5": ("MT5Config", "MT5ForConditionalGeneration", dict(_T5, decoder_start_token_id=PAD, initializer_factor=4.0,
                                                             feed_forward_proj="gated-gelu")),
    "umt5": ("UMT5Config", "UMT5ForConditionalGeneration", dict(_T5, decoder_start_token_id=PAD,
                                                                initializer_factor=4.0, feed_forward_proj="gated-gelu")),
}


def save_tiny(family: str, folder: Path, tokenizer: Any, seed: int = 0, **generation: Any) -> Path:
    """A random model of `family` saved with the tokenizer; `generation` goes to its generation config."""
    import torch
    import transformers

    cfg_name, model_name, kwargs = FAMILIES[family]
    config = getattr(transformers, cfg_name)(vocab_size=tokenizer.get_vocab_size(), pad_token_id=PAD,
                                             eos_token_id=EOS, bos_token_id=BOS, **kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    for k, v in generation.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def train_nllb_tokenizer() -> Any:
    """An NllbTokenizer (fast) built offline: a BPE over the same texts with NLLB's Metaspace
    pre-tokenizer and special ids (<s> 0, <pad> 1, </s> 2, <unk> 3); transformers appends NLLB's
    language codes ("eng_Latn", "zho_Hans", ...) as special tokens and frames each source as
    `eng_Latn ... </s>`, as facebook/nllb-200 does."""
    import json

    import pydoc_data.topics
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator(list(pydoc_data.topics.topics.values())[:200], trainer=trainer)
    bpe = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    return NllbTokenizer(vocab=bpe["vocab"], merges=merges)


def save_tiny_nllb(folder: Path, tokenizer: Any, seed: int = 0) -> Path:
    """A random NLLB: the M2M100 architecture (NLLB checkpoints are model_type m2m_100) with NLLB's
    special ids, decoding from </s> as facebook/nllb-200 does; saved with its NllbTokenizer."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    kwargs = dict(FAMILIES["m2m_100"][2], decoder_start_token_id=2)
    config = M2M100Config(vocab_size=len(tokenizer), pad_token_id=1, eos_token_id=2, bos_token_id=0, **kwargs)
    torch.manual_seed(seed)
    M2M100ForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
