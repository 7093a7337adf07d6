from __future__ import annotations

from typing import Any

import pytest

from switchboard.execution.validators import (
    BUILTIN_VALIDATORS,
    first_failure,
    load_validator,
    response_from_events,
)
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
    FinishReason,
    Message,
    ResponseFormat,
    StreamEvent,
    StreamFinish,
    StreamStart,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolSpec,
    Usage,
)

WEATHER = ToolSpec("get_weather", parameters={
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
    "additionalProperties": False,
})
CLOCK = ToolSpec("get_time")  # the default parameters: an object without properties


def _request(**kwargs: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message("user", [TextPart("hi")])], **kwargs)


def _json_request(schema: dict[str, Any] | None = None) -> ChatRequest:
    if schema is None:
        return _request(response_format=ResponseFormat("json_object"))
    return _request(response_format=ResponseFormat("json_schema", schema=schema))


def _answer(*texts: str, finish: FinishReason | None = "stop", refusal: str | None = None) -> ChatResponse:
    choices = [Choice(i, Message("assistant", [TextPart(t)] if t else [], refusal=refusal), finish)
               for i, t in enumerate(texts)]
    return ChatResponse("r1", "up-model", choices, Usage(3, 4))


def _calls(*calls: tuple[str, str]) -> ChatResponse:
    tool_calls = [ToolCall(f"call_{i}", name, args) for i, (name, args) in enumerate(calls)]
    return ChatResponse("r1", "up-model", [Choice(0, Message("assistant", tool_calls=tool_calls), "tool_calls")],
                        Usage(3, 4))


def check(name: str, request: ChatRequest, response: ChatResponse) -> str | None:
    return BUILTIN_VALIDATORS[name](request, response)


# --- non_empty ------------------------------------------------------------------------------------

def test_non_empty_accepts_text_or_tool_calls() -> None:
    assert check("non_empty", _request(), _answer("Hello")) is None
    assert check("non_empty", _request(tools=[CLOCK]), _calls(("get_time", "{}"))) is None


@pytest.mark.parametrize("response", [
    _answer(""), _answer(" \n\t"), _answer("fine", ""), ChatResponse("r", "m", [], Usage()),
])
def test_non_empty_rejects_blank_answers(response: ChatResponse) -> None:
    assert check("non_empty", _request(), response) == "empty"


# --- json -----------------------------------------------------------------------------------------

def test_json_does_nothing_unless_json_was_asked_for() -> None:
    assert check("json", _request(), _answer("not json")) is None
    assert check("json", _request(response_format=ResponseFormat("text")), _answer("not json")) is None


def test_json_object() -> None:
    assert check("json", _json_request(), _answer(' \n{"a": 1}\n')) is None
    assert check("json", _json_request(), _answer("[1, 2]")) == "invalid_json: expected an object, got array"
    assert check("json", _json_request(), _answer('{"a": 1}', "nope")) == (
        "invalid_json: invalid literal, expected 'null' at char 0")


@pytest.mark.parametrize("text", ["", '```json\n{"a": 1}\n```', '{"a": 1} trailing', '{"a": 1,}', "Sure! {}"])
def test_json_is_strict(text: str) -> None:
    reason = check("json", _json_request(), _answer(text))
    assert reason is not None and reason.startswith("invalid_json: ")


def test_json_schema() -> None:
    request = _json_request({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]})
    assert check("json", request, _answer('{"x": "y"}')) is None
    assert check("json", request, _answer('{"x": null}')) == "schema: $.x: expected string, got null"
    assert check("json", request, _answer("{}")) == 'schema: $: missing required property "x"'
    assert check("json", request, _answer('"x"')) == "schema: $: expected object, got string"


def test_json_schema_without_a_schema_only_parses() -> None:
    request = _request(response_format=ResponseFormat("json_schema"))
    assert check("json", request, _answer("[1]")) is None
    assert check("json", request, _answer("[1")) is not None


def test_json_skips_a_tool_calling_turn() -> None:
    request = _json_request()
    request.tools = [CLOCK]
    assert check("json", request, _calls(("get_time", "{}"))) is None


# --- tool_arguments -------------------------------------------------------------------------------

def test_tool_arguments_accepts_valid_calls() -> None:
    request = _request(tools=[WEATHER, CLOCK])
    response = _calls(("get_weather", '{"city": "Oslo", "days": 2}'), ("get_time", "{}"))
    assert check("tool_arguments", request, response) is None
    assert check("tool_arguments", request, _answer("no calls at all")) is None


def test_tool_arguments_treats_empty_arguments_as_an_empty_object() -> None:
    request = _request(tools=[WEATHER, CLOCK])
    assert check("tool_arguments", request, _calls(("get_time", ""))) is None
    assert check("tool_arguments", request, _calls(("get_weather", ""))) == (
        'tool_arguments: get_weather: $: missing required property "city"')


@pytest.mark.parametrize(("call", "reason"), [
    (("get_wether", "{}"), "tool_arguments: unknown tool 'get_wether'"),
    (("get_weather", '{"city": "Oslo"'),
     "tool_arguments: get_weather: invalid JSON: unexpected end of data at char 15"),
    (("get_weather", '["Oslo"]'), "tool_arguments: get_weather: expected an object, got array"),
    (("get_weather", '{"city": 7}'), "tool_arguments: get_weather: $.city: expected string, got integer"),
    (("get_weather", '{"city": "Oslo", "days": 0}'), "tool_arguments: get_weather: $.days: expected at least 1, got 0"),
    (("get_weather", '{"city": "Oslo", "unit": "C"}'),
     "tool_arguments: get_weather: $.unit: additional property not allowed"),
])
def test_tool_arguments_rejects(call: tuple[str, str], reason: str) -> None:
    request = _request(tools=[WEATHER])
    assert check("tool_arguments", request, _calls(("get_weather", '{"city": "Oslo"}'), call)) == reason


def test_tool_arguments_without_parameters_accept_any_object() -> None:
    request = _request(tools=[ToolSpec("free", parameters={})])
    assert check("tool_arguments", request, _calls(("free", '{"anything": [1]}'))) is None


# --- complete, refusal ----------------------------------------------------------------------------

def test_complete() -> None:
    assert check("complete", _request(), _answer("done")) is None
    assert check("complete", _request(), _answer("cut o", finish="length")) == "length"


def test_refusal() -> None:
    assert check("refusal", _request(), _answer("Sure")) is None
    assert check("refusal", _request(), _answer("", refusal="I can't help with that.")) == "refusal"
    assert check("refusal", _request(), _answer("", finish="content_filter")) == "refusal"


# --- registry, loading, chaining ------------------------------------------------------------------

def test_builtins_are_named_after_their_key() -> None:
    assert sorted(BUILTIN_VALIDATORS) == ["complete", "json", "non_empty", "refusal", "tool_arguments"]
    assert all(v.name == name for name, v in BUILTIN_VALIDATORS.items())
    with pytest.raises(TypeError):
        BUILTIN_VALIDATORS["mine"] = BUILTIN_VALIDATORS["json"]  # type: ignore[index]


def no_apologies(request: ChatRequest, response: ChatResponse) -> str | None:
    """A plugin validator, loaded by its import path."""
    return "apology" if "sorry" in response.choices[0].message.text().lower() else None


def crashing(request: ChatRequest, response: ChatResponse) -> str | None:
    raise KeyError("boom")


def confused(request: ChatRequest, response: ChatResponse) -> bool:
    return True


NOT_CALLABLE = 42


class Checks:
    @staticmethod
    def short(request: ChatRequest, response: ChatResponse) -> str | None:
        return "short" if len(response.choices[0].message.text()) < 3 else None


def test_load_builtin() -> None:
    assert load_validator("json") is BUILTIN_VALIDATORS["json"]


def test_load_plugin_function() -> None:
    validator = load_validator(f"{__name__}:no_apologies")
    assert validator.name == f"{__name__}:no_apologies"
    assert validator(_request(), _answer("Here you go")) is None
    assert validator(_request(), _answer("Sorry, no.")) == "apology"
    assert load_validator(f"{__name__}:Checks.short")(_request(), _answer("ok")) == "short"


def test_a_failing_plugin_becomes_the_reason() -> None:
    spec = f"{__name__}:crashing"
    assert load_validator(spec)(_request(), _answer("hi")) == f"validator {spec} failed: KeyError"
    spec = f"{__name__}:confused"
    assert load_validator(spec)(_request(), _answer("hi")) == f"validator {spec} failed: returned bool"


@pytest.mark.parametrize(("spec", "message"), [
    ("nonempty", "unknown validator 'nonempty': expected one of non_empty, json"),
    ("no_such_package.checks:f", "cannot import 'no_such_package.checks'"),
    (f"{__name__}:missing", "has no attribute 'missing'"),
    (f"{__name__}:NOT_CALLABLE", "'NOT_CALLABLE' is not callable"),
    (f"{__name__}:", "expected 'package.module:function'"),
    (":no_apologies", "expected 'package.module:function'"),
])
def test_load_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="validator") as info:
        load_validator(spec)
    assert message in str(info.value)


def test_first_failure_names_the_first_validator_that_rejects() -> None:
    validators = [load_validator(n) for n in ("non_empty", "complete", "refusal")]
    assert first_failure(validators, _request(), _answer("fine")) is None
    assert first_failure(validators, _request(), _answer("cut", finish="length")) == ("complete", "length")
    assert first_failure(validators, _request(), _answer("", finish="content_filter")) == ("non_empty", "empty")
    assert first_failure([], _request(), _answer("")) is None


# --- streams --------------------------------------------------------------------------------------

def test_response_from_events_assembles_text_tool_calls_and_usage() -> None:
    events: list[StreamEvent] = [
        StreamStart("chatcmpl-1", "up-model", created=1700000000),
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"city": '),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(1, "{}"),
        ToolCallDelta(0, '"Oslo"}'),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(10, 20, cached_tokens=4)),
    ]
    response = response_from_events(events)
    assert (response.id, response.model, response.created) == ("chatcmpl-1", "up-model", 1700000000)
    assert response.usage == Usage(10, 20, cached_tokens=4)
    [choice] = response.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.text() == "Let me check."
    assert choice.message.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_b", "get_time", "{}"),
    ]
    validators = list(BUILTIN_VALIDATORS.values())
    assert first_failure(validators, _request(tools=[WEATHER, CLOCK]), response) is None


def test_response_from_events_keeps_choices_apart() -> None:
    events: list[StreamEvent] = [StreamStart("s", "m"), TextDelta("b", choice=1), TextDelta("a", choice=0),
              StreamFinish("length", choice=1), StreamFinish("stop", choice=0)]
    response = response_from_events(events)
    assert [(c.index, c.message.text(), c.finish_reason) for c in response.choices] == [
        (0, "a", "stop"), (1, "b", "length")]
    assert first_failure([BUILTIN_VALIDATORS["complete"]], _request(n=2), response) == ("complete", "length")


def test_response_from_an_empty_stream_is_empty() -> None:
    response = response_from_events([StreamStart("s", "m"), StreamFinish("stop")])
    assert response.choices[0].message.content == []
    assert response.usage == Usage()
    assert BUILTIN_VALIDATORS["non_empty"](_request(), response) == "empty"
    assert response_from_events([]).choices[0].finish_reason is None
