"""Which engine masks logits for structured output: llguidance, xgrammar and outlines-core side by side.

On SmolLM2-135M-Instruct's tokenizer (49,152 tokens; scripts/real_models.py) and the schema set of
tests/data/schemas/*.json, per engine: the time to build its tokenizer data, per schema the compile time
and whether it compiles, then a walk: 160 steps at most where each step computes the mask, picks the
highest of one seeded random logits vector among the allowed tokens (the same vectors for every engine),
and feeds it back; the walk stops when the engine accepts and allows eos. Reported: the mean and p99 mask
time per token, and coverage: schemas whose walk ended in text that parses and validates (jsonschema).
A walk that is still inside the document after 160 tokens counts as not finished, not as invalid.

    python benchmarks/grammar_engines.py [--steps 160] [--engines llguidance,xgrammar,outlines-core]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
SCHEMAS = ROOT / "tests" / "data" / "schemas"


class Engine:
    """One engine's matcher for one schema: allowed() -> bool mask over the vocabulary, feed(token)."""

    allowed: Callable[[], np.ndarray]
    feed: Callable[[int], None]


def llguidance_engine(tokenizer_json: str, eos: int, vocab: int) -> Callable[[dict[str, Any]], Engine]:
    import llguidance
    import llguidance.numpy as lnp

    tok = llguidance.LLTokenizer(tokenizer_json, eos_token=eos)

    def make(schema: dict[str, Any]) -> Engine:
        m = llguidance.LLMatcher(tok, llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}), log_level=0)  # compact, as xgrammar's below
        if m.is_error():
            raise ValueError(m.get_error())
        bits = lnp.allocate_token_bitmask(1, vocab)
        shifts = np.arange(32, dtype=np.uint32)
        e = Engine()

        def allowed() -> np.ndarray:
            lnp.fill_next_token_bitmask(m, bits)
            return ((bits.view(np.uint32)[0, :, None] >> shifts) & 1).astype(bool).reshape(-1)[:vocab]

        e.allowed, e.feed = allowed, lambda t: m.consume_token(t) and None
        return e

    return make


def xgrammar_engine(folder: Path, eos: int, vocab: int) -> Callable[[dict[str, Any]], Engine]:
    import xgrammar as xgr
    from transformers import AutoTokenizer

    info = xgr.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(str(folder)), vocab_size=vocab,
                                              stop_token_ids=[eos])
    compiler = xgr.GrammarCompiler(info)

    def make(schema: dict[str, Any]) -> Engine:
        m = xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))
        bits = xgr.allocate_token_bitmask(1, vocab)
        shifts = np.arange(32, dtype=np.uint32)
        e = Engine()

        def allowed() -> np.ndarray:
            m.fill_next_token_bitmask(bits)
            b = bits.numpy().view(np.uint32)
            return ((b[0, :, None] >> shifts) & 1).astype(bool).reshape(-1)[:vocab]

        e.allowed, e.feed = allowed, lambda t: m.accept_token(t) and None
        return e

    return make


def outlines_engine(tokenizer_json: str, eos: int, vocab: int) -> Callable[[dict[str, Any]], Engine]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    tj = json.loads(tokenizer_json)
    special = {a["id"] for a in tj.get("added_tokens", [])}
    dec = _byte_decoder()
    table: dict[bytes, list[int]] = {}
    for t, i in tj["model"]["vocab"].items():
        if i not in special:
            table.setdefault(bytes(dec[c] for c in t), []).append(i)
    voc = Vocabulary(eos, table)

    def make(schema: dict[str, Any]) -> Engine:
        g = Guide(Index(build_regex_from_schema(json.dumps(schema)), voc))
        e = Engine()

        def allowed() -> np.ndarray:
            out = np.zeros(vocab, bool)
            out[np.asarray(g.get_tokens(), np.int64)] = True
            return out

        e.allowed, e.feed = allowed, lambda t: g.advance(t) and None
        return e

    return make


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes (the tokenizer's ByteLevel pre-tokenizer)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def walk(engine: Engine, logits: np.ndarray, eos: int,
         decode: Callable[[list[int]], str]) -> tuple[bool, str, list[float]]:
    """(finished, text, mask seconds per step): the highest allowed logit each step, until eos is picked."""
    times, out = [], []
    for x in logits:
        t0 = time.perf_counter()
        ok = engine.allowed()
        times.append(time.perf_counter() - t0)
        tok = int(np.argmax(np.where(ok, x, -np.inf)))
        if tok == eos:
            return True, decode(out), times
        out.append(tok)
        engine.feed(tok)
    return False, decode(out), times


def main() -> None:
    import jsonschema
    from real_models import real_model
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--engines", default="llguidance,xgrammar,outlines-core")
    a = ap.parse_args()
    folder = real_model()
    text = (folder / "tokenizer.json").read_text()
    tok = Tokenizer.from_str(text)
    eos, vocab = 2, 49152  # <|im_end|>, SmolLM2's chat eos; the embedding's rows
    assert tok.token_to_id("<|im_end|>") == eos and tok.get_vocab_size() == vocab

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    makers = {"llguidance": lambda: llguidance_engine(text, eos, vocab),
              "xgrammar": lambda: xgrammar_engine(folder, eos, vocab),
              "outlines-core": lambda: outlines_engine(text, eos, vocab)}
    schemas = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))}
    print(f"{len(schemas)} schemas, vocabulary {vocab}, walks of at most {a.steps} tokens")
    for name in a.engines.split(","):
        t0 = time.perf_counter()
        make = makers[name]()
        setup = time.perf_counter() - t0
        compiled, valid, unfinished, times, compile_s, fails = 0, 0, 0, [], [], []
        for k, (sname, schema) in enumerate(schemas.items()):
            t0 = time.perf_counter()
            try:
                eng = make(schema)
            except Exception as e:  # noqa: BLE001 - an engine's refusal is the measurement
                fails.append(f"{sname}: compile: {str(e)[:80]}")
                continue
            compile_s.append(time.perf_counter() - t0)
            compiled += 1
            steps = np.random.default_rng(k).standard_normal((a.steps, vocab)).astype(np.float32)
            finished, out, t = walk(eng, steps, eos, decode)
            times += t
            if not finished:
                unfinished += 1
                fails.append(f"{sname}: not finished in {a.steps} tokens: {out[:60]!r}...")
                continue
            try:
                jsonschema.validate(json.loads(out), schema)
                valid += 1
            except (ValueError, jsonschema.ValidationError) as e:
                fails.append(f"{sname}: invalid: {str(e)[:80]} in {out[:80]!r}")
        ms = np.asarray(times) * 1e3
        print(f"{name:14s} setup {setup:6.2f} s  compiled {compiled}/{len(schemas)}  valid {valid}  "
              f"unfinished {unfinished}  compile mean {np.mean(compile_s) * 1e3:7.1f} ms  "
              f"mask mean {ms.mean():6.3f} ms  p50 {np.percentile(ms, 50):6.3f}  p99 {np.percentile(ms, 99):7.3f} ms "
              f"over {len(ms)} tokens")
        for f in fails:
            print("   ", f)


if __name__ == "__main__":
    main()
