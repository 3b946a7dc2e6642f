"""Speculative decoding on a real chat model: tokens per target call and decode speed.

SmolLM2-135M-Instruct int8 (scripts/real_models.py's smollm2_artifact, cached; or --artifact), one chat turn
per case, greedy, max_new_tokens --new: plain decoding against `prompt_lookup_num_tokens=N`, alternated
--repeats times, on the loaded graph (onnxruntime's fused attention) and with --portable the slot graph.
--assistant: instead, the int4 artifact of the same model drafting (`assistant_model=`, transformers'
defaults or --schedule/--threshold/--draft-tokens) for the int8 and the fp32 artifacts; the drafter's
own plain decode speed is printed beside (what one draft token costs).
--sample T samples at temperature T instead, seed = the repeat's index for both calls: prompt lookup
keeps plain sampling's tokens for a seed (one draw per kept token), so "same tokens" still says whether
the int8 logits differ. --json runs one case instead: extracting the text's facts as JSON under a
response_format schema (the prompt shows the schema, as such prompts do), structured output with drafts.
Whether the tokens are plain greedy's is reported: exact at fp32 (tests/test_speculative.py), but
this int8 artifact's multi-token calls and one-token steps give logits up to 0.48 apart (of |x| <= 30:
Generator.logits of a 17-token prompt, prompt call vs decode steps; fp32 GPT-2: 1.2e-6), so a near tie
late in a long answer can go the other way. Decode time is the call's time minus its prompt's (a
max_new_tokens=1 call of the same prompt, timed beside it), over the tokens after the first.
Cases: editing a given text (the answer copies most of it: lookups hit), summarising it (some
phrases copied) and an open question (nothing to look up: where it does not pay).

    python benchmarks/bench_speculative.py [--artifact DIR] [--tokens 10] [--new 96] [--repeats 2] [--sample T] [--json]
    python benchmarks/bench_speculative.py --assistant [--schedule heuristic] [--threshold 0] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The city council met on Tuesday to discuss the new bike lanes on Main Street. Several residents "
        "said the lanes made their commute safer, while shop owners worried about losing parking spaces. "
        "The council agreed to count cyclists for three months before making a final decision.")
CASES = {
    "edit": f"Rewrite this text with 'Tuesday' changed to 'Wednesday'; keep everything else the same:\n\n{TEXT}",
    "summarise": f"Summarise this text in two sentences:\n\n{TEXT}",
    "open": "Write a short story about a lighthouse keeper.",
}
FACTS = {"type": "object", "properties": {"day": {"type": "string"}, "street": {"type": "string"},
                                          "concerns": {"type": "array", "items": {"type": "string"}},
                                          "months": {"type": "integer"}},
         "required": ["day", "street", "concerns", "months"], "additionalProperties": False}
EXTRACT = (f"Extract the facts of this text as JSON following this schema: {json.dumps(FACTS)}\n\n{TEXT}",
           {"type": "json_schema", "json_schema": {"name": "facts", "schema": FACTS}})


def timed(gen: Any, prompt: str, new: int, **kw: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = gen.generate(messages=[{"role": "user", "content": prompt}], max_new_tokens=new,
                       return_dict_in_generate=True, **kw)
    return time.perf_counter() - start, out


def case(gen: Any, prompt: str, new: int, repeats: int, sample: float | None, response_format: dict[str, Any] | None,
         **drafts: Any) -> dict[str, Any]:
    """Plain decoding against decoding with `drafts` (generate's speculative keywords), alternated;
    greedy, or sampling at temperature `sample` seeded per repeat; under `response_format` if given."""
    plain_s, spec_s, per_step, calls, accepted = [], [], [], [], []
    for r in range(repeats):
        kw: dict[str, Any] = {} if sample is None else {"do_sample": True, "temperature": sample, "seed": r}
        kw.update({} if response_format is None else {"response_format": response_format})
        first, one = timed(gen, prompt, 1, **kw)
        t_plain, plain = timed(gen, prompt, new, **kw)
        t_spec, spec = timed(gen, prompt, new, **drafts, **kw)
        prompt_len = one.sequences.shape[1] - 1
        a, b = plain.sequences[0, prompt_len:], spec.sequences[0, prompt_len:]
        n = min(len(a), len(b))
        diff = np.flatnonzero(a[:n] != b[:n])
        same = f"from token {diff[0]}" if len(diff) else "yes" if len(a) == len(b) else f"from token {n}"
        calls.append((t_plain, t_spec))
        plain_s.append((len(a) - 1) / max(t_plain - first, 1e-9))
        spec_s.append((len(b) - 1) / max(t_spec - first, 1e-9))
        per_step.append(spec.speculation.tokens_per_step)
        s = spec.speculation
        accepted.append(f"{s.accepted}/{s.drafted}")
    return {"call": [statistics.median(c) for c in zip(*calls)], "new": len(a), "plain": statistics.median(plain_s),
            "spec": statistics.median(spec_s), "same": same, "per_step": statistics.median(per_step),
            "accepted": accepted[-1], "text": spec.texts[0][:60].replace("\n", " ")}


def table(gen: Any, a: argparse.Namespace, kind: str, **drafts: Any) -> None:
    print(f"{gen!r}, {drafts if kind == 'lookup' else 'assistant ' + repr(drafts)}, max_new_tokens={a.new}, "
          f"median of {a.repeats}")
    print(f"| case | new tokens | same tokens | drafts accepted (last run) | tokens / target call | call s: plain / "
          f"{kind} | decode tok/s: plain / {kind} | decode speed-up | answer |")
    print("|---|---|---|---|---|---|---|---|---|")
    mode = "greedy" if a.sample is None else f"do_sample=True, temperature={a.sample}"
    print(f"{mode}{', response_format (JSON)' if a.json else ''}")
    for name, prompt in ({"extract (JSON)": EXTRACT[0]} if a.json else CASES).items():
        r = case(gen, prompt, a.new, a.repeats, a.sample, EXTRACT[1] if a.json else None, **drafts)
        print(f"| {name} | {r['new']} | {r['same']} | {r['accepted']} | {r['per_step']:.2f} | {r['call'][0]:.2f} / "
              f"{r['call'][1]:.2f} | {r['plain']:.1f} / {r['spec']:.1f} | {r['spec'] / r['plain']:.2f}x | {r['text']} |",
              flush=True)


def decode_speeds(models: dict[str, Any], prompt: str, new: int, repeats: int) -> dict[str, float]:
    """Median plain decode tok/s of each model on `prompt`, the models timed in turn each round."""
    speeds: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            first, one = timed(m, prompt, 1)
            whole, out = timed(m, prompt, new)
            speeds[k].append((out.sequences.shape[1] - one.sequences.shape[1]) / (whole - first))
    return {k: statistics.median(v) for k, v in speeds.items()}


def assisted(a: argparse.Namespace) -> None:
    """The int4 artifact drafting for the int8 and the fp32 ones (each converted once and cached)."""
    import edgekit
    from real_models import smollm2_artifact

    keys = {"num_assistant_tokens": a.draft_tokens, "num_assistant_tokens_schedule": a.schedule,
            "assistant_confidence_threshold": a.threshold}
    models = {p: edgekit.load(smollm2_artifact(p), device="cpu", portable=a.portable, max_context=1024)
              for p in ("int4", *a.targets.split(","))}
    speeds = decode_speeds(models, CASES["open"], a.new, a.repeats)
    print("plain decode tok/s, open case: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()) + "\n")
    for precision in a.targets.split(","):
        table(models[precision], a, "assisted", assistant_model=models["int4"],
              **{k: v for k, v in keys.items() if v is not None})
        print(f"uptime: {os.getloadavg()}\n")
    for m in models.values():
        m.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", type=Path)
    p.add_argument("--tokens", type=int, default=10, help="prompt_lookup_num_tokens")
    p.add_argument("--new", type=int, default=96)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--portable", action="store_true", help="the portable slot graph instead of fused attention")
    p.add_argument("--sample", type=float, help="sample at this temperature (seeded per repeat) instead of greedy")
    p.add_argument("--json", action="store_true", help="the JSON extraction case (response_format) alone")
    p.add_argument("--assistant", action="store_true", help="int4 drafting for int8 and fp32, not prompt lookup")
    p.add_argument("--targets", default="int8,fp32", help="--assistant: the artifacts int4 drafts for")
    p.add_argument("--draft-tokens", type=int, help="num_assistant_tokens (transformers' default 20)")
    p.add_argument("--schedule", help="num_assistant_tokens_schedule (default constant)")
    p.add_argument("--threshold", type=float, help="assistant_confidence_threshold (default 0.4; 0: off)")
    a = p.parse_args(argv)
    import edgekit

    sys.path.insert(0, str(ROOT / "scripts"))
    print(f"uptime: {os.getloadavg()} (load averages 1/5/15 min)")
    if a.assistant:
        assisted(a)
        return 0
    if a.artifact is None:
        from real_models import smollm2_int8

        a.artifact = smollm2_int8()
    table(edgekit.load(a.artifact, device="cpu", portable=a.portable, max_context=1024), a, "lookup",
          prompt_lookup_num_tokens=a.tokens)
    print(f"uptime: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
