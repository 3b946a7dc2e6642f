"""Vision-language generate: transformers vs edgekit fp32 on the same saved folder, same run, same threads.

Per family (tests/vision_models.py builders at "real" head sizes: heads of 64): image encoding (the
vision graph on one pre-processed image; transformers' get_image_features on the processor's pixels),
prompt latency (one generate call making one token from the raw image and text: pre-processing, image
encoding and the prefill with the image rows merged) and decode tokens/s ((new - 1) tokens over the time
a call making `new` tokens takes beyond the one-token call). Greedy, eos ignored, batch 1; ratios are
PyTorch time / edgekit time (decode: edgekit tok/s / PyTorch tok/s).

    python benchmarks/bench_vision.py [--threads 2] [--runs 5] [--new 64] [--families llava,paligemma] [--out DIR]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the folder builders
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import timed  # noqa: E402 - the 1-token call is the prompt, the rest of an n-token call decode


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bench_family(family: str, out: Path, runs: int, new: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import edgekit
    from edgekit.converters.vision_parity import images
    from vision_models import save

    src, art = out / f"{family}-real", out / f"{family}-real-art"
    if not (src / "config.json").is_file():
        save(family, src, shape="real")
    if not (art / "edgekit.json").is_file():
        edgekit.convert(src, art, strict=False, overwrite=True)
    gen = edgekit.load(art, device="cpu")
    proc = AutoProcessor.from_pretrained(src, backend="pil")
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32).eval()
    image = images()[0]
    text = f"{gen.vision.placeholder} the cat"
    enc = proc(text=[text], images=[[image]], return_tensors="pt")
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample = None, 0, False

    def torch_gen(n: int) -> Any:
        with torch.inference_mode():
            batch = proc(text=[text], images=[[image]], return_tensors="pt")
            cfg.max_new_tokens = n
            return model.generate(**batch, generation_config=cfg)

    def torch_image() -> Any:
        with torch.inference_mode():
            return model.get_image_features(pixel_values=enc["pixel_values"])

    prepared = gen.vision.prep.prepare(image)
    rows = {"transformers fp32": timed(torch_gen, runs, new),
            "edgekit fp32": timed(lambda n: gen.generate(text, images=[image], max_new_tokens=n,
                                                                      eos_token_id=[]), runs, new)}
    rows["transformers fp32"]["image_ms"] = median_ms(torch_image, runs)
    rows["edgekit fp32"]["image_ms"] = median_ms(lambda: gen.vision.runner.run(prepared.feeds), runs)
    same = gen.generate(text, images=[image], max_new_tokens=new, eos_token_id=[]) == proc.decode(
        torch_gen(new)[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    params = sum(p.numel() for p in model.parameters())
    par = gen.manifest.parity
    return {"family": family, "params": params, "image_rows": int((enc["input_ids"] == gen.vision.part.image_token_id).sum()),
            "prompt_tokens": int(enc["input_ids"].shape[1]), "pixels": list(enc["pixel_values"].shape[-2:]),
            "parity": "pass" if par is not None and par.passed else "FAIL", "same_text": same, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--families", default="llava,paligemma")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["EDGEKIT_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekit-bench-vision-"))
    results = [bench_family(f, out, args.runs, args.new) for f in args.families.split(",")]
    print(f"\nbatch 1, one image, greedy, {args.new} new tokens (eos ignored); {args.threads} threads; "
          f"{os.cpu_count()} cores; median of {args.runs}; load average {os.getloadavg()[0]:.1f} (1 min)")
    print(f"{'family':10s} {'engine':18s} {'image ms':>9s} {'x':>6s} {'prompt ms':>10s} {'x':>6s} "
          f"{'decode tok/s':>13s} {'x':>6s}")
    for r in results:
        t, e = r["rows"]["transformers fp32"], r["rows"]["edgekit fp32"]
        print(f"{r['family']} ({r['params'] / 1e6:.1f}M params, {r['pixels'][0]}x{r['pixels'][1]} pixels, "
              f"{r['image_rows']} image rows of {r['prompt_tokens']} prompt tokens; parity {r['parity']}; "
              f"same {args.new}-token text: {r['same_text']})")
        for name, row in (("transformers fp32", t), ("edgekit fp32", e)):
            print(f"{'':10s} {name:18s} {row['image_ms']:9.2f} {t['image_ms'] / row['image_ms']:5.2f}x "
                  f"{row['prompt_ms']:10.2f} {t['prompt_ms'] / row['prompt_ms']:5.2f}x "
                  f"{row['decode_tok_s']:13.1f} {row['decode_tok_s'] / t['decode_tok_s']:5.2f}x")


if __name__ == "__main__":
    main()
