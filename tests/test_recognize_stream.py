"""recognize_stream on CTC models: streamed final text equals offline recognize, finals never change."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.errors import ConfigError, InputError
from edgekit.results import StreamUpdate
from test_recognize import _bursts, _BurstCTC, _tiny_module

RATE = 16000


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """'a' per 0.3 s tone burst, a word break in the gaps; 3 s windows so 8 s of audio crosses seams."""
    out = tmp_path_factory.mktemp("stream") / "burst"
    art = edgekit.convert(_BurstCTC(), out, task="recognize", labels=["_", " ", "a"],
                          preprocess={"chunk_length_s": 3.0, "stride_length_s": 0.5})
    return edgekit.load(art.path, device="cpu")


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random strided-conv CTC model: its receptive field (400 + 2 * 160 samples) fits in 0.1 s."""
    out = tmp_path_factory.mktemp("stream") / "conv"
    art = edgekit.convert(_tiny_module(), out, task="recognize", labels=["_", " ", "a", "b", "c"])
    return edgekit.load(art.path, device="cpu")


def _pieces(wave: np.ndarray, sizes: list[int]) -> Iterator[np.ndarray]:
    """The waveform cut into pieces of the given sizes, cycled."""
    i, k = 0, 0
    while i < len(wave):
        yield wave[i:i + sizes[k % len(sizes)]]
        i, k = i + sizes[k % len(sizes)], k + 1


def _check_growth(updates: list[StreamUpdate]) -> None:
    """Final text only grows, and is the words settled so far; only the last update is final."""
    said: list[str] = []
    for before, now in zip([None, *updates], updates):
        said += [w.text for w in now.words]
        assert now.text_final == " ".join(said)
        if before is not None:
            assert now.text_final.startswith(before.text_final) and now.audio_s >= before.audio_s
    assert [u.is_final for u in updates] == [False] * (len(updates) - 1) + [True]
    assert updates[-1].text_partial == ""


@pytest.mark.parametrize("sizes", [[4000], [1, 333, 4097, 0, 1601], [131_000]])
def test_stream_equals_offline_and_settles_within_lookahead(burst: Any, sizes: list[int]) -> None:
    wave, _ = _bursts(12)  # 8.15 s; [131_000]: all at once, more than two of the model's 3 s windows
    offline = burst.recognize(wave)
    updates = list(burst.recognize_stream(_pieces(wave, sizes), lookahead_s=0.2))
    _check_growth(updates)
    assert updates[-1].text_final == offline.text == " ".join(["a"] * 12)
    words = [w for u in updates for w in u.words]
    # Offline times frames at chunk samples / frames (160.9 samples here); streaming at the measured
    # stride (160): 12 bursts over 8 s drift apart by at most 8 s * 0.9 / 160.9 = 0.045 s.
    assert all(abs(w.start - s.start) < 0.05 and abs(w.end - s.end) < 0.05 for w, s in zip(words, offline.segments))
    if sizes != [131_000]:  # fed piece by piece: each word settles once lookahead_s follows its end
        # ... and a word break has been settled after it: the 400-sample pool spans 3 frames of 160
        # past the burst (0.03 s), the frame boundary 0.01 s more; the piece arrives whole.
        piece_s = max(sizes) / RATE
        for u in updates[:-1]:
            assert all(u.audio_s - w.end <= 0.2 + 0.04 + piece_s for w in u.words), u


def test_stream_of_a_conv_model_equals_offline_frame_for_frame(conv: Any) -> None:
    wave = synthetic_audio(7.3, RATE, 11)
    offline = conv.recognize(wave).text  # one long "word" of a random model: any frame that differs shows
    assert len(offline) > 100
    pcm = (wave * 32767).astype(np.int16)  # int16 pieces: offline of the same int16 audio
    for chunks, want in ((_pieces(wave, [1, 4999, 160, 2203]), offline), (_pieces(pcm, [3200]), conv.recognize(pcm).text)):
        updates = list(conv.recognize_stream(chunks, lookahead_s=0.1, left_context_s=0.1))
        _check_growth(updates)
        assert updates[-1].text_final == want
    assert list(conv.recognize_stream(iter([])))[-1] == StreamUpdate("", "", (), 0.0, True)


def test_stream_resamples_a_microphone_rate(conv: Any) -> None:
    wave = synthetic_audio(3.1, 8000, 4)
    updates = list(conv.recognize_stream(_pieces(wave, [800]), sample_rate=8000))
    assert abs(updates[-1].audio_s - 3.1) < 0.01
    assert updates[-1].text_final == conv.recognize(wave, sample_rate=8000).text


def test_stream_bad_input_is_refused_by_name(conv: Any) -> None:
    with pytest.raises(InputError, match="sample_rate"):
        conv.recognize_stream([np.zeros(100, np.float32)], sample_rate=-5)  # refused at the call
    for lookahead_s in (30.0, -0.1):
        with pytest.raises(ConfigError, match="lookahead_s"):
            conv.recognize_stream([], lookahead_s=lookahead_s)
    with pytest.raises(InputError, match="numpy arrays"):
        list(conv.recognize_stream([np.zeros(3200, np.float32), [0.0] * 100]))
    with pytest.raises(InputError, match="NaN"):
        list(conv.recognize_stream([np.full(3200, np.nan, np.float32)]))
    with pytest.raises(InputError, match="float or int16"):
        list(conv.recognize_stream([np.zeros(3200, np.uint8)]))


def test_cli_run_stream_prints_tentative_and_final_lines(burst: Any, tmp_path: Path) -> None:
    import json

    import soundfile as sf
    from click.testing import CliRunner

    from edgekit.cli import cli

    wav = tmp_path / "b.wav"
    sf.write(wav, _bursts(3)[0], RATE)
    art = str(burst.artifact.path)
    r = CliRunner().invoke(cli, ["run", art, str(wav), "--stream", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [x.split("  [")[0] for x in lines if x.startswith("=")] == ["= a"] * 3
    assert lines.count("~ a") == 3 and lines[-1] == f"{wav}: a a a"
    r = CliRunner().invoke(cli, ["run", art, str(wav), "--stream", "--device", "cpu", "--json"])
    segments = json.loads(r.output)["results"][0]["segments"]
    assert [s["text"] for s in segments] == ["a"] * 3 and all(s["end"] > s["start"] for s in segments)


def test_stream_with_little_room_in_the_window_still_settles_everything(burst: Any) -> None:
    wave, _ = _bursts(12)
    with pytest.raises(ConfigError, match="room for new audio"):  # 3 s window: 2.5 + 0.5 leaves none
        burst.recognize_stream([wave], lookahead_s=2.5, left_context_s=0.5)
    # 2.45 + 0.5 leaves 0.05 s (5 frames) per window: 8 s at once takes ~160 windows, all settled.
    updates = list(burst.recognize_stream([wave], lookahead_s=2.45, left_context_s=0.5))
    assert updates[-1].text_final == burst.recognize(wave).text


def test_frames_a_whole_number_of_samples_but_not_per_second_apart(tmp_path: Path) -> None:
    """80 ms frames (Parakeet's 8x subsampled 10 ms hop: 12.5 per second) stream: the stride is
    measured over 4 s (50 frames), where one second adds 12 or 13."""
    import torch
    from torch import nn

    from edgekit.tasks.streaming import frame_stride

    class Hop1280(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.front, self.out = nn.Conv1d(1, 8, 2560, stride=1280), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.front(x[:, None]).transpose(1, 2))

    torch.manual_seed(0)
    art = edgekit.convert(Hop1280().eval(), tmp_path / "hop", task="recognize", labels=["_", " ", "a"])
    model = edgekit.load(art.path, device="cpu")
    assert frame_stride(model) == 1280
    wave = synthetic_audio(6.1, RATE, 5)
    updates = list(model.recognize_stream(_pieces(wave, [5120])))
    _check_growth(updates)
    assert updates[-1].text_final == model.recognize(wave).text
