"""The full coverage sweep (tests/coverage_models.py), the README's "supported architectures" summary
and the per-family table in docs/coverage.md.

    .venv/bin/python scripts/coverage.py run [--precisions fp32,fp16,int8] [--shapes tiny,real] [--only TASK]
                                             [--families a,b] [--out docs/coverage.jsonl]
    .venv/bin/python scripts/coverage.py table [--results docs/coverage.jsonl]   # rewrites both tables

Each family runs in a worker process (recycled every few families; a family that hangs past the
timeout is recorded as a failure), one JSON line per (task, family, precision, shape) appended as it
ends, so an interrupted sweep resumes where it stopped (rows without a shape, from before shapes, are
the tiny shape). CI runs the fast subset only (tests/test_coverage.py).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TIMEOUT_S = 240
MAX_TASKS = 20
BEGIN, END = "<!-- coverage-table:begin -->", "<!-- coverage-table:end -->"


def _one(args: tuple[str, str, str, str]) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import torch

    torch.set_num_threads(1)
    from coverage_models import outcome

    task, family, precision, shape = args
    return outcome(task, family, precision, None, shape).to_json()


def run(out: Path, precisions: list[str], shapes: list[str], only: str | None, workers: int,
        again: list[str] | None = None) -> None:
    from coverage_models import SHAPES, TASKS, families

    if not set(shapes) <= set(SHAPES):
        raise SystemExit(f"--shapes takes {','.join(SHAPES)}, not {','.join(shapes)}")
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["family"], r["precision"], r.get("shape", "tiny")))
    tasks = list(TASKS) if only is None else [t for t in only.split(",") if t in TASKS]
    # `again`: these families run even where recorded (the table reads a family's last row).
    jobs = [(t, f, p, s) for p in precisions for s in shapes for t in tasks for f in families(t)
            if ((t, f, p, s) not in done and again is None) or (again is not None and f in again)]
    print(f"{len(jobs)} to run ({len(done)} already in {out})", flush=True)
    ctx = mp.get_context("spawn")
    while jobs:
        # A few families at a time (each worker imports once per MAX_TASKS families); a family still
        # running TIMEOUT_S after the ones before it finished is recorded as timed out, and the pool restarted.
        pool = ctx.Pool(workers, maxtasksperchild=MAX_TASKS)
        pending = [(job, pool.apply_async(_one, (job,))) for job in jobs]
        jobs = []
        try:
            for i, (job, res) in enumerate(pending):
                try:
                    line = res.get(TIMEOUT_S)
                except mp.TimeoutError:
                    line = _failed(job, f"timed out after {TIMEOUT_S} s")
                    jobs = [j for j, r in pending[i + 1:] if not r.ready()]
                    _record(out, [r.get() for _, r in pending[i + 1:] if r.ready()])
                    _record(out, [line])
                    break
                except Exception as e:  # the worker died (segfault, out of memory)
                    line = _failed(job, f"worker died: {type(e).__name__}: {e}")
                _record(out, [line])
        finally:
            pool.terminate()


def _record(out: Path, lines: list[str]) -> None:
    with out.open("a") as f:
        for line in lines:
            f.write(line + "\n")
            print(line, flush=True)


def _failed(job: tuple[str, str, str, str], reason: str) -> str:
    return json.dumps({"task": job[0], "family": job[1], "precision": job[2], "status": "fail",
                       "reason": reason[:300], "seconds": 0, "shape": job[3]})


def table(results: Path) -> tuple[str, str]:
    """(the summary per task and shape, for the README; the per-family table, for docs/coverage.md)."""
    from coverage_models import SHAPES, TASKS, families

    rows: dict[tuple[str, str], dict[tuple[str, str], dict]] = defaultdict(dict)
    for line in results.read_text().splitlines():
        r = json.loads(line)
        rows[(r["task"], r["family"])][(r["precision"], r.get("shape", "tiny"))] = r
    for task in TASKS:  # every family of the mappings is listed, swept or not
        for fam in families(task):
            rows.setdefault((task, fam), {})
    swept = {k for v in rows.values() for k in v}
    columns = [(p, s) for p in ("fp32", "fp16", "int8") for s in SHAPES if p == "fp32" or (p, s) in swept]
    mark = {"pass": "yes", "fail": "FAIL", "refused": "refused", "skip": "skipped"}
    lines = ["Status per precision and shape (tiny: heads of 8; real: heads of 64 and the family's own rotary",
             "settings): yes (converted, answers identical within the task's tolerance), refused (a clear edgekit",
             "error at convert, reason given), FAIL (answers differ, or any other error), skipped (multimodal / Hub",
             "code, or the sweep could not build a config: not counted as tested), - (not run yet).", "",
             "| task | shape | families | fp32 pass / tested | refused | fail | skipped | not run |",
             "|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for shape in SHAPES:
            c = Counter(v[("fp32", shape)]["status"] if ("fp32", shape) in v else "not run"
                        for (t, _), v in rows.items() if t == task)
            tested = c["pass"] + c["fail"] + c["refused"]
            lines.append(f"| {task} | {shape} | {sum(c.values())} | {c['pass']}/{tested} "
                         f"({100 * c['pass'] / max(tested, 1):.1f}%) | {c['refused']} | {c['fail']} | {c['skip']} "
                         f"| {c['not run']} |")
    summary = "\n".join(lines)
    lines = ["# Coverage per family", "", "Written by `scripts/coverage.py table` from docs/coverage.jsonl; the summary",
             "and the method are in the README's \"Supported architectures\". graph (generate): the decoder graph",
             "onnxruntime runs, tiny / real: onnxruntime-gqa (a proven fused-attention stand-in) or portable.", "",
             "| family | task | " + " | ".join(f"{p} {s}" for p, s in columns) + " | graph | reason (when not yes) |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for (task, fam), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        reasons = "; ".join(dict.fromkeys([f"{p} {s}: {v[p, s]['reason']}" for p, s in columns
                                           if (p, s) in v and v[p, s]["status"] != "pass"] +
                                          [f"{s} graph portable: {v['fp32', s]['graph_note']}" for s in SHAPES
                                           if v.get(("fp32", s), {}).get("graph_note")]))
        cells = " | ".join(mark[v[c]["status"]] if c in v else "-" for c in columns)
        graph = " / ".join(v.get(("fp32", s), {}).get("graph") or "-" for s in SHAPES) if task == "generate" else ""
        lines.append(f"| {fam} | {task} | {cells} | {graph} | {reasons.replace('|', '/')} |")
    return summary, "\n".join(lines) + "\n"


def write_tables(results: Path) -> None:
    summary, per_family = table(results)
    readme = ROOT / "README.md"
    block = f"{BEGIN}\n{summary}\n\nEvery family, with the reason for each refusal: [docs/coverage.md](docs/coverage.md).\n{END}"
    readme.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme.read_text(), flags=re.S))
    (ROOT / "docs" / "coverage.md").write_text(per_family)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["run", "table"])
    ap.add_argument("--out", "--results", dest="out", type=Path, default=ROOT / "docs" / "coverage.jsonl")
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--shapes", default="tiny,real", help="tiny (heads of 8), real (heads of 64)")
    ap.add_argument("--only", default=None, help="comma-separated tasks, in this order")
    ap.add_argument("--workers", type=int, default=1, help="families converted at once")
    ap.add_argument("--families", default=None, help="comma-separated families to run again (only these)")
    a = ap.parse_args()
    if a.command == "run":
        a.out.parent.mkdir(parents=True, exist_ok=True)
        again = a.families.split(",") if a.families else None
        run(a.out, a.precisions.split(","), a.shapes.split(","), a.only, a.workers, again)
    else:
        write_tables(a.out)


if __name__ == "__main__":
    main()
