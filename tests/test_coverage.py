"""Coverage: architectures of transformers' auto mappings, tiny and random, converted from a saved
folder at fp32 and compared from the raw input to the answer with the transformers pipeline
(tests/coverage_models.py says how, per task).

CI runs FAST, one family per convention that broke before (MoE experts, cache-length positions, GPT-2-style
and token types, FNet's padding, crop_pct processors, CTC special tokens; ALiBi is tests/test_generate_modules.py's MPT):
a couple of minutes on 2 cores.
`EDGEKIT_COVERAGE=full` parametrizes over every family of the four mappings and checks each still
has the status recorded in docs/coverage.jsonl (the README's "supported architectures" table,
written by `scripts/coverage.py run` then `table`, which call the same `outcome`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coverage_models import TASKS, families, outcome

FAST = [("generate", "llama"), ("generate", "mixtral"), ("generate", "bart"), ("classify-text", "gpt2"),
        ("classify-text", "fnet"), ("classify-image", "convnext"), ("classify-image", "poolformer"),
        ("recognize", "hubert")]
RECORDED = Path(__file__).resolve().parents[1] / "docs" / "coverage.jsonl"


def _cases() -> list[tuple[str, str]]:
    if os.environ.get("EDGEKIT_COVERAGE") == "full":
        return [(t, f) for t in TASKS for f in families(t)]
    return FAST


def _recorded() -> dict[tuple[str, str], dict[str, str]]:
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines()] if RECORDED.is_file() else []
    return {(r["task"], r["family"]): r for r in rows if r["precision"] == "fp32"}


@pytest.mark.parametrize(("task", "family"), _cases(), ids=lambda v: str(v))
def test_family(task: str, family: str, tmp_path: Path) -> None:
    got = outcome(task, family, "fp32", tmp_path)
    if (task, family) in FAST:
        assert got.status == "pass", got.reason
        return
    want = _recorded().get((task, family))
    assert want is not None, f"{task}/{family} is not in {RECORDED.name}: run scripts/coverage.py"
    assert got.status == want["status"], f"recorded {want['status']} ({want['reason']}), now {got.status}: {got.reason}"


def test_fast_families_are_in_the_mappings() -> None:
    for task, family in FAST:
        assert family in families(task)
