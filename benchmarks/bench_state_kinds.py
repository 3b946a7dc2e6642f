"""Prompt latency and decode speed per decoder state kind: edgekit fp32 against transformers' generate.

One seeded random model per kind at the coverage sweep's "real" head sizes (tests/coverage_models.py
`save_folder`, shape "real": heads of 64, two layers), converted from its saved folder; batch 1, a
prompt of --prompt random ids, --new greedy tokens, no eos; both sides in this process with the
same thread count, one after the other. Prompt latency is the one-token call; decode tokens/s is
(new - 1) over the time the longer call took beyond it (benchmarks/bench_generate.py `timed`).

    python benchmarks/bench_state_kinds.py [--threads 2] [--runs 3] [--prompt 32] [--new 32] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

# kind -> a family whose decoder keeps that state (docs/coverage.md lists the rest)
KINDS = {
    "attention keys/values (Llama)": "llama",
    "latent attention, keys wider than values (DeepSeek-V3)": "deepseek_v3",
    "per-layer head sizes, sliding + global (Gemma 4)": "gemma4_text",
    "sparse-attention indexer keys (DeepSeek-V3.2)": "deepseek_v32",
    "conv + SSM state (Mamba)": "mamba",
    "attention + SSM hybrid (Jamba)": "jamba",
    "RWKV time/channel-mix state": "rwkv",
    "no cache, full sequence each step (OpenAI-GPT)": "openai-gpt",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default=None, help="comma-separated families")
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    import edgekit
    from bench_generate import timed
    from coverage_models import save_folder

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-kinds-"))
    rows = []
    for kind, fam in KINDS.items():
        if args.only and fam not in args.only.split(","):
            continue
        src = out / fam
        if not (src / "config.json").is_file():
            save_folder("generate", fam, src, shape="real")
        art = out / f"{fam}-fp32"
        if not (art / "edgekit.json").is_file():
            t = time.perf_counter()
            edgekit.convert(src, art, overwrite=True)
            print(f"{fam}: converted in {time.perf_counter() - t:.0f} s", flush=True)
        hf = AutoModelForCausalLM.from_pretrained(src).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        ids = np.random.default_rng(0).integers(3, hf.config.vocab_size, size=(1, args.prompt)).astype(np.int64)

        def torch_gen(n: int, hf: Any = hf, ids: np.ndarray = ids) -> Any:
            with torch.inference_mode():
                return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids)),
                                   max_new_tokens=n, min_new_tokens=n, do_sample=False)

        model = edgekit.load(art, device="cpu")
        ours = timed(lambda n: model.generate(input_ids=ids, max_new_tokens=n, eos_token_id=[]), args.runs, args.new)
        theirs = timed(torch_gen, args.runs, args.new)
        entries = sorted({type(e).__name__ for e in getattr(model.contract.cache, "entries", ())}) or ["none"]
        graph = "onnxruntime-gqa" if model.decoder.kv_layout == "shared" else "portable"
        rows.append((kind, fam, "+".join(entries), graph, ours, theirs))
        del model
    print(f"\nbatch 1, prompt {args.prompt}, {args.new} new tokens, {args.threads} threads, {os.cpu_count()} cores, "
          "random weights at real head sizes (2 layers)")
    print(f"{'state kind':56s} {'family':12s} {'graph':16s} {'prompt ms ek/pt':>16s} {'decode tok/s ek/pt':>19s} "
          f"{'x PyTorch':>9s}")
    for kind, fam, _entries, graph, o, t in rows:
        print(f"{kind:56s} {fam:12s} {graph:16s} {o['prompt_ms']:7.1f}/{t['prompt_ms']:<7.1f} "
              f"{o['decode_tok_s']:9.1f}/{t['decode_tok_s']:<8.1f} {o['decode_tok_s'] / t['decode_tok_s']:8.2f}x")


if __name__ == "__main__":
    main()
