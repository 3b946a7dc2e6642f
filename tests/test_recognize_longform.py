"""Whisper's sequential long-form mode: segments equal transformers' generate on > 30 s of features."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.specs.ctc import synthetic_audio
from edgekit.errors import ConfigError, UnsupportedError
from edgekit.preprocess import audio
from edgekit.tasks import whisper_longform as W
from edgekit.tasks.whisper_longform import Decoded, LongForm
from reliability_models import converted_whisper, whisper_folder

# 45 s: the first window's segments end before 30 s, so a second window starts there, padded past
# the audio's end. 24 new tokens a window keep transformers' side short; the random model closes
# timestamp pairs within them.
SECONDS, NEW = 45.0, 24
Rows = list[tuple[float, float, list[int]]]


@pytest.fixture(scope="module")
def whisper_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_whisper(tmp_path_factory)


@pytest.fixture(scope="module")
def m(whisper_fp32: Path) -> Any:
    return edgekit.load(whisper_fp32, device="cpu")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(whisper_folder(tmp_path_factory)).eval()


@pytest.fixture(scope="module")
def feats(m: Any) -> np.ndarray:
    c = m.contract
    wave = synthetic_audio(SECONDS, c.audio.sample_rate, 0)
    return audio.whisper_log_mel(wave, c.n_mels, len(wave), c.n_fft, c.hop_length, c.audio.sample_rate)


def _hf_run(hf: Any, feats: np.ndarray, new: int = NEW, **kw: Any) -> list[dict[str, Any]]:
    import torch

    with torch.inference_mode():
        out = hf.generate(torch.from_numpy(feats)[None], return_timestamps=True, return_segments=True,
                          language="en", max_new_tokens=new, **kw)
    return list(out["segments"][0])


def _hf(hf: Any, feats: np.ndarray, new: int = NEW, **kw: Any) -> Rows:
    return _rows(_hf_run(hf, feats, new, **kw))


def _rows(segments: list[dict[str, Any]]) -> Rows:
    return [(float(s["start"]), float(s["end"]), [int(t) for t in s["tokens"]]) for s in segments]


def _ours(m: Any, feats: np.ndarray, opts: LongForm, beams: int = 1, new: int = NEW) -> Rows:
    return [(s.start, s.end, list(s.tokens)) for s in m.long_form_segments(feats, "en", max_new_tokens=new,
                                                                              options=opts, num_beams=beams)]


def _judged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """(average log-probability, P(<|nospeech|>)) of each decode the long-form loop judges."""
    seen: list[tuple[float, float]] = []
    judge = W.judge

    def recorded(d: Decoded, vocab: int, opts: LongForm) -> tuple[bool, bool]:
        seen.append((sum(d.logprobs) / len(d.tokens), d.no_speech))
        return judge(d, vocab, opts)

    monkeypatch.setattr(W, "judge", recorded)
    return seen


def test_segments_equal_transformers_with_and_without_previous_text(m: Any, hf_model: Any, feats: np.ndarray,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    moves: list[int] = []
    split = W.split

    def recorded(seq: list[int], offset: float, frames: int, c: Any) -> tuple[list[W.LongSegment], int]:
        found, advance = split(seq, offset, frames, c)
        moves.append(advance)
        return found, advance

    monkeypatch.setattr(W, "split", recorded)
    seen = _judged(monkeypatch)
    # A logprob threshold nothing fails: the decisions are unchanged, and transformers keeps each
    # window's scores, whose average log-probability must be edgekit's.
    # (transformers' default temperature None fails with a logprob threshold: (0.0,) is its greedy.)
    ref = _hf_run(hf_model, feats, condition_on_prev_tokens=False, logprob_threshold=-1e9, temperature=(0.0,))
    plain = _ours(m, feats, LongForm(logprob_threshold=-1e9))
    assert plain == _rows(ref)
    # fp32 rounding (torch vs onnxruntime) moves a log-probability by ~1e-6 relative; these averages
    # are about -3 to -4, so they agree to ~1e-5, and 1e-4 leaves a tenfold margin.
    assert np.allclose([a for a, _ in seen], _hf_averages(ref), rtol=0, atol=1e-4)
    # More than one window, the first left at its last timestamp pair (not after its 3000 frames).
    assert len(moves) >= 2 and 0 < moves[0] < 3000
    conditioned = _ours(m, feats, LongForm(condition_on_prev_tokens=True))
    assert conditioned == _hf(hf_model, feats, condition_on_prev_tokens=True)
    assert conditioned != plain  # the previous text changed what the later windows decode


def _hf_averages(segments: list[dict[str, Any]]) -> list[float]:
    """transformers' `_retrieve_avg_logprobs` of each window (segments of one window share its result)."""
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    results = list({id(s["result"]): s["result"] for s in segments}.values())
    out = []
    for r in results:
        new = r["sequences"][-len(r["scores"]):]  # the generated tokens, eos included
        out.append(float(WhisperGenerationMixin._retrieve_avg_logprobs(r["scores"], new, 0.0)))
    return out


def test_beams_no_speech_skip_and_logprob_rule_equal_transformers(m: Any, hf_model: Any, feats: np.ndarray,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _judged(monkeypatch)
    # 12 new tokens: transformers' beam search reorders the cross-attention cache every step (slow on a CPU).
    plain = _ours(m, feats, LongForm(logprob_threshold=-1e9), beams=2, new=12)  # a threshold nothing fails
    (a1, n1), (a2, n2) = seen[:2]
    # A logprob threshold between the two windows' averages: one passes, the other is skipped (its
    # no-speech probability is above half the smaller one). fp32 moves an average of a few dozen
    # log-probabilities by ~1e-5, far inside the gap asserted here.
    assert abs(a1 - a2) > 0.1
    opts = dict(logprob_threshold=(a1 + a2) / 2, no_speech_threshold=min(n1, n2) / 2)
    got = _ours(m, feats, LongForm(temperature=(0.0,), **opts), beams=2, new=12)
    assert got == _hf(hf_model, feats, 12, temperature=(0.0,), num_beams=2, **opts)
    assert got != plain


def _window(script: dict[float, list[int]], calls: list[tuple[float, list[int], int]]) -> Any:
    def window(piece: np.ndarray, prompt: list[int], sot: int, limit: int, temperature: float,
               beams: int) -> Decoded:
        calls.append((temperature, prompt, beams))
        tokens = script[temperature]
        return Decoded(tokens, [-0.1] * len(tokens), 0.0)

    return window


def test_fallback_redecodes_a_repetitive_window_at_the_next_temperature(m: Any) -> None:
    import torch
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    c = m.contract
    ts, eos, vocab = c.no_timestamps_token_id + 1, c.eos_token_id, 2100
    loop = [ts, *[300, 301] * 40, ts + 100, eos]  # a repetition loop: compresses far below its length
    # Two segments, the second closed by a pair: the next window starts at its first timestamp (28 s).
    varied = [ts, *range(300, 340), ts + 500, ts + 510, *range(400, 420), ts + 1400, ts + 1410, eos]
    for tokens in (loop, varied):
        ref = WhisperGenerationMixin._retrieve_compression_ratio(torch.tensor(tokens), vocab)
        assert W.compression_ratio(tokens, vocab) == ref
    assert W.compression_ratio(loop, vocab) > 2.4 > W.compression_ratio(varied, vocab)
    feats = np.zeros((c.n_mels, 4500), np.float32)  # 45 s: two windows for either script
    init = [c.decoder_start_token_id]
    prev = c.startofprev

    def run(opts: LongForm, script: dict[float, list[int]], beams: int = 1) -> tuple[list[W.LongSegment], list[Any]]:
        calls: list[tuple[float, list[int], int]] = []
        found = W.sequential(feats, c, opts, init, prev, None, _window(script, calls), vocab, beams)
        return found, calls

    # Greedy loops: decoded again at 0.2; the varied decode is kept, and (below 0.5) conditions the next window.
    lf = LongForm(condition_on_prev_tokens=True, temperature=(0.0, 0.2, 0.6), compression_ratio_threshold=2.4)
    found, calls = run(lf, {0.0: loop, 0.2: varied, 0.6: loop})
    assert [t for t, _, _ in calls] == [0.0, 0.2, 0.0, 0.2]
    assert [s.tokens for s in found[:2]] == [tuple(varied[:42]), tuple(varied[42:-1])]
    assert (found[1].start, found[1].end) == pytest.approx((10.2, 28.0))
    assert calls[2][1] == [*prev, *varied[:-2], *init]  # of the closing pair, the previous text keeps one
    # Every temperature fails: the last decode is kept; at 0.6 it does not condition the next window.
    found, calls = run(lf, {0.0: loop, 0.2: loop, 0.6: loop})
    assert [t for t, _, _ in calls] == [0.0, 0.2, 0.6] * 2 and calls[3][1] == init
    assert found[0].tokens == tuple(loop[:-1])
    # One temperature: no fallback, the greedy decode stands.
    found, calls = run(LongForm(temperature=(0.0,), compression_ratio_threshold=2.4), {0.0: loop})
    assert [t for t, _, _ in calls] == [0.0, 0.0] and found[0].tokens == tuple(loop[:-1])
    # Beams decode at temperature 0 until the first sampled fallback; transformers' config keeps 1 beam after it.
    found, calls = run(LongForm(temperature=(0.0, 0.2), compression_ratio_threshold=2.4), {0.0: loop, 0.2: loop}, 3)
    assert [(t, b) for t, _, b in calls] == [(0.0, 3), (0.2, 1), (0.0, 1), (0.2, 1)]


def test_recognize_long_form_transcript(m: Any, feats: np.ndarray) -> None:
    wave = synthetic_audio(SECONDS, m.contract.audio.sample_rate, 0)
    t = m.recognize(wave, language="en", max_new_tokens=NEW, long_form=True)
    found = m.long_form_segments(feats, "en", max_new_tokens=NEW)
    assert t.text == m.decode_text([tok for s in found for tok in s.tokens]) and t.text
    texts = [(m.decode_text(list(s.tokens)), s.start, s.end) for s in found]
    assert [(s.text, s.start, s.end) for s in t.segments] == [x for x in texts if x[0]]
    assert t.language == "en"


def test_long_form_options_are_checked(m: Any, whisper_fp32: Path, tmp_path: Path) -> None:
    wave = synthetic_audio(2.0, 16000, 1)
    for bad in (dict(temperature=[0.0]), dict(temperature=()), dict(temperature=(-0.1,)),
                dict(no_speech_threshold=0.6), dict(logprob_threshold=float("nan")), dict(seed=-1)):
        with pytest.raises(ConfigError, match="LongForm"):
            LongForm(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="long_form"):
        m.recognize(wave, long_form="yes")
    with pytest.raises(ConfigError, match="vad or long_form"):
        m.recognize(wave, long_form=True, vad=True)
    with pytest.raises(UnsupportedError, match="does not time words"):
        m.recognize(wave, long_form=True, word_timestamps=True)
    # An artifact converted before long-form (no startofprev) loads and decodes, but cannot condition.
    art = tmp_path / "old"
    shutil.copytree(whisper_fp32, art)
    manifest = json.loads((art / "edgekit.json").read_text())
    del manifest["contract"]["startofprev"]
    (art / "edgekit.json").write_text(json.dumps(manifest))
    old = edgekit.load(art, device="cpu")
    assert old.contract.startofprev is None
    with pytest.raises(UnsupportedError, match="convert the model again"):
        old.recognize(wave, long_form=LongForm(condition_on_prev_tokens=True))
    assert old.recognize(wave, language="en", max_new_tokens=4, long_form=True).language == "en"


def test_cli_long_form_flag(whisper_fp32: Path, tmp_path: Path) -> None:
    """`edgekit run --long-form` reaches recognize(long_form=True): with --vad it is refused by name
    (before any decoding)."""
    import soundfile as sf
    from click.testing import CliRunner

    from edgekit.cli import cli

    wav = tmp_path / "a.wav"
    sf.write(wav, synthetic_audio(2.0, 16000, 3), 16000)
    r = CliRunner().invoke(cli, ["run", str(whisper_fp32), str(wav), "--long-form", "--vad", "--device", "cpu"])
    assert r.exit_code != 0 and "recognize takes vad or long_form, not both" in r.output
