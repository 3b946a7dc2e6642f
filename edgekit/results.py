"""Result types returned by the task objects."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One class of a classification: its label and softmax probability."""

    label: str
    score: float
    index: int = -1


@dataclass(frozen=True)
class Segment:
    """A piece of a transcript with its time span in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """What `recognize` returns: the text, and time offsets per chunk (or word)."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None
