"""The Anthropic provider against a fake HTTP client: request and response translation, streaming, errors.

The canned payloads follow the shapes of the official ``anthropic`` SDK's types (``Message``,
``RawMessageStreamEvent``, ``ErrorResponse``).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.config.model import DeploymentConfig
from switchboard.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    SwitchboardError,
    UnsupportedParameter,
    UpstreamConnectionError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from switchboard.providers.anthropic import DECLINED, JSON_TOOL_NAME, AnthropicProvider
from switchboard.providers.base import CallOptions
from switchboard.providers.http import HttpResponse
from switchboard.schemas.canonical import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
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
    ToolChoice,
    ToolSpec,
    Usage,
)
from tests.providers.fakes import OPTIONS, FakeHttp, chat_request, flat, json_response, provider_config, sse_frame, user

API_KEY = "sk-ant-api03-TESTKEY-do-not-leak-1234567890"
MODEL_ID = "claude-sonnet-4-5-20250929"


# ---------------------------------------------------------------------------------------------------
# Builders


def make_provider(http: FakeHttp, **overrides: Any) -> AnthropicProvider:
    config = provider_config("anthropic", "https://api.anthropic.com/", API_KEY,
                             {"Anthropic-Beta": "prompt-caching-2024-07-31"}, **overrides)
    return AnthropicProvider(config, http)


DEPLOYMENT = DeploymentConfig(provider="anthropic", model=MODEL_ID)


def message_payload(content: list[dict[str, Any]], stop_reason: str | None = "end_turn",
                    usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": MODEL_ID,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 6, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": 0, "service_tier": "standard"},
    }


async def sent_body(request: ChatRequest, deployment: DeploymentConfig = DEPLOYMENT) -> dict[str, Any]:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "ok"}])))
    await make_provider(http).chat(request, deployment, OPTIONS)
    return http.calls[0].body


# ---------------------------------------------------------------------------------------------------
# Request translation


async def test_posts_to_messages_endpoint_with_auth_and_version_headers() -> None:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "Hi"}])))
    options = CallOptions(request_id="r", forward_headers={"X-Trace": "abc", "X-Api-Key": "client-key",
                                                           "Content-Type": "text/plain"})
    await make_provider(http).chat(chat_request(), DEPLOYMENT, options)
    call = http.calls[0]
    assert call.method == "POST"
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers["x-api-key"] == API_KEY  # a forwarded header never replaces the credential
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert call.headers["x-trace"] == "abc"
    assert (call.timeout, call.connect_timeout) == (30.0, 5.0)


async def test_call_timeout_overrides_config_timeout() -> None:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "Hi"}])))
    await make_provider(http).chat(chat_request(), DEPLOYMENT, CallOptions(request_id="r", timeout=7.5))
    assert http.calls[0].timeout == 7.5


async def test_no_api_key_sends_no_key_header() -> None:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "Hi"}])))
    await make_provider(http, api_key=None).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert "x-api-key" not in http.calls[0].headers


async def test_sampling_fields_and_upstream_model_id() -> None:
    body = await sent_body(chat_request(
        user("Hi"), max_tokens=100, temperature=0.3, top_p=0.9, top_k=40, stop=["END", "STOP"],
        user="user-42", seed=7, reasoning_effort="high", metadata={"project": "x"},
    ))
    assert body == {
        "model": MODEL_ID,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
    }


@pytest.mark.parametrize(
    ("request_max", "deployment_max", "expected"),
    [(100, 2000, 100), (None, 2000, 2000), (None, None, 4096)],
)
async def test_max_tokens_is_always_sent(request_max: int | None, deployment_max: int | None,
                                         expected: int) -> None:
    deployment = DeploymentConfig(provider="anthropic", model=MODEL_ID, max_output_tokens=deployment_max)
    body = await sent_body(chat_request(max_tokens=request_max), deployment)
    assert body["max_tokens"] == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -0.2}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100.0}}, "logit_bias"),
    ],
)
async def test_parameters_anthropic_lacks_are_refused(fields: dict[str, Any], param: str) -> None:
    http = FakeHttp()
    with pytest.raises(UnsupportedParameter) as info:
        await make_provider(http).chat(chat_request(**fields), DEPLOYMENT, OPTIONS)
    assert info.value.param == param
    assert http.calls == []


async def test_no_op_penalties_are_accepted() -> None:
    body = await sent_body(chat_request(presence_penalty=0.0, frequency_penalty=0.0, logit_bias={}))
    assert "presence_penalty" not in body


async def test_system_messages_anywhere_become_top_level_system() -> None:
    body = await sent_body(chat_request(
        Message("system", [TextPart("You are terse.")]),
        user("Hi"),
        Message("system", [TextPart("Answer in French.")]),
        Message("assistant", [TextPart("Bonjour")]),
        user("Again"),
    ))
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


async def test_consecutive_same_role_turns_are_merged() -> None:
    body = await sent_body(chat_request(
        user("one"), user("two"),
        Message("assistant", [TextPart("a")]), Message("assistant", [TextPart("b")]),
        user("three"),
    ))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "text", "text": "three"}]},
    ]


async def test_tool_round_trip_request() -> None:
    body = await sent_body(chat_request(
        user("Weather in Paris and Rome?"),
        Message("assistant", [TextPart("")], tool_calls=[
            ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
            ToolCall("call:2", "get_weather", '{"city":"Rome"}'),
            ToolCall("call_3", "get_time", ""),
        ]),
        Message("tool", [TextPart("18C")], tool_call_id="call_1"),
        Message("tool", [TextPart("boom")], tool_call_id="call:2", is_error=True),
        Message("tool", [], tool_call_id="call_3"),
        user("Thanks"),
    ))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            {"type": "tool_use", "id": "call_3", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "boom", "is_error": True},
            {"type": "tool_result", "tool_use_id": "call_3"},
            {"type": "text", "text": "Thanks"},
        ]},
    ]


@pytest.mark.parametrize("arguments", ['{"city": ', "[1, 2]"])
async def test_bad_tool_call_arguments_name_the_parameter(arguments: str) -> None:
    request = chat_request(user("x"), Message("assistant", tool_calls=[ToolCall("c1", "f", arguments)]))
    with pytest.raises(InvalidRequest) as info:
        await sent_body(request)
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


async def test_tool_message_without_call_id_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        await sent_body(chat_request(user("x"), Message("tool", [TextPart("r")])))
    assert info.value.param == "messages[1].tool_call_id"


async def test_images_become_base64_or_url_sources() -> None:
    body = await sent_body(chat_request(Message("user", [
        TextPart("What is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png"),
        ImagePart("data:image/jpeg;base64,/9j/4AAQ"),
        ImagePart("https://example.com/cat.webp", detail="high"),
    ])))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
    ]


async def test_tool_result_with_image_keeps_blocks() -> None:
    body = await sent_body(chat_request(
        user("x"),
        Message("assistant", tool_calls=[ToolCall("c1", "screenshot", "{}")]),
        Message("tool", [TextPart("here"), ImagePart("https://example.com/s.png")], tool_call_id="c1"),
    ))
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": [
        {"type": "text", "text": "here"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/s.png"}},
    ]}]


@pytest.mark.parametrize(
    "url",
    ["data:image/bmp;base64,Qk0=", "data:image/png,rawbytes", "ftp://example.com/cat.png"],
)
async def test_unusable_images_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await sent_body(chat_request(Message("user", [TextPart("x"), ImagePart(url)])))
    assert info.value.param == "messages[0].content[1]"


WEATHER = ToolSpec("get_weather", "Current weather",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


async def test_tools_are_translated() -> None:
    body = await sent_body(chat_request(tools=[WEATHER, ToolSpec("ping", parameters={})]))
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER.parameters},
        {"name": "ping", "input_schema": {"type": "object"}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (ToolChoice("tool", "get_weather"), None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (ToolChoice("tool", "get_weather"), False,
         {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        (ToolChoice("none"), False, {"type": "none"}),
    ],
)
async def test_tool_choice(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any]
) -> None:
    body = await sent_body(chat_request(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=parallel))
    assert body["tool_choice"] == expected


async def test_tool_choice_without_tools_is_not_sent() -> None:
    body = await sent_body(chat_request(tool_choice=ToolChoice("auto"), parallel_tool_calls=False))
    assert "tool_choice" not in body
    assert "tools" not in body


# ---------------------------------------------------------------------------------------------------
# JSON mode through a forced tool

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [
        (ResponseFormat("json_object"), {"type": "object"}),
        (ResponseFormat("json_schema", schema=PERSON, name="person", strict=True), PERSON),
    ],
)
async def test_json_mode_forces_the_json_tool(fmt: ResponseFormat, schema: dict[str, Any]) -> None:
    body = await sent_body(chat_request(response_format=fmt))
    assert [t["name"] for t in body["tools"]] == [JSON_TOOL_NAME]
    assert body["tools"][0]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": JSON_TOOL_NAME, "disable_parallel_tool_use": True}


async def test_text_response_format_changes_nothing() -> None:
    body = await sent_body(chat_request(response_format=ResponseFormat("text")))
    assert "tools" not in body


async def test_json_mode_with_tools_lets_the_model_choose() -> None:
    body = await sent_body(chat_request(tools=[WEATHER], response_format=ResponseFormat("json_object")))
    assert [t["name"] for t in body["tools"]] == ["get_weather", JSON_TOOL_NAME]
    assert body["tool_choice"] == {"type": "any"}


async def test_json_tool_name_is_reserved() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        await sent_body(chat_request(tools=[ToolSpec(JSON_TOOL_NAME)],
                                     response_format=ResponseFormat("json_object")))
    assert info.value.param == "tools"


async def test_json_mode_answer_is_text_with_stop() -> None:
    http = FakeHttp(response=json_response(message_payload(
        [{"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL_NAME, "input": {"name": "Ada", "age": 36}}],
        stop_reason="tool_use",
    )))
    request = chat_request(response_format=ResponseFormat("json_schema", schema=PERSON))
    answer = await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert choice.message.text() == '{"name":"Ada","age":36}'
    assert choice.message.tool_calls == []
    assert choice.finish_reason == "stop"


async def test_tool_named_like_json_tool_is_a_tool_outside_json_mode() -> None:
    http = FakeHttp(response=json_response(message_payload(
        [{"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL_NAME, "input": {}}], stop_reason="tool_use",
    )))
    request = chat_request(tools=[ToolSpec(JSON_TOOL_NAME)])
    answer = await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.tool_calls == [ToolCall("toolu_01", JSON_TOOL_NAME, "{}")]
    assert answer.choices[0].finish_reason == "tool_calls"


# ---------------------------------------------------------------------------------------------------
# Response translation


async def test_response_with_text_thinking_and_tool_use() -> None:
    payload = message_payload(
        [
            {"type": "thinking", "thinking": "Let me check the weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "I'll look that up."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"city": "San Francisco", "unit": "celsius"}},
        ],
        stop_reason="tool_use",
        usage={"input_tokens": 472, "output_tokens": 91, "cache_creation_input_tokens": 1000,
               "cache_read_input_tokens": 2048, "output_tokens_details": {"thinking_tokens": 30}},
    )
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(tools=[WEATHER]), DEPLOYMENT, OPTIONS)
    assert answer.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert answer.model == MODEL_ID
    assert answer.created > 0
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.text() == "I'll look that up."
    assert choice.message.tool_calls == [
        ToolCall("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city":"San Francisco","unit":"celsius"}')
    ]
    assert choice.finish_reason == "tool_calls"
    assert answer.usage == Usage(input_tokens=472 + 2048 + 1000, output_tokens=91, cached_tokens=2048,
                                 reasoning_tokens=30, cache_write_tokens=1000)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("refusal", "content_filter"), ("model_context_window_exceeded", "length"), (None, None)],
)
async def test_stop_reasons(stop_reason: str | None, finish: str | None) -> None:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "x"}], stop_reason)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].finish_reason == finish


async def test_refusal_keeps_the_text_and_names_it_the_refusal() -> None:
    text = "I can't help with that request."
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": text}], "refusal")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.text() == text
    assert choice.message.refusal == text


async def test_refusal_without_text_gets_a_fixed_explanation() -> None:
    http = FakeHttp(response=json_response(message_payload([], "refusal")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    message = answer.choices[0].message
    assert message.content == []
    assert message.refusal == DECLINED == "The model declined to answer."


async def test_an_ordinary_answer_has_no_refusal() -> None:
    http = FakeHttp(response=json_response(message_payload([{"type": "text", "text": "Sure."}])))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.refusal is None


async def test_empty_content_gives_empty_message() -> None:
    http = FakeHttp(response=json_response(message_payload([], "end_turn")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.content == []


@pytest.mark.parametrize("body", [b"<html>ok</html>", b'{"type": "message"}', b"[1, 2]"])
async def test_unreadable_success_body_is_a_protocol_error(body: bytes) -> None:
    http = FakeHttp(response=HttpResponse(200, {}, body))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)


async def test_embeddings_are_refused() -> None:
    http = FakeHttp()
    with pytest.raises(InvalidRequest, match="no embeddings API"):
        await make_provider(http).embed(EmbeddingRequest(model="e", inputs=["x"]), DEPLOYMENT, OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Errors


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


ERROR_CASES = [
    (400, "invalid_request_error", "max_tokens: Field required", InvalidRequest),
    (400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum",
     ContextLengthExceeded),
    (401, "authentication_error", "invalid x-api-key", UpstreamStatusError),
    (403, "permission_error", "Your API key does not have permission", UpstreamStatusError),
    (404, "not_found_error", "model: claude-9", UpstreamStatusError),
    (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", InvalidRequest),
    (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit", RateLimited),
    (500, "api_error", "Internal server error", UpstreamStatusError),
    (504, "timeout_error", "Request timed out", UpstreamTimeout),
    (529, "overloaded_error", "Overloaded", UpstreamOverloaded),
]


@pytest.mark.parametrize(("status", "kind", "message", "error_type"), ERROR_CASES)
async def test_error_statuses(
    status: int, kind: str, message: str, error_type: type[SwitchboardError]
) -> None:
    http = FakeHttp(response=json_response(error_body(kind, message), status, {"retry-after": "3"}))
    with pytest.raises(error_type) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert message in info.value.message
    assert type(info.value) is error_type


async def test_error_details() -> None:
    http = FakeHttp(response=json_response(error_body("rate_limit_error", "slow"), 429, {"retry-after": "3"}))
    with pytest.raises(RateLimited) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.retry_after == 3.0

    http = FakeHttp(response=json_response(error_body("invalid_request_error", "bad"), 400))
    with pytest.raises(InvalidRequest) as bad:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert bad.value.code == "invalid_request_error"

    http = FakeHttp(response=json_response(error_body("api_error", "oops"), 500))
    with pytest.raises(UpstreamStatusError) as failed:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert (failed.value.upstream_status, failed.value.retryable) == (500, True)


async def test_non_json_error_body() -> None:
    http = FakeHttp(response=HttpResponse(502, {"content-type": "text/html"}, b"<html>Bad Gateway</html>"))
    with pytest.raises(UpstreamStatusError) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.upstream_status == 502
    assert "Bad Gateway" in info.value.message


async def test_api_key_never_appears_in_errors() -> None:
    echo = f"invalid header x-api-key: {API_KEY}"
    http = FakeHttp(response=json_response(error_body("authentication_error", echo), 401))
    with pytest.raises(UpstreamStatusError) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value)
    assert "redacted" in info.value.message.lower()


# ---------------------------------------------------------------------------------------------------
# Streaming


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return sse_frame(payload, event=event)


def message_start(input_tokens: int = 25, cache_read: int = 0, cache_write: int = 0) -> bytes:
    return sse("message_start", {"type": "message_start", "message": {
        "id": "msg_01ABC", "type": "message", "role": "assistant", "content": [], "model": MODEL_ID,
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": 1},
    }})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def text_block(index: int, *pieces: str) -> list[bytes]:
    return [
        block_start(index, {"type": "text", "text": ""}),
        *(sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": "text_delta", "text": p}}) for p in pieces),
        sse("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def tool_block(index: int, call_id: str, name: str, *pieces: str) -> list[bytes]:
    return [
        block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}),
        *(sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": "input_json_delta", "partial_json": p}})
          for p in pieces),
        sse("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def message_end(stop_reason: str = "end_turn", output_tokens: int = 15) -> list[bytes]:
    return [
        sse("message_delta", {"type": "message_delta",
                              "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                              "usage": {"output_tokens": output_tokens}}),
        sse("message_stop", {"type": "message_stop"}),
    ]


PING = sse("ping", {"type": "ping"})

TEXT_STREAM = [message_start(), PING, *text_block(0, "Hello", "", " world", "!"), *message_end()]


async def collect(http: FakeHttp, request: ChatRequest | None = None) -> list[StreamEvent]:
    provider = make_provider(http)
    return [ev async for ev in flat(provider.stream(request or chat_request(stream=True), DEPLOYMENT, OPTIONS))]


async def test_text_stream() -> None:
    http = FakeHttp(chunks=TEXT_STREAM)
    events = await collect(http)
    assert isinstance(events[0], StreamStart)
    assert (events[0].id, events[0].model) == ("msg_01ABC", MODEL_ID)
    assert events[1:] == [
        TextDelta("Hello"), TextDelta(" world"), TextDelta("!"), StreamFinish("stop"),
        StreamUsage(Usage(input_tokens=25, output_tokens=15)),
    ]
    call = http.calls[0]
    assert call.body["stream"] is True
    assert call.body["model"] == MODEL_ID
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers["x-api-key"] == API_KEY
    assert http.streams[0].closed
    assert http.streams[0].fully_read


async def test_refusal_stream_finishes_with_content_filter() -> None:
    chunks = [message_start(), *text_block(0, "I can't", " help."), *message_end("refusal", 4)]
    events = await collect(FakeHttp(chunks=chunks))
    assert events[1:] == [
        TextDelta("I can't"), TextDelta(" help."), StreamFinish("content_filter"),
        StreamUsage(Usage(input_tokens=25, output_tokens=4)),
    ]


async def test_tool_call_stream_numbers_calls_and_keeps_pieces_in_order() -> None:
    chunks = [
        message_start(),
        *text_block(0, "Checking."),
        *tool_block(1, "toolu_01", "get_weather", "", '{"city":', ' "Par', 'is"}'),
        *tool_block(2, "toolu_02", "get_time"),
        *tool_block(3, "toolu_03", "get_weather", '{"city": "Rome"}'),
        *message_end("tool_use", 80),
    ]
    events = await collect(FakeHttp(chunks=chunks))
    assert events[1:] == [
        TextDelta("Checking."),
        ToolCallStart(0, "toolu_01", "get_weather"),
        ToolCallDelta(0, '{"city":'), ToolCallDelta(0, ' "Par'), ToolCallDelta(0, 'is"}'),
        ToolCallStart(1, "toolu_02", "get_time"),
        ToolCallDelta(1, "{}"),
        ToolCallStart(2, "toolu_03", "get_weather"),
        ToolCallDelta(2, '{"city": "Rome"}'),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(input_tokens=25, output_tokens=80)),
    ]


async def test_stream_ignores_thinking_and_counts_cache_usage() -> None:
    chunks = [
        message_start(input_tokens=10, cache_read=2000, cache_write=300),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "signature_delta", "signature": "EqQBCg"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        *text_block(1, "Done."),
        sse("future_event", {"type": "future_event", "x": 1}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                              "usage": {"output_tokens": 42, "input_tokens": 10,
                                        "cache_read_input_tokens": 2000,
                                        "cache_creation_input_tokens": None}}),
        sse("message_stop", {"type": "message_stop"}),
    ]
    events = await collect(FakeHttp(chunks=chunks))
    assert events[1:] == [
        TextDelta("Done."), StreamFinish("length"),
        StreamUsage(Usage(input_tokens=2310, output_tokens=42, cached_tokens=2000, cache_write_tokens=300)),
    ]


async def test_json_mode_stream_turns_tool_input_into_text() -> None:
    chunks = [
        message_start(),
        *tool_block(0, "toolu_01", JSON_TOOL_NAME, "", '{"name": ', '"Ada"}'),
        *message_end("tool_use"),
    ]
    request = chat_request(stream=True, response_format=ResponseFormat("json_object"))
    http = FakeHttp(chunks=chunks)
    events = await collect(http, request)
    assert events[1:] == [
        TextDelta('{"name": '), TextDelta('"Ada"}'), StreamFinish("stop"),
        StreamUsage(Usage(input_tokens=25, output_tokens=15)),
    ]
    assert http.calls[0].body["tool_choice"]["name"] == JSON_TOOL_NAME


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("overloaded_error", UpstreamOverloaded),
        ("api_error", UpstreamStatusError),
        ("rate_limit_error", RateLimited),
        ("invalid_request_error", InvalidRequest),
    ],
)
async def test_in_band_error_event_raises_mapped_error(kind: str, error_type: type[SwitchboardError]) -> None:
    chunks = [message_start(), *text_block(0, "Hel"), sse("error", error_body(kind, "Something happened"))]
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for ev in flat(make_provider(FakeHttp(chunks=chunks)).stream(chat_request(), DEPLOYMENT, OPTIONS)):
            seen.append(ev)

    with pytest.raises(error_type) as info:
        await consume()
    assert type(info.value) is error_type
    assert "Something happened" in info.value.message
    assert seen[1:] == [TextDelta("Hel")]
    if isinstance(info.value, UpstreamStatusError):
        assert info.value.retryable


async def test_stream_cut_before_message_stop_raises() -> None:
    chunks = [message_start(), *text_block(0, "Hello")]
    with pytest.raises(UpstreamConnectionError):
        await collect(FakeHttp(chunks=chunks))


async def test_empty_stream_raises() -> None:
    with pytest.raises(UpstreamConnectionError):
        await collect(FakeHttp(chunks=[]))


async def test_message_stop_without_trailing_blank_line_still_completes() -> None:
    chunks = [*TEXT_STREAM[:-1], TEXT_STREAM[-1].rstrip(b"\n") + b"\n"]
    events = await collect(FakeHttp(chunks=chunks))
    assert isinstance(events[-1], StreamUsage)


@pytest.mark.parametrize(
    "bad",
    [
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": \n\n',
        b'event: content_block_delta\ndata: {"type": "content_block_delta"}\n\n',
        b"data: [1, 2]\n\n",
    ],
)
async def test_malformed_event_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        await collect(FakeHttp(chunks=[message_start(), bad, *message_end()]))


async def test_stream_must_begin_with_message_start() -> None:
    with pytest.raises(UpstreamProtocolError):
        await collect(FakeHttp(chunks=[*text_block(0, "Hi"), *message_end()]))


async def test_early_close_closes_upstream() -> None:
    http = FakeHttp(chunks=TEXT_STREAM)
    stream = flat(make_provider(http).stream(chat_request(), DEPLOYMENT, OPTIONS))
    assert isinstance(await anext(stream), StreamStart)
    assert await anext(stream) == TextDelta("Hello")
    await stream.aclose()  # type: ignore[attr-defined]
    assert http.streams[0].closed
    assert not http.streams[0].fully_read


async def test_stream_error_status() -> None:
    http = FakeHttp(stream_status=529, stream_headers={"content-type": "application/json"},
                    chunks=[orjson.dumps(error_body("overloaded_error", "Overloaded"))])
    with pytest.raises(UpstreamOverloaded):
        await collect(http)
    assert http.streams[0].closed


async def test_stream_answered_with_json_error_and_200() -> None:
    http = FakeHttp(stream_headers={"content-type": "application/json"},
                    chunks=[orjson.dumps(error_body("overloaded_error", "Overloaded"))])
    with pytest.raises(UpstreamOverloaded):
        await collect(http)


async def test_stream_error_status_hides_api_key() -> None:
    http = FakeHttp(stream_status=401,
                    chunks=[orjson.dumps(error_body("authentication_error", f"bad key {API_KEY}"))])
    with pytest.raises(UpstreamStatusError) as info:
        await collect(http)
    assert API_KEY not in str(info.value)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40), crlf=st.booleans())
async def test_any_split_of_the_byte_stream_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    raw = b"".join([
        message_start(), PING, *text_block(0, "Hé", "llo ✓"),
        *tool_block(1, "toolu_01", "get_weather", '{"city":', ' "Paris"}'), *message_end("tool_use"),
    ])
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True) if raw[a:b]]
    events = await collect(FakeHttp(chunks=chunks))
    assert events[1:] == [
        TextDelta("Hé"), TextDelta("llo ✓"),
        ToolCallStart(0, "toolu_01", "get_weather"),
        ToolCallDelta(0, '{"city":'), ToolCallDelta(0, ' "Paris"}'),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(input_tokens=25, output_tokens=15)),
    ]
