"""recognize(vad=...) on long audio: espeak-ng sentences between long silences (benchmarks/bench_vad.py).

Real Whisper base int8 (the conftest fixture test_real_whisper.py shares) for what a listener checks: no
text in the silences, the same words as each sentence transcribed alone. The tiny random Whisper and
Wav2Vec2-CTC of tests/reliability_models.py for the mechanics: batched spans equal spans one by one,
segments in the whole audio's time, the CLI's SRT/VTT/JSON files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import edgekit
from benchmarks.bench_vad import Recording, in_silence, recording
from benchmarks.real_speech import RATE, TEST_SENTENCES, normalize
from edgekit.errors import ConfigError
from edgekit.preprocess.vad import FOR_RECOGNITION, WINDOW, detect
from edgekit.results import Segment
from edgekit.tasks.recognizer import word_error_rate


@pytest.fixture(scope="module")
def rec() -> Recording:
    # tests/data/speech's three sentences (those Whisper base hears most steadily: espeak-ng's voices,
    # saved by benchmarks/real_speech.py --save-audio, so no espeak-ng is needed here), 12-18 s of
    # silence around each: 75 s, 13 s of it speech.
    files = sorted((Path(__file__).parent / "data" / "speech").glob("*.flac"))
    spoken = [sf.read(f, dtype="float32")[0] for f in files]
    assert len(spoken) == len(TEST_SENTENCES) and all(sf.info(f).samplerate == RATE for f in files)
    return recording(75.0, silence=(12.0, 18.0), seed=1, sentences=TEST_SENTENCES, spoken=spoken)


@pytest.fixture(scope="module")
def rec_file(rec: Recording, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vad") / "long.flac"
    sf.write(path, rec.wave, RATE, subtype="PCM_16")
    return path


def _margin() -> float:
    """How far a span may reach past speech: its pad, and the 32 ms window the VAD decides per."""
    return FOR_RECOGNITION.speech_pad_ms / 1000 + WINDOW / RATE


def _times(segments: list[Segment]) -> list[float]:
    return [x for s in segments for x in (s.start, s.end)]


def test_real_whisper_has_no_text_in_silence(real_whisper_int8: Path, rec: Recording) -> None:
    m = edgekit.load(real_whisper_int8, device="cpu")
    got = m.recognize(rec.wave, sample_rate=RATE, language="en", vad=True)
    assert got.segments and not in_silence(got.segments, rec.spans, _margin()), got.segments
    for a, b in rec.spans:  # every sentence was heard
        assert any(s.start < b / RATE and s.end > a / RATE and s.text for s in got.segments), (a, b, got.segments)
    alone = " ".join(m.recognize(rec.wave[a:b], sample_rate=RATE, language="en").text for a, b in rec.spans)
    ref, hyp = normalize(alone), normalize(got.text)
    edits = round(word_error_rate(ref, hyp) * len(ref.split()))
    # The cut moves the window's start (the VAD's pad instead of espeak-ng's lead-in), and Whisper base hears
    # "She sells sea shells" differently with each start ("she fell, she fell", "she's held, she's held")
    # and may join "intelligence is": 4 and 5 of these 31 words measured (espeak-ng's float output, and
    # its 16-bit FLAC). A lost or repeated sentence costs at least the shortest one's 7 words; text from a
    # silence is caught above. So fewer than 7.
    assert edits < 7, (edits, alone, got.text)


def test_spans_batched_equal_spans_alone(rec: Recording, tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_whisper

    m = edgekit.load(converted_whisper(tmp_path_factory), device="cpu")
    got = m.recognize(rec.wave, sample_rate=RATE, vad=True, max_new_tokens=6)
    spans = detect(rec.wave, RATE, FOR_RECOGNITION)
    assert len(spans) == len(rec.spans) > 1  # more spans than one: they ran as one batch of rows
    alone = [m.recognize(rec.wave[s.start:s.end], sample_rate=RATE, max_new_tokens=6) for s in spans]
    # Rows never mix in the graphs: a row of a batch and the same window alone differ by summation order only.
    assert got.text == " ".join(t.text for t in alone if t.text)
    want = [(s.start / RATE, s.end / RATE) for s in spans]  # without timestamps: one segment per span
    assert _times(got.segments) == pytest.approx([x for w, t in zip(want, alone) if t.text for x in w])


def test_ctc_segments_are_in_the_whole_audio_time(rec: Recording, tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_w2v

    m = edgekit.load(converted_w2v(tmp_path_factory), device="cpu")
    got = m.recognize(rec.wave, sample_rate=RATE, vad=True)
    spans = detect(rec.wave, RATE, FOR_RECOGNITION)
    alone = [m.recognize(rec.wave[s.start:s.end], sample_rate=RATE) for s in spans]
    assert got.text == " ".join(t.text for t in alone if t.text)
    lo = [(s.start / RATE, s.end / RATE) for s in spans]
    moved = [(a + w.start, min(b, a + w.end)) for (a, b), t in zip(lo, alone) for w in t.segments]
    assert _times(got.segments) == pytest.approx([x for pair in moved for x in pair])


def test_silence_gives_no_segments(tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_w2v

    m = edgekit.load(converted_w2v(tmp_path_factory), device="cpu")
    noise = np.random.default_rng(0).standard_normal(10 * RATE).astype(np.float32) * 3e-3  # -50 dBFS: not "silence"
    assert m.recognize(noise, sample_rate=RATE, vad=True) == edgekit.Transcript("", [], None)
    with pytest.raises(ConfigError, match="vad"):
        m.recognize(noise, sample_rate=RATE, vad="yes")


def test_cli_writes_subtitles(rec_file: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_whisper

    art = converted_whisper(tmp_path_factory)
    want = edgekit.load(art, device="cpu").recognize(rec_file, vad=True)
    cli = [sys.executable, "-m", "edgekit.cli", "run", str(art), str(rec_file), "--vad", "--device", "cpu"]
    out = tmp_path / "long.srt"
    done = subprocess.run([*cli, "--format", "srt", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    cues = out.read_text().split("\n\n")
    assert len(cues) == len(want.segments) > 1
    for i, (cue, s) in enumerate(zip(cues, want.segments), 1):
        number, times, text = cue.strip().split("\n")
        assert number == str(i) and text == " ".join(s.text.split())
        start, end = (sum(float(x) * k for x, k in zip(t.replace(",", ".").split(":"), (3600, 60, 1)))
                      for t in times.split(" --> "))
        assert abs(start - s.start) <= 5e-4 and abs(end - s.end) <= 5e-4  # printed to the millisecond
    again = subprocess.run([*cli, "--format", "vtt", "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr and out.read_text().startswith("1\n")
    done = subprocess.run([*cli, "--format", "json", "-o", str(out), "--overwrite"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    assert got["text"] == want.text and [(s["start"], s["end"]) for s in got["segments"]] == [
        (s.start, s.end) for s in want.segments]
