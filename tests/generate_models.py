"""Tiny seeded causal LMs and a tiny tokenizer for the generate tests (built in process, no downloads)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

VOCAB = 320


def corpus() -> list[str]:
    """Real text that ships with Python: the pydoc topics."""
    import pydoc_data.topics

    return [t for t in pydoc_data.topics.topics.values()]


def train_tokenizer(vocab: int = VOCAB) -> Any:
    """A byte-level BPE trained on the pydoc topics, with <eos> and <pad> specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus()[:200], trainer=trainer)
    return tok


# family -> (config class name, model class name, kwargs). Initializer range 0.2: with the default
# 0.02 a tiny random model repeats one token, which would test nothing. Head sizes of 16 get
# onnxruntime's fused-attention stand-in graph (its CPU kernel takes multiples of 16); Mistral's 8
# keeps the portable graph alone.
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=2, n_positions=256)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2,
                                                      max_position_embeddings=256)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2,
                                                      max_position_embeddings=256)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(hidden_size=32, intermediate_size=64,
                                                            num_hidden_layers=2, num_attention_heads=4,
                                                            num_key_value_heads=1, max_position_embeddings=256,
                                                            sliding_window=None, head_dim=8)),
}


def save_tiny(family: str, folder: Path, tokenizer: Any, seed: int = 0, tied: bool = False) -> Path:
    import torch
    import transformers

    cfg_name, model_name, kwargs = FAMILIES[family]
    eos, pad = tokenizer.token_to_id("<eos>"), tokenizer.token_to_id("<pad>")
    config = getattr(transformers, cfg_name)(vocab_size=tokenizer.get_vocab_size(), initializer_range=0.2,
                                             eos_token_id=eos, bos_token_id=eos, pad_token_id=pad,
                                             tie_word_embeddings=tied, **kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
