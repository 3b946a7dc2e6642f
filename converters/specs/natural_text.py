"""Natural text for the generate parity gate when the user gives none: what users read, not random ids.

Random token ids give a real language model near-flat next-token distributions, where top-1 flips on
noise; prose does not. The corpus ships with Python itself (`pydoc_data.topics`, the language reference
behind `help()`): its prose paragraphs (code and grammar blocks dropped) are English that every Python
has. Held-out paragraphs are picked deterministically (every HELD_OUT_EVERY-th of the sorted topics'
prose), so the same text is scored on every machine and at every precision.

Chat prompts (greedy answers) are a few user turns rendered by the model's own chat template.
"""
from __future__ import annotations

import re

HELD_OUT_EVERY = 7
MIN_WORDS = 40
CHAT_TURNS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "How many legs does a spider have?",
    "Name three primary colors.",
    "What does a compiler do?",
    "Give me a short tip for sleeping better.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
)


def prose_paragraphs() -> list[str]:
    """Every prose paragraph of Python's pydoc topics, in sorted topic order (one line each)."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.splitlines()
            # Code, grammar and tables are indented; headings are underlined with * = or -.
            if not lines or any(ln.startswith(" ") for ln in lines) or re.fullmatch(r"[*=\-]+", lines[-1].strip()):
                continue
            text = " ".join(ln.strip() for ln in lines)
            if len(text.split()) >= MIN_WORDS and sum(c.isalpha() for c in text) > 0.7 * len(text):
                out.append(text)
    return out


def held_out_paragraphs(n: int) -> list[str]:
    """`n` held-out prose paragraphs (deterministic; fewer only if the corpus has fewer)."""
    return prose_paragraphs()[::HELD_OUT_EVERY][:n]


def calibration_paragraphs(n: int) -> list[str]:
    """`n` prose paragraphs disjoint from the held-out ones (for methods that learn from data)."""
    return [p for i, p in enumerate(prose_paragraphs()) if i % HELD_OUT_EVERY][:n]
