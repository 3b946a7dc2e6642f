"""Build a random-weight Whisper model folder offline (tests and benchmarks; nothing is downloaded).

The tokenizer is a byte-level BPE trained in process on Python's own documentation
(`pydoc_data.topics`), with Whisper's special tokens appended in Whisper's order
(<|endoftext|>, <|startoftranscript|>, languages, <|translate|>, <|transcribe|>, <|startoflm|>,
<|startofprev|>, <|nospeech|>, <|notimestamps|>, then 1501 timestamps <|0.00|>..<|30.00|>), so
the ids the generation config names are real ids of a real tokenizer.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "de", "fr")


def _tokenizer(text_vocab: int) -> Any:
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=text_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(topics.values()), trainer)
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{lang}|>" for lang in LANGUAGES], "<|translate|>",
                "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok.add_special_tokens(specials)
    return tok


def make_tiny_whisper(folder: Path, d_model: int = 64, layers: int = 2, heads: int = 4, text_vocab: int = 600,
                      seed: int = 0, init_std: float = 0.2, multilingual: bool = True,
                      vocab_size: int | None = None) -> Path:
    """Save WhisperForConditionalGeneration + feature extractor + tokenizer.json to `folder`.

    Whisper-tiny's shape: d_model=384, layers=4, heads=6, vocab_size=51865.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(text_vocab)
    ids = {t: tok.token_to_id(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>",
                                            "<|transcribe|>", "<|notimestamps|>", "<|nospeech|>")}
    vocab = max(tok.get_vocab_size(), vocab_size or 0)  # a real Whisper's 51865 for benchmarks: same matmul sizes
    eot = ids["<|endoftext|>"]
    cfg = WhisperConfig(
        vocab_size=vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=ids["<|startoftranscript|>"],
        init_std=init_std, begin_suppress_tokens=[220 % vocab, eot], suppress_tokens=[1, 2, 7, 8, 9, 10],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    # A trained Whisper does not emit timestamp tokens in <|notimestamps|> mode; a random one would, and
    # transformers then re-seeks and calls generate again. Small timestamp embeddings (tied to the
    # output projection) keep their logits near 0, like a trained model's, without forbidding them.
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[ids["<|notimestamps|>"] + 1 :] *= 0.02
    gen = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=448, is_multilingual=multilingual, no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{lang}|>": tok.token_to_id(f"<|{lang}|>") for lang in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=[1, 2, 7, 8, 9, 10], begin_suppress_tokens=[220 % vocab, eot],
        return_timestamps=False, max_initial_timestamp_index=50,
        # Heads whose cross-attention the word timestamps read (a real Whisper's are chosen by hand);
        # a head of each layer, so the DTW averages over both.
        alignment_heads=[[layers - 1, 0], [layers - 1, heads - 1], [0, 1]],
    )
    model.generation_config = gen
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
    return folder
