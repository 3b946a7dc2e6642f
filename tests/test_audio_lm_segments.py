"""VibeVoice-ASR's JSON answer read as transformers' processor reads it (decode(return_format=
"transcription_only")): whole, cut short, and not JSON at all; the segments keep the model's times."""
from __future__ import annotations

import pytest

from edgekit.tasks.audio_lm_segments import json_transcript

ANSWERS = [
    'assistant\n[{"Start":0.0,"End":1.5,"Speaker":0,"Content":"hello there"},{"Start":1.5,"End":3,"Speaker":1,"Content":"hi"}]\n',
    'assistant\n[{"Start":0.0,"End":1.5,"Speaker":0,"Content":"hello"}, {"Start":1.5,"End',  # cut by max_new_tokens
    "assistant\n a plain answer ",
    '[{"Start":"soon","Content":"x"}]',
    '[{"Speaker":0}]',
    "[]",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_text_is_the_processors(answer: str) -> None:
    from transformers import VibeVoiceAsrProcessor

    # The parsers read no processor state: an instance without a tokenizer runs them.
    want = object.__new__(VibeVoiceAsrProcessor).extract_transcription(answer)
    assert json_transcript(answer, 9.0)[0] == want


def test_segments_keep_the_models_times() -> None:
    _, segments = json_transcript(ANSWERS[0], 9.0)
    assert [(s.text, s.start, s.end) for s in segments] == [("hello there", 0.0, 1.5), ("hi", 1.5, 3.0)]
    assert [(s.text, s.start, s.end) for s in json_transcript(ANSWERS[2], 9.0)[1]] == [("a plain answer", 0.0, 9.0)]
