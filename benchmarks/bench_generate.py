"""Decode speed: transformers vs edgekit fp32/int8/int4 on a GPT-2-small-sized model, same run, same threads.

Batch 1, a 64-token prompt, 128 new tokens (greedy, no eos). Prints prompt latency and decode
tokens/s per engine with ratios to PyTorch, this machine's memory bandwidth (numpy), and decode
speed as a share of the bandwidth-bound limit (every weight read once per token, except tables
only gathered from, like position embeddings).

    python benchmarks/bench_generate.py [--threads 2] [--runs 3] [--layers 12] [--out /tmp/bench-gen]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def memory_bandwidth(gb: float = 1.0) -> dict[str, float]:
    """Read (sum) and copy bandwidth of 1 GB float32 arrays, best of 5, in GB/s."""
    a = np.ones(int(gb * 1e9 / 4), np.float32)
    b = np.empty_like(a)
    reads, copies = [], []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        reads.append(a.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        np.copyto(b, a)
        copies.append(2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return {"read_gb_s": max(reads), "copy_gb_s": max(copies)}


def weight_bytes_per_token(onnx_path: Path) -> int:
    """Bytes of initializers read per decoded token: all but those consumed only by Gather."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=True)
    consumers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    total = 0
    for init in model.graph.initializer:
        ops = consumers.get(init.name, set())
        if ops and ops != {"Gather"}:
            total += len(init.raw_data) if init.raw_data else onnx.numpy_helper.to_array(init).nbytes
    return total


def timed(fn: Callable[[int], Any], runs: int, new: int) -> dict[str, float]:
    fn(1)
    fn(new)  # warm-up
    prompts, decodes = [], []
    for _ in range(runs):
        t = time.perf_counter()
        fn(1)
        t1 = time.perf_counter()
        fn(new)
        t2 = time.perf_counter()
        prompts.append(t1 - t)
        decodes.append((new - 1) / max((t2 - t1) - (t1 - t), 1e-9))
    return {"prompt_ms": 1e3 * statistics.median(prompts), "decode_tok_s": statistics.median(decodes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import edgekit

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-gen-"))
    src = out / "gpt2-small-random"
    if not (src / "config.json").is_file():
        torch.manual_seed(0)
        cfg = GPT2Config(n_layer=args.layers, initializer_range=0.2)  # 768 wide, 12 heads, 50257 vocab
        GPT2LMHeadModel(cfg).eval().save_pretrained(src)
    hf = GPT2LMHeadModel.from_pretrained(src).eval()
    params = sum(p.numel() for p in hf.parameters())
    ids = np.random.default_rng(0).integers(0, hf.config.vocab_size, size=(1, args.prompt)).astype(np.int64)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0

    def torch_gen(n: int) -> Any:
        with torch.inference_mode():
            return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(1, args.prompt, dtype=torch.long),
                               max_new_tokens=n, do_sample=False)

    rows: dict[str, dict[str, float]] = {"transformers fp32": timed(torch_gen, args.runs, args.new)}
    rows["transformers fp32"]["weight_mb"] = 4 * params / 1e6
    bw = memory_bandwidth()
    for precision in ("fp32", "int8", "int4"):
        path = out / f"gpt2-{precision}"
        if not (path / "edgekit.json").is_file():
            t = time.perf_counter()
            edgekit.convert(src, path, precision=precision, strict=False, overwrite=True)
            print(f"converted {precision} in {time.perf_counter() - t:.0f} s", flush=True)
        model = edgekit.load(path, device="cpu")
        r = timed(lambda n: model.generate(input_ids=ids, max_new_tokens=n, eos_token_id=[]), args.runs, args.new)
        r["weight_mb"] = weight_bytes_per_token(path / "model.onnx") / 1e6
        par = model.manifest.parity
        r["greedy_agreement"] = par.measures.get("greedy_agreement", float("nan")) if par else float("nan")
        rows[f"edgekit {precision}"] = r
        del model
    base = rows["transformers fp32"]
    print(f"\nGPT-2-small-shaped, {params / 1e6:.0f}M parameters, random weights; batch 1, prompt {args.prompt}, "
          f"{args.new} new tokens; {args.threads} threads; {os.cpu_count()} cores")
    print(f"memory bandwidth (numpy, 1 GB): read {bw['read_gb_s']:.1f} GB/s, copy {bw['copy_gb_s']:.1f} GB/s")
    print(f"{'engine':20s} {'prompt ms':>10s} {'decode tok/s':>13s} {'x PyTorch':>10s} {'weights MB/token':>17s}"
          f" {'bw-bound tok/s':>15s} {'share':>7s}")
    for name, r in rows.items():
        limit = bw["read_gb_s"] * 1e3 / r["weight_mb"]
        print(f"{name:20s} {r['prompt_ms']:10.1f} {r['decode_tok_s']:13.1f} {r['decode_tok_s'] / base['decode_tok_s']:9.2f}x"
              f" {r['weight_mb']:17.1f} {limit:15.1f} {r['decode_tok_s'] / limit:6.0%}")


if __name__ == "__main__":
    main()
