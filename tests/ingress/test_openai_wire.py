"""The OpenAI dialect: strict parsing, rendering that validates against OpenAI's schemas, SSE chunks."""

from __future__ import annotations

import array
import base64
import copy
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from switchboard.errors import (
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    SwitchboardError,
    UnsupportedParameter,
    UpstreamTimeout,
)
from switchboard.ingress.openai_wire import (
    OpenAIStreamEncoder,
    _parse_chat,
    parse_chat_request,
    parse_embedding_request,
    render_chat_response,
    render_embedding_response,
    render_error,
    render_models,
)
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingResponse,
    ImagePart,
    Message,
    StreamEvent,
    StreamFinish,
    StreamStart,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tests.contract.openapi import validate
from tests.ingress.frames import Frame, parse_frames
from tests.ingress.mutations import json_values, mostly, mutated

USER = {"role": "user", "content": "Hi"}
DELETE = object()


def body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid request with ``overrides`` applied (``DELETE`` removes a key)."""
    out: dict[str, Any] = {"model": "fast", "messages": [USER]}
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def with_message(message: Any, *before: dict[str, Any]) -> dict[str, Any]:
    return body(messages=[*before, message])


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
}
ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}


# --- valid requests -------------------------------------------------------------------------------


def test_minimal_request_has_canonical_defaults() -> None:
    req = parse_chat_request(body())
    assert req.model == "fast"
    assert req.messages == [Message("user", [TextPart("Hi")])]
    assert (req.stream, req.include_usage, req.n, req.stop, req.tools, req.metadata) == (
        False,
        False,
        1,
        [],
        [],
        {},
    )
    assert req.max_tokens is None
    assert req.temperature is None
    assert req.tool_choice is None


_LIMIT = st.integers(-1, 40) | st.sampled_from([2 ** 63 - 1, 2 ** 63])
_EDGES = [float("nan"), float("inf"), 2.0, 0.0, -0.0]
_MESSAGE = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["user", "user", "user", "system", "developer", "assistant", "tool"])),
     "content": mostly(st.text(max_size=4))},
)
_MESSAGES = mostly(st.lists(
    st.integers(0, 9).flatmap(lambda k: [_MESSAGE.map(lambda m: {**m, "name": "n"}), st.just({"role": "user"}),
                                         st.just({"role": "user", "content": [{"type": "text", "text": "hi"}]})][k]
                              if k < 3 else _MESSAGE),
    min_size=1, max_size=3,
))
_SHORT_BODIES = st.tuples(
    st.fixed_dictionaries(
        {"model": mostly(st.sampled_from(["m", "gpt-4o", ""])), "messages": _MESSAGES},
        optional={"max_tokens": mostly(_LIMIT), "max_completion_tokens": mostly(_LIMIT),
                  "temperature": mostly(st.floats(-0.5, 2.5) | st.integers(-1, 3) | st.sampled_from(_EDGES)),
                  "stream": mostly(st.booleans()), "user": mostly(st.text(max_size=3))},
    ),
    st.sampled_from([{}, {}, {}, {}, {"n": 2}, {"stream_options": {"include_usage": True}}]),
).map(lambda pair: {**pair[0], **pair[1]})


@settings(max_examples=1000, deadline=None)
@given(_SHORT_BODIES)
@example({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": float("nan")})
def test_common_requests_taking_the_short_way_parse_as_by_the_full_one(body: dict[str, Any]) -> None:
    """Bodies of the common shape skip most of the parser; any body gives the same request, or the same error,
    whichever way it goes."""

    def outcome(parse: Any) -> Any:
        try:
            return parse(body)
        except (SwitchboardError, OverflowError) as exc:
            return type(exc).__name__, str(exc), getattr(exc, "param", None)

    assert outcome(parse_chat_request) == outcome(_parse_chat)


def test_a_plain_chat_body_takes_the_short_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def full_way(body: object) -> ChatRequest:
        raise AssertionError("took the full way")

    monkeypatch.setattr("switchboard.ingress.openai_wire._parse_chat", full_way)
    req = parse_chat_request({"model": "m", "stream": True, "max_tokens": 20, "temperature": 1,
                              "messages": [{"role": "developer", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}]})
    assert req == ChatRequest(model="m", stream=True, max_tokens=20, temperature=1.0,
                              messages=[Message("system", [TextPart("Be brief.")]), Message("user", [TextPart("Hi")])])


def test_system_and_developer_become_system() -> None:
    req = parse_chat_request(
        body(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "Hi", "name": "ann"},
            ]
        )
    )
    assert [m.role for m in req.messages] == ["system", "system", "user"]
    assert req.messages[1].text() == "No emoji."
    assert req.messages[2].name == "ann"


def test_content_parts_with_images() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    req = parse_chat_request(with_message({"role": "user", "content": parts}))
    assert req.messages[0].content == [
        TextPart("What is this?"),
        ImagePart("https://example.com/cat.png"),
        ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png", detail="low"),
    ]


def test_tool_round_trip_messages() -> None:
    req = parse_chat_request(
        body(
            messages=[USER, ASSISTANT_CALL, {"role": "tool", "tool_call_id": "call_1", "content": "12C"}],
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
        )
    )
    assistant, tool = req.messages[1], req.messages[2]
    assert assistant.content == []
    assert assistant.tool_calls == [ToolCall("call_1", "get_weather", '{"city":"Oslo"}')]
    assert (tool.role, tool.tool_call_id, tool.name, tool.text()) == ("tool", "call_1", "get_weather", "12C")
    assert req.tools[0].name == "get_weather"
    assert req.tools[0].parameters == {"type": "object"}
    assert req.tool_choice is not None
    assert (req.tool_choice.mode, req.tool_choice.name) == (
        "tool",
        "get_weather",
    )
    assert req.parallel_tool_calls is False


def test_assistant_message_echoed_by_the_sdk_is_accepted() -> None:
    echoed = {
        "role": "assistant",
        "content": "Sure.",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    req = parse_chat_request(with_message(USER, USER, echoed))
    assert req.messages[1].text() == "Sure."


def test_refusal_in_history_is_kept_as_text() -> None:
    req = parse_chat_request(
        with_message(USER, USER, {"role": "assistant", "content": None, "refusal": "No."})
    )
    assert req.messages[1].text() == "No."


@pytest.mark.parametrize(
    ("choice", "mode"),
    [("none", "none"), ("auto", "auto"), ("required", "required")],
)
def test_tool_choice_strings(choice: str, mode: str) -> None:
    req = parse_chat_request(body(tools=[TOOL], tool_choice=choice))
    assert req.tool_choice is not None
    assert req.tool_choice.mode == mode


def test_auto_and_none_are_harmless_without_tools() -> None:
    assert parse_chat_request(body(tool_choice="none")).tool_choice is not None
    assert parse_chat_request(body(tool_choice="auto")).tools == []


def test_sampling_and_limits() -> None:
    req = parse_chat_request(
        body(
            temperature=0,
            top_p=1,
            n=3,
            seed=-7,
            stop="END",
            max_tokens=10,
            presence_penalty=-2,
            frequency_penalty=1.5,
            logit_bias={"50256": -100},
            reasoning_effort="low",
            user="u-1",
            metadata={"team": "search"},
        )
    )
    assert (req.temperature, req.top_p, req.n, req.seed, req.stop, req.max_tokens) == (
        0.0,
        1.0,
        3,
        -7,
        ["END"],
        10,
    )
    assert (req.presence_penalty, req.frequency_penalty) == (-2.0, 1.5)
    assert req.logit_bias == {"50256": -100.0}
    assert (req.reasoning_effort, req.user, req.metadata) == ("low", "u-1", {"team": "search"})


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert parse_chat_request(body(max_tokens=5, max_completion_tokens=9)).max_tokens == 9
    assert parse_chat_request(body(max_completion_tokens=9)).max_tokens == 9


def test_safety_identifier_stands_in_for_user() -> None:
    assert parse_chat_request(body(safety_identifier="s")).user == "s"
    assert parse_chat_request(body(safety_identifier="s", user="u")).user == "u"


def test_stream_with_usage() -> None:
    req = parse_chat_request(
        body(stream=True, stream_options={"include_usage": True, "include_obfuscation": False})
    )
    assert req.stream
    assert req.include_usage


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = parse_chat_request(
        body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema, "strict": True},
            }
        )
    ).response_format
    assert fmt is not None
    assert (fmt.type, fmt.name, fmt.schema, fmt.strict) == (
        "json_schema",
        "out",
        schema,
        True,
    )
    fmt = parse_chat_request(body(response_format={"type": "json_object"})).response_format
    assert fmt is not None
    assert fmt.type == "json_object"


def test_nulls_mean_not_given() -> None:
    keys = [
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed", "tools",
        "tool_choice", "parallel_tool_calls", "response_format", "stream", "stream_options", "user",
        "metadata", "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "logprobs",
        "top_logprobs", "functions", "function_call", "store", "service_tier", "modalities", "prediction",
        "audio", "web_search_options",
    ]  # fmt: skip
    req = parse_chat_request(body(**dict.fromkeys(keys)))
    assert req == parse_chat_request(body())


def test_harmless_parameters_are_ignored() -> None:
    req = parse_chat_request(
        body(store=True, service_tier="flex", prompt_cache_key="k", logprobs=False, modalities=["text"])
    )
    assert req == parse_chat_request(body())


# --- invalid requests -----------------------------------------------------------------------------

INVALID: list[tuple[str, Any, type[InvalidRequest], str | None]] = [
    ("not an object", ["model"], InvalidRequest, None),
    ("missing model", body(model=DELETE), InvalidRequest, "model"),
    ("model not a string", body(model=3), InvalidRequest, "model"),
    ("empty model", body(model=""), InvalidRequest, "model"),
    ("missing messages", body(messages=DELETE), InvalidRequest, "messages"),
    ("messages not a list", body(messages={"role": "user"}), InvalidRequest, "messages"),
    ("empty messages", body(messages=[]), InvalidRequest, "messages"),
    ("message not an object", body(messages=["hi"]), InvalidRequest, "messages[0]"),
    ("missing role", with_message({"content": "x"}), InvalidRequest, "messages[0].role"),
    ("unknown role", with_message({"role": "robot", "content": "x"}), InvalidRequest, "messages[0].role"),
    (
        "function role",
        with_message({"role": "function", "name": "f", "content": "x"}),
        UnsupportedParameter,
        "messages[0].role",
    ),
    (
        "unknown message key",
        with_message({"role": "user", "content": "x", "foo": 1}),
        InvalidRequest,
        "messages[0].foo",
    ),
    ("missing content", with_message({"role": "user"}), InvalidRequest, "messages[0].content"),
    ("content a number", with_message({"role": "user", "content": 5}), InvalidRequest, "messages[0].content"),
    (
        "empty content array",
        with_message({"role": "user", "content": []}),
        InvalidRequest,
        "messages[0].content",
    ),
    (
        "part not an object",
        with_message({"role": "user", "content": ["x"]}),
        InvalidRequest,
        "messages[0].content[0]",
    ),
    (
        "unknown part",
        with_message({"role": "user", "content": [{"type": "video"}]}),
        InvalidRequest,
        "messages[0].content[0].type",
    ),
    (
        "text part without text",
        with_message({"role": "user", "content": [{"type": "text"}]}),
        InvalidRequest,
        "messages[0].content[0].text",
    ),
    (
        "image part without image_url",
        with_message({"role": "user", "content": [{"type": "image_url"}]}),
        InvalidRequest,
        "messages[0].content[0].image_url",
    ),
    (
        "image url scheme",
        with_message(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
        ),
        InvalidRequest,
        "messages[0].content[0].image_url.url",
    ),
    (
        "image data url",
        with_message(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}],
            }
        ),
        InvalidRequest,
        "messages[0].content[0].image_url.url",
    ),
    (
        "image detail",
        with_message(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://x.io/a.png", "detail": "ultra"}}
                ],
            }
        ),
        InvalidRequest,
        "messages[0].content[0].image_url.detail",
    ),
    (
        "input_audio part",
        with_message({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}),
        UnsupportedParameter,
        "messages[0].content[0]",
    ),
    (
        "file part",
        with_message({"role": "user", "content": [{"type": "file", "file": {}}]}),
        UnsupportedParameter,
        "messages[0].content[0]",
    ),
    (
        "image in system",
        with_message(
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.io/a.png"}}]}
        ),
        InvalidRequest,
        "messages[0].content[0].type",
    ),
    (
        "assistant without content",
        with_message({"role": "assistant"}, USER),
        InvalidRequest,
        "messages[1].content",
    ),
    (
        "assistant function_call",
        with_message({"role": "assistant", "function_call": {"name": "f"}}, USER),
        UnsupportedParameter,
        "messages[1].function_call",
    ),
    (
        "tool call type",
        with_message({"role": "assistant", "tool_calls": [{**CALL, "type": "fn"}]}, USER),
        InvalidRequest,
        "messages[1].tool_calls[0].type",
    ),
    (
        "tool call name",
        with_message({"role": "assistant", "tool_calls": [{**CALL, "function": {"arguments": "{}"}}]}, USER),
        InvalidRequest,
        "messages[1].tool_calls[0].function.name",
    ),
    (
        "tool call arguments object",
        with_message(
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}, USER
        ),
        InvalidRequest,
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool without tool_call_id",
        with_message({"role": "tool", "content": "x"}, USER),
        InvalidRequest,
        "messages[1].tool_call_id",
    ),
    ("temperature bool", body(temperature=True), InvalidRequest, "temperature"),
    ("temperature string", body(temperature="1"), InvalidRequest, "temperature"),
    ("temperature high", body(temperature=2.5), InvalidRequest, "temperature"),
    ("temperature negative", body(temperature=-0.1), InvalidRequest, "temperature"),
    ("top_p high", body(top_p=1.01), InvalidRequest, "top_p"),
    ("n zero", body(n=0), InvalidRequest, "n"),
    ("n too many", body(n=129), InvalidRequest, "n"),
    ("n decimal", body(n=1.5), InvalidRequest, "n"),
    ("max_tokens zero", body(max_tokens=0), InvalidRequest, "max_tokens"),
    ("max_tokens bool", body(max_tokens=True), InvalidRequest, "max_tokens"),
    (
        "max_completion_tokens string",
        body(max_completion_tokens="5"),
        InvalidRequest,
        "max_completion_tokens",
    ),
    ("presence_penalty", body(presence_penalty=2.5), InvalidRequest, "presence_penalty"),
    ("frequency_penalty", body(frequency_penalty=-3), InvalidRequest, "frequency_penalty"),
    ("stop too many", body(stop=["a", "b", "c", "d", "e"]), InvalidRequest, "stop"),
    ("stop item", body(stop=["a", 1]), InvalidRequest, "stop[1]"),
    ("stop number", body(stop=5), InvalidRequest, "stop"),
    ("seed string", body(seed="1"), InvalidRequest, "seed"),
    ("seed beyond int64", body(seed=2**64), InvalidRequest, "seed"),
    ("stream string", body(stream="yes"), InvalidRequest, "stream"),
    (
        "stream_options without stream",
        body(stream_options={"include_usage": True}),
        InvalidRequest,
        "stream_options",
    ),
    (
        "stream_options include_usage",
        body(stream=True, stream_options={"include_usage": "yes"}),
        InvalidRequest,
        "stream_options.include_usage",
    ),
    (
        "stream_options unknown",
        body(stream=True, stream_options={"x": 1}),
        InvalidRequest,
        "stream_options.x",
    ),
    ("tools not a list", body(tools=TOOL), InvalidRequest, "tools"),
    (
        "custom tool",
        body(tools=[{"type": "custom", "custom": {"name": "x"}}]),
        UnsupportedParameter,
        "tools[0]",
    ),
    ("tool type", body(tools=[{"type": "fn"}]), InvalidRequest, "tools[0].type"),
    ("tool without function", body(tools=[{"type": "function"}]), InvalidRequest, "tools[0].function"),
    (
        "tool name pattern",
        body(tools=[{"type": "function", "function": {"name": "get weather"}}]),
        InvalidRequest,
        "tools[0].function.name",
    ),
    (
        "tool name too long",
        body(tools=[{"type": "function", "function": {"name": "x" * 65}}]),
        InvalidRequest,
        "tools[0].function.name",
    ),
    (
        "tool parameters not an object",
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        InvalidRequest,
        "tools[0].function.parameters",
    ),
    ("duplicate tools", body(tools=[TOOL, TOOL]), InvalidRequest, "tools[1].function.name"),
    ("tool_choice value", body(tools=[TOOL], tool_choice="maybe"), InvalidRequest, "tool_choice"),
    ("required without tools", body(tool_choice="required"), InvalidRequest, "tool_choice"),
    (
        "tool_choice undeclared",
        body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
        InvalidRequest,
        "tool_choice.function.name",
    ),
    (
        "tool_choice allowed_tools",
        body(tools=[TOOL], tool_choice={"type": "allowed_tools"}),
        UnsupportedParameter,
        "tool_choice",
    ),
    ("response_format type", body(response_format={"type": "yaml"}), InvalidRequest, "response_format.type"),
    (
        "json_schema without name",
        body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        InvalidRequest,
        "response_format.json_schema.name",
    ),
    (
        "json_schema schema",
        body(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": 1}}),
        InvalidRequest,
        "response_format.json_schema.schema",
    ),
    ("metadata value", body(metadata={"k": 1}), InvalidRequest, "metadata.k"),
    ("metadata too many keys", body(metadata={f"k{i}": "v" for i in range(17)}), InvalidRequest, "metadata"),
    ("logit_bias key", body(logit_bias={"abc": 1}), InvalidRequest, "logit_bias"),
    ("logit_bias value", body(logit_bias={"50256": 101}), InvalidRequest, "logit_bias.50256"),
    ("reasoning_effort", body(reasoning_effort="extreme"), InvalidRequest, "reasoning_effort"),
    ("user not a string", body(user=5), InvalidRequest, "user"),
    ("store not a bool", body(store="yes"), InvalidRequest, "store"),
    ("unknown argument", body(foo=1), InvalidRequest, "foo"),
    ("logprobs", body(logprobs=True), UnsupportedParameter, "logprobs"),
    ("top_logprobs", body(top_logprobs=2), UnsupportedParameter, "top_logprobs"),
    ("functions", body(functions=[{"name": "f"}]), UnsupportedParameter, "functions"),
    ("function_call", body(function_call="auto"), UnsupportedParameter, "function_call"),
    ("audio", body(audio={"voice": "alloy", "format": "mp3"}), UnsupportedParameter, "audio"),
    ("audio modality", body(modalities=["text", "audio"]), UnsupportedParameter, "modalities"),
    ("prediction", body(prediction={"type": "content", "content": "x"}), UnsupportedParameter, "prediction"),
    ("web_search_options", body(web_search_options={}), UnsupportedParameter, "web_search_options"),
]


@pytest.mark.parametrize(("case", "payload", "error", "param"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests(case: str, payload: Any, error: type[InvalidRequest], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(payload)
    err = info.value
    assert type(err) is error, err.message
    assert (err.status, err.openai_type, err.param) == (400, "invalid_request_error", param), err.message
    if error is UnsupportedParameter:
        assert err.code == "unsupported_parameter"
    assert param is None or param in err.message


def test_unknown_argument_message_matches_openai() -> None:
    with pytest.raises(InvalidRequest, match=r"^Unrecognized request argument supplied: foo$"):
        parse_chat_request(body(foo=1))


# --- rendering ------------------------------------------------------------------------------------


def response(message: Message, finish: Any = "stop", usage: Usage | None = None) -> ChatResponse:
    return ChatResponse(
        id="chatcmpl-1",
        model="upstream-model",
        choices=[Choice(0, message, finish)],
        usage=usage or Usage(input_tokens=12, output_tokens=5, cached_tokens=4, reasoning_tokens=2),
        created=1_700_000_000,
    )


def test_render_text_response() -> None:
    out = render_chat_response(response(Message("assistant", [TextPart("Hello")])), model="fast")
    validate("CreateChatCompletionResponse", out)
    ChatCompletion.model_validate(out)
    assert out["model"] == "fast"
    assert out["object"] == "chat.completion"
    assert out["created"] == 1_700_000_000
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert "system_fingerprint" not in out


def test_render_tool_call_response() -> None:
    call = ToolCall("call_1", "get_weather", '{"city":"Oslo"}')
    out = render_chat_response(response(Message("assistant", tool_calls=[call]), finish=None), model="fast")
    validate("CreateChatCompletionResponse", out)
    parsed = ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["message"]["content"] is None
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert parsed.choices[0].message.tool_calls is not None


def test_render_refusal_without_text() -> None:
    message = Message("assistant", refusal="I can't help with that.")
    out = render_chat_response(response(message), model="fast")
    validate("CreateChatCompletionResponse", out)
    parsed = ChatCompletion.model_validate(out).choices[0]
    assert parsed.message.refusal == "I can't help with that."
    assert parsed.message.content is None  # as OpenAI sends a refusal
    assert parsed.finish_reason == "stop"


def test_render_refusal_beside_text_keeps_both() -> None:
    message = Message("assistant", [TextPart("I won't.")], refusal="I won't.")
    out = render_chat_response(response(message, finish="content_filter"), model="fast")
    validate("CreateChatCompletionResponse", out)
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "I won't.", "refusal": "I won't."}
    assert choice["finish_reason"] == "content_filter"


def test_render_reports_cache_writes_and_fills_created() -> None:
    resp = response(Message("assistant"), usage=Usage(input_tokens=10, cache_write_tokens=6))
    resp.created = 0
    out = render_chat_response(resp, model="fast")
    validate("CreateChatCompletionResponse", out)
    assert out["created"] > 1_700_000_000
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 6}
    assert out["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    "err",
    [
        InvalidRequest("bad", param="messages[0]"),
        UnsupportedParameter("nope", param="audio"),
        ModelNotFound("The model 'x' does not exist."),
        RateLimited("slow down", retry_after=2.0),
        UpstreamTimeout("late"),
    ],
)
def test_render_error_has_all_four_keys(err: SwitchboardError) -> None:
    out = render_error(err)
    validate("ErrorResponse", out)
    assert out == {
        "error": {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}
    }


def test_render_models() -> None:
    out = render_models([("fast", "switchboard"), ("smart", "acme")], created=1_700_000_000)
    validate("ListModelsResponse", out)
    assert [Model.model_validate(m).id for m in out["data"]] == ["fast", "smart"]
    assert out["data"][1] == {"id": "smart", "object": "model", "created": 1_700_000_000, "owned_by": "acme"}


# --- embeddings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "inputs"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_embedding_inputs(raw: Any, inputs: Any) -> None:
    req = parse_embedding_request({"model": "emb", "input": raw})
    assert req.inputs == inputs
    assert req.encoding_format == "float"


def test_embedding_options() -> None:
    req = parse_embedding_request(
        {"model": "emb", "input": "x", "encoding_format": "base64", "dimensions": 256, "user": "u"}
    )
    assert (req.encoding_format, req.dimensions, req.user) == ("base64", 256, "u")


EMBEDDING_INVALID = [
    ({"input": "x"}, "model"),
    ({"model": "emb"}, "input"),
    ({"model": "emb", "input": ""}, "input"),
    ({"model": "emb", "input": []}, "input"),
    ({"model": "emb", "input": ["a", ""]}, "input[1]"),
    ({"model": "emb", "input": ["a", 1]}, "input[1]"),
    ({"model": "emb", "input": [1, "a"]}, "input[1]"),
    ({"model": "emb", "input": [[1], []]}, "input[1]"),
    ({"model": "emb", "input": [[1], [-1]]}, "input[1][0]"),
    ({"model": "emb", "input": [True]}, "input[0]"),
    ({"model": "emb", "input": {"text": "x"}}, "input"),
    ({"model": "emb", "input": ["x"] * 2049}, "input"),
    ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "emb", "input": "x", "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("payload", "param"), EMBEDDING_INVALID)
def test_invalid_embedding_requests(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embedding_request(payload)
    assert (info.value.status, info.value.param) == (400, param)


def test_render_embeddings_float_and_base64() -> None:
    resp = EmbeddingResponse(model="up", vectors=[[0.5, -1.25], [3.0, 0.0]], usage=Usage(input_tokens=7))
    floats = render_embedding_response(resp, model="emb", encoding_format="float")
    validate("CreateEmbeddingResponse", floats)
    CreateEmbeddingResponse.model_validate(floats)
    assert floats["data"][1] == {"object": "embedding", "index": 1, "embedding": [3.0, 0.0]}
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}

    encoded = render_embedding_response(resp, model="emb", encoding_format="base64")
    validate("CreateEmbeddingResponse", encoded)
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert raw == b"\x00\x00\x00\x3f\x00\x00\xa0\xbf"  # little-endian float32 0.5, -1.25
    assert array.array("f", raw).tolist() == [0.5, -1.25]  # how the official SDK decodes it


# --- streaming ------------------------------------------------------------------------------------


def run(encoder: OpenAIStreamEncoder, events: list[StreamEvent]) -> list[Frame]:
    raw = b"".join(encoder.encode(e) for e in events) + encoder.done()
    return parse_frames(raw)


def chunks(frames: list[Frame]) -> list[dict[str, Any]]:
    """The JSON chunks before ``[DONE]``, each checked against the spec and the SDK."""
    assert frames[-1] == Frame(None, "[DONE]")
    out = []
    for frame in frames[:-1]:
        assert frame.event is None
        chunk = frame.json()
        validate("CreateChatCompletionStreamResponse", chunk)
        ChatCompletionChunk.model_validate(chunk)
        out.append(chunk)
    assert len({(c["id"], c["created"], c["model"]) for c in out}) == 1
    return out


def final_completion(frames: list[Frame]) -> Any:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks(frames):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


USAGE = Usage(input_tokens=9, output_tokens=3, cached_tokens=1)


def test_text_stream_frames() -> None:
    events: list[StreamEvent] = [
        StreamStart("chatcmpl-up", "upstream", created=1_700_000_001),
        TextDelta("Hel"),
        TextDelta("lo"),
        StreamFinish("stop"),
        StreamUsage(USAGE),
    ]
    out = chunks(run(OpenAIStreamEncoder("fast", include_usage=True), events))
    assert [c["choices"] for c in out] == [
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "Hel"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        [{"index": 0, "delta": {"content": "lo"}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        [],
    ]
    assert out[0]["id"] == "chatcmpl-up"
    assert out[0]["created"] == 1_700_000_001
    assert out[0]["model"] == "fast"
    assert out[-1]["usage"]["prompt_tokens"] == 9
    assert out[-1]["usage"]["total_tokens"] == 12
    assert all("usage" not in c for c in out[:-1])


def test_usage_is_not_sent_unless_asked() -> None:
    events = [StreamStart("c", "u"), TextDelta("x"), StreamFinish("stop"), StreamUsage(USAGE)]
    out = chunks(run(OpenAIStreamEncoder("fast", include_usage=False), events))
    assert all(c["choices"] for c in out)


@settings(max_examples=200)
@given(model=st.text(max_size=20), upstream_id=st.text(max_size=20), created=st.integers(0, 2**40),
       texts=st.lists(st.tuples(st.integers(0, 2), st.text(min_size=1)), min_size=1, max_size=8))
def test_text_chunks_are_the_bytes_of_their_json(model: str, upstream_id: str, created: int,
                                                 texts: list[tuple[int, str]]) -> None:
    """Text deltas after a choice's first reuse its rendered head; the bytes stay those of the chunk's JSON."""
    enc = OpenAIStreamEncoder(model, include_usage=False)
    enc.encode(StreamStart(upstream_id, model, created))
    seen: set[int] = set()
    for choice, text in texts:
        delta: dict[str, Any] = {"content": text} if choice in seen else {"role": "assistant", "content": text}
        seen.add(choice)
        chunk = {"id": upstream_id or enc._id, "object": "chat.completion.chunk", "created": created or enc._created,
                 "model": model, "choices": [{"index": choice, "delta": delta, "logprobs": None,
                                              "finish_reason": None}]}
        assert enc.encode(TextDelta(text, choice)) == b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_usage_before_finish_is_held_until_the_choices_finish() -> None:
    enc = OpenAIStreamEncoder("fast", include_usage=True)
    assert enc.encode(StreamStart("c", "u")) == b""
    enc.encode(TextDelta("x"))
    assert enc.encode(StreamUsage(USAGE)) == b""
    finish = parse_frames(enc.encode(StreamFinish("length")))
    assert [f.json()["choices"] for f in finish][1] == []
    assert finish[0].json()["choices"][0]["finish_reason"] == "length"
    assert enc.done() == b"data: [DONE]\n\n"


def test_tool_call_stream_frames() -> None:
    events: list[StreamEvent] = [
        StreamStart("c", "u"),
        ToolCallStart(0, "call_1", "get_weather"),
        ToolCallDelta(0, '{"city":'),
        ToolCallDelta(0, '"Oslo"}'),
        ToolCallStart(1, "call_2", "get_time"),
        ToolCallDelta(1, "{}"),
        StreamFinish(None),
    ]
    frames = run(OpenAIStreamEncoder("fast", include_usage=False), events)
    deltas = [c["choices"][0]["delta"] for c in chunks(frames)]
    assert deltas[0] == {
        "role": "assistant",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}
    assert chunks(frames)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    message = final_completion(frames).choices[0].message
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "get_weather", '{"city":"Oslo"}'),
        ("call_2", "get_time", "{}"),
    ]


def test_several_choices_each_announce_their_role_once() -> None:
    events: list[StreamEvent] = [
        StreamStart("c", "u"),
        TextDelta("a", choice=0),
        TextDelta("b", choice=1),
        TextDelta("c", choice=0),
        StreamFinish("stop", choice=1),
        StreamFinish("stop", choice=0),
        StreamUsage(USAGE),
    ]
    frames = run(OpenAIStreamEncoder("fast", include_usage=True), events)
    roles = [
        (ch["index"], "role" in ch["delta"]) for c in chunks(frames) for ch in c["choices"] if ch["delta"]
    ]
    assert roles == [(0, True), (1, True), (0, False)]
    completion = final_completion(frames)
    assert [c.message.content for c in completion.choices] == ["ac", "b"]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_finish_without_content_still_announces_the_role() -> None:
    frames = run(
        OpenAIStreamEncoder("fast", include_usage=False), [StreamStart("c", "u"), StreamFinish("stop")]
    )
    assert chunks(frames)[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_stream_error_frame() -> None:
    enc = OpenAIStreamEncoder("fast", include_usage=True)
    enc.encode(StreamStart("c", "u"))
    frames = parse_frames(
        enc.encode(TextDelta("partial")) + enc.error(UpstreamTimeout("upstream went quiet"))
    )
    assert frames[-1].event == "error"
    payload = frames[-1].json()
    validate("ErrorResponse", payload)
    assert payload["error"] == {
        "message": "upstream went quiet",
        "type": "timeout_error",
        "param": None,
        "code": "upstream_timeout",
    }


# --- properties -----------------------------------------------------------------------------------

RICH = body(
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "image_url", "image_url": {"url": "https://x.io/a.png"}}]},
        ASSISTANT_CALL,
        {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
    ],
    tools=[TOOL],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
    stream=True,
    stream_options={"include_usage": True},
    stop=["END"],
    temperature=0.5,
    max_tokens=100,
    metadata={"a": "b"},
    logit_bias={"1": 2},
)  # fmt: skip


def only_switchboard_errors(parse: Any, payload: Any) -> None:
    failure: SwitchboardError | None = None
    try:
        parse(payload)
    except SwitchboardError as err:
        failure = err
    assert failure is None or (failure.status == 400 and bool(failure.message))


@given(json_values)
@settings(max_examples=300)
def test_random_json_never_crashes_the_parsers(value: Any) -> None:
    only_switchboard_errors(parse_chat_request, value)
    only_switchboard_errors(parse_embedding_request, value)
    only_switchboard_errors(parse_chat_request, body(messages=value))
    only_switchboard_errors(parse_chat_request, body(tools=value))


@given(mutated(RICH))
@settings(max_examples=500)
def test_mutated_requests_never_crash_the_parser(payload: Any) -> None:
    only_switchboard_errors(parse_chat_request, payload)


@given(mutated({"model": "emb", "input": [[1, 2], [3]], "encoding_format": "base64", "dimensions": 8}))
def test_mutated_embedding_requests_never_crash_the_parser(payload: Any) -> None:
    only_switchboard_errors(parse_embedding_request, payload)


def test_rich_request_is_valid() -> None:
    req = parse_chat_request(copy.deepcopy(RICH))
    assert len(req.messages) == 4
    assert req.include_usage


@given(st.lists(st.tuples(st.integers(0, 2), st.text(max_size=8)), max_size=30))
def test_streamed_tool_arguments_concatenate_to_the_original(pieces: list[tuple[int, str]]) -> None:
    enc = OpenAIStreamEncoder("fast", include_usage=False)
    events: list[StreamEvent] = [StreamStart("c", "u")]
    events += [ToolCallStart(i, f"call_{i}", f"tool_{i}") for i in range(3)]
    events += [ToolCallDelta(index, piece) for index, piece in pieces]
    events.append(StreamFinish("tool_calls"))
    calls = final_completion(run(enc, events)).choices[0].message.tool_calls
    for i in range(3):
        assert calls[i].function.arguments == "".join(p for idx, p in pieces if idx == i)
