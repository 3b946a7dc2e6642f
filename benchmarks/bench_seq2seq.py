"""Translation speed: transformers vs edgekit fp32/int8 on a Marian-shaped model, same run, same threads.

opus-mt-en-zh's shape (6+6 layers, d=512, 8 heads, ffn 2048, vocab 65001) with random weights; one
24-token input, 32 new tokens (eos ignored), greedy and 4 beams. Prints the encoder latency (the
encoder alone: transformers' encoder forward vs the artifact's encoder graph) and decode tokens/s
(per sequence, after the first token) of each engine, with the ratios to PyTorch. The engines are
timed in turn, round after round, and medians taken: the machine may be shared.

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


def sample(fn: Callable[[int], Any], new: int) -> tuple[float, float]:
    """One measurement: the first token's time and the decode tokens/s after it."""
    t = time.perf_counter()
    fn(1)
    t1 = time.perf_counter()
    fn(new)
    t2 = time.perf_counter()
    return t1 - t, (new - 1) / max((t2 - t1) - (t1 - t), 1e-9)


def interleaved(engines: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    """Each engine once per round, rounds in turn: load from other processes hits every engine alike
    (the machine is shared), and medians are taken over the rounds."""
    for fn in engines.values():  # warm-up
        fn()
    out: dict[str, list[Any]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            # onnxruntime's and PyTorch's pool threads spin for a while after a call: let them park
            # before the other engine runs, or it pays for them; then one untimed call wakes this
            # engine's own threads (the first call after idling is slow for either).
            time.sleep(0.2)
            fn()
            out[name].append(fn())
    return out


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
    models = {}
    for precision in ("fp32", "int8"):
        path = out / f"marian-{precision}"
        if not (path / "edgekit.json").is_file():
            t = time.perf_counter()
            edgekit.convert(src, path, precision=precision, strict=False, overwrite=True)
            print(f"converted {precision} in {time.perf_counter() - t:.0f} s", flush=True)
        models[precision] = edgekit.load(path, device="cpu")
        print(f"{precision} parity at convert: {models[precision].manifest.parity.summary}", flush=True)

    def torch_gen(n: int, beams: int) -> Any:
        with torch.inference_mode():
            return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                               max_new_tokens=n, num_beams=beams, do_sample=False, eos_token_id=None)

    def torch_encoder() -> Any:
        with torch.inference_mode():
            return hf.get_encoder()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))

    def timer(fn: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return run

    encoders: dict[str, Callable[[], Any]] = {"transformers fp32": timer(torch_encoder)}
    gens: dict[str, Callable[[], Any]] = {}
    for beams in (1, 4):
        gens[f"transformers fp32, {beams} beam(s)"] = lambda b=beams: sample(lambda n: torch_gen(n, b), args.new)
    for precision, m in models.items():
        encoders[f"edgekit {precision}"] = timer(
            lambda m=m: m.runners["encoder"].run({"input_ids": ids, "attention_mask": mask}))
        for beams in (1, 4):
            gens[f"edgekit {precision}, {beams} beam(s)"] = lambda m=m, b=beams: sample(
                lambda n: m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, num_beams=b,
                                     eos_token_id=[]), args.new)
    encoders_ms = {k: 1e3 * statistics.median(v) for k, v in interleaved(encoders, max(args.runs, 5) * 3).items()}
    rows = {k: {"first_ms": 1e3 * statistics.median(a for a, _ in v), "decode_tok_s": statistics.median(b for _, b in v)}
            for k, v in interleaved(gens, args.runs).items()}
    print(f"\nMarian-shaped, {params / 1e6:.0f}M parameters, random weights; input {args.prompt} tokens, "
          f"{args.new} new tokens (eos ignored); {args.threads} threads; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'encoder':22s} {'ms':>8s} {'x PyTorch':>10s}")
    for name, ms in encoders_ms.items():
        print(f"{name:22s} {ms:8.1f} {encoders_ms['transformers fp32'] / ms:9.2f}x")
    print(f"\n{'generate':34s} {'first token ms':>15s} {'decode tok/s':>13s} {'x PyTorch':>10s}")
    for name, r in rows.items():
        base = rows[f"transformers fp32, {name.split(', ')[1]}"]
        print(f"{name:34s} {r['first_ms']:15.1f} {r['decode_tok_s']:13.1f} {r['decode_tok_s'] / base['decode_tok_s']:9.2f}x")


if __name__ == "__main__":
    main()
