"""recognize_stream on Whisper (LocalAgreement-2): the agreement rule, prefix-stable final text that is
what the policy commits, decode steps independent of chunk sizes, bad input refused by name."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.errors import ConfigError, InputError
from edgekit.results import StreamUpdate
from edgekit.tasks.whisper_stream import local_agreement
from reliability_models import converted_whisper
from serve_support import speech_like

RATE = 16000
TEXT_END, TS = 100, 200  # ids below 100 are text, from 200 timestamps; between them special tokens


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_whisper(tmp_path_factory), device="cpu")


def test_local_agreement_commits_the_common_prefix_to_a_word_end() -> None:
    words = {1, 3, 5, 7}.__contains__  # these tokens start a word; 2, 4, 6 continue one

    def agree(previous: list[int], current: list[int]) -> int:
        return local_agreement(previous, current, TEXT_END, TS, words)

    assert agree([], [1, 2, 3]) == 0  # one hypothesis agrees with nothing
    assert agree([1, 2, 3, 4], [1, 2, 3, 5]) == 3  # 1 2 3 agree, and 5 starts a word after them
    assert agree([1, 2, 3, 4], [1, 2, 3, 4]) == 2  # 4 ends nothing yet: the word 3 4 may still grow
    assert agree([1, 2, 3], [1, 2, 3, TS + 5]) == 3  # a timestamp after 3 closes its word
    assert agree([1, 2, 3], [1, 2, 3, 4, 5]) == 2  # 3 4 is one word and only 3 agreed
    assert agree([1, 2, 3], [1, 4, 3, 5]) == 0  # they part at the second token, inside the first word
    # Timestamps and special tokens are not compared: only the text decides.
    assert agree([TS, 1, 2, TS + 9, TS + 9, 3, 5], [TS, 1, 2, TS + 7, TS + 7, 3, 5, 6]) == 6
    assert agree([1, 150, 2, 3], [1, 2, 150, 3, 5]) == 4
    assert agree([1, 2, 3], [5, 1, 2, 3]) == 0


def _pieces(wave: np.ndarray, size: int) -> list[np.ndarray]:
    return [wave[i:i + size] for i in range(0, len(wave), size)]


def _check_updates(updates: list[StreamUpdate]) -> None:
    """Final text only grows; a step's committed segments are the text it added; only the last is final."""
    for before, now in zip(updates, updates[1:]):
        assert now.text_final.startswith(before.text_final) and now.audio_s >= before.audio_s
        added = now.text_final[len(before.text_final):]
        assert "".join(w.text for w in now.words).replace(" ", "") == added.replace(" ", "")
        assert all(0 <= w.start <= w.end <= now.audio_s for w in now.words)
    assert [u.is_final for u in updates] == [False] * (len(updates) - 1) + [True]
    assert updates[-1].text_partial == ""


def test_whisper_stream_is_prefix_stable_and_ends_with_what_it_committed(whisper: Any) -> None:
    wave = speech_like(3.0, RATE, seed=2)  # three decode steps of 1 s, nothing left for the end
    runs = [list(whisper.recognize_stream(_pieces(wave, size), max_new_tokens=12)) for size in (1600, len(wave))]
    for updates in runs:
        _check_updates(updates)
        # At the end the last hypothesis is committed whole: the final text is what was committed
        # before it plus that hypothesis' tentative rest.
        last, end = updates[-2], updates[-1]
        assert end.text_final.replace(" ", "") == (last.text_final + last.text_partial).replace(" ", "")
        assert end.text_final
    # Decodes fall every step_s of audio whatever the chunks: the same commits, at the same times.
    words = [[(w.text, w.start, w.end) for u in updates for w in u.words] for updates in runs]
    assert words[0] == words[1] and words[0]
    assert len({u.audio_s for u in runs[0]}) == len(runs[0]) - 1  # one update per chunk, the last repeats it


def test_whisper_stream_trims_its_buffer_and_keeps_committing(whisper: Any, caplog: pytest.LogCaptureFixture) -> None:
    """trim_s=1.0: the buffer is cut at committed segment ends; text stays prefix-stable, times grow."""
    wave = speech_like(2.0, RATE, seed=3)
    with caplog.at_level(logging.DEBUG, logger="edgekit"):
        updates = list(whisper.recognize_stream(_pieces(wave, 8000), step_s=0.5, trim_s=1.0, max_new_tokens=10))
    assert any("buffer cut at" in r.message for r in caplog.records)
    _check_updates(updates)
    starts = [w.start for u in updates for w in u.words]
    assert starts == sorted(starts)
    assert list(whisper.recognize_stream(iter([])))[-1] == StreamUpdate("", "", (), 0.0, True)
    silent = list(whisper.recognize_stream([np.zeros(RATE, np.float32)] * 2))
    assert silent[-1].text_final == ""  # as offline recognize: silence is not decoded


def test_a_buffer_past_the_window_is_cut_unconfirmed_and_logged(whisper: Any, caplog: pytest.LogCaptureFixture) -> None:
    """max_new_tokens=2 leaves each hypothesis a timestamp and one token: no word ever ends, nothing is
    agreed, so no committed segment end exists; the 31st second does not fit the 30 s window."""
    wave = speech_like(31.0, RATE, seed=5)
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        updates = list(whisper.recognize_stream([wave], step_s=10.0, trim_s=20.0, max_new_tokens=2))
    assert [r.message for r in caplog.records if "unconfirmed" in r.message]
    first, end = updates
    assert first.text_final == "" and first.text_partial and end.text_final.startswith(first.text_partial)
    assert end.words and all(w.end <= 31.0 for w in end.words)


def test_whisper_stream_bad_input_is_refused_by_name(whisper: Any) -> None:
    with pytest.raises(InputError, match="sample_rate"):
        whisper.recognize_stream([np.zeros(100, np.float32)], sample_rate=-5)
    for step_s, trim_s in ((0.0, 10.0), (1.0, 29.5), (-1.0, 5.0), ("1", 5.0)):
        with pytest.raises(ConfigError, match="step_s and trim_s"):
            whisper.recognize_stream([], step_s=step_s, trim_s=trim_s)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        whisper.recognize_stream([], max_new_tokens=0)
    with pytest.raises(InputError, match="unknown Whisper task"):
        whisper.recognize_stream([], task="summarize")
    with pytest.raises(InputError, match="unknown language"):
        whisper.recognize_stream([], language="klingon")
    with pytest.raises(InputError, match="numpy arrays"):
        list(whisper.recognize_stream([np.zeros(3200, np.float32), [0.0] * 100]))
    with pytest.raises(InputError, match="NaN"):
        list(whisper.recognize_stream([np.full(3200, np.nan, np.float32)]))
