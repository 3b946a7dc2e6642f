"""Tiny audio-language folders (a speech encoder + projector whose rows replace the audio placeholder
tokens of a causal LM's prompt): a seeded random model of each family with the feature extractor its
checkpoints ship and a word-level tokenizer holding the family's special tokens, saved as a user's
folder is, for the audio-LM recognize test and the coverage sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vision_models import SIZES, _llama, _tokenizer

# Voxtral's control tokens (mistral-common's tekken names for them); the tiny tokenizer holds them as specials.
VOXTRAL_TOKENS = ("<s>", "</s>", "[INST]", "[/INST]", "[BEGIN_AUDIO]", "[AUDIO]", "[TRANSCRIBE]")


def save(family: str, folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return {"voxtral": _voxtral}[family](folder, seed, shape)


def _voxtral(folder: Path, seed: int, shape: str) -> Path:
    """A 2-layer Whisper-like encoder on 128 mels (Voxtral's) with the 30 s window its processor pads to
    (max_source_positions 1500), the 4-frame projector, and a Llama decoder."""
    import torch
    from transformers import VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    tok = _tokenizer(*VOXTRAL_TOKENS)
    _, (ah, aheads) = SIZES[shape]
    audio = VoxtralEncoderConfig(hidden_size=ah, intermediate_size=4 * ah, num_hidden_layers=2,
                                 num_attention_heads=aheads, num_mel_bins=128, max_source_positions=1500)
    text = _llama(tok, shape, positions=1024).to_dict()
    cfg = VoxtralConfig(audio_config=audio.to_dict(), text_config=text,
                        audio_token_id=tok.convert_tokens_to_ids("[AUDIO]"))
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(cfg).eval()
    model.generation_config.bos_token_id = tok.convert_tokens_to_ids("<s>")
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("</s>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    return folder
