"""Result types returned by the task objects."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One class of a classification: its label and softmax probability."""

    label: str
    score: float
    index: int = -1


@dataclass(frozen=True)
class Word:
    """One word of a segment, as faster-whisper's `Word`: its span in seconds from the start of the
    file, its text (Whisper's keeps the leading space of its tokens) and how sure the model was of it
    (Whisper: the mean probability of its tokens; CTC: the mean probability of its frames' labels)."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """A piece of a transcript with its time span in seconds; `words` with `word_timestamps=True`."""

    text: str
    start: float
    end: float
    words: list[Word] | None = None


@dataclass(frozen=True)
class Transcript:
    """What `recognize` returns: the text, and time offsets per chunk (or word)."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None


@dataclass(frozen=True)
class GenerateOutput:
    """What `generate(..., return_dict_in_generate=True)` returns, with transformers' field names.

    `sequences` (rows, length) int64: the prompt (decoder-only) or the decoder's start token
    (encoder-decoder), then the new tokens. With `output_scores=True`: `scores`, one (rows, vocab)
    float32 array per step, processed as the choice was made from (log-probabilities for beam
    search), and for beam search `sequences_scores` and `beam_indices`; with `output_logits=True`
    the raw `logits` per step. `texts` holds the decoded new text when the prompt was text.
    Readable as attributes or as `out["sequences"]`.
    """

    sequences: Any
    scores: tuple[Any, ...] | None = None
    logits: tuple[Any, ...] | None = None
    sequences_scores: Any = None
    beam_indices: Any = None
    texts: list[str] | None = None
    speculation: Speculation | None = None  # generate(..., prompt_lookup_num_tokens=N): what the drafts did

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class Speculation:
    """What speculative decoding did in one generate call: the target's decode calls after its
    prompt (`steps`), the tokens they made, the tokens drafted and the drafts accepted."""

    steps: int = 0
    tokens: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def tokens_per_step(self) -> float:
        """New tokens per target decode call (1.0 is plain decoding)."""
        return self.tokens / self.steps if self.steps else 0.0


@dataclass(frozen=True)
class StreamUpdate:
    """One step of `recognize_stream`: what is settled so far and the guess for the rest.

    `text_final` is the whole settled transcript so far (it only ever grows: a final word is
    never changed); `words` are the words settled by this step, with their times in seconds from
    the stream's start (Whisper: the settled text between two timestamp tokens, timed by them); `text_partial` is the tentative text after `text_final` (may change);
    `audio_s` is the audio received so far; `is_final` marks the last update, after the stream ends.
    """

    text_final: str
    text_partial: str
    words: tuple[Segment, ...]
    audio_s: float
    is_final: bool = False
