"""Audio-language encoders that transformers runs in a form torch.export cannot trace, rewritten as
one traceable program with the same arithmetic (converters/specs/audio_lm.py exports them).

Qwen3-ASR (transformers models/qwen3_asr, Qwen3ASREncoder): the log-mel is cut into chunks of
2 * n_window frames, three stride-2 convolutions make T positions per chunk, the positions of the
real frames are packed into one sequence (`nonzero`: a data-dependent shape) and attention runs in
windows of n_window_infer frames (n_window_infer / (2 * n_window) chunks) over the packed sequence,
one attention call per window (cu_seqlens). Here every chunk keeps its T positions; a position
attends to the real positions of its own window (a mask), which is what the packed window holds; the
rows of padding positions are computed and dropped by the runtime (contract/audio_lm.py ROW_MASK).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Qwen3AsrWindows(torch.nn.Module):
    """(input_features (chunks, mels, 2 * n_window), row_mask (chunks, T) int64) -> (chunks * T, hidden)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        inner = model.model
        self.tower, self.projector = inner.audio_tower, inner.multi_modal_projector
        cfg = self.tower.config
        self.per_window = max(1, cfg.n_window_infer // (2 * cfg.n_window))  # chunks per attention window
        self.heads = cfg.encoder_attention_heads

    def forward(self, input_features: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
        t = self.tower
        x = F.gelu(t.conv2d1(input_features[:, None]))
        x = F.gelu(t.conv2d2(x))
        x = F.gelu(t.conv2d3(x))
        chunks, channels, freq, steps = x.shape
        x = t.conv_out(x.permute(0, 3, 1, 2).reshape(chunks, steps, channels * freq))
        x = x + t.positional_embedding.positional_embedding[:steps].to(x.dtype)
        h = x.reshape(chunks * steps, -1)
        window = (torch.arange(chunks, device=h.device) // self.per_window).repeat_interleave(steps)
        keep = (window[:, None] == window[None, :]) & (row_mask.reshape(-1) > 0)[None, :]
        bias = torch.zeros(keep.shape, dtype=h.dtype, device=h.device).masked_fill(~keep, -1e9)
        for layer in t.layers:
            h = h + self._attend(layer.self_attn, layer.self_attn_layer_norm(h), bias)
            h = h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
        return self.projector(t.ln_post(h)).float()

    def _attend(self, attn: Any, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        q, k, v = (p(h).reshape(n, self.heads, -1).transpose(0, 1) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        weights = torch.softmax(q @ k.transpose(1, 2) * attn.scaling + bias, dim=-1)
        return attn.out_proj((weights @ v).transpose(0, 1).reshape(n, -1))


class VibeVoiceAsrAudio(torch.nn.Module):
    """(input_features (rows, 1, hop) float: the padded waveform cut per hop) -> (rows, hidden).

    transformers (models/vibevoice_asr, get_audio_features) runs the acoustic and semantic tokenizer
    encoders over chunks of acoustic_tokenizer_chunk_size samples, carrying each causal convolution's
    last inputs to the next chunk (its padding cache); every layer is a causal convolution or a norm over
    channels and the chunk is a whole number of hops (the config requires it), so one pass over the whole
    waveform computes the same outputs. The acoustic latents' noise (sample=True, random) is left out:
    the deterministic path transformers takes with sample=False."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        inner = model.model
        self.acoustic, self.semantic = inner.acoustic_tokenizer_encoder, inner.semantic_tokenizer_encoder
        self.projector = inner.multi_modal_projector

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        wave = input_features.reshape(1, 1, -1)
        rows = self.projector(self.acoustic(wave).latents, self.semantic(wave).latents)
        return rows.reshape(-1, rows.shape[-1]).float()
