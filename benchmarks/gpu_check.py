"""Parity and speed of edgekit on a GPU against PyTorch on a GPU, every task, fp32 and fp16, one command.

    python benchmarks/gpu_check.py --device cuda --torch-device cuda            # the GPU check (scripts/gpu_check.sh)
    python benchmarks/gpu_check.py --small --device cpu --torch-device cpu      # the same code on tiny shapes

For each task (classify: ResNet-18 shape; generate and speculative: GPT-2-small shape; recognize: Whisper-tiny
shape, all random-init and seeded, see gpu_tasks.SHAPES) and precision: `edgekit.convert(precision=p,
target=--device)`, then PyTorch on --torch-device (fp16: the model cast with .half()) and
`edgekit.load(device=--device)` on the same inputs.
- parity: classify max abs/rel difference and top-1 agreement; generate greedy tokens vs transformers
  `generate`; speculative (prompt-lookup drafts checked in one verify call each) greedy tokens vs edgekit's
  plain greedy on the same device; recognize Whisper greedy tokens vs transformers `generate`. fp32 is
  gated (classify within TF32 tolerance, tokens identical); fp16 agreement is reported, never gated.
- speed: classify batch 1 and 32 (ms, numpy in and out on both sides), generate prompt latency and decode
  tokens/s at batch 1 and a larger batch, prompt-lookup generate tokens/s (transformers' and edgekit's),
  Whisper real-time factor; speed-up = PyTorch time / edgekit time.
- memory on a GPU: torch.cuda.max_memory_allocated for PyTorch, the nvidia-smi used-memory delta across
  edgekit's load and runs for edgekit ("n/a" without nvidia-smi or on the CPU).

Prints Markdown tables and writes JSON to --out (default $OUT/gpu_check.json when $OUT is set) and the
tables beside it (.md), after every row. A row that raises keeps its error text and the run goes on.
Exit status 1 if any fp32 parity check failed or any row raised, else 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_tasks import SHAPES, TASKS, Ctx  # noqa: E402

PRECISIONS = ("fp32", "fp16")


def environment(ctx: Ctx) -> dict[str, Any]:
    import onnxruntime
    import torch
    import transformers

    import edgekit
    from benchmarks.run_all import _cpu

    env: dict[str, Any] = {
        "edgekit_device_asked": ctx.device, "torch_device": ctx.torch_device, "python": platform.python_version(),
        "edgekit": edgekit.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__,
        "onnxruntime_file": onnxruntime.__file__, "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpu": _cpu(), "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
        env["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
    return env


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _parity_text(row: dict[str, Any]) -> str:
    p = row.get("parity")
    if not p:
        return ""
    if "max_abs" in p:
        text = f"max_abs {p['max_abs']:.2e}, max_rel {p['max_rel']:.2e}, " \
               f"top-1 {p['top1_agreement']:.3f} of {p['samples']}"
        if "vs_pytorch_fp32" in p:
            text += f" (vs PyTorch fp32: max_rel {p['vs_pytorch_fp32']['max_rel']:.2e}, " \
                    f"top-1 {p['vs_pytorch_fp32']['top1_agreement']:.3f})"
        return text
    return f"{p['agreement']:.1%} of {p['tokens_compared']} tokens, {p['identical_sequences']}/{p['sequences']} " \
           f"sequences identical, first divergence {_f(p['first_divergence'])}"


def _verdict(row: dict[str, Any]) -> str:
    if row.get("error"):
        return "ERROR"
    if row["precision"] != "fp32":
        return "reported"
    return "pass" if row.get("parity_passed") else "FAIL"


def markdown(env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# edgekit GPU check: edgekit `{env['edgekit_device_asked']}` vs PyTorch `{env['torch_device']}`", "",
        f"{env.get('nvidia_smi', 'no GPU')}; CPU {env['cpu']} ({env['cpus']}); "
        f"torch {env['torch']} (CUDA {env['torch_cuda']}), "
        f"onnxruntime {env['onnxruntime']} {env['onnxruntime_providers']}, transformers {env['transformers']}, "
        f"Python {env['python']}. Random-init models; fp16 reference = PyTorch .half().", "",
        "## Parity", "", "| task | precision | model | edgekit device | reference | parity | figures |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['precision']} | {r.get('model', '')} | {r.get('edgekit_device', '')} | "
                     f"{r.get('reference', '')} | {_verdict(r)} | {_parity_text(r)} |")
    lines += ["", "## Speed (speed-up = PyTorch / edgekit time; > 1: edgekit faster)", "",
              "| task | precision | measure | PyTorch | edgekit | speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        for name, v in r.get("speed", {}).items():
            pt, ek = (v["pytorch_ms"], v["edgekit_ms"]) if "pytorch_ms" in v else (v["pytorch"], v["edgekit"])
            unit = " ms" if "pytorch_ms" in v else ""
            lines.append(f"| {r['task']} | {r['precision']} | {name}{unit} | {pt:.4g} | {ek:.4g} | "
                         f"{v['speedup']:.2f}x |")
    lines += ["", "## GPU memory (MiB)", "",
              "| task | precision | PyTorch peak allocated | edgekit (nvidia-smi delta) |", "|---|---|---|---|"]
    for r in rows:
        m = r.get("memory_mib", {})
        lines.append(f"| {r['task']} | {r['precision']} | {_f(m.get('pytorch_peak_allocated'), 0)} | "
                     f"{_f(m.get('edgekit_nvidia_smi_delta'), 0)} |")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {r['task']} {r['precision']}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _write(out: Path, env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2, default=float) + "\n", encoding="utf-8")
    text = markdown(env, rows)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    return text


def _default_out() -> Path:
    base = os.environ.get("OUT")
    return Path(base) / "gpu_check.json" if base else Path("gpu_check.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "tensorrt", "cpu"), default="cuda", help="edgekit.load device")
    ap.add_argument("--torch-device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny shapes and few repeats (the CPU test)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--out", type=Path, default=_default_out())
    ap.add_argument("--work", type=Path, default=None, help="models and artifacts (default: a temporary folder)")
    # Half the cores each: convert's parity check alternates PyTorch and onnxruntime calls, and their
    # thread pools spin-wait; all cores each made it 3-20x slower on a loaded 2-core machine.
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="CPU threads for PyTorch and for onnxruntime (default: half the cores)")
    args = ap.parse_args(argv)
    tasks, precisions = args.tasks.split(","), args.precisions.split(",")
    unknown = sorted(set(tasks) - set(TASKS)) + sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        ap.error(f"unknown task or precision {unknown}")
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", EDGEKIT_THREADS=str(args.threads))

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("edgekit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.torch_device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --torch-device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-gpu-check-"))
    ctx = Ctx(args.device, args.torch_device, SHAPES["small" if args.small else "full"], work)
    env = environment(ctx)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for precision in precisions:
            row: dict[str, Any] = {"task": task, "precision": precision, "torch_device": args.torch_device,
                                   "parity_passed": None, "error": None}
            rows.append(row)
            print(f"[gpu_check] {task} {precision} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                TASKS[task](ctx, precision, row)
            except Exception as e:  # recorded in the row and the exit status; the other rows still run
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {e}"
            row["row_s"] = time.perf_counter() - t
            print(f"[gpu_check] {task} {precision}: {_verdict(row)} in {row['row_s']:.0f} s", file=sys.stderr,
                  flush=True)
            _write(args.out, env, rows)
    print(_write(args.out, env, rows))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    failed = [r for r in rows if r["error"] or (r["precision"] == "fp32" and not r["parity_passed"])]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
