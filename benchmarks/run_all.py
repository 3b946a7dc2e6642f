"""The whole table: every task x precision, converted here and benchmarked against PyTorch.

    .venv/bin/python benchmarks/run_all.py [--tasks classify,generate,translate,recognize] [--out benchmarks/RESULTS.md]

Each artifact is benchmarked by `edgekit bench --against SOURCE --json` in a fresh process, so peak
RSS is what the runtime needs (PyTorch is imported only after the runtime figures are taken) and
the PyTorch ratio is measured in the same run with the same thread count. A precision the converter
refuses gets a row saying why.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


@dataclass
class TaskBench:
    """One task's row group: how to make its source, which precisions, which bench options."""

    model: str
    source: Callable[[Path], str]  # work dir -> source string for `convert` and `--against`
    precisions: tuple[str, ...]
    bench_args: list[str]
    convert_kwargs: Callable[[str], dict[str, Any]] = field(default=lambda precision: {})
    variants: list[list[str]] = field(default_factory=lambda: [[]])  # one row per extra bench args, one convert


def _classify_kwargs(precision: str) -> dict[str, Any]:
    from benchmarks.models import calibration_images

    return {"calibration": calibration_images()} if precision == "int8" else {}


def _folder(builder: str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        import benchmarks.models as m

        return str(getattr(m, builder)(work / builder.replace("_folder", "")))

    return make


TASKS: dict[str, TaskBench] = {
    "classify": TaskBench("ResNet-18, 224x224, 10 classes",
                          lambda work: "benchmarks.models:resnet18", ("fp32", "fp16", "int8"),
                          ["--runs", "30", "--batch", "1"], _classify_kwargs),
    "generate": TaskBench("GPT-2 shape, 4 layers, d=256, vocab 2000",
                          _folder("gpt2_folder"), ("fp32", "fp16", "int8", "int4"),
                          ["--runs", "5", "--prompt-tokens", "32", "--max-new-tokens", "64"]),
    "translate": TaskBench("Marian shape, 2+2 layers, d=256, vocab 2000",
                           _folder("marian_folder"), ("fp32", "fp16", "int8"),
                           ["--runs", "5", "--prompt-tokens", "24", "--max-new-tokens", "32"],
                           variants=[["--num-beams", "1"], ["--num-beams", "4"]]),
    "recognize": TaskBench("Wav2Vec2-CTC shape, 4 layers, d=256",
                           _folder("wav2vec2_folder"), ("fp32", "fp16", "int8"),
                           ["--runs", "5", "--audio-seconds", "5"]),
}


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _bench(art: Path, source: str, args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edgekit.cli", "-q", "bench", str(art), "--against", source, "--device", "cpu",
           "--json", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout)


def _rows(task: str, spec: TaskBench, precision: str, work: Path) -> list[list[str]]:
    import edgekit

    source = spec.source(work)
    out = work / f"{task}-{precision}"
    t0 = time.perf_counter()
    try:
        art = edgekit.convert(source, out, precision=precision, overwrite=True, strict=False,
                              **spec.convert_kwargs(precision))
    except edgekit.EdgekitError as e:
        return [[task, spec.model, precision, f"convert refused: {str(e)[:160]}"] + [""] * 8]
    convert_s = time.perf_counter() - t0
    parity = art.manifest.parity
    rows = []
    for extra in spec.variants:
        try:
            r = _bench(out, source, spec.bench_args + extra)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            rows.append([task, spec.model, precision, f"bench failed: {str(e)[:160]}"] + [""] * 8)
            continue
        lat, a, w = r["latency_ms"], r["against"], r["work"]
        figure = {
            "classify": lambda: f"batch {w['batch']}",
            "generate": lambda: (f"prompt {w['prompt_latency_ms']['p50']:.1f} ms ({w['prompt_tokens']} tok), "
                                 f"decode {w['decode_tokens_per_s']:.0f} tok/s"),
            "translate": lambda: (f"{w['num_beams']} beam(s): encoder {w['encoder_latency_ms']['p50']:.1f} ms "
                                  f"({w['prompt_tokens']} tok), decode {w['decode_tokens_per_s']:.0f} tok/s; vs "
                                  f"PyTorch encoder {a['per_graph']['encoder']['speedup_p50']:.2f}x, decoder "
                                  f"{a['per_graph']['decoder']['speedup_p50']:.2f}x"),
            "recognize": lambda: f"RTF {w['real_time_factor']:.4f} ({w['audio_seconds']:g} s clip)",
        }[task]()
        rows.append([task, spec.model, r["precision"],
                     f"{'pass' if parity and parity.passed else 'FAIL'}: {parity.summary if parity else ''}"[:140],
                     f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                     f"{r['throughput']['value']:.1f} {r['throughput']['unit']}", figure,
                     f"{r['memory_mb']['peak_rss']:.0f}", f"{a['pytorch_ms']['p50']:.2f} / {a['edgekit_ms']['p50']:.2f}",
                     f"{a['speedup_p50']:.2f}x (convert {convert_s:.0f} s)"])
    return rows


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


HEADER = ["task", "model", "precision", "parity at convert", "p50 ms", "p90 ms", "p99 ms", "throughput",
          "task figure", "peak RSS MB", "PyTorch / edgekit p50 ms (same graph calls)", "speed-up vs PyTorch"]


def _write(args: argparse.Namespace, rows: list[list[str]]) -> None:
    import edgekit
    import onnxruntime
    import torch

    lines = [
        "# edgekit benchmark results", "",
        f"Machine: {_cpu()}, {os.cpu_count()} logical CPUs, no GPU used (onnxruntime CPU). "
        f"edgekit {edgekit.__version__}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}. {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        f"Made by `python benchmarks/run_all.py --tasks {args.tasks}`; one `edgekit bench --against` process per row, "
        f"all cores ({os.cpu_count()} threads) for both edgekit and PyTorch.", "",
        "- Latency: one task call end to end (pre/post-processing included), after warm-up. classify: one image; "
        "generate: one call making max-new-tokens tokens (eos ignored, greedy); translate: the same with an "
        "encoder-decoder, greedy and 4 beams (tokens/s per sequence); recognize: one clip.",
        "- PyTorch / edgekit: every graph call one task call makes (KV-cache decode steps included), recorded once "
        "and replayed on both with the same inputs; the speed-up is PyTorch p50 / edgekit p50 of that replay.",
        "- Peak RSS: the bench process while running the artifact (before PyTorch is imported for the ratio).",
        "- Models are random-init (seeded); parity is the gate measured at convert time and shipped in the artifact.",
        f"- Load average when this table was written: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[2]:.1f} "
        f"(15 min) on {os.cpu_count()} CPUs. Above the CPU count the machine is oversubscribed: all figures are "
        "slower than on an idle machine and PyTorch's OpenMP threads suffer more than onnxruntime's, so the "
        "speed-ups are then overstated; rerun on an idle machine for figures to quote.",
        "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--precisions", default=None, help="comma list to restrict the precisions")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--work", type=Path, default=ROOT / "models" / "bench")
    args = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    for task in args.tasks.split(","):
        spec = TASKS[task]
        for precision in spec.precisions:
            if args.precisions and precision not in args.precisions.split(","):
                continue
            print(f"[run_all] {task} {precision}", file=sys.stderr, flush=True)
            rows += _rows(task, spec, precision, args.work)
            _write(args, rows)  # after every row: a long run that is stopped still leaves its table
    _write(args, rows)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
