"""Reply text, JSON-schema samples and embeddings: the pure parts of the sim."""

from __future__ import annotations

import math
import random
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.sim.answer import Prompt, ToolSpec, compose
from switchboard.sim.embedding import embed
from switchboard.sim.fleet import SimModel
from switchboard.sim.scenario import Scenario, ScriptError, Scripts
from switchboard.sim.schema_sample import sample_for_schema
from switchboard.sim.words import reply_tokens, split_reply

MODEL = SimModel("m", output_tokens=10)


@given(st.text())
def test_split_reply_is_lossless(text: str) -> None:
    assert "".join(split_reply(text)) == text


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=20_000))
def test_reply_tokens_are_words(seed: int, n: int) -> None:
    tokens = reply_tokens(seed, n)
    assert len(tokens) == n
    assert len("".join(tokens).split()) == n


def test_compose_rules() -> None:
    prompt = Prompt(texts=["hello there"], messages=1)
    answer = compose(prompt, MODEL, Scenario())
    assert answer.prompt_tokens == 2 + 4 + 3
    assert answer.choices[0].finish == "stop"
    assert answer.completion_tokens == 10
    prompt.max_tokens = 4
    cut = compose(prompt, MODEL, Scenario(reasoning_tokens=3))
    assert cut.choices[0].finish == "length"
    assert cut.output_tokens == 4
    assert cut.completion_tokens == 7
    assert cut.choices[0].text == answer.choices[0].text[: len(cut.choices[0].text)]
    tools = Prompt(texts=["hi"], messages=1, tools=[ToolSpec("f", {"type": "object"})])
    assert compose(tools, MODEL, Scenario()).choices[0].tool is not None
    tools.last_role = "tool"
    assert compose(tools, MODEL, Scenario()).choices[0].tool is None
    assert compose(tools, MODEL, Scenario(tool_call="always")).choices[0].tool is not None


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 40, "maxLength": 45},
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": 10, "maximum": 12},
    {"type": "integer", "exclusiveMinimum": 5, "multipleOf": 4},
    {"type": "number", "minimum": 0.5, "maximum": 0.75},
    {"type": "number", "exclusiveMaximum": 0},
    {"type": ["null", "boolean"]},
    {"enum": ["x", "y"]},
    {"const": {"fixed": True}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3},
    {"type": "array", "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
    {
        "oneOf": [
            {"type": "null"},
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        ]
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string"}}, "required": ["b"]},
        ]
    },
    {"type": "object", "properties": {"node": {"$ref": "#"}}, "required": []},
    {
        "$defs": {
            "Tree": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}},
                "required": ["kids"],
            }
        },
        "$ref": "#/$defs/Tree",
    },
    {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date"}},
        "required": ["when"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("fill_optional", [False, True])
def test_schema_samples_validate(schema: dict[str, Any], fill_optional: bool) -> None:
    jsonschema.validate(sample_for_schema(schema, seed=3, fill_optional=fill_optional), schema)


def test_gemini_openapi_schema() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"n": {"type": "INTEGER"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
        "required": ["n", "tags"],
    }
    value = sample_for_schema(schema, seed=1)
    assert isinstance(value["n"], int)
    assert isinstance(value["tags"][0], str)


def test_embeddings_are_unit_vectors_and_deterministic() -> None:
    a = embed("The quiet river", 64)
    assert a == embed("the QUIET river!", 64)
    assert math.isclose(math.fsum(x * x for x in a), 1.0)
    assert len(embed("", 16)) == 16
    assert embed("quiet river", 32) == embed("quiet river", 32)


def test_scripts() -> None:
    model = SimModel("m", ttft_ms=250, tokens_per_second=4, failure_rate=0.0)
    scripts = Scripts(random.Random(0))
    sc = scripts.for_request({}, model, lambda _: None)
    assert (sc.ttft, sc.interval(), sc.generation_time(5)) == (0.25, 0.25, 1.25)
    sc = scripts.for_request({"x-sim-ttft-ms": "0", "x-sim-timeout": "yes"}, model, lambda _: None)
    assert sc.ttft == 0
    assert sc.timeout
    assert sc.fails
    with pytest.raises(ScriptError, match="x-sim-status"):
        scripts.for_request({"x-sim-status": "200"}, model, lambda _: None)
    with pytest.raises(ScriptError, match="x-sim-tool-call"):
        scripts.for_request({"x-sim-tool-call": "sometimes"}, model, lambda _: None)
    assert scripts.for_request({"x-sim-reply": '"a\\nb"'}, model, lambda _: None).reply == "a\nb"
