"""Structured output on a real chat model: every schema of tests/data/schemas, and what the mask costs.

SmolLM2-135M-Instruct int8 (scripts/real_models.py's smollm2_int8, cached; or --artifact), one chat turn
per schema (the schema as JSON in the system turn, the request below as the user's), greedy, and with --beams N
beam search too. Per schema: whether the answer parses and validates (jsonschema), the tokens it took,
and decode speed with and without the mask in the same run, alternated: the masked call against an
unmasked one of the prompt alone (max_new_tokens=1) and one forced to the same length (min_new_tokens).
The engine's own share is timed apart: the answer's tokens replayed through a fresh matcher set,
mask and advance per token. Schemas the engine refuses (uniqueItems) are counted as refused, by name.

    python benchmarks/bench_structured.py [--artifact DIR] [--beams 0] [--max-new-tokens 256]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "data" / "schemas"
# llguidance cannot enforce uniqueItems token by token, and edgekit refuses it by name rather than drop it
# (tests/test_structured.py checks that exactly these are refused): every other schema must validate.
REFUSED = ("array_top_level", "classification_multilabel", "github_issue")
ACCEPTED = sorted(p.stem for p in SCHEMAS.glob("*.json") if p.stem not in REFUSED)
REQUESTS = {
    "anyof_payment": "The customer paid with a Visa card ending in 4242.",
    "array_top_level": "Tags for a blog post about baking sourdough bread.",
    "calendar_event": "Team standup on 2025-03-14 from 09:00 to 09:15 UTC in room 4B with ana@example.com.",
    "classification_multilabel": "Ticket: 'I was charged twice this month and want a refund.'",
    "const_version": "A config for the service 'billing-api' with debug off, logging warnings.",
    "contact_formats": "Contact: Jane Doe, jane.doe@example.org, born 1990-05-17, phone +4915112345678.",
    "defs_refs": "Order 1042: subtotal 90 EUR, total 107.10 EUR.",
    "extraction_person": "Text: 'Satya Nadella, CEO of Microsoft, said ... Nadella added ...' Extract the person.",
    "flight_booking": "Book 2 economy seats from Boston (BOS) to Lisbon (LIS) on 2025-06-01.",
    "free_object": "Describe a cat with a name and an age.",
    "geo_point": "The Eiffel Tower as a GeoJSON point.",
    "github_issue": "Bug report: the app crashes when uploading a PNG larger than 10 MB.",
    "invoice": "Invoice INV-0042 dated 2025-01-31 to Acme Corp: 3 widgets at 9.99 USD each.",
    "iot_reading": "Sensor sensor-007 at 2025-02-01T12:00:00Z: 21.5 C, 40% humidity, battery 88.",
    "jsonld_event": "Jazz Night at the Blue Note, 131 W 3rd St, New York, on 2025-09-12 at 20:00 (UTC-04:00), as "
                    "schema.org JSON-LD.",
    "matrix_2d": "The 2x2 identity matrix.",
    "moderation_verdict": "Check this message against the content policy: 'How do I bake a chocolate cake?'",
    "nullable_fields": "Task 'file taxes', no due date, no priority, not done.",
    "postal_address": "The address 221 Baker Street, Springfield, 12345, United States.",
    "product_bounds": "Product ABC-123, a steel water bottle, 24.99, rated 4.5, 120 in stock.",
    "recipe_nested_arrays": "A simple pancake recipe.",
    "schema_org_book": "The book 'Dune' by Frank Herbert, ISBN 9780441172719, published 1965-08-01, 412 pages.",
    "search_tool_call": "Search the web for 'best hiking trails in Colorado', 5 results.",
    "send_email_tool": "Send an email to bob@example.com with the subject \"Meeting moved\" telling him the meeting "
                       "moves to Friday.",
    "sentiment_enum": "Review: 'The battery life is fantastic and the screen is gorgeous.'",
    "service_config": "Serve on api.example.com port 8443 with TLS, 4 workers, log level info.",
    "stock_price_tool": "What is Apple's stock price right now?",
    "user_profile_optional": "A profile for the user jdoe who is 34.",
    "weather_tool_call": "What is the weather in Paris, France, in celsius?",
}


def messages(request: str, schema: dict[str, Any]) -> list[dict[str, str]]:
    """The schema in the system turn and the request as the user's turn, as structured-output and tool
    APIs place them (the schema is the app's, the request the user's)."""
    return [{"role": "system", "content": f"Reply with only a JSON object that follows this JSON schema: "
                                          f"{json.dumps(schema)}"},
            {"role": "user", "content": request}]


def rf(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def mask_ms_per_token(tok: Any, vocab: int, name: str, schema: dict[str, Any], tokens: list[int]) -> float:
    """The engine alone: a fresh matcher set fed the answer's tokens, mask and advance timed per token."""
    from edgekit.tasks.structured import GrammarRows, OutputFormat

    rows = GrammarRows(tok, OutputFormat.make(rf(name, schema), None, None), 1, vocab)
    live = np.ones(1, bool)
    scores = np.zeros((1, rows.vocab), np.float32)
    t = time.perf_counter()
    for tk in tokens:
        rows.mask(scores)
        rows.advance(np.array([tk]), live)
    return 1e3 * (time.perf_counter() - t) / max(len(tokens), 1)


def one(gen: Any, tok: Any, name: str, schema: dict[str, Any], new: int, beams: int) -> dict[str, Any]:
    import jsonschema

    from edgekit.errors import ConfigError

    msgs = messages(REQUESTS[name], schema)
    try:
        t0 = time.perf_counter()
        out = gen.generate(messages=msgs, max_new_tokens=new, response_format=rf(name, schema),
                           return_dict_in_generate=True)
        t_masked = time.perf_counter() - t0
    except ConfigError as e:
        return {"schema": name, "refused": e.found}
    text = out.texts[0]
    prompt = len(gen.encode(gen.chat_prompt(msgs), special=False)[0])
    ids = [int(t) for t in out.sequences[0, prompt:]]
    row: dict[str, Any] = {"schema": name, "tokens": len(ids), "text": text}
    try:
        jsonschema.validate(json.loads(text), schema)
        row["valid"] = True
    except (ValueError, jsonschema.ValidationError) as e:
        row["valid"], row["error"] = False, str(e)[:120]
    t0 = time.perf_counter()
    gen.generate(messages=msgs, max_new_tokens=1)
    t_prompt = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen.generate(messages=msgs, max_new_tokens=len(ids), min_new_tokens=len(ids))
    t_plain = time.perf_counter() - t0
    steps = max(len(ids) - 1, 1)
    row["masked_tok_s"] = steps / max(t_masked - t_prompt, 1e-9)
    row["plain_tok_s"] = steps / max(t_plain - t_prompt, 1e-9)
    row["engine_ms"] = mask_ms_per_token(tok, int(gen.decoder.outputs[0].shape[-1]), name, schema, ids)
    if beams > 1:
        b = gen.generate(messages=msgs, max_new_tokens=new, response_format=rf(name, schema), num_beams=beams)
        try:
            jsonschema.validate(json.loads(b), schema)
            row["beams_valid"] = True
        except (ValueError, jsonschema.ValidationError):
            row["beams_valid"] = False
    return row


def main() -> None:
    import edgekit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, help="an int8 SmolLM2 artifact [conftest's cached one]")
    ap.add_argument("--beams", type=int, default=0, help="also beam search with this many beams (0: off)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--only", help="comma-separated schema names")
    a = ap.parse_args()
    from edgekit.tasks.structured import llg_tokenizer

    sys.path.insert(0, str(ROOT / "scripts"))
    from real_models import smollm2_int8

    gen = edgekit.load(a.artifact or smollm2_int8(), device="cpu", max_context=1024)
    vocab = int(gen.decoder.outputs[0].shape[-1])
    eos = [int(e) for e in np.atleast_1d(gen.contract.eos_token_id)]
    tok = llg_tokenizer(gen.tokenizer.to_str(), vocab, eos)  # the one generate builds, for the replay
    gen.generate("x", max_new_tokens=1, regex="a")  # generate builds its own once per artifact: not timed below
    names = a.only.split(",") if a.only else sorted(p.stem for p in SCHEMAS.glob("*.json"))
    rows = []
    for name in names:
        r = one(gen, tok, name, json.loads((SCHEMAS / f"{name}.json").read_text()), a.max_new_tokens, a.beams)
        rows.append(r)
        if "refused" in r:
            print(f"{name:28s} refused: {r['refused'][:90]}")
            continue
        print(f"{name:28s} valid {r['valid']!s:5s} {r['tokens']:4d} tok  decode {r['masked_tok_s']:6.1f} tok/s masked, "
              f"{r['plain_tok_s']:6.1f} plain  engine {r['engine_ms']:6.3f} ms/tok"
              + (f"  beams valid {r['beams_valid']}" if "beams_valid" in r else "") + f"  {r['text'][:70]}")
    done = [r for r in rows if "refused" not in r]
    print(f"\n{sum(r['valid'] for r in done)}/{len(done)} valid, {len(rows) - len(done)} refused by name; "
          f"decode median {statistics.median(r['masked_tok_s'] for r in done):.1f} tok/s masked vs "
          f"{statistics.median(r['plain_tok_s'] for r in done):.1f} plain; engine mask+advance median "
          f"{statistics.median(r['engine_ms'] for r in done):.3f} ms/token, max {max(r['engine_ms'] for r in done):.3f}"
          + (f"; beams valid {sum(r['beams_valid'] for r in done)}/{len(done)}" if a.beams > 1 else ""))


if __name__ == "__main__":
    main()
