"""VibeVoice-ASR's answer: a JSON list of {"Start", "End", "Speaker", "Content"} after "assistant"
(the model writes its own turn). Read as transformers' VibeVoiceAsrProcessor.decode(return_format=
"transcription_only") reads it (extract_speaker_dict, extract_transcription): the Contents joined by
spaces; an answer that is no such list is the text as written (the processor's own rule, logged here as
it logs it); a list cut short (max_new_tokens) keeps its complete elements.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from edgekit.results import Segment

log = logging.getLogger("edgekit")
_SEPARATOR = re.compile(r"[\s,]*")


def json_transcript(text: str, seconds: float) -> tuple[str, list[Segment]]:
    """(the transcript, a segment per element, timed by its Start/End where it has them, else the recording)."""
    t = text.strip()
    if t.startswith("assistant"):
        t = t[len("assistant"):].strip()
    segments = _elements(t)
    if segments is None:
        return t, ([Segment(t, 0.0, seconds)] if t else [])
    out = [Segment(str(s.get("Content", "")), *_span(s, seconds)) for s in segments]
    return " ".join(s.text for s in out).strip(), out


def _elements(t: str) -> list[dict[str, Any]] | None:
    if not t.startswith("["):
        log.warning("the model's answer is not a JSON list: its text is the transcript, as the processor reads it")
        return None
    try:
        segments = json.loads(t)
    except json.JSONDecodeError:
        segments = _complete(t)
        if not segments:
            log.warning("the model's answer is not valid JSON: its text is the transcript, as the processor reads it")
            return None
        log.warning("the model's answer was cut short: its %d complete segments are kept", len(segments))
    if not isinstance(segments, list) or not all(isinstance(s, dict) and "Content" in s for s in segments):
        log.warning("the model's answer is not a list of segments with Content: its text is the transcript")
        return None
    for s in segments:
        for key in ("Start", "End"):
            if s.get(key) is not None and not isinstance(s[key], (int, float)):
                log.warning("a segment's %s is not a number: the answer's text is the transcript", key)
                return None
    return segments


def _complete(text: str) -> list[Any]:
    """The complete elements of a JSON list that is missing its end."""
    decoder, segments = json.JSONDecoder(), []
    pos = _SEPARATOR.match(text, 1).end()  # type: ignore[union-attr]  # [\s,]* matches everywhere
    while pos < len(text):
        try:
            segment, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        segments.append(segment)
        pos = _SEPARATOR.match(text, pos).end()  # type: ignore[union-attr]
    return segments


def _span(segment: dict[str, Any], seconds: float) -> tuple[float, float]:
    start, end = segment.get("Start"), segment.get("End")
    return (float(start) if start is not None else 0.0), (float(end) if end is not None else seconds)
