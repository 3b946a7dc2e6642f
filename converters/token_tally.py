"""Generated tokens against transformers' over a recognize parity run (Whisper, the speech
encoder-decoders, the audio-language models): positions that agree, sequences identical, and the word
error rate of their texts, each sequence's errors weighted by its reference's words."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekit.tasks.recognizer import word_error_rate


@dataclass
class TokenTally:
    same: int = 0  # positions where the two sequences hold the same token
    total: int = 0  # positions of the longer sequence, summed
    exact: int = 0  # sequences identical
    runs: int = 0  # sequences compared
    words: int = 0  # reference words (at least 1 per sequence)
    errors: float = 0.0  # word errors

    def add(self, ref: list[int], got: list[int], decode: Callable[[list[int]], str]) -> None:
        self.same += sum(int(a == b) for a, b in zip(ref, got))
        self.total += max(len(ref), len(got))
        self.exact += int(ref == got)
        self.runs += 1
        r_text, g_text = decode(ref), decode(got)
        n = max(len(r_text.split()), 1)
        self.errors += word_error_rate(r_text, g_text) * n
        self.words += n

    def measures(self, samples: int) -> dict[str, float]:
        """The report's measures: `samples` inputs, each decoded once or more (greedy, beams)."""
        return {"samples": samples, "token_agreement": self.same / max(self.total, 1),
                "identical_sequences": self.exact, "identical_share": self.exact / max(self.runs, 1),
                "wer_vs_pytorch": self.errors / max(self.words, 1)}

    def summary(self) -> str:
        return (f"{self.exact}/{self.runs} sequences identical, {self.same / max(self.total, 1):.2%} of positions "
                f"agree; WER vs PyTorch {self.errors / max(self.words, 1):.3f}")
