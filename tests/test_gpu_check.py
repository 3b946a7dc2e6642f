"""benchmarks/gpu_check.py, the GPU parity/speed check, run on the CPU with tiny shapes (--small): every
task x precision row is there, fp32 parity passed, the figures are positive; and a row that raises or
fails fp32 parity is recorded, does not stop the run, and makes the exit status 1."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ROWS = {(t, p) for t in ("classify", "generate", "speculative", "recognize") for p in ("fp32", "fp16")}
Small = tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]  # the run, its JSON, the JSON's path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Small:
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "gpu_check.json"
    # One thread per side: spinning thread pools made convert's parity step 3-20x slower on 2 busy cores.
    r = _run([str(SCRIPT), "--small", "--device", "cpu", "--torch-device", "cpu", "--threads", "1",
              "--out", str(out), "--work", str(tmp / "work")], tmp)
    assert out.is_file(), r.stderr[-3000:]
    return r, json.loads(out.read_text()), out


def _numbers(tree: Any) -> list[float]:
    if isinstance(tree, dict):
        return [n for v in tree.values() for n in _numbers(v)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.slow
def test_every_row_ran_and_fp32_parity_passed(small: Small) -> None:
    r, data, _ = small
    rows = {(row["task"], row["precision"]): row for row in data["rows"]}
    assert set(rows) == ROWS and len(data["rows"]) == len(ROWS)
    errors = {k: row["error"] for k, row in rows.items() if row["error"]}
    assert not errors, errors
    for (task, precision), row in rows.items():
        assert row["edgekit_device"] == "onnxruntime-cpu" and row["torch_device"] == "cpu"
        if precision == "fp32":
            assert row["parity_passed"] is True, (task, row["parity"])
        else:  # fp16 is reported against PyTorch .half() (speculative: plain greedy of the same artifact), not gated
            assert row["parity_passed"] is None and ("(.half())" in row["reference"] or task == "speculative")
    assert rows[("generate", "fp32")]["parity"]["agreement"] == 1.0
    spec = rows[("speculative", "fp32")]  # prompt-lookup greedy: plain greedy's tokens, > 1 token per call
    assert spec["parity"]["identical_sequences"] == 2 and spec["speculation"]["tokens_per_step"] > 1.0
    assert "convert_s" not in spec  # it ran on the generate row's artifact
    assert rows[("recognize", "fp32")]["parity"]["identical_sequences"] == 2
    assert rows[("classify", "fp32")]["parity"]["max_rel"] < 1e-4  # same CPU, same fp32 math
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_figures_are_positive_and_memory_is_na_on_the_cpu(small: Small) -> None:
    _, data, _ = small
    for row in data["rows"]:
        speed = _numbers(row["speed"])
        assert speed and all(math.isfinite(v) and v > 0 for v in speed), (row["task"], row["speed"])
        assert row["row_s"] >= row.get("convert_s", 0) and (row["task"] == "speculative" or row["convert_s"] > 0)
        assert all(0 <= v <= 1 for k, v in row["parity"].items() if k in ("agreement", "top1_agreement"))
        assert row["memory_mib"] == {"pytorch_peak_allocated": None, "edgekit_nvidia_smi_delta": None}
    keys = {row["task"]: set(row["speed"]) for row in data["rows"]}
    assert keys["classify"] == {"batch1", "batch32"}
    assert keys["generate"] == {"prompt_ms", "decode_tok_s_batch1", "decode_tok_s_batch4"}
    assert keys["speculative"] == {"prompt_lookup_tok_s"}
    assert keys["recognize"] == {"real_time_factor"}
    env = data["environment"]
    assert env["torch"] and env["onnxruntime"] and env["transformers"]
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]


@pytest.mark.slow
def test_markdown_tables_are_written_and_printed(small: Small) -> None:
    r, _, out = small
    md = out.with_suffix(".md").read_text()
    assert md in r.stdout
    for heading in ("## Parity", "## Speed", "## GPU memory"):
        assert heading in md
    assert md.count("| pass |") == 4 and md.count("| reported |") == 4 and "## Errors" not in md


FAKE_TASKS = '''
import sys
from benchmarks import gpu_check, gpu_tasks

def boom(ctx, precision, row):
    row["model"] = "planted"
    raise RuntimeError("planted failure in " + precision)

def tokens(ok):
    def task(ctx, precision, row):
        row.update(model="fake", edgekit_device="fake", reference="fake",
                   parity={"agreement": 1.0 if ok else 0.5, "identical_sequences": int(ok), "sequences": 1,
                           "tokens_compared": 2, "first_divergence": None if ok else 1},
                   speed={"real_time_factor": {"pytorch": 0.2, "edgekit": 0.1, "speedup": 2.0}})
        gpu_tasks._gate_tokens(row, precision)
    return task

gpu_tasks.TASKS.update(classify=boom, generate=tokens(True), recognize=tokens(False))
raise SystemExit(gpu_check.main(sys.argv[1:]))
'''


@pytest.mark.parametrize("tasks,code", [("classify,generate", 1), ("generate,recognize", 1), ("generate", 0)])
def test_a_row_that_raises_or_fails_fp32_parity_exits_1_and_the_run_goes_on(tmp_path: Path, tasks: str,
                                                                             code: int) -> None:
    out = tmp_path / "g.json"
    r = _run(["-c", FAKE_TASKS, "--small", "--device", "cpu", "--torch-device", "cpu", "--tasks", tasks,
              "--out", str(out)], tmp_path)
    assert r.returncode == code, r.stderr[-3000:]
    rows = {(row["task"], row["precision"]): row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(t, p) for t in tasks.split(",") for p in ("fp32", "fp16")}  # every row ran
    md = out.with_suffix(".md").read_text()
    if "classify" in tasks:
        assert rows[("classify", "fp32")]["error"] == "RuntimeError: planted failure in fp32"
        assert "planted failure in fp32" in r.stderr  # the traceback is printed, not swallowed
        assert "| ERROR |" in md and "## Errors" in md
    if "recognize" in tasks:
        assert rows[("recognize", "fp32")]["parity_passed"] is False and "| FAIL |" in md
        assert rows[("recognize", "fp16")]["parity_passed"] is None  # fp16: reported, not gated
    assert rows[("generate", "fp32")]["parity_passed"] is True and rows[("generate", "fp32")]["error"] is None
