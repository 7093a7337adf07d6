"""The Anthropic Messages dialect: strict parsing, rendering, and the streamed event sequence."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from switchboard.errors import (
    InvalidRequest,
    NoHealthyDeployment,
    RateLimited,
    SwitchboardError,
    UnsupportedParameter,
    UpstreamOverloaded,
)
from switchboard.ingress.anthropic_wire import (
    AnthropicStreamEncoder,
    _parse_messages,
    parse_count_tokens_request,
    parse_messages_request,
    render_error,
    render_message_response,
)
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
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
from tests.ingress.frames import Frame, parse_frames
from tests.ingress.mutations import json_values, mostly, mutated

USER = {"role": "user", "content": "Hi"}
DELETE = object()
EVENT = TypeAdapter(RawMessageStreamEvent)


def body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid request with ``overrides`` applied (``DELETE`` removes a key)."""
    out: dict[str, Any] = {"model": "claude-fast", "max_tokens": 256, "messages": [USER]}
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


TOOL = {"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}



# --- the short way --------------------------------------------------------------------------------

_TURN = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["user", "user", "assistant"])), "content": mostly(st.text(max_size=4))},
)
_TURNS = mostly(st.lists(
    # One turn in ten is of a shape the short way leaves to the full one.
    st.integers(0, 29).flatmap(lambda k: [_TURN.map(lambda m: {**m, "name": "n"}), st.just({"role": "user"}),
                                          st.just({"role": "user", "content": [{"type": "text", "text": "hi"}]})][k]
                               if k < 3 else _TURN),
    min_size=1, max_size=2,
))
_SHORT_BODIES = st.tuples(
    st.fixed_dictionaries(
        {"model": mostly(st.sampled_from(["m", "claude-fast", ""])), "messages": _TURNS,
         "max_tokens": mostly(st.integers(-1, 40) | st.sampled_from([2 ** 63 - 1, 2 ** 63]))},
        optional={"system": mostly(st.text(max_size=3) | st.just([{"type": "text", "text": "Be brief."}])),
                  "temperature": mostly(st.floats(-0.5, 1.5) | st.integers(-1, 2) | st.sampled_from([0.5, 1.2])
                                         | st.sampled_from([float("nan"), float("inf"), 1.0, 0.0, -0.0])),
                  "stream": mostly(st.booleans()),
                  "metadata": mostly(st.fixed_dictionaries({}, optional={"user_id": mostly(st.text(max_size=3))})
                                      | st.just({"user_id": "u", "other": 1}))},
    ),
    st.sampled_from([{}, {}, {}, {}, {"top_k": 5}, {"stop_sequences": ["END"]}]),
).map(lambda pair: {**pair[0], **pair[1]})


@settings(max_examples=1000, deadline=None)
@given(_SHORT_BODIES)
@example({"model": "m", "max_tokens": 5, "messages": [USER], "temperature": float("nan")})
@example({"model": "m", "max_tokens": 5, "messages": [USER], "system": "", "metadata": {}})
@example({"model": "m", "max_tokens": 5, "messages": []})
@example({"model": "m", "max_tokens": 5, "messages": [USER], "metadata": {"user_id": 7}})
@example({"model": "m", "max_tokens": 5, "messages": [USER], "stream": "yes"})
@example({"model": "m", "max_tokens": 5, "messages": [USER], "temperature": True})
def test_common_requests_taking_the_short_way_parse_as_by_the_full_one(body: dict[str, Any]) -> None:
    """Bodies of the common shape skip most of the parser; any body gives the same request, or the same error,
    whichever way it goes."""

    def outcome(parse: Any) -> Any:
        try:
            return parse(body)
        except (SwitchboardError, OverflowError) as exc:
            return type(exc).__name__, str(exc), getattr(exc, "param", None)

    assert outcome(parse_messages_request) == outcome(_parse_messages)


def test_a_plain_messages_body_takes_the_short_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def full_way(body: object) -> ChatRequest:
        raise AssertionError("took the full way")

    monkeypatch.setattr("switchboard.ingress.anthropic_wire._parse_messages", full_way)
    req = parse_messages_request({"model": "m", "max_tokens": 20, "stream": True, "temperature": 1,
                                  "system": "Be brief.", "metadata": {"user_id": "u-1"},
                                  "messages": [USER, {"role": "assistant", "content": "Hello."}, USER]})
    assert req == ChatRequest(model="m", max_tokens=20, stream=True, temperature=1.0, user="u-1", messages=[
        Message("system", [TextPart("Be brief.")]), Message("user", [TextPart("Hi")]),
        Message("assistant", [TextPart("Hello.")]), Message("user", [TextPart("Hi")])])


# --- valid requests -------------------------------------------------------------------------------


def test_minimal_request() -> None:
    req = parse_messages_request(body())
    assert (req.model, req.max_tokens, req.stream, req.stop, req.tools) == ("claude-fast", 256, False, [], [])
    assert req.messages == [Message("user", [TextPart("Hi")])]


def test_system_string_and_blocks() -> None:
    req = parse_messages_request(body(system="Be brief."))
    assert req.messages[0] == Message("system", [TextPart("Be brief.")])
    blocks = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": " Really."},
    ]
    req = parse_messages_request(body(system=blocks))
    assert req.messages[0].text() == "Be brief. Really."
    assert req.messages[0].role == "system"
    assert parse_messages_request(body(system="")).messages[0].role == "user"


def test_images() -> None:
    req = parse_messages_request(
        body(
            messages=[
                user(
                    {"type": "image", "source": PNG},
                    {"type": "image", "source": {"type": "url", "url": "https://x.io/a.jpg"}},
                    {"type": "text", "text": "Same?"},
                )
            ]
        )
    )
    assert req.messages[0].content == [
        ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png"),
        ImagePart("https://x.io/a.jpg"),
        TextPart("Same?"),
    ]


def test_tool_use_and_results_become_canonical_turns() -> None:
    req = parse_messages_request(
        body(
            messages=[
                USER,
                assistant({"type": "text", "text": "Checking."}, TOOL_USE),
                user(
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                     "content": [{"type": "text", "text": "boom"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ),
            ],
            tools=[TOOL],
        )
    )  # fmt: skip
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    call = req.messages[1]
    assert call.text() == "Checking."
    assert call.tool_calls == [ToolCall("toolu_1", "get_weather", '{"city":"Oslo"}')]
    first, second = req.messages[2], req.messages[3]
    assert (first.tool_call_id, first.name, first.text(), first.is_error) == (
        "toolu_1",
        "get_weather",
        "12C",
        False,
    )
    assert (second.tool_call_id, second.name, second.text(), second.is_error) == (
        "toolu_2",
        None,
        "boom",
        True,
    )
    assert req.messages[4] == Message("user", [TextPart("And tomorrow?")])


def test_tool_result_only_turn_has_no_empty_user_message() -> None:
    req = parse_messages_request(
        body(messages=[USER, assistant(TOOL_USE), user({"type": "tool_result", "tool_use_id": "toolu_1"})])
    )
    assert [m.role for m in req.messages] == ["user", "assistant", "tool"]
    assert req.messages[2].content == []


def test_consecutive_same_role_turns_are_accepted() -> None:
    req = parse_messages_request(body(messages=[USER, USER, {"role": "assistant", "content": "Hm"}]))
    assert [m.role for m in req.messages] == ["user", "user", "assistant"]


def test_thinking_blocks_in_history_are_dropped() -> None:
    req = parse_messages_request(
        body(
            messages=[
                USER,
                assistant(
                    {"type": "thinking", "thinking": "Let me see", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Hello"},
                ),
                USER,
            ]
        )
    )
    assert req.messages[1] == Message("assistant", [TextPart("Hello")])


def test_sampling_stop_stream_and_metadata() -> None:
    req = parse_messages_request(
        body(
            temperature=1,
            top_p=0.9,
            top_k=40,
            stop_sequences=["\n\nHuman:"],
            stream=True,
            metadata={"user_id": "u-42"},
            service_tier="auto",
            cache_control={"type": "ephemeral"},
        )
    )
    assert (req.temperature, req.top_p, req.top_k, req.stop) == (1.0, 0.9, 40, ["\n\nHuman:"])
    assert req.stream
    assert req.user == "u-42"


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", None, False),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": False},
            "tool",
            "get_weather",
            True,
        ),
        ({"type": "none"}, "none", None, None),
    ],
)
def test_tool_choice(choice: dict[str, Any], mode: str, name: str | None, parallel: bool | None) -> None:
    req = parse_messages_request(body(tools=[TOOL], tool_choice=choice))
    assert req.tool_choice is not None
    assert (req.tool_choice.mode, req.tool_choice.name, req.parallel_tool_calls) == (mode, name, parallel)
    assert req.tools[0].name == "get_weather"
    assert req.tools[0].description == "Weather now"


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, "medium"),
        ({"type": "enabled", "budget_tokens": 20000}, "high"),
        ({"type": "disabled"}, None),
        ({"type": "adaptive", "display": "summarized"}, None),
    ],
)
def test_thinking_maps_onto_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    assert parse_messages_request(body(max_tokens=32000, thinking=thinking)).reasoning_effort == effort


def test_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    req = parse_messages_request(
        body(
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}},
            thinking={"type": "enabled", "budget_tokens": 1024},
            max_tokens=2048,
        )
    )
    assert req.reasoning_effort == "max"
    assert req.response_format is not None
    assert (req.response_format.type, req.response_format.schema) == ("json_schema", schema)


# --- invalid requests -----------------------------------------------------------------------------

INVALID: list[tuple[str, Any, type[InvalidRequest], str | None]] = [
    ("not an object", "hello", InvalidRequest, None),
    ("missing model", body(model=DELETE), InvalidRequest, "model"),
    ("missing max_tokens", body(max_tokens=DELETE), InvalidRequest, "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), InvalidRequest, "max_tokens"),
    ("max_tokens float", body(max_tokens=1.5), InvalidRequest, "max_tokens"),
    ("max_tokens bool", body(max_tokens=True), InvalidRequest, "max_tokens"),
    ("missing messages", body(messages=DELETE), InvalidRequest, "messages"),
    ("empty messages", body(messages=[]), InvalidRequest, "messages"),
    ("message not an object", body(messages=[1]), InvalidRequest, "messages.0"),
    ("system role", body(messages=[{"role": "system", "content": "x"}]), InvalidRequest, "messages.0.role"),
    ("missing content", body(messages=[{"role": "user"}]), InvalidRequest, "messages.0.content"),
    ("extra message key", body(messages=[{**USER, "name": "x"}]), InvalidRequest, "messages.0.name"),
    (
        "content a number",
        body(messages=[{"role": "user", "content": 3}]),
        InvalidRequest,
        "messages.0.content",
    ),
    ("empty content", body(messages=[user()]), InvalidRequest, "messages.0.content"),
    ("block without type", body(messages=[user({"text": "x"})]), InvalidRequest, "messages.0.content.0.type"),
    ("unknown block", body(messages=[user({"type": "video"})]), InvalidRequest, "messages.0.content.0.type"),
    (
        "text without text",
        body(messages=[user({"type": "text"})]),
        InvalidRequest,
        "messages.0.content.0.text",
    ),
    (
        "extra text key",
        body(messages=[user({"type": "text", "text": "x", "foo": 1})]),
        InvalidRequest,
        "messages.0.content.0.foo",
    ),
    (
        "image without source",
        body(messages=[user({"type": "image"})]),
        InvalidRequest,
        "messages.0.content.0.source",
    ),
    (
        "image media type",
        body(messages=[user({"type": "image", "source": {**PNG, "media_type": "image/bmp"}})]),
        InvalidRequest,
        "messages.0.content.0.source.media_type",
    ),
    (
        "image source type",
        body(messages=[user({"type": "image", "source": {"type": "s3"}})]),
        InvalidRequest,
        "messages.0.content.0.source.type",
    ),
    (
        "image url scheme",
        body(messages=[user({"type": "image", "source": {"type": "url", "url": "ftp://x"}})]),
        InvalidRequest,
        "messages.0.content.0.source.url",
    ),
    (
        "image file source",
        body(messages=[user({"type": "image", "source": {"type": "file", "file_id": "f"}})]),
        UnsupportedParameter,
        "messages.0.content.0.source",
    ),
    (
        "document",
        body(messages=[user({"type": "document", "source": {}})]),
        UnsupportedParameter,
        "messages.0.content.0",
    ),
    ("tool_use from user", body(messages=[user(TOOL_USE)]), InvalidRequest, "messages.0.content.0.type"),
    (
        "tool_result from assistant",
        body(messages=[USER, assistant({"type": "tool_result", "tool_use_id": "t"})]),
        InvalidRequest,
        "messages.1.content.0.type",
    ),
    (
        "image from assistant",
        body(messages=[USER, assistant({"type": "image", "source": PNG})]),
        InvalidRequest,
        "messages.1.content.0.type",
    ),
    (
        "tool_use input not an object",
        body(messages=[USER, assistant({**TOOL_USE, "input": "x"})]),
        InvalidRequest,
        "messages.1.content.0.input",
    ),
    (
        "tool_use input not serialisable",
        body(messages=[USER, assistant({**TOOL_USE, "input": {"n": 2**70}})]),
        InvalidRequest,
        "messages.1.content.0.input",
    ),
    (
        "tool_result without id",
        body(messages=[user({"type": "tool_result", "content": "x"})]),
        InvalidRequest,
        "messages.0.content.0.tool_use_id",
    ),
    (
        "tool_result is_error",
        body(messages=[user({"type": "tool_result", "tool_use_id": "t", "is_error": 1})]),
        InvalidRequest,
        "messages.0.content.0.is_error",
    ),
    (
        "tool_result document",
        body(messages=[user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]})]),
        UnsupportedParameter,
        "messages.0.content.0.content.0",
    ),
    ("system block type", body(system=[{"type": "image"}]), InvalidRequest, "system.0.type"),
    ("system number", body(system=5), InvalidRequest, "system"),
    ("temperature above 1", body(temperature=1.5), InvalidRequest, "temperature"),
    ("temperature bool", body(temperature=False), InvalidRequest, "temperature"),
    ("top_p", body(top_p=2), InvalidRequest, "top_p"),
    ("top_k negative", body(top_k=-1), InvalidRequest, "top_k"),
    ("stop_sequences string", body(stop_sequences="x"), InvalidRequest, "stop_sequences"),
    ("stop_sequences item", body(stop_sequences=["x", 1]), InvalidRequest, "stop_sequences.1"),
    ("stream string", body(stream="true"), InvalidRequest, "stream"),
    ("metadata extra", body(metadata={"session": "x"}), InvalidRequest, "metadata.session"),
    ("metadata user_id", body(metadata={"user_id": 7}), InvalidRequest, "metadata.user_id"),
    ("tool without schema", body(tools=[{"name": "f"}]), InvalidRequest, "tools.0.input_schema"),
    ("tool name pattern", body(tools=[{**TOOL, "name": "get weather"}]), InvalidRequest, "tools.0.name"),
    ("tool extra key", body(tools=[{**TOOL, "parameters": {}}]), InvalidRequest, "tools.0.parameters"),
    ("duplicate tools", body(tools=[TOOL, TOOL]), InvalidRequest, "tools"),
    (
        "server tool",
        body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        UnsupportedParameter,
        "tools.0.type",
    ),
    (
        "tool defer_loading",
        body(tools=[{**TOOL, "defer_loading": True}]),
        UnsupportedParameter,
        "tools.0.defer_loading",
    ),
    (
        "tool_choice type",
        body(tools=[TOOL], tool_choice={"type": "required"}),
        InvalidRequest,
        "tool_choice.type",
    ),
    (
        "tool_choice undeclared",
        body(tools=[TOOL], tool_choice={"type": "tool", "name": "x"}),
        InvalidRequest,
        "tool_choice.name",
    ),
    (
        "tool_choice without name",
        body(tools=[TOOL], tool_choice={"type": "tool"}),
        InvalidRequest,
        "tool_choice.name",
    ),
    ("tool_choice string", body(tools=[TOOL], tool_choice="auto"), InvalidRequest, "tool_choice"),
    ("thinking type", body(thinking={"type": "on"}), InvalidRequest, "thinking.type"),
    (
        "thinking budget small",
        body(thinking={"type": "enabled", "budget_tokens": 100}),
        InvalidRequest,
        "thinking.budget_tokens",
    ),
    (
        "thinking budget above max_tokens",
        body(thinking={"type": "enabled", "budget_tokens": 2048}),
        InvalidRequest,
        "max_tokens",
    ),
    (
        "output_config effort",
        body(output_config={"effort": "extreme"}),
        InvalidRequest,
        "output_config.effort",
    ),
    (
        "output_config format",
        body(output_config={"format": {"type": "json_schema"}}),
        InvalidRequest,
        "output_config.format.schema",
    ),
    ("container", body(container="c1"), UnsupportedParameter, "container"),
    ("mcp_servers", body(mcp_servers=[]), UnsupportedParameter, "mcp_servers"),
    ("fast mode", body(speed="fast"), UnsupportedParameter, "speed"),
    ("unknown top-level key", body(n=2), InvalidRequest, "n"),
]


@pytest.mark.parametrize(("case", "payload", "error", "param"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests(case: str, payload: Any, error: type[InvalidRequest], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_messages_request(payload)
    err = info.value
    assert type(err) is error, err.message
    assert (err.status, err.anthropic_type, err.param) == (400, "invalid_request_error", param), err.message
    assert param is None or err.message.startswith(f"{param}: ")


def test_unknown_key_message_matches_anthropic() -> None:
    with pytest.raises(InvalidRequest, match=r"^n: Extra inputs are not permitted$"):
        parse_messages_request(body(n=2))


# --- rendering ------------------------------------------------------------------------------------


def response(message: Message, finish: Any = "stop", usage: Usage | None = None) -> ChatResponse:
    return ChatResponse(
        id="msg_01",
        model="upstream",
        choices=[Choice(0, message, finish), Choice(1, Message("assistant", [TextPart("ignored")]), "stop")],
        usage=usage or Usage(input_tokens=100, output_tokens=20, cached_tokens=60, cache_write_tokens=10),
    )


def test_render_text_message() -> None:
    out = render_message_response(response(Message("assistant", [TextPart("Hello")])), model="claude-fast")
    SDKMessage.model_validate(out)
    assert out == {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-fast",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 20,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 10,
        },
    }


def test_render_tool_use_message() -> None:
    calls = [ToolCall("toolu_1", "get_weather", '{"city":"Oslo"}'), ToolCall("toolu_2", "bad", "{not json")]
    message = Message("assistant", [TextPart("Let me check.")], tool_calls=calls)
    out = render_message_response(response(message, finish="tool_calls"), model="claude-fast")
    SDKMessage.model_validate(out)
    assert out["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "bad", "input": {"_raw": "{not json"}},
    ]
    assert out["stop_reason"] == "tool_use"


def test_render_tool_use_without_text_or_arguments() -> None:
    message = Message("assistant", tool_calls=[ToolCall("toolu_1", "now", "")])
    out = render_message_response(response(message, finish=None), model="m")
    assert out["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]
    assert out["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_stop_reasons(finish: Any, stop_reason: str) -> None:
    out = render_message_response(response(Message("assistant", [TextPart("x")]), finish=finish), model="m")
    assert out["stop_reason"] == stop_reason


def test_render_refusal_without_text_shows_it_as_the_text() -> None:
    message = Message("assistant", refusal="I can't help with that.")
    out = render_message_response(response(message, finish="content_filter"), model="m")
    parsed = SDKMessage.model_validate(out)
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert parsed.stop_reason == "refusal"


def test_render_refusal_keeps_its_text_content() -> None:
    message = Message("assistant", [TextPart("Partial answer")], refusal="Blocked.")
    out = render_message_response(response(message, finish="content_filter"), model="m")
    assert out["content"] == [{"type": "text", "text": "Partial answer"}]
    assert out["stop_reason"] == "refusal"


def test_render_refusal_ending_in_stop_is_a_refusal() -> None:
    # OpenAI upstreams finish a refusal with "stop"; an Anthropic client should still see "refusal".
    message = Message("assistant", refusal="No.")
    out = render_message_response(response(message, finish="stop"), model="m")
    assert (out["content"], out["stop_reason"]) == ([{"type": "text", "text": "No."}], "refusal")


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (InvalidRequest("messages.0: bad", param="messages.0"), "invalid_request_error"),
        (RateLimited("slow down"), "rate_limit_error"),
        (UpstreamOverloaded("busy"), "overloaded_error"),
        (NoHealthyDeployment("none"), "overloaded_error"),
    ],
)
def test_render_error(err: SwitchboardError, kind: str) -> None:
    assert render_error(err) == {"type": "error", "error": {"type": kind, "message": err.message}}


# --- streaming ------------------------------------------------------------------------------------


def run(events: list[StreamEvent], model: str = "claude-fast") -> list[Frame]:
    enc = AnthropicStreamEncoder(model)
    frames = parse_frames(b"".join(enc.encode(e) for e in events) + enc.done())
    for frame in frames:
        payload = frame.json()
        assert frame.event == payload["type"]
        EVENT.validate_python(payload)
    return frames


def final_message(frames: list[Frame]) -> Any:
    snapshot = None
    bufs: dict[int, bytes] = {}
    for frame in frames:
        snapshot = accumulate_event(
            event=EVENT.validate_python(frame.json()), current_snapshot=snapshot, json_bufs=bufs
        )
    return snapshot


def test_text_stream_sequence() -> None:
    frames = run(
        [
            StreamStart("msg_up", "upstream"),
            TextDelta("Hel"),
            TextDelta("lo"),
            StreamFinish("stop"),
            StreamUsage(Usage(input_tokens=50, output_tokens=2, cached_tokens=20)),
        ]
    )
    assert [f.json() for f in frames] == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": "claude-fast",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 30,
                "output_tokens": 2,
                "cache_read_input_tokens": 20,
                "cache_creation_input_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]
    message = final_message(frames)
    assert message.content[0].text == "Hello"
    assert message.usage.input_tokens == 30


def test_text_then_tool_calls_sequence() -> None:
    frames = run(
        [
            StreamStart("msg_up", "upstream"),
            TextDelta("Checking."),
            ToolCallStart(0, "toolu_1", "get_weather"),
            ToolCallDelta(0, '{"city":'),
            ToolCallDelta(0, '"Oslo"}'),
            ToolCallStart(1, "toolu_2", "get_time"),
            StreamFinish(None),
        ]
    )
    kinds = [(f.event, f.json().get("index")) for f in frames]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert frames[4].json()["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {},
    }
    assert frames[5].json()["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert frames[-2].json()["delta"]["stop_reason"] == "tool_use"
    assert frames[-2].json()["usage"] == {"output_tokens": 0}
    message = final_message(frames)
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Oslo"}
    assert message.content[2].input == {}


def test_other_choices_are_ignored() -> None:
    frames = run(
        [
            StreamStart("m", "u"),
            TextDelta("zero"),
            TextDelta("one", choice=1),
            ToolCallStart(0, "t", "f", choice=1),
            ToolCallDelta(0, "{}", choice=1),
            StreamFinish("length", choice=1),
            StreamFinish("length"),
        ]
    )
    message = final_message(frames)
    assert [b.text for b in message.content] == ["zero"]
    assert message.stop_reason == "max_tokens"


def test_content_filter_stream_ends_with_refusal() -> None:
    frames = run([StreamStart("m", "u"), TextDelta("I can't help."), StreamFinish("content_filter")])
    assert frames[-2].json()["delta"] == {"stop_reason": "refusal", "stop_sequence": None}
    message = final_message(frames)
    assert message.stop_reason == "refusal"
    assert [b.text for b in message.content] == ["I can't help."]


def test_empty_stream_is_still_well_formed() -> None:
    frames = run([StreamStart("m", "u"), StreamFinish("stop")])
    assert [f.event for f in frames] == ["message_start", "message_delta", "message_stop"]


def test_events_before_start_and_repeated_done() -> None:
    enc = AnthropicStreamEncoder("m")
    first = parse_frames(enc.encode(TextDelta("x")))
    assert [f.event for f in first] == ["message_start", "content_block_start", "content_block_delta"]
    assert first[0].json()["message"]["id"].startswith("msg_")
    assert enc.encode(StreamStart("late", "u")) == b""
    assert [f.event for f in parse_frames(enc.done())] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert enc.done() == b""


def test_stream_error_and_ping_frames() -> None:
    enc = AnthropicStreamEncoder("m")
    frames = parse_frames(
        enc.encode(StreamStart("m", "u")) + enc.ping() + enc.error(UpstreamOverloaded("busy"))
    )
    assert frames[1] == Frame("ping", '{"type":"ping"}')
    assert frames[2].event == "error"
    assert frames[2].json() == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


# --- properties -----------------------------------------------------------------------------------

RICH = body(
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    messages=[
        user({"type": "text", "text": "Hi"}, {"type": "image", "source": PNG}),
        assistant({"type": "thinking", "thinking": "hm", "signature": "s"}, TOOL_USE),
        user({"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "12C"}]}),
    ],
    tools=[TOOL],
    tool_choice={"type": "tool", "name": "get_weather"},
    stop_sequences=["END"],
    temperature=0.5,
    metadata={"user_id": "u"},
    thinking={"type": "enabled", "budget_tokens": 1024},
    max_tokens=4096,
)


def only_switchboard_errors(payload: Any) -> None:
    failure: SwitchboardError | None = None
    try:
        parse_messages_request(payload)
    except SwitchboardError as err:
        failure = err
    assert failure is None or (failure.status == 400 and bool(failure.message))


def test_rich_request_is_valid() -> None:
    req = parse_messages_request(copy.deepcopy(RICH))
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]


@given(json_values)
@settings(max_examples=300)
def test_random_json_never_crashes_the_parser(value: Any) -> None:
    only_switchboard_errors(value)
    only_switchboard_errors(body(messages=value))
    only_switchboard_errors(body(messages=[{"role": "user", "content": value}]))
    only_switchboard_errors(body(tools=value))


@given(mutated(RICH))
@settings(max_examples=500)
def test_mutated_requests_never_crash_the_parser(payload: Any) -> None:
    only_switchboard_errors(payload)


@given(st.lists(st.tuples(st.integers(0, 2), st.text(max_size=8)), max_size=30))
def test_streamed_tool_input_concatenates_to_the_original(pieces: list[tuple[int, str]]) -> None:
    enc = AnthropicStreamEncoder("m")
    events: list[StreamEvent] = [StreamStart("m", "u")]
    for i in range(3):
        events.append(ToolCallStart(i, f"toolu_{i}", f"tool_{i}"))
        events += [ToolCallDelta(i, piece) for index, piece in pieces if index == i]
    events.append(StreamFinish("tool_calls"))
    frames = parse_frames(b"".join(enc.encode(e) for e in events) + enc.done())
    sent: dict[int, str] = {}
    for frame in frames:
        payload = frame.json()
        EVENT.validate_python(payload)
        if payload["type"] == "content_block_delta":
            sent[payload["index"]] = sent.get(payload["index"], "") + payload["delta"]["partial_json"]
    for i in range(3):
        assert sent.get(i, "") == "".join(p for idx, p in pieces if idx == i)


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_tool_use_input_round_trips(arguments: dict[str, Any]) -> None:
    try:
        text = orjson.dumps(arguments).decode()
    except orjson.JSONEncodeError:
        return  # not representable on the wire (e.g. integers beyond 64 bits)
    call = ToolCall("toolu_1", "f", text)
    out = render_message_response(response(Message("assistant", tool_calls=[call]), "tool_calls"), model="m")
    request = body(messages=[USER, {"role": "assistant", "content": out["content"]}])
    parsed = parse_messages_request(request).messages[1].tool_calls[0]
    assert orjson.loads(parsed.arguments) == orjson.loads(text)


def test_a_token_count_is_a_messages_request_that_may_leave_out_max_tokens() -> None:
    body = {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 4096}}
    req = parse_count_tokens_request(body)
    assert req.model == "m" and [m.role for m in req.messages] == ["system", "user"]
    assert "max_tokens" not in body  # the caller's body is left as it was
    with pytest.raises(InvalidRequest) as err:
        parse_count_tokens_request({**body, "frobnicate": 1})
    assert err.value.param == "frobnicate"
    with pytest.raises(InvalidRequest) as err:  # given, it is checked as the Messages API checks it
        parse_count_tokens_request({**body, "max_tokens": 1024})
    assert err.value.param == "max_tokens"
    with pytest.raises(InvalidRequest):
        parse_count_tokens_request({"model": "m", "messages": []})
    with pytest.raises(InvalidRequest):
        parse_count_tokens_request(["not", "an", "object"])
