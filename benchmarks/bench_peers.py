"""edgekit's decoder against onnxruntime-genai and PyTorch on the same model, side by side in one run.

    .venv/bin/python benchmarks/bench_peers.py [--size 125m|tiny] [--rounds 7] [--out models/peers]

A Qwen2-shaped decoder (125m: hidden 768, 12 layers, 12 heads / 4 KV heads, vocab 32000, untied;
random weights, a BPE tokenizer trained on Python's own docs) is saved once; edgekit converts it
at fp32, int8 and int4, onnxruntime-genai's model builder at fp32 and int4 (genai is a benchmark
dependency, `pip install 'edgekit[bench]'`, never a runtime one). Each contender runs in its own
process at 2 threads; rounds alternate the contenders, and each trial times a 1-token call (the
prompt) and a `--new`-token call: prompt ms and decode tokens/s. The roofline is the measured read
bandwidth (numpy, 2 threads) over the bytes of weights a decode step reads (every initializer of the
graph but the input-embedding table a Gather reads one row of). Writes results.md and results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

THREADS = 2
SIZES = {  # Qwen2Config keyword arguments
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=600),
}
CONTENDERS = ("torch", "edgekit-fp32", "edgekit-int8", "edgekit-int4", "genai-fp32", "genai-int4")


# ------------------------------------------------------------------ the model and its conversions

def make_model(folder: Path, size: str) -> Path:
    """A Qwen2-shaped random decoder with a byte-level BPE tokenizer, saved once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    cfg = SIZES[size]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(cfg["vocab_size"], 8000), special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(topics.values()), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, max_position_embeddings=1024, tie_word_embeddings=False,
                                         bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
    model.save_pretrained(folder)
    return folder


def convert(src: Path, work: Path, key: str) -> Path:
    out = work / key
    if out.is_dir():
        return out
    peer, precision = key.split("-")
    if peer == "edgekit":
        import edgekit

        # strict=False: random weights are no test of int4's answer (examples/ has the trained model).
        edgekit.convert(src, out, precision=precision, strict=False)
    else:
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
                        "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], check=True,
                       capture_output=True, text=True)
    return out


def decode_bytes(onnx_path: Path) -> int:
    """Bytes of weights one decode step reads: every initializer but the table a Gather indexes."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    total = 0
    for t in model.graph.initializer:
        if t.name in gathered:
            continue
        size = 1
        for d in t.dims:
            size *= d
        total += size * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def bandwidth(reps: int = 7) -> float:
    """Read bandwidth in GB/s: numpy sums over a 1 GB array in 2 threads, median."""
    import numpy as np

    a = np.ones(250_000_000, np.float32)
    halves = [a[: a.size // 2], a[a.size // 2:]]
    seen = []
    for _ in range(reps):
        threads = [threading.Thread(target=h.sum) for h in halves]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seen.append(a.nbytes / (time.perf_counter() - t) / 1e9)
    return statistics.median(seen)


# ------------------------------------------------------------------ one contender, in its own process

def generator(key: str, work: Path, prompt: int) -> Callable[[int], int]:
    """A function: new tokens -> how many it made, greedy, eos ignored."""
    import numpy as np

    ids = np.random.default_rng(0).integers(3, 500, size=(1, prompt)).astype(np.int64)
    peer, _, precision = key.partition("-")
    if peer == "torch":
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(THREADS)
        model = AutoModelForCausalLM.from_pretrained(work / "hf", dtype=torch.float32).eval()
        t_ids = torch.from_numpy(ids)

        def run(n: int) -> int:
            with torch.inference_mode():
                out = model.generate(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), max_new_tokens=n,
                                     min_new_tokens=n, do_sample=False, pad_token_id=0)
            return int(out.shape[1] - prompt)

        return run
    if peer == "edgekit":
        import edgekit

        m = edgekit.load(work / key, device="cpu")
        return lambda n: int(m.generate(input_ids=ids, max_new_tokens=n, eos_token_id=[]).shape[1] - prompt)
    import onnxruntime_genai as og

    cfg = og.Config(str(work / key))
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": THREADS}}}}))
    model = og.Model(cfg)

    def run_genai(n: int) -> int:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=prompt + n, min_length=prompt + n, do_sample=False)
        g = og.Generator(model, params)
        g.append_tokens(ids)
        while not g.is_done():
            g.generate_next_token()
        return len(g.get_sequence(0)) - prompt

    return run_genai


def worker(key: str, work: Path, prompt: int, new: int) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's stdout; libraries print to stderr
    os.dup2(2, 1)
    gen = generator(key, work, prompt)
    gen(4)  # warm-up
    proto.write("ready\n")
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        one = gen(1)
        t1 = time.perf_counter()
        made = gen(new)
        t2 = time.perf_counter()
        assert one == 1 and made == new, (one, made)
        proto.write(json.dumps({"prompt_ms": 1e3 * (t1 - t0), "decode_tok_s": (new - 1) / ((t2 - t1) - (t1 - t0))})
                    + "\n")


# ------------------------------------------------------------------ the driver

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="125m")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--out", type=Path, default=Path("models/peers"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.update(EDGEKIT_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS), HF_HUB_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false")
    work = args.out / args.size
    if args.worker:
        return worker(args.worker, work, args.prompt, args.new)
    keys = args.contenders.split(",")
    src = make_model(work / "hf", args.size)
    graphs = {k: convert(src, work, k) for k in keys if k != "torch"}
    weights = {k: decode_bytes(next(g for g in (p / "model.ort.onnx", p / "ort" / "model.onnx", p / "model.onnx")
                                    if g.is_file())) for k, p in graphs.items()}
    gb_s = bandwidth()
    procs: dict[str, subprocess.Popen[str]] = {}
    trials: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    try:
        for k in keys:  # one at a time: each loads and warms up alone
            procs[k] = subprocess.Popen([sys.executable, __file__, "--worker", k, "--size", args.size, "--out",
                                         str(args.out), "--prompt", str(args.prompt), "--new", str(args.new)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if procs[k].stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError(f"{k} failed to load")
        for r in range(args.rounds):
            for k in keys:
                time.sleep(0.5)  # let the previous contender's spinning thread pool go idle
                procs[k].stdin.write("run\n")  # type: ignore[union-attr]
                procs[k].stdin.flush()  # type: ignore[union-attr]
                trials[k].append(json.loads(procs[k].stdout.readline()))  # type: ignore[union-attr]
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.kill()
    write(args, work, trials, weights, gb_s)


def write(args: Any, work: Path, trials: dict[str, list[dict[str, float]]], weights: dict[str, int],
          gb_s: float) -> None:
    med = {k: {m: statistics.median(t[m] for t in v) for m in ("prompt_ms", "decode_tok_s")} for k, v in trials.items()}
    rows = ["| contender | decode tok/s | prompt ms | weights read per token | roofline tok/s | share of roofline "
            "| decode vs genai (same precision) |", "|---|---|---|---|---|---|---|"]
    for k, m in med.items():
        cells = [k, f"{m['decode_tok_s']:.1f}", f"{m['prompt_ms']:.0f}"]
        if k in weights:
            roof = gb_s * 1e9 / weights[k]
            cells += [f"{weights[k] / 1e6:.0f} MB", f"{roof:.0f}", f"{m['decode_tok_s'] / roof:.0%}"]
        else:
            cells += ["-", "-", "-"]
        peer = "genai-" + k.split("-")[-1]
        cells.append(f"{m['decode_tok_s'] / med[peer]['decode_tok_s']:.2f}x" if k.startswith("edgekit") and peer in med
                     else "-")
        rows.append("| " + " | ".join(cells) + " |")
    text = (f"# edgekit vs onnxruntime-genai vs PyTorch: Qwen2-shaped {args.size}\n\n"
            f"{args.prompt}-token prompt, {args.new} new tokens, batch 1, {THREADS} threads each, medians of "
            f"{args.rounds} alternating rounds; read bandwidth {gb_s:.1f} GB/s (numpy, {THREADS} threads).\n\n"
            + "\n".join(rows) + "\n")
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps({"medians": med, "trials": trials, "weights_bytes": weights,
                                                   "bandwidth_gb_s": gb_s}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
