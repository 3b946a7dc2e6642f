"""Voxtral Realtime and Kyutai STT in recognize. Voxtral Realtime: a causal (streaming) audio encoder whose row for each position is
*added* to that position's token embedding, prompt and decode steps alike (transformers 5.23
modeling_voxtral_realtime: generate runs the encoder's convolutions once, then each forward feeds the
layers the frames of its positions with the encoder's key/value cache and adds the projected rows to
inputs_embeds).

The encoder is causal (causal convolutions, a causal sliding-window mask), so encoding the whole
recording at once gives the rows encoding it position by position gives: the "audio" graph encodes
it once; the decoder ("model") takes the rows of its call's positions beside the ids. Parity
(converters/specs/audio_lm.py) compares the greedy tokens with transformers' generate, which encodes
step by step.

The offline request (mistral-common's encode_transcription, StreamingMode.OFFLINE): the waveform padded
with `streaming_n_left_pad_tokens` tokens of silence before it and, after it, to whole tokens plus
delay + 1 + 10 tokens (OFFLINE_STREAMING_BUFFER_TOKENS); the prompt [BOS] + [STREAMING_PAD] x (left pad
+ delay tokens); generate writes one token per remaining position. The settings are the "audio" section
of the checkpoint's tekken.json, where mistral-common reads them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.contract.state import DecoderState
from edgekit.converters.specs.causal_lm import KVDecoder
from edgekit.errors import SourceError

OFFLINE_BUFFER_TOKENS = 10  # mistral-common's OFFLINE_STREAMING_BUFFER_TOKENS: room for the last word's delay
STREAMING_PAD = "[STREAMING_PAD]"


@dataclass(frozen=True)
class Streaming:
    """The tekken.json audio section's streaming settings, in tokens and samples."""

    samples_per_token: int  # sampling_rate / frame_rate
    frames_per_token: int  # log-mel frames per token (samples_per_token / hop_length)
    delay_tokens: int
    left_pad_tokens: int

    @property
    def right_pad_tokens(self) -> int:
        return self.delay_tokens + 1 + OFFLINE_BUFFER_TOKENS


def streaming(folder: Path, hop: int) -> Streaming:
    """The streaming settings of a Voxtral Realtime folder (tekken.json "audio"), refused when absent."""
    path = folder / "tekken.json"
    audio = json.loads(path.read_text()).get("audio") if path.is_file() else None
    keys = ("sampling_rate", "frame_rate", "transcription_delay_ms", "streaming_n_left_pad_tokens")
    if not isinstance(audio, dict) or any(audio.get(k) is None for k in keys):
        raise SourceError("a Voxtral Realtime folder needs its tekken.json with the streaming audio settings",
                          found=f"{path.name}: {'no audio section' if path.is_file() else 'absent'}",
                          fix=f"save the checkpoint's tekken.json beside the model (its \"audio\" holds {list(keys)})")
    rate = int(audio["sampling_rate"])
    per_token = int(rate // float(audio["frame_rate"]))
    frames = per_token // hop
    # mistral-common's num_audio_tokens of the delay's samples: whole hops (less one if not whole), per token.
    delay = int(float(audio["transcription_delay_ms"]) / 1000.0 * rate)
    hops = math.ceil(delay / hop - 1) if delay % hop else delay // hop
    return Streaming(per_token, frames, math.ceil(hops / frames), int(audio["streaming_n_left_pad_tokens"]))


class RealtimeEncoder(torch.nn.Module):
    """input_features (tokens, mels, frames_per_token) -> (tokens, hidden): the causal encoder over the
    whole recording at once (the token-major layout the runtime cuts, put back in time order)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        t, m, f = input_features.shape
        x = input_features.permute(1, 0, 2).reshape(1, m, t * f)
        rows = self.model.get_audio_features(x, use_cache=False, return_dict=True).pooler_output
        return rows.reshape(-1, rows.shape[-1]).float()


class RealtimeText(torch.nn.Module):
    """The language model and head alone, conditioned on the checkpoint's delay: transformers' forward
    insists on audio every call (input_features or encoder_inputs_embeds), which the decoder graph gets
    as rows instead. t_cond is its time embedding of num_delay_tokens, one constant per checkpoint."""

    def __init__(self, model: Any, delay_tokens: int) -> None:
        super().__init__()
        self.inner, self.config, self.delay_tokens = model, model.config, delay_tokens

    def get_input_embeddings(self) -> Any:
        return self.inner.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None, use_cache: bool = True,
                inputs_embeds: torch.Tensor | None = None) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithPast

        m = self.inner.model
        embeds = m.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        t_cond = m.time_embedding(torch.full((1,), self.delay_tokens, dtype=embeds.dtype))[None]
        out = m.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, use_cache=use_cache, t_cond=t_cond)
        return CausalLMOutputWithPast(logits=self.inner.lm_head(out.last_hidden_state), past_key_values=out.past_key_values)


class AddedRowsDecoder(KVDecoder):
    """(input_ids, attention_mask, position_ids, features (batch, tokens, hidden), *past) over a
    RealtimeText: each token's embedding plus its position's audio row."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                features: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embeds = self.model.get_input_embeddings()(input_ids)
        embeds = embeds + features.to(embeds.dtype)
        return self.run(past, inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids)


def added_example(state: DecoderState, hidden: int) -> tuple[torch.Tensor, ...]:
    # Batch 2, 4 new tokens after 3 past (no dim 0 or 1: torch.export would specialise it), a row each.
    b, s, p = 2, 4, 3
    ids = torch.randint(0, 4, (b, s), generator=torch.Generator().manual_seed(0))
    mask = torch.ones((b, p + s), dtype=torch.long)
    pos = torch.arange(p, p + s).expand(b, s).contiguous()
    past = tuple(torch.zeros(t.shape(b, p)) for t in state.tensors())
    return (ids, mask, pos, torch.randn(b, s, hidden), *past)


def padded(wave: np.ndarray, s: Streaming) -> np.ndarray:
    """The offline request's waveform: left pad, the audio, then whole tokens plus the right pad."""
    whole = -len(wave) % s.samples_per_token
    return np.pad(wave, (s.left_pad_tokens * s.samples_per_token, whole + s.right_pad_tokens * s.samples_per_token))


def realtime_inputs(folder: Path, wave: np.ndarray, prompt: list[int], s: Streaming) -> dict[str, Any]:
    """transformers' generate inputs as VoxtralRealtimeProcessor makes them offline (it needs
    mistral-common for the prompt, which edgekit does not depend on): the feature extractor (centred)
    on the padded waveform, the prompt ids, the delay."""
    import transformers

    fe = transformers.VoxtralRealtimeFeatureExtractor.from_pretrained(folder)
    feats = fe(padded(wave, s), sampling_rate=fe.sampling_rate, return_tensors="pt")["input_features"]
    ids = torch.tensor([prompt])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": feats,
            "num_delay_tokens": s.delay_tokens}


# Kyutai STT (transformers 5.23 modeling_kyutai_speech_to_text): a decoder-only LM over the text token
# and Mimi's codes of one 80 ms frame per position, their embeddings summed (one table, each codebook
# at its offset); position 0 holds the audio BOS code in every codebook, position p frame p - 1's codes.
# generate encodes the (silence-padded) waveform with Mimi, a causal codec (causal convolutions, a
# causal sliding-window transformer): the whole recording at once, or per audio_window_size frames
# with carried caches where the generation config sets one, gives the same codes.


# torch.cdist (Mimi's codebook distances) computes by matrix product above 25 rows and directly below;
# the audio graph is traced in the first regime, where every recording with its pads falls in real
# checkpoints (delay + 1 s of silence after it), and the runtime appends silent frames up to it.
MIMI_MIN_FRAMES = 26


class MimiRows(torch.nn.Module):
    """input_features (frames, 1, frame_size) samples -> (frames + 1, hidden): the audio BOS row, then
    each frame's codebook embeddings summed (the text token's embedding is added in the decoder)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.codec, self.table = model.codec_model, model.model.embed_tokens.embed_tokens
        self.offsets = model.model.embed_tokens.audio_tokens_offsets[1:]
        self.bos = int(model.config.audio_bos_token_id)
        seanet = self.codec.encoder.encoder_seanet  # the causal convolutions, as generate lists them
        convs = [seanet.get_submodule(n) for n in seanet._conv1d_layer_names] + [self.codec.encoder.downsample]
        self.paddings = ([int(c.padding_total) for c in convs], [str(c.pad_mode) for c in convs],
                         [int(c.in_channels) for c in convs])  # read here: a buffer read in the trace is data

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        # With a (fresh) padding cache, as generate encodes: its causal convolutions take their left
        # padding from it, not from a right padding computed from the length (data-dependent in a trace).
        codes = self.codec.encode(input_features.reshape(1, 1, -1), padding_cache=self._padding_cache(),
                                  return_dict=True).audio_codes[0].transpose(0, 1)
        codes = torch.cat([torch.full_like(codes[:1], self.bos), codes], dim=0)  # (frames + 1, codebooks)
        return self.table(codes + self.offsets).sum(dim=1).float()

    def _padding_cache(self) -> Any:
        """An empty padding cache of the Mimi encoder's causal convolutions, as Kyutai STT's generate
        builds it (_prepare_model_inputs): each SEANet convolution, then the downsampling one."""
        from transformers.models.kyutai_speech_to_text.modeling_kyutai_speech_to_text import (
            KyutaiSpeechToTextConv1dPaddingCache)

        return KyutaiSpeechToTextConv1dPaddingCache(len(self.paddings[0]), *self.paddings)


class KyutaiText(torch.nn.Module):
    """Kyutai STT's LM on embeddings (the decoder adds the code rows); ids alone embed as text tokens
    (offset 0 in the shared table), which the cache probe feeds."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner, self.config = model, model.config

    def get_input_embeddings(self) -> Any:
        return self.inner.model.embed_tokens.embed_tokens

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None, use_cache: bool = True,
                inputs_embeds: torch.Tensor | None = None) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithPast

        embeds = self.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        out = self.inner.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, use_cache=use_cache)
        return CausalLMOutputWithPast(logits=self.inner.lm_head(out.last_hidden_state), past_key_values=out.past_key_values)


def kyutai_inputs(folder: Path, wave: np.ndarray) -> dict[str, Any]:
    """transformers' generate inputs as KyutaiSpeechToTextProcessor makes them: the feature extractor's
    silence-padded waveform; generate starts from the BOS token."""
    import transformers

    fe = transformers.KyutaiSpeechToTextFeatureExtractor.from_pretrained(folder)
    return dict(fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt"))
