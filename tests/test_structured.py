"""Structured output on a tiny random GPT-2 (tests/reliability_models.py): the mask alone makes its output
follow a JSON schema, a regular expression or a grammar, in greedy, sampling, beam search and streaming;
unusable schemas, grammars and options are refused by name before the model runs."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import edgekit
from edgekit.errors import ConfigError
from reliability_models import converted_gpt2

SCHEMAS = Path(__file__).parent / "data" / "schemas"
# Bounded on purpose: a random model never chooses to close a string, so maxLength / enums / maxItems
# are what end its output inside max_new_tokens (the mask then allows only the closing tokens).
ORDER = {"type": "object", "properties": {
    "status": {"enum": ["open", "paid", "void"]}, "qty": {"type": "integer", "minimum": 1, "maximum": 99},
    "note": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
    "required": ["status", "qty", "ok"], "additionalProperties": False}
POINTS = {"type": "array", "minItems": 1, "maxItems": 2, "items": {"$ref": "#/$defs/p"}, "$defs": {"p": {
    "type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                                     "tag": {"type": ["string", "null"], "pattern": "^[a-z]{1,3}$"}},
    "required": ["x", "tag"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted_gpt2(tmp_path_factory), device="cpu")


def _rf(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}


@pytest.mark.parametrize("schema", [ORDER, POINTS], ids=["enum-int-bool-string", "ref-array-nullable"])
def test_greedy_sampling_and_beams_validate(gen: Any, schema: dict[str, Any]) -> None:
    outs = [gen.generate("The order:", max_new_tokens=60, response_format=_rf(schema))]
    outs += gen.generate(["The order:", "x"], max_new_tokens=60, response_format=_rf(schema), do_sample=True, seed=3)
    outs += gen.generate("The order:", max_new_tokens=60, response_format=_rf(schema), num_beams=3,
                         num_return_sequences=3)
    for text in outs:
        jsonschema.validate(json.loads(text), schema)
    plain = gen.generate("The order:", max_new_tokens=20)
    with pytest.raises(ValueError):  # the model alone writes no JSON: the mask is what made it valid
        json.loads(plain)


def test_json_object_and_stream(gen: Any) -> None:
    text = "".join(gen.generate("Data:", max_new_tokens=80, stream=True, response_format=_rf(ORDER)))
    jsonschema.validate(json.loads(text), ORDER)
    obj = gen.generate("Data:", max_new_tokens=80, response_format={"type": "json_object"})
    assert obj.startswith("{")  # any object: a random model may not close it within 80 tokens
    plain = gen.generate("Data:", max_new_tokens=8)
    assert gen.generate("Data:", max_new_tokens=8, response_format={"type": "text"}) == plain  # OpenAI's "no format"


def test_regex_and_grammars(gen: Any) -> None:
    pattern = r"[a-c]{2,4}-\d{2}"
    for kw in ({}, {"num_beams": 2}):
        assert re.fullmatch(pattern, gen.generate("id:", max_new_tokens=12, regex=pattern, **kw))
    gbnf = 'root ::= "yes" | "no" | "maybe " [0-9]'
    lark = 'start: ("yes" | "no") " " NUM\nNUM: /[1-9][0-9]?/'
    assert re.fullmatch(r"yes|no|maybe [0-9]", gen.generate("Q:", max_new_tokens=8, grammar=gbnf))
    assert re.fullmatch(r"(yes|no) [1-9][0-9]?", gen.generate("Q:", max_new_tokens=8, grammar=lark))
    ids = gen.generate(input_ids=np.array([[5, 6, 7]]), max_new_tokens=8, grammar=gbnf)
    assert re.fullmatch(r"yes|no|maybe [0-9]", gen.decode(ids[0, 3:]))


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"response_format": _rf({"type": "object", "properties": {"a": {"type": "nope"}}})}, "json_schema"),
    ({"response_format": _rf({"type": "array", "uniqueItems": True})}, "uniqueItems"),
    ({"response_format": {"type": "json_schema", "schema": {}}}, "OpenAI's structured-output shape"),
    ({"response_format": "json"}, "OpenAI's structured-output shape"),
    ({"regex": "(ab"}, "regex"),
    ({"grammar": "start: undefined_rule"}, "grammar"),
    ({"grammar": "root ::= ("}, "grammar"),
    ({"grammar": ""}, "non-empty"),
    ({"regex": "a", "grammar": "start: \"a\""}, "one of"),
    ({"regex": "a", "num_beams": 2, "do_sample": True}, "beam sampling"),
])
def test_refused_by_name(gen: Any, kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        gen.generate("x", max_new_tokens=4, **kwargs)


def test_without_the_engine(gen: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)  # as if not installed: import raises ImportError
    with pytest.raises(ConfigError, match=re.escape("edgekit[structured]")):
        gen.generate("x", max_new_tokens=4, regex="a+")


def test_cut_output_is_logged(gen: Any, caplog: pytest.LogCaptureFixture) -> None:
    text = gen.generate("The order:", max_new_tokens=3, response_format=_rf(ORDER))
    assert text.startswith("{") and "ended before their json_schema was complete" in caplog.text


def test_schema_set_refuses_only_unique_items(gen: Any) -> None:
    """The real-model set (benchmarks/bench_structured.py; tests/test_real_weights.py validates the answers
    of the accepted ones): exactly REFUSED are refused, by a ConfigError naming uniqueItems (which
    llguidance cannot enforce token by token) before the model runs; every other schema compiles."""
    import llguidance

    from edgekit.tasks.structured import OutputFormat, grammar_of

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_structured import ACCEPTED, REFUSED

    for name in REFUSED:
        with pytest.raises(ConfigError, match="uniqueItems"):
            gen.generate("x", max_new_tokens=1, response_format=_rf(json.loads((SCHEMAS / f"{name}.json").read_text())))
    for name in ACCEPTED:
        fmt = OutputFormat.make(_rf(json.loads((SCHEMAS / f"{name}.json").read_text())), None, None)
        assert fmt is not None and not llguidance.LLMatcher.validate_grammar(grammar_of(fmt)), name
    assert len(ACCEPTED) >= 24 and sorted([*ACCEPTED, *REFUSED]) == sorted(p.stem for p in SCHEMAS.glob("*.json"))


def test_cli_json_schema(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    art = converted_gpt2(tmp_path_factory)
    schema = tmp_path / "order.json"
    schema.write_text(json.dumps(ORDER))
    r = CliRunner().invoke(cli, ["run", str(art), "--prompt", "The order:", "--max-new-tokens", "60",
                                 "--json-schema", str(schema), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    jsonschema.validate(json.loads(r.output.strip()), ORDER)
    schema.write_text("{not json")
    r = CliRunner().invoke(cli, ["run", str(art), "--prompt", "x", "--json-schema", str(schema), "--device", "cpu"])
    assert r.exit_code == 2 and "cannot read a JSON schema" in r.output


def test_beam_copies_are_independent(gen: Any) -> None:
    """A row repeated by a beam reorder gets its own matcher: the copies then follow different branches."""
    from edgekit.tasks.structured import GrammarRows, OutputFormat, llg_tokenizer

    vocab = int(gen.decoder.outputs[0].shape[-1])
    tok = llg_tokenizer(gen.tokenizer.to_str(), vocab, [gen.tokenizer.token_to_id("<eos>")])
    a, b, c = (gen.encode([ch], special=False)[0][0] for ch in "abc")
    rows = GrammarRows(tok, OutputFormat.make(None, None, "ab|ac"), 1, vocab)
    live = np.ones(2, bool)
    rows.advance(np.array([a]), live[:1])
    rows.reorder(np.array([0, 0]))
    assert rows.allowed()[:, [b, c]].all()
    rows.advance(np.array([b, c]), live)
    assert not rows.dead.any() and all(m.is_accepting() for m in rows.matchers)
    rows.advance(np.array([a, a]), live)  # past the end: refused, so both rows are dead and allow nothing
    assert rows.dead.all() and not rows.allowed().any()
