"""Coverage: architectures of transformers' auto mappings, small and random, converted from a saved
folder at fp32 and compared from the raw input to the answer with transformers (generate: its
`model.generate` from the same text; the others: its pipelines; tests/coverage_models.py says how).

CI runs FAST, one family per convention that broke before (MoE experts, cache-length positions, sliding-window
caches, GPT-2-style and token types, FNet's padding, crop_pct processors, CTC special tokens; ALiBi is tests/test_generate_modules.py's MPT),
plus Llama at real head sizes (onnxruntime's fused-attention stand-in): a few minutes on 2 cores.
`EDGEKIT_COVERAGE=full` parametrizes over every family of the four mappings at both shapes and
fails where a family regressed against docs/coverage.jsonl (written by `scripts/coverage.py run`,
which calls the same `outcome`): a recorded "pass" must pass, a recorded "refused" must still be a
clear refusal at convert, a recorded "fail" is reported as a known failure (xfail). A family that
now does better passes with a warning to update the record.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from coverage_models import SHAPES, TASKS, Outcome, families, outcome

FAST = [("generate", "llama", "tiny"), ("generate", "llama", "real"), ("generate", "mixtral", "tiny"),
        ("generate", "granitemoe_swa", "tiny"),
        ("generate", "bart", "tiny"), ("classify-text", "gpt2", "tiny"), ("classify-text", "fnet", "tiny"),
        ("classify-image", "convnext", "tiny"), ("classify-image", "poolformer", "tiny"),
        ("recognize", "hubert", "tiny")]
RECORDED = Path(__file__).resolve().parents[1] / "docs" / "coverage.jsonl"


def _cases() -> list[tuple[str, str, str]]:
    if os.environ.get("EDGEKIT_COVERAGE") == "full":
        return [(t, f, s) for t in TASKS for f in families(t) for s in SHAPES]
    return FAST


def recorded(path: Path = RECORDED) -> dict[tuple[str, str, str], dict[str, str]]:
    """fp32 rows by (task, family, shape); rows from before shapes existed are the tiny shape."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return {(r["task"], r["family"], r.get("shape", "tiny")): r for r in rows if r["precision"] == "fp32"}


def judge(got: Outcome, want: dict[str, str] | None) -> str:
    """"ok", "known failure", "improved" or "skip" where `got` is no regression from the recorded row
    `want`; raises AssertionError (with both reasons) where it is one."""
    key = f"{got.task}/{got.family} ({got.shape})"
    assert want is not None, f"{key} is not in {RECORDED.name}: run scripts/coverage.py run, then table"
    was = f"recorded {want['status']} ({want['reason']}), now {got.status}: {got.reason}"
    if got.status == "skip":
        assert want["status"] == "skip", f"{key}: the sweep can no longer build its config; {was}"
        return "skip"
    if got.status == "fail":
        assert want["status"] == "fail", f"{key} fails against transformers; {was}"
        return "known failure"
    if got.status == "refused":
        assert want["status"] != "pass", f"{key} passed and is now refused; {was}"
        return "ok" if want["status"] == "refused" else "improved"
    return "ok" if want["status"] == "pass" else "improved"


@pytest.mark.parametrize(("task", "family", "shape"), _cases(), ids=lambda v: str(v))
def test_family(task: str, family: str, shape: str, tmp_path: Path) -> None:
    got = outcome(task, family, "fp32", tmp_path, shape)
    if (task, family, shape) in FAST:
        assert got.status == "pass", got.reason
        return
    verdict = judge(got, recorded().get((task, family, shape)))
    if verdict == "improved":
        warnings.warn(f"{task}/{family} ({shape}) is now {got.status}: update docs/coverage.jsonl "
                      "(scripts/coverage.py run)", stacklevel=1)
    elif verdict == "known failure":
        pytest.xfail(f"known failure, recorded in {RECORDED.name}: {got.reason}")
    elif verdict == "skip":
        pytest.skip(got.reason)


def test_fast_families_are_in_the_mappings() -> None:
    for task, family, shape in FAST:
        assert family in families(task) and shape in SHAPES


def _row(status: str) -> dict[str, str]:
    return {"task": "generate", "family": "llama", "precision": "fp32", "shape": "real", "status": status,
            "reason": "recorded"}


@pytest.mark.parametrize(("now", "was", "verdict"), [
    ("pass", "pass", "ok"), ("refused", "refused", "ok"), ("fail", "fail", "known failure"),
    ("pass", "refused", "improved"), ("refused", "fail", "improved"), ("skip", "skip", "skip"),
    ("fail", "pass", None), ("fail", "refused", None), ("refused", "pass", None), ("skip", "pass", None),
    ("pass", None, None)])
def test_judge_fails_every_regression(now: str, was: str | None, verdict: str | None) -> None:
    got = Outcome("generate", "llama", "fp32", now, "now", shape="real")
    if verdict is None:
        with pytest.raises(AssertionError):
            judge(got, None if was is None else _row(was))
    else:
        assert judge(got, _row(was)) == verdict  # type: ignore[arg-type]


def test_rows_without_a_shape_are_the_tiny_shape(tmp_path: Path) -> None:
    path = tmp_path / "coverage.jsonl"
    rows = [{**_row("pass"), "shape": "real"}, {k: v for k, v in _row("refused").items() if k != "shape"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = recorded(path)
    assert got[("generate", "llama", "real")]["status"] == "pass"
    assert got[("generate", "llama", "tiny")]["status"] == "refused"


def test_a_refusal_is_a_clear_edgekit_error() -> None:
    from edgekit.errors import ExportError, InputError, ParityError, UnsupportedError

    from coverage_models import _is_refusal

    assert _is_refusal(UnsupportedError("'x' is not supported for generate", fix="use a decoder-only model"))
    assert not _is_refusal(UnsupportedError("'x' is not supported for generate"))  # no reason given
    assert not _is_refusal(InputError("the model cannot run on these inputs", found="shapes (1, 3)"))
    assert not _is_refusal(ParityError("fp32 differs", found="greedy_agreement=0.5"))
    assert not _is_refusal(ExportError("export of graph 'model' failed", found="unsupported operator(s) ['x']",
                                       fix="replace the layer"))
    assert not _is_refusal(RuntimeError("size mismatch"))


def test_generate_check_fails_on_other_weights(tmp_path: Path) -> None:
    """The artifact of one random Llama against transformers running another: the check must say so."""
    import edgekit

    from coverage_models import _check_generate, save_folder

    edgekit.convert(save_folder("generate", "llama", tmp_path / "a", seed=0), tmp_path / "art", precision="fp32")
    assert _check_generate(tmp_path / "a", tmp_path / "art", "fp32") == ""
    problem = _check_generate(save_folder("generate", "llama", tmp_path / "b", seed=1), tmp_path / "art", "fp32")
    assert problem.startswith("greedy tokens differ"), problem
