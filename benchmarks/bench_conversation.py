"""Multi-turn chat with the decoder cache kept between turns (`Generator.conversation`) against the
whole history fed afresh each turn: prompt time per turn, tokens fed, and whether the answers agree.

SmolLM2-135M-Instruct int8 (scripts/real_models.py smollm2_int8, cached; or --artifact), onnxruntime
CPU, max_context 1024, greedy, --new tokens per answer, five user turns. Per turn, on the same history,
the kept conversation feeds only the tokens after its cache's common prefix, and a new conversation
given that history feeds all of it (one prompt call, as `generate(messages=...)` runs it); each
reports `last_prefill_s`, the feeding alone (no template rendering or decoding). Medians of --repeats
runs of the five turns. The answers are compared token-exactly: int8's multi-token calls and its
prompt call round differently (benchmarks/bench_speculative.py measured up to 0.48 of |x| <= 30), so
a near tie can go the other way; fp32 is exact (tests/test_chat.py).

    python benchmarks/bench_conversation.py [--artifact DIR] [--new 48] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful assistant who answers briefly."
TURNS = ["What is a lighthouse for?", "Who used to live in them?", "Why are fewer of them staffed now?",
         "Name one famous lighthouse.", "Summarise what we discussed in one sentence."]


def one_run(gen: Any, new: int) -> list[dict[str, Any]]:
    rows = []
    with gen.conversation(system=SYSTEM) as conv:
        for text in TURNS:
            with gen.conversation() as fresh:
                fresh.messages = list(conv.messages)  # the same history, nothing of it cached
                again = fresh.say(text, max_new_tokens=new)
            said = conv.say(text, max_new_tokens=new)
            rows.append({"prompt": conv.reused_tokens + conv.last_prefill_tokens, "fed": conv.last_prefill_tokens,
                         "fresh": fresh.last_prefill_s, "reuse": conv.last_prefill_s, "same": said == again})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", type=Path)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    import edgekit

    if a.artifact is None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from real_models import smollm2_int8

        a.artifact = smollm2_int8()
    gen = edgekit.load(a.artifact, device="cpu", max_context=1024)
    runs = [one_run(gen, a.new) for _ in range(a.repeats)]
    print(f"{gen!r}, max_new_tokens={a.new}, median of {a.repeats}")
    print("| turn | prompt tokens | fed with reuse | prompt ms, fresh | prompt ms, reuse | same answer |")
    print("|---|---|---|---|---|---|")
    for i, turn in enumerate(zip(*runs)):
        fresh, reuse = (statistics.median(r[k] for r in turn) * 1e3 for k in ("fresh", "reuse"))
        same = sum(r["same"] for r in turn)
        print(f"| {i + 1} | {turn[0]['prompt']} | {turn[0]['fed']} | {fresh:.1f} | {reuse:.1f} | {same} of {len(turn)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
