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


def check(folder: Path, art: Path, precision: str, new: int, waves: list[np.ndarray]) -> str:
    """At fp32 the greedy tokens of transformers' generate on the family's own inputs (the processor's, or
    Voxtral's extractor with the artifact's prompt ids) equal the artifact's from the raw waveform, with
    and without a language (where taken), and recognize's text is theirs; "" when so, else what differs."""
    import torch
    import transformers

    import edgekit
    from edgekit.converters.specs.audio_lm import hf_audio_lm_tokens, hf_inputs

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    hf = getattr(transformers, arch).from_pretrained(folder, dtype=torch.float32).eval()
    if arch == "KyutaiSpeechToTextForConditionalGeneration":
        # generate's streamed path: Mimi encodes frame by frame, its caches carried (without a window it
        # encodes the recording at once, as the artifact does): the artifact's tokens must equal these.
        hf.generation_config.audio_window_size = 1
    asr = edgekit.load(art, device="cpu")
    for wave in waves:
        plain: list[int] = []
        for language in (None, "en") if asr.contract.takes_language else (None,):
            inputs = hf_inputs(folder, wave, asr.prompt_ids, asr.contract.rows_per_chunk, language)
            want = hf_audio_lm_tokens(hf, inputs, new)
            plain = plain or want
            if len(set(want)) < 2:  # a check that could not tell two models apart would be no check
                return f"transformers' generate repeats one token {want[:3]}: the folder's model cannot be compared"
            got = asr.decode_tokens(wave, new, language)
            if got != want and precision == "fp32":
                return f"tokens {got} vs transformers' generate {want} (language {language})"
        text = asr.recognize(wave, sample_rate=asr.contract.audio.sample_rate, max_new_tokens=new).text
        segments = asr.contract.transcript == "json-segments"
        theirs = _processor_text(folder, plain) if segments else asr.decode_text(plain)
        if text != theirs and precision == "fp32":
            return f"transcript {text!r} vs transformers' generate {theirs!r}"
    return ""


def _processor_text(folder: Path, tokens: list[int]) -> str:
    """The transcript as the family's processor decodes the tokens (VibeVoice-ASR: the JSON segments' Contents)."""
    import transformers

    return str(transformers.AutoProcessor.from_pretrained(folder).decode(tokens, return_format="transcription_only"))


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


# Qwen3-ASR's conversation (its checkpoints' chat template, in the shape its processor renders it): an
# optional system prompt, the user's audio between <|audio_start|> and <|audio_end|>, the assistant's turn.
QWEN3_ASR_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if not (loop.last and m['role'] == 'assistant') %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN3_ASR_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def _qwen3_asr(folder: Path, seed: int, shape: str) -> Path:
    """Qwen3-ASR's windowed encoder (100-frame chunks, attention windows of 2 chunks at tiny) and a
    Qwen3 decoder, saved with its feature extractor and processor."""
    import torch
    from transformers import (Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration,
                              Qwen3ASRProcessor, Qwen3Config)

    tok = _tokenizer(*QWEN3_ASR_TOKENS, audio_token="<|audio_pad|>", audio_bos_token="<|audio_start|>",
                     audio_eos_token="<|audio_end|>")
    tok.add_tokens(["<asr_text>"])  # an ordinary token: the processor finds it in the text decoded without specials
    (hidden, heads), (ah, aheads) = SIZES[shape]
    audio = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=aheads, encoder_ffn_dim=2 * ah, d_model=ah,
                 output_dim=hidden, n_window=50, n_window_infer=200, downsample_hidden_size=16)
    text = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                       max_position_embeddings=1024, tie_word_embeddings=False).to_dict()
    end = [tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")]
    # The whole model is initialised from the top config's range: at 0.02, or with tied embeddings, the
    # tiny model writes one token over and over (measured: 0.3 untied varies on both sweep waveforms).
    cfg = Qwen3ASRConfig(audio_config=audio, text_config=text, audio_token_id=tok.convert_tokens_to_ids("<|audio_pad|>"),
                         pad_token_id=tok.pad_token_id, eos_token_id=end, initializer_range=0.3, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = end, tok.pad_token_id
    model.save_pretrained(folder)
    Qwen3ASRProcessor(Qwen3ASRFeatureExtractor(), tok, chat_template=QWEN3_ASR_CHAT).save_pretrained(folder)
    return folder


# Voxtral Realtime's streaming settings, as its checkpoints' tekken.json "audio" section holds them
# (mistral-common reads them there): 12.5 tokens a second, 480 ms delay (6 tokens); 2 left-pad tokens
# at tiny (the prompt [BOS] + 8 [STREAMING_PAD]) where a checkpoint sets its own.
REALTIME_AUDIO = {"sampling_rate": 16000, "frame_rate": 12.5, "transcription_format": "streaming",
                  "transcription_delay_ms": 480, "streaming_n_left_pad_tokens": 2,
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}}


def _voxtral_realtime(folder: Path, seed: int, shape: str) -> Path:
    """A 2-layer causal (sliding-window) encoder on 128 mels, the 4-frame projector and a 2-layer
    Mistral-like decoder with the time conditioning, saved with its feature extractor, a tokenizer.json
    holding [STREAMING_PAD], and the tekken.json audio section."""
    import torch
    from transformers import (VoxtralRealtimeConfig, VoxtralRealtimeFeatureExtractor,
                              VoxtralRealtimeForConditionalGeneration)

    tok = _tokenizer("<s>", "</s>", "[STREAMING_PAD]")
    (hidden, heads), (ah, aheads) = SIZES[shape]
    audio = dict(hidden_size=ah, intermediate_size=2 * ah, num_hidden_layers=2, num_attention_heads=aheads,
                 num_key_value_heads=aheads, head_dim=ah // aheads, sliding_window=64)
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                max_position_embeddings=1024, sliding_window=None, bos_token_id=tok.convert_tokens_to_ids("<s>"),
                eos_token_id=tok.convert_tokens_to_ids("</s>"))
    cfg = VoxtralRealtimeConfig(audio_config=audio, text_config=text, initializer_range=0.2)
    torch.manual_seed(seed)
    model = VoxtralRealtimeForConditionalGeneration(cfg).eval()
    model.generation_config.bos_token_id = text["bos_token_id"]
    model.generation_config.eos_token_id = text["eos_token_id"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    VoxtralRealtimeFeatureExtractor().save_pretrained(folder)
    (folder / "tekken.json").write_text(json.dumps({"audio": REALTIME_AUDIO}))
    return folder


def _kyutai(folder: Path, seed: int, shape: str) -> Path:
    """Kyutai STT: a 2-layer LM over the tiny text vocabulary and 4 codebooks of 65 codes (its table:
    text, then each codebook's codes, then the audio pad row), a narrow 1-layer Mimi with 4 quantizers,
    and a feature extractor that pads 0.16 s before and 0.5 s + 1 s after, as checkpoints pad theirs."""
    import torch
    from transformers import (KyutaiSpeechToTextConfig, KyutaiSpeechToTextFeatureExtractor,
                              KyutaiSpeechToTextForConditionalGeneration)

    tok = _tokenizer("<s>", "</s>")
    (hidden, heads), _ = SIZES[shape]
    codec = {"hidden_size": 32, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 64,
             "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8, "codebook_size": 64,
             "codebook_dim": 16, "vector_quantization_hidden_dimension": 16, "num_quantizers": 4,
             "upsample_groups": 32, "sliding_window": 16}
    cfg = KyutaiSpeechToTextConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                                   num_key_value_heads=heads, ffn_dim=2 * hidden, num_codebooks=4, codebook_vocab_size=65,
                                   audio_bos_token_id=64, audio_pad_token_id=len(tok) + 4 * 65, codec_config=codec,
                                   bos_token_id=tok.convert_tokens_to_ids("<s>"), pad_token_id=tok.pad_token_id,
                                   max_position_embeddings=750, sliding_window=375, initializer_range=0.2)
    torch.manual_seed(seed)
    model = KyutaiSpeechToTextForConditionalGeneration(cfg).eval()
    model.generation_config.bos_token_id = cfg.bos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    KyutaiSpeechToTextFeatureExtractor(audio_silence_prefix_seconds=0.16, audio_delay_seconds=0.5).save_pretrained(folder)
    return folder


# VibeVoice-ASR's conversation (the chat template transformers' conversion script saves with its
# checkpoints, convert_vibevoice_asr_to_hf.py): a system prompt, the audio between <|object_ref_start|> and
# <|object_ref_end|>, the request naming the recording's length (the processor writes <|AUDIO_DURATION|>
# as "%.2f" seconds), no assistant turn: the model writes "<|im_start|>assistant" itself.
VIBEVOICE_CHAT = (
    "{%- set system_prompt = system_prompt | default('You are a helpful assistant that transcribes audio input into "
    "text output in JSON format.') -%}\n<|im_start|>system\n{{ system_prompt }}<|im_end|>\n"
    "{%- for message in messages -%}{%- if message['role'] == 'user' -%}{{ '\\n' }}<|im_start|>user{{ '\\n' }}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'audio' -%}"
    "<|object_ref_start|><|box_start|><|object_ref_end|>{{ '\\n' }}This is a <|AUDIO_DURATION|> seconds audio, please "
    "transcribe it with these keys: Start time, End time, Speaker ID, Content{%- endif -%}{%- endfor -%}"
    "<|im_end|>{{ '\\n' }}{%- endif -%}{%- endfor -%}")
VIBEVOICE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|object_ref_start|>", "<|object_ref_end|>",
                    "<|box_start|>")


def _vibevoice_asr(folder: Path, seed: int, shape: str) -> Path:
    """VibeVoice-ASR's two convolutional tokenizer encoders (the checkpoints' 3200-sample hop, one block per
    stage from 8 filters instead of 3 from 32) and a Qwen2 decoder, saved with its feature extractor and
    processor. The encoders stream 2-hop chunks (the checkpoints: 60 s) so that parity covers the chunk
    caches transformers carries between them."""
    import torch
    from transformers import (Qwen2Config, VibeVoiceAcousticTokenizerFeatureExtractor, VibeVoiceAsrConfig,
                              VibeVoiceAsrForConditionalGeneration, VibeVoiceAsrProcessor)

    tok = _tokenizer(*VIBEVOICE_TOKENS)
    tok.add_tokens([*"0123456789", "."])  # the request's length in digits (word-level: one [UNK] whatever the length)
    (hidden, heads), _ = SIZES[shape]
    # layer_scale_init_value 1 (1e-6 by default): the ConvNeXt blocks' mixers and feed-forwards count.
    encoder = {"depths": [1] * 7, "num_filters": 8, "layer_scale_init_value": 1.0}
    text = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                       max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.3).to_dict()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # As Qwen3-ASR's: at the default 0.02 range the tiny model writes one token over and over; the text
    # model is initialised from its own config's range, the projector from the top one's.
    cfg = VibeVoiceAsrConfig(acoustic_tokenizer_encoder_config={**encoder, "hidden_size": 16},
                             semantic_tokenizer_encoder_config={**encoder, "hidden_size": 8}, text_config=text,
                             audio_token_id=tok.convert_tokens_to_ids("<|box_start|>"),
                             audio_bos_token_id=tok.convert_tokens_to_ids("<|object_ref_start|>"),
                             audio_eos_token_id=tok.convert_tokens_to_ids("<|object_ref_end|>"),
                             acoustic_tokenizer_chunk_size=2 * 3200, initializer_range=0.3, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = VibeVoiceAsrForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # the 0.3 range shrinks the waveform 10x per convolution: latents of 1e-7, no audio
        for conv in model.modules():  # reaching the text; 1 / sqrt(fan-in) keeps the scale through the stages
            if isinstance(conv, torch.nn.Conv1d):
                conv.weight.normal_(0.0, (conv.weight[0].numel()) ** -0.5)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = end, tok.pad_token_id
    model.save_pretrained(folder)
    processor = VibeVoiceAsrProcessor(VibeVoiceAcousticTokenizerFeatureExtractor(), tok, chat_template=VIBEVOICE_CHAT)
    processor.save_pretrained(folder)
    return folder



BUILDERS = {"voxtral": _voxtral, "qwen3_asr": _qwen3_asr, "voxtral_realtime": _voxtral_realtime,
            "kyutai_speech_to_text": _kyutai, "vibevoice_asr": _vibevoice_asr}
