"""A `Transcript` as SubRip (.srt), WebVTT (.vtt) or JSON text: one cue per segment.

SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each. WebVTT (W3C): the
`WEBVTT` header, then cues with `HH:MM:SS.mmm`. Times are rounded to the millisecond.

>>> from edgekit.results import Segment, Transcript
>>> t = Transcript("hello there", [Segment("hello there", 1.5, 3661.0004)])
>>> print(write(t, "srt"), end="")
1
00:00:01,500 --> 01:01:01,000
hello there
>>> print(write(t, "vtt"), end="")
WEBVTT
<BLANKLINE>
00:00:01.500 --> 01:01:01.000
hello there
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

from edgekit.errors import ConfigError
from edgekit.results import Transcript


def _clock(seconds: float, mark: str) -> str:
    ms = round(max(0.0, seconds) * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{mark}{ms % 1000:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in both formats: a segment's own line breaks are folded into one line.
    return " ".join(text.split())


def srt(t: Transcript) -> str:
    cues = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s.text)}\n"
            for i, s in enumerate(t.segments, 1)]
    return "\n".join(cues)


def vtt(t: Transcript) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_cue_text(s.text)}\n" for s in t.segments]
    return "\n".join(["WEBVTT\n", *cues])


def as_json(t: Transcript) -> str:
    data = asdict(t)
    for s in data["segments"]:  # words only where they were asked for (recognize(word_timestamps=True))
        if s["words"] is None:
            del s["words"]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


FORMATS: dict[str, Callable[[Transcript], str]] = {"srt": srt, "vtt": vtt, "json": as_json}


def write(t: Transcript, fmt: str) -> str:
    """The transcript as the text of a `fmt` file ("srt" | "vtt" | "json")."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown transcript format '{fmt}'", found=f"formats {sorted(FORMATS)}")
    return FORMATS[fmt](t)
