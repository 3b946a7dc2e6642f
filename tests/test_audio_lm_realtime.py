"""Voxtral Realtime's offline request from tekken.json's audio settings (mistral-common's arithmetic:
delay tokens, left and right pads), and the refusal without them. The conversions themselves are the
coverage sweep's (tests/audio_lm_models.py: tokens equal transformers' generate)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import SourceError

AUDIO = {"sampling_rate": 16000, "frame_rate": 12.5, "transcription_delay_ms": 480, "streaming_n_left_pad_tokens": 32,
         "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}}


def test_offline_request_follows_the_streaming_settings(tmp_path: Path) -> None:
    from edgekit.converters.audio_lm_realtime import padded, streaming

    (tmp_path / "tekken.json").write_text(json.dumps({"audio": AUDIO}))
    s = streaming(tmp_path, 160)
    # 16000 / 12.5 = 1280 samples, 8 hops a token; 480 ms = 7680 samples = 48 hops = 6 tokens;
    # right: delay + BOS + mistral-common's 10-token buffer.
    assert (s.samples_per_token, s.frames_per_token, s.delay_tokens, s.left_pad_tokens) == (1280, 8, 6, 32)
    assert s.right_pad_tokens == 17
    wave = np.ones(1000, np.float32)
    out = padded(wave, s)
    assert len(out) == 32 * 1280 + 1280 + 17 * 1280 and out[32 * 1280: 32 * 1280 + 1000].all()
    assert not out[: 32 * 1280].any() and not out[32 * 1280 + 1000:].any()


def test_a_folder_without_the_streaming_settings_is_refused(tmp_path: Path) -> None:
    from edgekit.converters.audio_lm_realtime import streaming

    with pytest.raises(SourceError, match="tekken.json"):
        streaming(tmp_path, 160)
    (tmp_path / "tekken.json").write_text(json.dumps({"audio": {k: v for k, v in AUDIO.items() if k != "frame_rate"}}))
    with pytest.raises(SourceError, match="frame_rate"):
        streaming(tmp_path, 160)
