"""The parity report as a typed record (issue 17): a spec's values sorted into its sections, the gate
applied, stored in edgekit.json through the codec and read back equal; a bad value is an ArtifactError."""
from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from edgekit.contract.codec import ContractError, decode, encode
from edgekit.converters.spec import ExportSpec, Limit
from edgekit.parity_report import EndToEnd, ParityReport, PreprocessCheck


class _Gated:
    """What `ExportSpec.report` reads of a spec: its gates (a real spec needs a PyTorch source)."""

    gates: ClassVar[dict[str, dict[str, Limit]]] = {
        "fp32": {"greedy_agreement": Limit(min=1.0), "logits_max_abs": Limit(max=1e-4)}}


def _report(values: dict[str, Any]) -> ParityReport:
    return ExportSpec.report(_Gated(), values, "fp32", "greedy agreement etc.")  # type: ignore[arg-type]


def test_values_are_sorted_by_kind_and_gated() -> None:
    r = _report({"samples": 4, "greedy_agreement": 1.0, "new_tokens": 32, "logits_max_abs": 2e-5,
                 "greedy_rows": [1.0, 1.0, 1.0], "held_out": "texts", "logits": {"max_abs": 2e-5, "cosine": 1.0},
                 "perplexity_ratio": 1.001})  # a measure the schema does not name: no change needed
    assert r.passed and r.samples == 4 and r.summary == "greedy agreement etc."
    assert r.measures == {"greedy_agreement": 1.0, "new_tokens": 32.0, "logits_max_abs": 2e-5,
                          "perplexity_ratio": 1.001}
    assert r.rows == {"greedy_rows": (1.0, 1.0, 1.0)} and r.notes == {"held_out": "texts"}
    assert r.outputs == {"logits": {"max_abs": 2e-5, "cosine": 1.0}}
    assert r.tolerances == {"greedy_agreement": ">= 1", "logits_max_abs": "<= 0.0001"}
    bad = _report({"samples": 4, "greedy_agreement": 0.5, "logits_max_abs": 2e-5})
    assert not bad.passed and bad.summary.startswith("greedy_agreement=0.5 (limit >= 1)")
    failed = r.failed("greedy tokens differ from the portable graph's")
    assert not failed.passed and failed.summary == f"greedy tokens differ from the portable graph's; {r.summary}"
    assert r.with_measures(tokens_vs_portable=1.0).measures["tokens_vs_portable"] == 1.0
    assert "tokens_vs_portable" not in r.measures  # frozen: a new report, this one unchanged


def test_round_trip_through_json() -> None:
    e2e = EndToEnd(samples=6, scores_max_abs=3e-7, top1=1.0,
                   preprocess=PreprocessCheck(passed=True, summary="max abs difference 0", max_abs=0.0),
                   reference="transformers ViTImageProcessor")
    r = ParityReport(passed=True, summary="all outputs within tolerance", precision="fp16",
                     tolerances={"cosine": ">= 0.999"}, samples=8, outputs={"logits": {"cosine": 0.9999, "top1": 1.0}},
                     notes={"inputs": "random"}, end_to_end=e2e)
    doc = json.loads(json.dumps(encode(r)))
    assert doc["end_to_end"]["preprocess"]["summary"] == "max abs difference 0"
    assert decode(ParityReport, doc, "parity") == r


@pytest.mark.parametrize(("path", "value", "where"), [
    (("passed",), "yes", "parity.passed"),
    (("measures", "greedy_agreement"), "1.0", "parity.measures.greedy_agreement"),
    (("rows", "greedy_rows"), [1.0, None], "parity.rows.greedy_rows[1]"),
    (("extra",), 1, "parity"),
])
def test_bad_values_name_their_path(path: tuple[str, ...], value: Any, where: str) -> None:
    doc = encode(_report({"samples": 3, "greedy_agreement": 1.0, "greedy_rows": [1.0, 1.0]}))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    with pytest.raises(ContractError) as e:
        decode(ParityReport, doc, "parity")
    assert e.value.path == where
