"""Structured output: `response_format=` (OpenAI's shape), `grammar=` and `regex=` in generate.

The engine is llguidance (benchmarks/grammar_engines.py measured it beside xgrammar and outlines-core
on SmolLM2's 49,152-token vocabulary): a Rust matcher per row that computes, each step, the bit mask of
the tokens that keep the output inside the grammar. It needs no torch or transformers (xgrammar imports
both), and builds its tokenizer data from the artifact's own tokenizer.json text. Masked tokens get
-inf before the sampling warpers, so top-k / top-p keep only allowed tokens. Each beam has its own
matcher, copied and reordered with the beams. The grammar's end is the model's eos: the mask allows
eos only where the grammar accepts, and allows nothing else once the grammar cannot go on.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InputError

log = logging.getLogger("edgekit")
INSTALL = "pip install 'edgekit[structured]' (llguidance, no other dependencies)"


@dataclass(frozen=True)
class OutputFormat:
    """What generate's output must follow: a JSON schema, a Lark/GBNF grammar, or a regular expression."""

    kind: str  # "json_schema", "grammar" or "regex"
    text: str  # the schema as JSON text, the grammar, or the pattern

    @classmethod
    def make(cls, response_format: Any, grammar: Any, regex: Any) -> OutputFormat | None:
        given = [n for n, v in (("response_format", response_format), ("grammar", grammar), ("regex", regex))
                 if v is not None]
        if len(given) > 1:
            raise ConfigError("generate takes one of response_format=, grammar= and regex=", found=", ".join(given))
        if grammar is not None or regex is not None:
            text, kind = (grammar, "grammar") if grammar is not None else (regex, "regex")
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{kind}= must be non-empty text", found=repr(text)[:80],
                                  fix='e.g. regex=r"\\d{3}-\\d{4}", or grammar="start: ..." (Lark) / "root ::= ..." '
                                      "(GBNF)")
            return cls(kind, text)
        text = None if response_format is None else _schema_text(response_format)
        return None if text is None else cls("json_schema", text)


def _schema_text(rf: Any) -> str | None:
    """OpenAI's response_format: {"type": "json_schema", "json_schema": {"schema": {...}, ...}} or
    {"type": "json_object"} (any JSON object); {"type": "text"} asks for nothing."""
    shape = ('{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}, or {"type": "json_object"}')
    kind = rf.get("type") if isinstance(rf, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return '{"type": "object"}'
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, (Mapping, bool)):
            try:
                return json.dumps(schema)
            except (TypeError, ValueError) as e:
                raise ConfigError("the response_format schema is not JSON", found=str(e)[:120], fix=shape) from None
    raise ConfigError("response_format must be OpenAI's structured-output shape", found=repr(rf)[:120], fix=shape)


def engine() -> Any:
    try:
        import llguidance
    except ImportError:
        raise ConfigError("structured output (response_format=, grammar=, regex=) needs the llguidance engine",
                          found="llguidance is not installed", fix=INSTALL) from None
    return llguidance


def grammar_of(fmt: OutputFormat) -> str:
    """llguidance's grammar for a format; an unusable schema, grammar or pattern is a ConfigError."""
    ll = engine()
    try:
        if fmt.kind == "json_schema":
            # Compact JSON: free whitespace lets a small model loop on spaces and newlines.
            return str(ll.LLMatcher.grammar_from_json_schema(fmt.text, defaults={"whitespace_flexible": False}))
        if fmt.kind == "regex":
            return str(ll.LLMatcher.grammar_from_regex(fmt.text))
        return str(ll.grammar_from("grammar", fmt.text))  # Lark as is; GBNF converted to Lark
    except ValueError as e:
        raise ConfigError(f"the {fmt.kind} cannot be read", found=str(e)[:200], fix=_FIX[fmt.kind]) from None


_FIX = {
    "json_schema": "pass a JSON Schema (draft 2020-12) object, e.g. {\"type\": \"object\", \"properties\": {...}}",
    "regex": "use Rust regex syntax (https://docs.rs/regex), without look-around or back-references",
    "grammar": "use Lark syntax (start: ...) or llama.cpp's GBNF (root ::= ...)",
}


class GrammarRows:
    """One llguidance matcher per decode row: the allowed-token mask each step, fed the chosen tokens."""

    def __init__(self, tokenizer: Any, fmt: OutputFormat, rows: int, vocab: int) -> None:
        ll = engine()
        first = ll.LLMatcher(tokenizer, grammar_of(fmt), log_level=0)
        if first.is_error():  # the matcher reports grammar errors this way, never by raising
            raise ConfigError(f"the {fmt.kind} is not usable for generation", found=first.get_error()[:300],
                              fix=_FIX[fmt.kind] + "; keywords the engine cannot enforce must be left out")
        self.fmt, self.vocab, self.start = fmt, vocab, first.deep_copy()
        self.matchers = [first] + [first.deep_copy() for _ in range(rows - 1)]
        self.dead = np.zeros(rows, bool)  # beams that took a token the grammar refuses (scored -inf)
        self.bits = np.full((rows, (vocab + 31) // 32), -1, np.int32)

    def allowed(self) -> np.ndarray:
        """(rows, vocab) bool: the tokens each row may take next (none for a dead row)."""
        from llguidance.numpy import fill_next_token_bitmask

        for r, m in enumerate(self.matchers):
            if not self.dead[r]:
                fill_next_token_bitmask(m, self.bits, r)
        ok = np.unpackbits(self.bits.view(np.uint8), axis=1, bitorder="little")[:, : self.vocab].astype(bool)
        ok[self.dead] = False
        return ok

    def mask(self, scores: np.ndarray) -> np.ndarray:
        return np.where(self.allowed(), scores, np.float32(-np.inf)).astype(scores.dtype)

    def advance(self, tokens: np.ndarray, live: np.ndarray) -> None:
        """Feed each live row its chosen token; a row whose token the grammar refuses is dead from then."""
        for r in np.flatnonzero(live & ~self.dead):
            if not self.matchers[r].consume_token(int(tokens[r])):
                self.dead[r] = True

    def valid_prefix(self, tokens: np.ndarray) -> int:
        """How many of `tokens` in a row the grammar takes from row 0's state, consuming none
        (speculative decoding cuts its drafts there)."""
        return int(self.matchers[0].validate_tokens([int(t) for t in tokens]))

    def rollback(self, n: int) -> None:
        """Undo the last n tokens every row took (an assistant's drafts, masked as it drafted them)."""
        for m in self.matchers:
            if not m.rollback(n):
                raise InputError(f"the {self.fmt.kind} matcher cannot undo {n} tokens", found=m.get_error()[:200],
                                 fix="generate without assistant_model for this format")

    def reorder(self, rows: np.ndarray) -> None:
        """Row i becomes a copy of row rows[i] (beams): repeated rows get their own matcher."""
        taken: set[int] = set()
        out = []
        for r in rows.tolist():
            out.append(self.matchers[r] if r not in taken else self.matchers[r].deep_copy())
            taken.add(r)
        self.matchers, self.dead = out, self.dead[rows]
        if len(rows) != self.bits.shape[0]:
            self.bits = np.full((len(rows), self.bits.shape[1]), -1, np.int32)

    def check_choice(self, scores: np.ndarray, live: np.ndarray) -> None:
        """Greedy and sampling pick among finite scores: a live row with none left cannot follow the grammar."""
        stuck = live & ~np.isfinite(scores).any(axis=1)
        if stuck.any():
            raise InputError(f"the {self.fmt.kind} and the other generate options leave no allowed token",
                             found=f"rows {np.flatnonzero(stuck).tolist()[:8]}",
                             fix="drop options that ban tokens the grammar needs (min_new_tokens, bad_words_ids, "
                                 "suppress_tokens, no_repeat_ngram_size)")

    def warn_incomplete(self, new: np.ndarray, eos: set[int]) -> list[int]:
        """Log (and return) the output rows (new tokens; eos and padding after) the grammar does not
        accept: cut by max_new_tokens or a stop string before they were complete."""
        cut = []
        for i, row in enumerate(new.tolist()):
            m = self.start.deep_copy()
            body = row[: next((j for j, t in enumerate(row) if t in eos), len(row))]
            if not (m.consume_tokens(body) and m.is_accepting()):
                cut.append(i)
        if cut:
            log.warning("generate: output rows %s ended before their %s was complete (max_new_tokens or a stop "
                        "string): they will not parse; raise max_new_tokens", cut[:8], self.fmt.kind)
        return cut


def llg_tokenizer(tokenizer_json: str, vocab: int, eos: Sequence[int]) -> Any:
    """llguidance's tokenizer data (byte strings of every token) from tokenizer.json text: about 0.7 s
    for a 49k vocabulary, so the generator keeps it."""
    if not eos:
        raise ConfigError("structured output ends at the model's eos token, and this call has none",
                          fix="pass eos_token_id=")
    return engine().LLTokenizer(tokenizer_json, n_vocab=vocab, eos_token=list(eos))
