"""The OpenAI-compatible provider against a fake HTTP client: request and response translation,
streaming, errors.

The canned payloads follow the shapes of the official ``openai`` SDK's types (``ChatCompletion``,
``ChatCompletionChunk``, ``CreateEmbeddingResponse``) and of OpenAI's documented error bodies.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
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
from switchboard.providers.base import CallOptions
from switchboard.providers.http import HttpResponse
from switchboard.providers.openai import OpenAIProvider, StreamTranslator
from switchboard.schemas.canonical import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    LastBatch,
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
from tests.providers.fakes import (
    OPTIONS,
    FakeHttp,
    chat_request,
    flat,
    json_response,
    network_chunks,
    provider_config,
    sse_frame,
    user,
)

API_KEY = "sk-proj-TESTKEY-do-not-leak-1234567890"
MODEL_ID = "gpt-4o-mini-2024-07-18"
OPENAI_URL = "https://api.openai.com/v1"
VLLM_URL = "http://vllm.internal:8000/v1"


# ---------------------------------------------------------------------------------------------------
# Builders


def make_provider(http: FakeHttp, **overrides: Any) -> OpenAIProvider:
    config = provider_config("openai", OPENAI_URL, API_KEY, {"OpenAI-Organization": "org-test"}, **overrides)
    return OpenAIProvider(config, http)


DEPLOYMENT = DeploymentConfig(provider="openai", model=MODEL_ID)


def completion(message: dict[str, Any], finish_reason: str = "stop",
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": MODEL_ID,
        "system_fingerprint": "fp_06737a9306",
        "service_tier": "default",
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage or {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
    }


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, *, index: int = 0,
          usage: dict[str, Any] | None = None, no_choices: bool = False) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": MODEL_ID,
        "system_fingerprint": "fp_06737a9306",
        "choices": [] if no_choices else [
            {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        frame["usage"] = usage
    return frame


USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
         "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 4}}


def sse(*frames: dict[str, Any] | str, done: bool = True) -> list[bytes]:
    tail = ("[DONE]",) if done else ()
    return [sse_frame(f) for f in (*frames, *tail)]


async def collect(provider: OpenAIProvider, request: ChatRequest | None = None) -> list[StreamEvent]:
    return [e async for e in flat(provider.stream(request or chat_request(stream=True), DEPLOYMENT, OPTIONS))]


# ---------------------------------------------------------------------------------------------------
# Request translation


async def test_request_url_auth_headers_and_timeouts() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    provider = make_provider(http)
    options = CallOptions(request_id="req_1", timeout=12.5,
                          forward_headers={"X-Trace": "abc", "Authorization": "Bearer client-key",
                                           "Content-Length": "1"})
    await provider.chat(chat_request(), DEPLOYMENT, options)
    call = http.calls[0]
    assert call.method == "POST"
    assert call.url == "https://api.openai.com/v1/chat/completions"
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.headers["openai-organization"] == "org-test"
    assert call.headers["x-trace"] == "abc"
    assert call.headers["content-type"] == "application/json"
    assert "content-length" not in call.headers
    assert call.timeout == 12.5
    assert call.connect_timeout == 5.0


async def test_no_key_means_no_authorization_and_config_timeout() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    provider = make_provider(http, base_url=VLLM_URL, api_key=None, headers={})
    await provider.chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert "authorization" not in http.calls[0].headers
    assert http.calls[0].url == "http://vllm.internal:8000/v1/chat/completions"
    assert http.calls[0].timeout == 30.0


async def test_every_field_is_translated_for_openai() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    request = chat_request(
        user("Hello"),
        max_tokens=100, temperature=0.2, top_p=0.9, stop=["END"], seed=7, n=2,
        tools=[ToolSpec("get_weather", "Weather for a city",
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                         "additionalProperties": False}, strict=True)],
        tool_choice=ToolChoice("tool", "get_weather"), parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", {"type": "object"}, "answer", True),
        user="user-42", metadata={"team": "search"}, presence_penalty=0.5, frequency_penalty=-0.5,
        logit_bias={"50256": -100.0}, reasoning_effort="low",
    )
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    body = http.calls[0].body
    assert body == {
        "model": MODEL_ID,  # the deployment's upstream id, not the public name
        "messages": [{"role": "user", "content": "Hello"}],
        "max_completion_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "n": 2,
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False},
            "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}},
        "user": "user-42",
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100.0},
        "reasoning_effort": "low",
    }


async def test_compatible_servers_get_max_tokens_and_top_k() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    request = chat_request(max_tokens=50, top_k=40)
    await make_provider(http, base_url=VLLM_URL).chat(request, DEPLOYMENT, OPTIONS)
    body = http.calls[0].body
    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body
    assert body["top_k"] == 40


async def test_top_k_is_refused_by_openai_itself() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    with pytest.raises(UnsupportedParameter) as info:
        await make_provider(http).chat(chat_request(top_k=40), DEPLOYMENT, OPTIONS)
    assert info.value.param == "top_k"
    assert http.calls == []


@pytest.mark.parametrize(("choice", "wire"), [
    (ToolChoice("auto"), "auto"),
    (ToolChoice("none"), "none"),
    (ToolChoice("required"), "required"),
])
async def test_tool_choice_modes(choice: ToolChoice, wire: str) -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    request = chat_request(tools=[ToolSpec("f")], tool_choice=choice)
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["tool_choice"] == wire
    assert http.calls[0].body["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


async def test_tool_choice_without_tools_is_not_sent() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    request = chat_request(tool_choice=ToolChoice("auto"), parallel_tool_calls=True)
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert "tool_choice" not in http.calls[0].body
    assert "parallel_tool_calls" not in http.calls[0].body


@pytest.mark.parametrize("kind", ["text", "json_object"])
async def test_simple_response_formats(kind: Any) -> None:
    http = FakeHttp(response=json_response(completion({"content": "{}"})))
    await make_provider(http).chat(chat_request(response_format=ResponseFormat(kind)), DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["response_format"] == {"type": kind}


async def test_conversation_with_images_and_tool_round_trip() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Sunny."})))
    messages = [
        Message("system", [TextPart("Be brief.")]),
        Message("user", [TextPart("What is this and what's the weather?"),
                         ImagePart("https://example.com/cat.png", detail="low"),
                         ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png")],
                name="ann"),
        Message("assistant", [], tool_calls=[
            ToolCall("call_abc", "get_weather", '{"city":"Paris"}'),
            ToolCall("call_def", "get_time", "{}"),
        ]),
        Message("tool", [TextPart('{"temp": 21}')], tool_call_id="call_abc"),
        Message("tool", [TextPart("timeout")], tool_call_id="call_def", is_error=True),
        Message("assistant", [TextPart("It is 21°C.")]),
    ]
    await make_provider(http).chat(chat_request(*messages), DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "What is this and what's the weather?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather",
                                                                 "arguments": '{"city":"Paris"}'}},
            {"id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_def", "content": "timeout"},
        {"role": "assistant", "content": "It is 21°C."},
    ]


async def test_images_in_system_messages_are_refused() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi"})))
    request = chat_request(Message("system", [ImagePart("https://example.com/a.png")]), user("Hi"))
    with pytest.raises(UnsupportedParameter):
        await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)


async def test_stream_requests_always_ask_for_usage() -> None:
    http = FakeHttp(chunks=sse(chunk({"role": "assistant", "content": "Hi"}), chunk({}, "stop")))
    await collect(make_provider(http), chat_request(stream=True, include_usage=False))
    body = http.calls[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert http.calls[0].headers["accept"] == "text/event-stream"


# ---------------------------------------------------------------------------------------------------
# Response translation


async def test_text_answer_and_usage_with_cached_and_reasoning_tokens() -> None:
    usage = {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
             "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0}}
    http = FakeHttp(response=json_response(completion({"content": "Hello there!"}, usage=usage)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert answer.model == MODEL_ID
    assert answer.created == 1741569952
    assert answer.choices[0].message.text() == "Hello there!"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage == Usage(input_tokens=2006, output_tokens=300, cached_tokens=1920,
                                 reasoning_tokens=192)


async def test_deepseek_cache_hits_count_as_cached() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
             "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}
    http = FakeHttp(response=json_response(completion({"content": "ok"}, usage=usage)))
    provider = make_provider(http, base_url="https://api.deepseek.com/v1")
    answer = await provider.chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.usage.cached_tokens == 64


async def test_tool_call_answer() -> None:
    message = {"content": None, "tool_calls": [
        {"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]}
    http = FakeHttp(response=json_response(completion(message, "tool_calls")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == []
    assert choice.message.tool_calls == [
        ToolCall("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", "{}"),
    ]


@pytest.mark.parametrize(("wire", "canonical"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("function_call", "tool_calls"),
])
async def test_finish_reasons(wire: str, canonical: str) -> None:
    http = FakeHttp(response=json_response(completion({"content": "x"}, wire)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].finish_reason == canonical


async def test_refusal_is_the_messages_refusal() -> None:
    message = {"content": None, "refusal": "I can't help with that."}
    http = FakeHttp(response=json_response(completion(message)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert choice.message.refusal == "I can't help with that."
    assert choice.message.content == []
    assert choice.finish_reason == "stop"  # passed through, as OpenAI sent it


async def test_refusal_with_a_content_filter_finish_keeps_both() -> None:
    message = {"content": "Partial", "refusal": "Stopped."}
    http = FakeHttp(response=json_response(completion(message, "content_filter")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert (choice.message.text(), choice.message.refusal, choice.finish_reason) == (
        "Partial", "Stopped.", "content_filter")


async def test_no_refusal_is_none() -> None:
    http = FakeHttp(response=json_response(completion({"content": "Hi", "refusal": ""})))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.refusal is None


async def test_non_json_success_body_is_a_protocol_error() -> None:
    http = FakeHttp(response=HttpResponse(200, {"content-type": "text/html"}, b"<html>proxy</html>"))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)


async def test_json_without_choices_is_a_protocol_error() -> None:
    http = FakeHttp(response=json_response({"object": "chat.completion"}))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Errors


def openai_error(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.mark.parametrize(("status", "payload", "headers", "expected"), [
    (400, openai_error("Invalid value for 'temperature'", "invalid_request_error", "invalid_value",
                       "temperature"), {}, InvalidRequest),
    (400, openai_error("This model's maximum context length is 128000 tokens. However, your messages "
                       "resulted in 130000 tokens.", "invalid_request_error", "context_length_exceeded",
                       "messages"),
     {}, ContextLengthExceeded),
    (401, openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"), {},
     UpstreamStatusError),
    (404, openai_error("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"), {},
     UpstreamStatusError),
    (429, openai_error("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"),
     {"retry-after": "7"}, RateLimited),
    (500, openai_error("The server had an error", "server_error"), {}, UpstreamStatusError),
    (503, openai_error("The engine is currently overloaded", "server_error"), {}, UpstreamOverloaded),
    (504, {"error": {"message": "Gateway timeout"}}, {}, UpstreamTimeout),
])
async def test_error_statuses(status: int, payload: dict[str, Any], headers: dict[str, str],
                              expected: type[SwitchboardError]) -> None:
    http = FakeHttp(response=json_response(payload, status, {"content-type": "application/json", **headers}))
    with pytest.raises(expected) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert payload["error"]["message"] in info.value.message
    if status == 429:
        assert info.value.retry_after == 7.0
    if status == 400 and expected is InvalidRequest:
        assert info.value.param == "temperature"
        assert info.value.code == "invalid_value"
    if status in (401, 404):
        assert not info.value.retryable


async def test_retry_after_ms_wins() -> None:
    http = FakeHttp(response=json_response(openai_error("slow down", "requests", "rate_limit_exceeded"), 429,
                                           {"retry-after-ms": "1500", "retry-after": "9"}))
    with pytest.raises(RateLimited) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.retry_after == 1.5


async def test_api_key_never_appears_in_errors() -> None:
    payload = openai_error(f"Incorrect API key provided: {API_KEY}.", "invalid_request_error",
                           "invalid_api_key")
    http = FakeHttp(response=json_response(payload, 401))
    with pytest.raises(UpstreamStatusError) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value)


async def test_non_json_error_body_keeps_the_status() -> None:
    http = FakeHttp(response=HttpResponse(502, {"content-type": "text/html"}, b"<html>Bad gateway</html>"))
    with pytest.raises(UpstreamStatusError) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.upstream_status == 502
    assert info.value.retryable


async def test_vllm_top_level_error_body() -> None:
    payload = {"object": "error", "message": "This model's maximum context length is 4096 tokens.",
               "type": "BadRequestError", "param": None, "code": 400}
    http = FakeHttp(response=json_response(payload, 400))
    with pytest.raises(ContextLengthExceeded):
        await make_provider(http, base_url=VLLM_URL).chat(chat_request(), DEPLOYMENT, OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Streaming


async def test_stream_text_then_finish_then_usage() -> None:
    http = FakeHttp(chunks=sse(
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        chunk(usage=USAGE, no_choices=True),
    ))
    events = await collect(make_provider(http))
    assert events == [
        StreamStart("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", MODEL_ID, 1741569952),
        TextDelta("Hel"),
        TextDelta("lo"),
        StreamFinish("stop"),
        StreamUsage(Usage(input_tokens=30, output_tokens=9, cached_tokens=16, reasoning_tokens=4)),
    ]
    assert http.streams[0].closed


_DELTAS = st.one_of(
    st.fixed_dictionaries({"content": st.one_of(st.text(max_size=5), st.none(), st.integers(0, 3))}),
    st.fixed_dictionaries({"content": st.text(max_size=3), "role": st.just("assistant")}),
    st.fixed_dictionaries({"refusal": st.text(max_size=3)}),
    st.fixed_dictionaries({"tool_calls": st.just([{"index": 0, "id": "call_1", "type": "function",
                                                   "function": {"name": "f", "arguments": "{}"}}])}),
    st.just({}), st.just(None), st.just([]), st.just("x"),
)
_CHOICES = st.fixed_dictionaries(
    {"delta": _DELTAS},
    optional={"index": st.one_of(st.integers(0, 1), st.none(), st.just(True), st.just("0")),
              "finish_reason": st.one_of(st.none(), st.sampled_from(["stop", "length", "tool_calls"])),
              "logprobs": st.none()},
)
_FRAMES = st.one_of(
    st.fixed_dictionaries(
        {"choices": st.one_of(st.lists(_CHOICES, max_size=2), st.none(), st.just({}))},
        optional={"id": st.just("chatcmpl-1"), "object": st.sampled_from(["chat.completion.chunk", "error"]),
                  "usage": st.one_of(st.none(), st.just(USAGE), st.just(1)),
                  "error": st.one_of(st.none(), st.just({"message": "boom", "type": "server_error"}))},
    ).map(lambda frame: orjson.dumps(frame).decode()),
    st.sampled_from(["[]", "[{}]", "null", "{", '"text"', ""]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAMES, max_size=8))
@example([orjson.dumps({"choices": [{"index": 1, "delta": {"content": "B"}}]}).decode(),
          orjson.dumps(chunk({}, "stop")).decode()])  # a second choice begins with plain text, never ends
def test_stream_frames_taking_the_short_way_translate_as_by_the_full_one(frames: list[str]) -> None:
    """Plain text frames after the first skip most of the translator; any stream of frames gives the same
    events and the same error whichever way each frame goes (a named event always goes the full way)."""
    link = make_provider(FakeHttp())._link

    def run(event: str | None) -> tuple[list[StreamEvent], str | None]:
        translator = StreamTranslator(MODEL_ID, provider="openai", link=link)
        out: list[StreamEvent] = []
        try:
            for data in [orjson.dumps(chunk({"role": "assistant", "content": ""})).decode(), *frames]:
                out += [ev for ev in translator.feed(event, data) if not isinstance(ev, StreamStart)]
            out += translator.end_of_body()
        except SwitchboardError as exc:
            return out, f"{type(exc).__name__}: {exc.message}"
        return out, None

    assert run(None) == run("message")


async def _batches(http: FakeHttp) -> list[list[StreamEvent]]:
    stream = make_provider(http).stream(chat_request(stream=True), DEPLOYMENT, OPTIONS)
    return [batch async for batch in stream]


async def test_the_batch_that_ends_a_stream_says_so() -> None:
    """The batch the end arrives with is a LastBatch, so an answer can be finished before the clean-up; the end
    may come with the last frames, alone in a read (an empty LastBatch), or as the body's end without [DONE]."""
    frames = sse(chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"),
                 chunk(usage=USAGE, no_choices=True))
    usage = StreamUsage(Usage(input_tokens=30, output_tokens=9, cached_tokens=16, reasoning_tokens=4))
    together = await _batches(FakeHttp(chunks=[b"".join(frames[:2]), b"".join(frames[2:])]))
    assert [type(b) for b in together] == [list, LastBatch] and together[1] == [StreamFinish("stop"), usage]
    alone = await _batches(FakeHttp(chunks=[b"".join(frames[:3]), frames[-1]]))  # no usage: nothing comes with it
    assert [type(b) for b in alone] == [list, LastBatch] and alone[1] == []
    no_done = await _batches(FakeHttp(chunks=[b"".join(frames[:3])]))
    assert [type(b) for b in no_done] == [list, LastBatch] and no_done[1] == []
    cut: list[list[StreamEvent]] = []

    async def read_cut() -> None:
        async for batch in make_provider(FakeHttp(chunks=frames[:2])).stream(chat_request(stream=True), DEPLOYMENT,
                                                                             OPTIONS):
            cut.append(batch)

    with pytest.raises(UpstreamConnectionError):
        await read_cut()
    assert cut and all(type(b) is list for b in cut)  # a cut stream never claims to be complete


async def test_stream_refusal_is_text_with_a_content_filter_finish() -> None:
    http = FakeHttp(chunks=sse(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't"}),
        chunk({"refusal": " help."}),
        chunk({}, "stop"),
        chunk(usage=USAGE, no_choices=True),
    ))
    events = await collect(make_provider(http))
    assert events[1:4] == [TextDelta("I can't"), TextDelta(" help."), StreamFinish("content_filter")]


async def test_stream_refusal_keeps_a_finish_other_than_stop() -> None:
    http = FakeHttp(chunks=sse(chunk({"refusal": "No"}), chunk({}, "length"), chunk({"content": "x"}, index=1),
                               chunk({}, "stop", index=1)))
    events = await collect(make_provider(http))
    finishes = [e for e in events if isinstance(e, StreamFinish)]
    assert finishes == [StreamFinish("length"), StreamFinish("stop", 1)]  # the refusal is choice 0's only


async def test_stream_tool_call_fragments_are_reassembled_in_order() -> None:
    http = FakeHttp(chunks=sse(
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather",
                                                                           "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Par'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'is"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(usage=USAGE, no_choices=True),
    ))
    events = await collect(make_provider(http))
    calls = [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta)]
    assert calls == [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"ci'),
        ToolCallDelta(0, 'ty": "Par'),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(1, "{}"),
        ToolCallDelta(0, 'is"}'),
    ]
    assert events[-2] == StreamFinish("tool_calls")


async def test_stream_parallel_calls_sharing_an_index_are_told_apart_by_id() -> None:
    # Some compatible servers send every parallel call complete, all at index 0.
    http = FakeHttp(chunks=sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "a", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                               "function": {"name": "b", "arguments": '{"x":1}'}}]}),
        chunk({}, "tool_calls"),
    ))
    events = await collect(make_provider(http, base_url=VLLM_URL))
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_1", "a"),
                                                                   ToolCallStart(1, "call_2", "b")]


async def test_stream_with_two_choices() -> None:
    http = FakeHttp(chunks=sse(
        chunk({"content": "A"}, index=0), chunk({"content": "B"}, index=1),
        chunk({}, "stop", index=0), chunk({}, "length", index=1),
    ))
    events = await collect(make_provider(http), chat_request(n=2, stream=True))
    assert events[1:] == [TextDelta("A", 0), TextDelta("B", 1),
                          StreamFinish("stop", 0), StreamFinish("length", 1)]


async def test_stream_in_band_error_event_is_raised() -> None:
    chunks = sse(chunk({"content": "Hel"}), done=False)
    chunks.append(b'event: error\ndata: {"error": {"message": "The server is overloaded", '
                  b'"type": "server_error", "param": null, "code": "overloaded"}}\n\n')
    http = FakeHttp(chunks=chunks)
    gen = flat(make_provider(http).stream(chat_request(stream=True), DEPLOYMENT, OPTIONS))
    assert isinstance(await anext(gen), StreamStart)
    assert await anext(gen) == TextDelta("Hel")
    with pytest.raises(UpstreamOverloaded):
        await anext(gen)
    assert http.streams[0].closed


async def test_stream_error_object_in_a_data_frame_is_raised() -> None:
    http = FakeHttp(chunks=sse({"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                                          "param": None, "code": "rate_limit_exceeded"}}, done=False))
    with pytest.raises(RateLimited):
        await collect(make_provider(http))


async def test_stream_cut_before_finish_raises() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hel"}), done=False))
    with pytest.raises(UpstreamConnectionError):
        await collect(make_provider(http))


async def test_stream_cut_mid_frame_raises() -> None:
    http = FakeHttp(chunks=[b'data: {"id": "chatcmpl-1", "choices": [{"index": 0, "del'])
    with pytest.raises((UpstreamConnectionError, UpstreamProtocolError)):
        await collect(make_provider(http))


async def test_empty_stream_raises() -> None:
    http = FakeHttp(chunks=[])
    with pytest.raises(UpstreamConnectionError):
        await collect(make_provider(http))


async def test_connection_reset_propagates() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hel"}), done=False),
                    stream_error=UpstreamConnectionError("connection reset"))
    with pytest.raises(UpstreamConnectionError):
        await collect(make_provider(http))
    assert http.streams[0].closed


async def test_done_without_finish_raises() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hel"})))
    with pytest.raises(UpstreamProtocolError):
        await collect(make_provider(http))


async def test_finished_stream_without_done_is_accepted() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hi"}), chunk({}, "stop"), done=False))
    events = await collect(make_provider(http))
    assert events[-1] == StreamFinish("stop")


async def test_malformed_frame_is_a_protocol_error() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hi"}), "{not json"))
    with pytest.raises(UpstreamProtocolError):
        await collect(make_provider(http))


async def test_error_status_on_a_stream_reads_the_body() -> None:
    body = orjson.dumps(openai_error("Rate limit reached", "requests", "rate_limit_exceeded"))
    headers = {"content-type": "application/json", "retry-after": "3"}
    http = FakeHttp(stream_status=429, stream_headers=headers, chunks=[body])
    with pytest.raises(RateLimited) as info:
        await collect(make_provider(http))
    assert info.value.retry_after == 3.0


async def test_json_error_instead_of_a_stream() -> None:
    http = FakeHttp(stream_headers={"content-type": "application/json"},
                    chunks=[orjson.dumps(openai_error("bad things", "invalid_request_error"))])
    with pytest.raises(InvalidRequest):
        await collect(make_provider(http))


async def test_closing_the_stream_early_closes_upstream() -> None:
    http = FakeHttp(chunks=sse(chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop")))
    gen = flat(make_provider(http).stream(chat_request(stream=True), DEPLOYMENT, OPTIONS))
    first = await anext(gen)
    assert isinstance(first, StreamStart)
    assert not http.streams[0].closed
    await gen.aclose()  # type: ignore[attr-defined]
    assert http.streams[0].closed


@st.composite
def fragmented_calls(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[bytes]]:
    """Tool calls (name, arguments text), and the network chunks of a stream that sends each call's
    arguments in fragments split anywhere."""
    calls = draw(st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                                    st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3)),
                          min_size=1, max_size=3))
    named = [(name, orjson.dumps(args).decode()) for name, args in calls]
    frames: list[dict[str, Any]] = []
    for i, (name, text) in enumerate(named):
        cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=4)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        frames.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                             "function": {"name": name, "arguments": pieces[0]}}]}))
        frames.extend(chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in pieces[1:])
    frames.append(chunk({}, "tool_calls"))
    return named, draw(network_chunks(b"".join(sse(*frames)), max_cuts=8))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=fragmented_calls())
async def test_fragment_reassembly_property(case: tuple[list[tuple[str, str]], list[bytes]]) -> None:
    """However arguments are split into fragments and bytes into network chunks, the pieces of each
    call concatenate to its exact arguments text."""
    calls, chunks = case
    texts = [text for _, text in calls]
    events = await collect(make_provider(FakeHttp(chunks=chunks)))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    expected = [(i, f"call_{i}", name) for i, (name, _) in enumerate(calls)]
    assert [(s.index, s.id, s.name) for s in starts] == expected
    for i, text in enumerate(texts):
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == i) == text


# ---------------------------------------------------------------------------------------------------
# Embeddings


async def test_embeddings_request_and_answer_in_input_order() -> None:
    payload = {"object": "list", "model": "text-embedding-3-small",
               "data": [{"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
                        {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
               "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    http = FakeHttp(response=json_response(payload))
    deployment = DeploymentConfig(provider="openai", model="text-embedding-3-small")
    request = EmbeddingRequest(model="embed", inputs=["a", "b"], dimensions=2, encoding_format="base64",
                               user="u")
    answer = await make_provider(http).embed(request, deployment, OPTIONS)
    assert http.calls[0].url == "https://api.openai.com/v1/embeddings"
    assert http.calls[0].body == {"model": "text-embedding-3-small", "input": ["a", "b"],
                                  "encoding_format": "float", "dimensions": 2, "user": "u"}
    assert answer.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert answer.usage.input_tokens == 8
    assert answer.model == "text-embedding-3-small"


async def test_embeddings_of_token_ids_and_base64_answers() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -1.0)).decode()
    payload = {"object": "list", "model": "m",
               "data": [{"object": "embedding", "index": 0, "embedding": packed}],
               "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    http = FakeHttp(response=json_response(payload))
    request = EmbeddingRequest(model="embed", inputs=[[1, 2, 3]])
    answer = await make_provider(http, base_url=VLLM_URL).embed(request, DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["input"] == [[1, 2, 3]]
    assert answer.vectors == [[0.5, -1.0]]


async def test_embeddings_with_a_missing_vector_are_a_protocol_error() -> None:
    payload = {"object": "list", "model": "m",
               "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}]}
    http = FakeHttp(response=json_response(payload))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).embed(EmbeddingRequest(model="e", inputs=["a", "b"]), DEPLOYMENT, OPTIONS)
