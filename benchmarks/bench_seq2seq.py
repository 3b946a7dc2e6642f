"""Translation speed: transformers vs edgekit fp32/int8 on a Marian-shaped model, same run, same threads.

opus-mt-en-zh's shape (6+6 layers, d=512, 8 heads, ffn 2048, vocab 65001) with random weights; one
24-token input, 32 new tokens (eos ignored), greedy and 4 beams. Prints the encoder latency (the
encoder alone: transformers' encoder forward vs the artifact's encoder graph) and decode tokens/s
(per sequence, after the first token) of each engine, with the ratios to PyTorch.

    python benchmarks/bench_seq2seq.py [--threads 2] [--runs 3] [--layers 6] [--out /tmp/bench-s2s]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn: Callable[[int], Any], runs: int, new: int) -> dict[str, float]:
    """Prompt (first token) time and decode tokens/s after it, medians over `runs` after a warm-up."""
    fn(1)
    fn(new)
    firsts, decodes = [], []
    for _ in range(runs):
        t = time.perf_counter()
        fn(1)
        t1 = time.perf_counter()
        fn(new)
        t2 = time.perf_counter()
        firsts.append(t1 - t)
        decodes.append((new - 1) / max((t2 - t1) - (t1 - t), 1e-9))
    return {"first_ms": 1e3 * statistics.median(firsts), "decode_tok_s": statistics.median(decodes)}


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(max(runs, 5)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--prompt", type=int, default=24)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)
    import torch
    from transformers import MarianMTModel

    import edgekit
    from benchmarks.models import marian_folder

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-s2s-"))
    src = marian_folder(out / "marian-random", vocab=65001, d_model=512, encoder_layers=args.layers,
                        decoder_layers=args.layers, encoder_attention_heads=8, decoder_attention_heads=8,
                        encoder_ffn_dim=2048, decoder_ffn_dim=2048)
    hf = MarianMTModel.from_pretrained(src).eval()
    params = sum(p.numel() for p in hf.parameters())
    ids = np.random.default_rng(0).integers(3, hf.config.vocab_size, size=(1, args.prompt)).astype(np.int64)
    ids[0, -1] = 1  # inputs end with </s>
    mask = np.ones_like(ids)
    rows: dict[str, dict[str, float]] = {}
    for beams in (1, 4):
        def torch_gen(n: int, b: int = beams) -> Any:
            with torch.inference_mode():
                return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   max_new_tokens=n, num_beams=b, do_sample=False, eos_token_id=None)

        rows[f"transformers fp32, {beams} beam(s)"] = timed(torch_gen, args.runs, args.new)
    with torch.inference_mode():
        enc_ms = median_ms(lambda: hf.get_encoder()(input_ids=torch.from_numpy(ids),
                                                    attention_mask=torch.from_numpy(mask)), args.runs)
    encoders = {"transformers fp32": enc_ms}
    for precision in ("fp32", "int8"):
        path = out / f"marian-{precision}"
        if not (path / "edgekit.json").is_file():
            t = time.perf_counter()
            edgekit.convert(src, path, precision=precision, strict=False, overwrite=True)
            print(f"converted {precision} in {time.perf_counter() - t:.0f} s", flush=True)
        model = edgekit.load(path, device="cpu")
        encoders[f"edgekit {precision}"] = median_ms(
            lambda: model.runners["encoder"].run({"input_ids": ids, "attention_mask": mask}), args.runs)
        for beams in (1, 4):
            rows[f"edgekit {precision}, {beams} beam(s)"] = timed(
                lambda n, b=beams: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, num_beams=b,
                                                  eos_token_id=[]), args.runs, args.new)
        print(f"{precision} parity at convert: {model.manifest.parity['summary']}", flush=True)
        del model
    print(f"\nMarian-shaped, {params / 1e6:.0f}M parameters, random weights; input {args.prompt} tokens, "
          f"{args.new} new tokens (eos ignored); {args.threads} threads; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'encoder':22s} {'ms':>8s} {'x PyTorch':>10s}")
    for name, ms in encoders.items():
        print(f"{name:22s} {ms:8.1f} {encoders['transformers fp32'] / ms:9.2f}x")
    print(f"\n{'generate':34s} {'first token ms':>15s} {'decode tok/s':>13s} {'x PyTorch':>10s}")
    for name, r in rows.items():
        base = rows[f"transformers fp32, {name.split(', ')[1]}"]
        print(f"{name:34s} {r['first_ms']:15.1f} {r['decode_tok_s']:13.1f} {r['decode_tok_s'] / base['decode_tok_s']:9.2f}x")


if __name__ == "__main__":
    main()
