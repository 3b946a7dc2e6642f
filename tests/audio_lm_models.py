"""Tiny audio-language folders (a speech encoder + projector whose rows replace the audio placeholder
tokens of a causal LM's prompt): a seeded random model of each family with the feature extractor its
checkpoints ship and a word-level tokenizer holding the family's special tokens, saved as a user's
folder is, for the audio-LM recognize test and the coverage sweep."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vision_models import SIZES, _llama, _tokenizer

# Voxtral's control tokens (mistral-common's tekken names for them); the tiny tokenizer holds them as specials.
VOXTRAL_TOKENS = ("<s>", "</s>", "[INST]", "[/INST]", "[BEGIN_AUDIO]", "[AUDIO]", "[TRANSCRIBE]")


def save(family: str, folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return BUILDERS[family](folder, seed, shape)


def extractor_features(folder: Path, wave: np.ndarray) -> np.ndarray:
    """The folder's WhisperFeatureExtractor as VoxtralProcessor calls it (padded to whole windows, one
    spectrogram), cut per window: (windows, mels, frames)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(folder)
    out = fe(wave, sampling_rate=16000, padding=True, truncation=False, pad_to_multiple_of=fe.n_samples,
             return_tensors="np")["input_features"]
    return np.ascontiguousarray(out.reshape(fe.feature_size, -1, fe.nb_max_frames).transpose(1, 0, 2))


def check(folder: Path, art: Path, precision: str, new: int, waves: list[np.ndarray]) -> str:
    """At fp32 the greedy tokens of transformers' generate (the extractor's features, the artifact's prompt
    ids) equal the artifact's from the raw waveform, with and without a language, and recognize's text
    is theirs; "" when so, else what differs."""
    import torch
    import transformers

    from edgekit.converters.specs.audio_lm import hf_audio_lm_tokens

    import edgekit

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    hf = getattr(transformers, arch).from_pretrained(folder, dtype=torch.float32).eval()
    asr = edgekit.load(art, device="cpu")
    c = asr.contract
    for wave in waves:
        feats = extractor_features(folder, wave)
        plain: list[int] = []
        for language in (None, "en") if c.language_format else (None,):
            want = hf_audio_lm_tokens(hf, feats, asr.prompt_ids(len(feats) * c.rows_per_chunk, language), new)
            plain = plain or want
            if len(set(want)) < 2:  # a check that could not tell two models apart would be no check
                return f"transformers' generate repeats one token {want[:3]}: the folder's model cannot be compared"
            got = asr.decode_tokens(wave, new, language)
            if got != want and precision == "fp32":
                return f"tokens {got} vs transformers' generate {want} (language {language})"
        text = asr.recognize(wave, sample_rate=16000, max_new_tokens=new).text
        if text != asr.decode_text(plain) and precision == "fp32":
            return f"transcript {text!r} vs transformers' generate {asr.decode_text(plain)!r}"
    return ""


# The encoder's window: Voxtral's 30 s at "real"; 2 s at "tiny" (a 200-frame log-mel and 25 audio tokens
# per window instead of 3000 and 375, so the CI test converts in seconds). The feature extractor saved
# says the window, as a real checkpoint's does (chunk_length, n_samples, nb_max_frames).
WINDOW_S = {"tiny": 2, "real": 30}


def _voxtral(folder: Path, seed: int, shape: str) -> Path:
    """A 2-layer Whisper-like encoder on 128 mels (Voxtral's) with the shape's window, the 4-frame
    projector, and a Llama decoder."""
    import torch
    from transformers import VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    tok = _tokenizer(*VOXTRAL_TOKENS)
    _, (ah, aheads) = SIZES[shape]
    audio = VoxtralEncoderConfig(hidden_size=ah, intermediate_size=4 * ah, num_hidden_layers=2,
                                 num_attention_heads=aheads, num_mel_bins=128, max_source_positions=50 * WINDOW_S[shape])
    text = {**_llama(tok, shape, positions=1024).to_dict(), "initializer_range": 0.2}  # 0.02: one token repeated
    cfg = VoxtralConfig(audio_config=audio.to_dict(), text_config=text,
                        audio_token_id=tok.convert_tokens_to_ids("[AUDIO]"))
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(cfg).eval()
    model.generation_config.bos_token_id = tok.convert_tokens_to_ids("<s>")
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("</s>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128, chunk_length=WINDOW_S[shape]).save_pretrained(folder)
    return folder


BUILDERS = {"voxtral": _voxtral}
