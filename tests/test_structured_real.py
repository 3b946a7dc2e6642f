"""Structured output on real pretrained weights: SmolLM2-135M-Instruct int8 (conftest's real_smollm2_int8),
asked in a chat turn for three of tests/data/schemas' objects, greedy: each answer parses and validates.
The whole set (24 schemas, with the mask's cost per token) is benchmarks/bench_structured.py's."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import edgekit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def smollm2(real_smollm2_int8: Path) -> Any:
    return edgekit.load(real_smollm2_int8, device="cpu", max_context=1024)  # the prompt and answer fit in 1024


@pytest.mark.parametrize("name", ["weather_tool_call", "postal_address", "sentiment_enum"])
def test_chat_answer_validates(smollm2: Any, name: str) -> None:
    from bench_structured import REQUESTS, messages

    schema = json.loads((ROOT / "tests" / "data" / "schemas" / f"{name}.json").read_text())
    text = smollm2.generate(messages=messages(REQUESTS[name], schema), max_new_tokens=160,
                            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    jsonschema.validate(json.loads(text), schema)
