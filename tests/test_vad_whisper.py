"""recognize(vad=...) on long audio: espeak-ng sentences between long silences (benchmarks/bench_vad.py).

Real Whisper base int8 (the conftest fixture test_real_whisper.py shares) for what a listener checks: no
text in the silences, every sentence heard, no sentence lost or repeated. The tiny random Whisper and
Wav2Vec2-CTC of tests/reliability_models.py for the mechanics: batched spans equal spans one by one,
packed spans are one window's text cut back into spans, segments in the whole audio's time, the CLI's
SRT/VTT/JSON files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
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
    spoken = normalize(" ".join(rec.texts))
    edits = round(word_error_rate(spoken, normalize(got.text)) * len(spoken.split()))
    # vad=True lays the three spans in one window: 2 of these 31 words measured ("seashells" for "sea
    # shells"); each span in a window of its own, Whisper base hears "She sells sea shells" differently
    # with each start ("she's held, she's held", "She's L.C.L.") and joins "intelligence is": 8. A lost or
    # repeated sentence costs at least the shortest one's 7 words; text from a silence is caught above.
    # So fewer than 7.
    assert edits < 7, (edits, got.text)


def test_spans_batched_equal_spans_alone(rec: Recording, tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_whisper

    m = edgekit.load(converted_whisper(tmp_path_factory), device="cpu")
    # Each span its own window (vad=True packs these three short spans into one: the test below).
    got = m.recognize(rec.wave, sample_rate=RATE, vad=replace(FOR_RECOGNITION, pack=False), max_new_tokens=6)
    spans = detect(rec.wave, RATE, FOR_RECOGNITION)
    assert len(spans) == len(rec.spans) > 1  # more spans than one: they ran as one batch of rows
    alone = [m.recognize(rec.wave[s.start:s.end], sample_rate=RATE, max_new_tokens=6) for s in spans]
    # Rows never mix in the graphs: a row of a batch and the same window alone differ by summation order only.
    assert got.text == " ".join(t.text for t in alone if t.text)
    want = [(s.start / RATE, s.end / RATE) for s in spans]  # without timestamps: one segment per span
    assert _times(got.segments) == pytest.approx([x for w, t in zip(want, alone) if t.text for x in w])


def test_packed_spans_are_one_window_cut_back_into_spans(rec: Recording,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_whisper

    m = edgekit.load(converted_whisper(tmp_path_factory), device="cpu")
    packed = replace(FOR_RECOGNITION, pack=True)  # vad=True packs too, but not with word_timestamps (below)
    got = m.recognize(rec.wave, sample_rate=RATE, vad=packed, language="en", max_new_tokens=30, word_timestamps=True)
    spans = detect(rec.wave, RATE, FOR_RECOGNITION)
    window = np.concatenate([rec.wave[s.start:s.end] for s in spans])  # 13 s: the three spans in one window
    tokens = m.decode_tokens(m.features(window), language="en", timestamps=True, max_new_tokens=30)
    # Every text token of the window lands in one span; the spans' texts joined are the window's text
    # (but for the spaces where a segment was cut at a span boundary).
    assert "".join(got.text.split()) == "".join(m.decode_text(tokens).split()) != ""
    bounds = [(s.start / RATE, s.end / RATE) for s in spans]
    assert got.segments and all(any(a <= x.start <= x.end <= b for a, b in bounds)
                                for s in got.segments for x in (s, *s.words))
    # Without words vad=True packs: the same text; with words each span has its own window, so that
    # word times are those of transformers on the span (a packed window's DTW moves them).
    assert m.recognize(rec.wave, sample_rate=RATE, vad=True, language="en", max_new_tokens=30).text == got.text
    unpacked = replace(FOR_RECOGNITION, pack=False)
    assert m.recognize(rec.wave, sample_rate=RATE, vad=True, language="en", max_new_tokens=30, word_timestamps=True
                       ) == m.recognize(rec.wave, sample_rate=RATE, vad=unpacked, language="en", max_new_tokens=30,
                                        word_timestamps=True)


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


def test_spans_pack_in_order_up_to_one_window() -> None:
    from edgekit.preprocess.vad import Span
    from edgekit.tasks.span_packing import pack

    spans = [Span(0, 10), Span(50, 70), Span(90, 95), Span(100, 130), Span(200, 205)]
    got = pack(spans, [0, 1, 2, 3, 4], 40)
    # 10 + 20 + 5 fit in 40; the 30-sample span does not join them; the last 5 join it.
    assert [(w.members, w.offsets, w.lengths) for w in got] == [((0, 1, 2), (0, 10, 30), (10, 20, 5)),
                                                                ((3, 4), (0, 30), (30, 5))]
    wave = np.arange(210, dtype=np.float32)
    assert np.array_equal(got[1].audio(wave, spans), np.r_[wave[100:130], wave[200:205]])
    assert [w.members for w in pack(spans, [1, 3], 40, share=False)] == [(1,), (3,)]
    with pytest.raises(ConfigError, match="pack"):
        edgekit.VadOptions(pack="yes")  # type: ignore[arg-type]


def test_a_segment_over_a_span_boundary_is_cut_at_its_words() -> None:
    from edgekit.preprocess.vad import Span
    from edgekit.results import Word
    from edgekit.tasks.span_packing import Piece, pack, pieces, split

    ts, eos, rate = 100, 50, 10  # timestamps from token 100 (0.02 s apart), eos 50, 10 samples per second
    window = pack([Span(0, 20), Span(40, 70)], [0, 1], 100)[0]  # 2 s then 3 s, the second from 2 s in the window
    # A repeated opening timestamp keeps the segment open; the last one, never closed, ends at the window's end.
    assert pieces([1, ts, 7, ts, 8, ts + 90, ts + 90, 9, eos], ts, eos, 0.02, 5.0) == [
        Piece([2, 4], 0.0, 1.8), Piece([7], 1.8, 5.0)]
    piece = Piece([3, 4, 5], 1.0, 4.0)  # three words, 1.0-4.0 s: over the boundary at 2.0 s
    words = [(Word(1.0, 1.5, " a", 0.9), [0]), (Word(1.5, 2.2, " b", 0.8), [1]), (Word(2.2, 3.0, " c", 0.7), [2])]
    first, second = split(piece, window, rate, words)
    # " b"'s middle (1.85 s) lies in the first span; times are then each span's own, held inside it.
    assert (first.member, first.tokens, first.start, first.end) == (0, [3, 4], 1.0, 2.0)
    assert [(w.word, w.start, w.end) for w in first.words] == [(" a", 1.0, 1.5), (" b", 1.5, 2.0)]
    assert (second.member, second.tokens, second.start, second.end) == (1, [5], 0.0, 2.0)
    assert [(w.word, round(w.start, 9), round(w.end, 9)) for w in second.words] == [(" c", 0.2, 1.0)]
    # Without word times, the whole segment goes to the span it overlaps most (2.0 s of the second's).
    (whole,) = split(piece, window, rate, None)
    assert (whole.member, whole.tokens, whole.start, whole.end, whole.words) == (1, [3, 4, 5], 0.0, 2.0, None)
