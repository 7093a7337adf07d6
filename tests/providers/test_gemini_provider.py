"""The Gemini provider against a fake HTTP client: request and response translation, streaming, errors.

The canned payloads follow the shapes of the official ``google-genai`` SDK's wire types
(``GenerateContentResponse``, ``BatchEmbedContentsResponse``) and Google's documented error bodies.
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
from switchboard.providers.base import CallOptions
from switchboard.providers.gemini import THOUGHT_SIGNATURE_BYPASS, GeminiProvider
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
from tests.providers.fakes import (
    OPTIONS,
    FakeHttp,
    chat_request,
    flat,
    network_chunks,
    provider_config,
    sse_frame,
    user,
)
from tests.providers.fakes import json_response as fake_json_response

API_KEY = "AIzaSyTESTKEY-do-not-leak-1234567890"
MODEL_ID = "gemini-2.5-flash"
BASE_URL = "https://generativelanguage.googleapis.com/v1beta"


# ---------------------------------------------------------------------------------------------------
# Builders


def make_provider(http: FakeHttp, **overrides: Any) -> GeminiProvider:
    config = provider_config("gemini", BASE_URL, API_KEY, {"X-Goog-User-Project": "proj-test"}, **overrides)
    return GeminiProvider(config, http)


DEPLOYMENT = DeploymentConfig(provider="gemini", model=MODEL_ID)
GEMINI_3 = DeploymentConfig(provider="gemini", model="gemini-3-pro-preview")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    """Google labels its JSON with a charset."""
    return fake_json_response(payload, status, headers or {"content-type": "application/json; charset=UTF-8"})


USAGE = {"promptTokenCount": 120, "candidatesTokenCount": 40, "totalTokenCount": 260,
         "cachedContentTokenCount": 64, "thoughtsTokenCount": 100,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]}


def generate_response(parts: list[dict[str, Any]], finish: str | None = "STOP", *,
                      usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL_ID,
                               "responseId": "mEvNaJ2cMYqW1MkPrbPJwAc", **extra}
    if usage is not None:
        payload["usageMetadata"] = usage
    return payload


def google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return {"error": err}


def sse(*frames: dict[str, Any] | str) -> list[bytes]:
    return [sse_frame(f, eol=b"\r\n") for f in frames]


async def collect(provider: GeminiProvider, request: ChatRequest | None = None,
                  deployment: DeploymentConfig = DEPLOYMENT) -> list[StreamEvent]:
    return [e async for e in flat(provider.stream(request or chat_request(stream=True), deployment, OPTIONS))]


# ---------------------------------------------------------------------------------------------------
# Request translation


async def test_urls_auth_header_and_timeouts() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "Hi"}])))
    forwarded = {"X-Trace": "t", "x-goog-api-key": "client-key"}
    options = CallOptions(request_id="r", timeout=9.0, forward_headers=forwarded)
    await make_provider(http).chat(chat_request(), DEPLOYMENT, options)
    call = http.calls[0]
    assert call.url == f"{BASE_URL}/models/gemini-2.5-flash:generateContent"
    assert "key=" not in call.url
    assert call.headers["x-goog-api-key"] == API_KEY
    assert "authorization" not in call.headers
    assert call.headers["x-goog-user-project"] == "proj-test"
    assert call.headers["x-trace"] == "t"
    assert (call.timeout, call.connect_timeout) == (9.0, 5.0)


async def test_stream_url_uses_alt_sse() -> None:
    http = FakeHttp(chunks=sse(generate_response([{"text": "Hi"}], usage=USAGE)))
    deployment = DeploymentConfig(provider="gemini", model="models/gemini-2.5-pro")
    await collect(make_provider(http), deployment=deployment)
    assert http.calls[0].url == f"{BASE_URL}/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert "key=" not in http.calls[0].url


async def test_every_field_is_translated() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "Hi"}])))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False, "$defs": {"x": {"type": "string"}}}
    request = chat_request(
        Message("system", [TextPart("Be brief.")]), Message("system", [TextPart("Be kind.")]), user("Hello"),
        max_tokens=100, temperature=0.2, top_p=0.9, top_k=40, stop=["END"], seed=7, n=2,
        tools=[ToolSpec("get_weather", "Weather for a city", schema, strict=True), ToolSpec("now")],
        tool_choice=ToolChoice("tool", "get_weather"), parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", {"type": "object"}, "answer", True),
        user="user-42", metadata={"team": "search"}, presence_penalty=0.5, frequency_penalty=-0.5,
        reasoning_effort="low",
    )
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert http.calls[0].body == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather for a city", "parametersJsonSchema": schema},
            {"name": "now"},
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9, "topK": 40, "stopSequences": ["END"],
            "seed": 7, "candidateCount": 2, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
            "thinkingConfig": {"thinkingBudget": 1024},
        },
    }


@pytest.mark.parametrize(("choice", "mode"), [
    (ToolChoice("auto"), "AUTO"), (ToolChoice("none"), "NONE"), (ToolChoice("required"), "ANY"),
])
async def test_tool_choice_modes(choice: ToolChoice, mode: str) -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "Hi"}])))
    request = chat_request(tools=[ToolSpec("f")], tool_choice=choice)
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


async def test_json_object_mode_and_gemini_3_thinking_level() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "{}"}])))
    request = chat_request(response_format=ResponseFormat("json_object"), reasoning_effort="high")
    await make_provider(http).chat(request, GEMINI_3, OPTIONS)
    assert http.calls[0].body["generationConfig"] == {"responseMimeType": "application/json",
                                                      "thinkingConfig": {"thinkingLevel": "HIGH"}}


@pytest.mark.parametrize(("field", "value"), [("logit_bias", {"1": 2.0}), ("reasoning_effort", "extreme")])
async def test_unsupported_parameters(field: str, value: Any) -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "Hi"}])))
    with pytest.raises(UnsupportedParameter) as info:
        await make_provider(http).chat(chat_request(**{field: value}), DEPLOYMENT, OPTIONS)
    assert info.value.param == field
    assert http.calls == []


async def test_images_become_inline_and_file_data() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "A cat."}])))
    request = chat_request(Message("user", [
        TextPart("What is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png"),
        ImagePart("https://example.com/photos/cat.webp"),
        ImagePart("https://example.com/render?id=7", media_type="image/png"),
        ImagePart("data:image/svg+xml,%3Csvg%2F%3E"),
    ]))
    await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/photos/cat.webp"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/render?id=7"}},
        {"inlineData": {"mimeType": "image/svg+xml", "data": "PHN2Zy8+"}},
    ]


def tool_conversation() -> list[Message]:
    return [
        user("Weather and time in Paris?"),
        Message("assistant", [TextPart("Checking.")], tool_calls=[
            ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_def", "get_time", ""),
        ]),
        Message("tool", [TextPart('{"temp": 21}')], tool_call_id="call_abc"),
        Message("tool", [TextPart("clock broken")], tool_call_id="call_def", is_error=True),
        Message("assistant", [TextPart("21°C; time unknown.")]),
        user("Thanks"),
    ]


async def test_tool_round_trip_recovers_function_names() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "You're welcome."}])))
    await make_provider(http).chat(chat_request(*tool_conversation()), DEPLOYMENT, OPTIONS)
    assert http.calls[0].body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Paris?"}]},
        {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": '{"temp": 21}'}}},
            {"functionResponse": {"name": "get_time", "response": {"error": "clock broken"}}},
        ]},
        {"role": "model", "parts": [{"text": "21°C; time unknown."}]},
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]


async def test_gemini_3_replayed_calls_carry_the_signature_bypass() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "ok"}])))
    await make_provider(http).chat(chat_request(*tool_conversation()), GEMINI_3, OPTIONS)
    model_parts = http.calls[0].body["contents"][1]["parts"]
    assert model_parts[1]["thoughtSignature"] == THOUGHT_SIGNATURE_BYPASS
    assert "thoughtSignature" not in model_parts[2]


async def test_tool_result_for_an_unknown_call_is_refused() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "ok"}])))
    request = chat_request(user("Hi"), Message("tool", [TextPart("x")], tool_call_id="call_nope"))
    with pytest.raises(InvalidRequest):
        await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)


async def test_tool_call_arguments_must_be_an_object() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "ok"}])))
    request = chat_request(user("Hi"), Message("assistant", tool_calls=[ToolCall("c1", "f", "[1, 2]")]))
    with pytest.raises(InvalidRequest):
        await make_provider(http).chat(request, DEPLOYMENT, OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Response translation


async def test_text_answer_with_usage_counting_thoughts_as_output() -> None:
    payload = generate_response([{"text": "Hello "}, {"text": "there!"}], usage=USAGE)
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.id == "mEvNaJ2cMYqW1MkPrbPJwAc"
    assert answer.model == MODEL_ID
    assert answer.created > 0
    assert answer.choices[0].message.text() == "Hello there!"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage == Usage(input_tokens=120, output_tokens=140, cached_tokens=64, reasoning_tokens=100)


async def test_thought_parts_are_not_answer_text() -> None:
    payload = generate_response([{"text": "Let me think...", "thought": True}, {"text": "42"}])
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.text() == "42"


async def test_function_calls_get_unique_ids_and_json_arguments() -> None:
    parts = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
              "thoughtSignature": "CiQB0e2Kb..."},
             {"functionCall": {"name": "get_time", "args": {}}}]
    http = FakeHttp(response=json_response(generate_response(parts)))
    first = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    second = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                    ("get_time", {})]
    assert calls[0].id.startswith("call_")
    assert calls[0].id.endswith("_0")
    assert calls[1].id.endswith("_1")
    ids = {c.id for c in calls} | {c.id for c in second.choices[0].message.tool_calls}
    assert len(ids) == 4


async def test_function_call_ids_from_gemini_are_kept() -> None:
    parts = [{"functionCall": {"id": "fc_9", "name": "f", "args": {"a": 1}}}]
    http = FakeHttp(response=json_response(generate_response(parts)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.tool_calls[0].id == "fc_9"


@pytest.mark.parametrize(("wire", "canonical"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop"),
])
async def test_finish_reasons(wire: str, canonical: str) -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "x"}], wire)))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].finish_reason == canonical


@pytest.mark.parametrize("wire", ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
                                  "IMAGE_SAFETY"])
async def test_filtered_finish_carries_a_refusal_naming_the_reason(wire: str) -> None:
    payload = generate_response([], wire)
    payload["candidates"][0].pop("content")  # a blocked candidate often has none
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    choice = answer.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == []
    assert choice.message.refusal == f"Gemini blocked the answer ({wire})."


async def test_filtered_finish_keeps_partial_text_and_the_finish_message() -> None:
    payload = generate_response([{"text": "Once upon"}], "RECITATION")
    payload["candidates"][0]["finishMessage"] = "Recitation of training data."
    http = FakeHttp(response=json_response(payload))
    message = (await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)).choices[0].message
    assert message.text() == "Once upon"
    assert message.refusal == "Gemini blocked the answer (RECITATION). Recitation of training data."


async def test_an_ordinary_finish_has_no_refusal() -> None:
    http = FakeHttp(response=json_response(generate_response([{"text": "x"}], "STOP")))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert answer.choices[0].message.refusal is None


async def test_blocked_prompt_is_a_content_filter_finish() -> None:
    payload = {"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": MODEL_ID,
               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert len(answer.choices) == 1
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content == []
    assert answer.choices[0].message.refusal == "Gemini blocked the prompt (SAFETY)."
    assert answer.id.startswith("gen-")


async def test_no_candidates_and_no_block_is_an_empty_stop() -> None:
    http = FakeHttp(response=json_response({"modelVersion": MODEL_ID}))
    choice = (await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)).choices[0]
    assert (choice.finish_reason, choice.message.refusal) == ("stop", None)


async def test_two_candidates() -> None:
    payload = {"candidates": [
        {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"},
        {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1},
    ]}
    http = FakeHttp(response=json_response(payload))
    answer = await make_provider(http).chat(chat_request(n=2), DEPLOYMENT, OPTIONS)
    assert [(c.index, c.message.text(), c.finish_reason) for c in answer.choices] == [(0, "A", "stop"),
                                                                                     (1, "B", "length")]
    assert answer.model == MODEL_ID


async def test_non_json_success_body_is_a_protocol_error() -> None:
    http = FakeHttp(response=HttpResponse(200, {"content-type": "text/html"}, b"<html>captive portal</html>"))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(("status", "payload", "expected"), [
    (400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), InvalidRequest),
    (400, google_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number "
                       "of tokens allowed (1048576)."), ContextLengthExceeded),
    (403, google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
     UpstreamStatusError),
    (404, google_error(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"),
     UpstreamStatusError),
    (500, google_error(500, "INTERNAL", "An internal error has occurred."), UpstreamStatusError),
    (503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
     UpstreamOverloaded),
    (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded"), UpstreamTimeout),
])
async def test_error_statuses(status: int, payload: dict[str, Any], expected: type[SwitchboardError]) -> None:
    http = FakeHttp(response=json_response(payload, status))
    with pytest.raises(expected) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert payload["error"]["message"] in info.value.message


async def test_resource_exhausted_uses_the_retry_delay_from_the_body() -> None:
    payload = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"},
    ])
    http = FakeHttp(response=json_response(payload, 429))
    with pytest.raises(RateLimited) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.retry_after == 38.0


async def test_retry_after_header_wins_over_the_body() -> None:
    payload = google_error(429, "RESOURCE_EXHAUSTED", "quota", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}])
    headers = {"content-type": "application/json", "retry-after": "2"}
    http = FakeHttp(response=json_response(payload, 429, headers))
    with pytest.raises(RateLimited) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert info.value.retry_after == 2.0


async def test_api_key_never_appears_in_errors() -> None:
    payload = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {API_KEY}")
    http = FakeHttp(response=json_response(payload, 400))
    with pytest.raises(InvalidRequest) as info:
        await make_provider(http).chat(chat_request(), DEPLOYMENT, OPTIONS)
    assert API_KEY not in str(info.value)


# ---------------------------------------------------------------------------------------------------
# Streaming


async def test_stream_text_finish_and_last_usage() -> None:
    http = FakeHttp(chunks=sse(
        generate_response([{"text": "Hel"}], None, usage={"promptTokenCount": 120, "totalTokenCount": 120}),
        generate_response([{"text": "lo"}], None),
        generate_response([{"text": "!"}], "STOP", usage=USAGE),
    ))
    events = await collect(make_provider(http))
    start = events[0]
    assert isinstance(start, StreamStart)
    assert (start.id, start.model) == ("mEvNaJ2cMYqW1MkPrbPJwAc", MODEL_ID)
    assert events[1:] == [
        TextDelta("Hel"), TextDelta("lo"), TextDelta("!"), StreamFinish("stop"),
        StreamUsage(Usage(input_tokens=120, output_tokens=140, cached_tokens=64, reasoning_tokens=100)),
    ]
    assert http.streams[0].closed


async def test_stream_function_calls_arrive_whole() -> None:
    http = FakeHttp(chunks=sse(
        generate_response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}], None),
        generate_response([{"functionCall": {"name": "get_time", "args": {}}}], "STOP", usage=USAGE),
    ))
    events = await collect(make_provider(http))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert starts[0].id != starts[1].id
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, orjson.loads(d.arguments)) for d in deltas] == [(0, {"city": "Paris"}), (1, {})]
    assert StreamFinish("tool_calls") in events


@pytest.mark.parametrize("wire", ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
                                  "IMAGE_SAFETY"])
async def test_stream_filtered_finish_is_content_filter(wire: str) -> None:
    blocked = generate_response([], wire, usage=USAGE)
    blocked["candidates"][0].pop("content")
    http = FakeHttp(chunks=sse(generate_response([{"text": "Hel"}], None), blocked))
    events = await collect(make_provider(http))
    assert events[1:3] == [TextDelta("Hel"), StreamFinish("content_filter")]


async def test_stream_blocked_prompt() -> None:
    http = FakeHttp(chunks=sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
                                "modelVersion": MODEL_ID, "responseId": "r1"}))
    events = await collect(make_provider(http))
    assert events[1:] == [StreamFinish("content_filter"), StreamUsage(Usage(input_tokens=5))]


async def test_stream_error_frame_is_raised() -> None:
    chunks = sse(generate_response([{"text": "Hel"}], None),
                 google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))
    http = FakeHttp(chunks=chunks)
    gen = flat(make_provider(http).stream(chat_request(stream=True), DEPLOYMENT, OPTIONS))
    assert isinstance(await anext(gen), StreamStart)
    assert await anext(gen) == TextDelta("Hel")
    with pytest.raises(UpstreamOverloaded):
        await anext(gen)
    assert http.streams[0].closed


async def test_stream_cut_before_finish_raises() -> None:
    http = FakeHttp(chunks=sse(generate_response([{"text": "Hel"}], None)))
    with pytest.raises(UpstreamConnectionError):
        await collect(make_provider(http))


async def test_empty_stream_raises() -> None:
    with pytest.raises(UpstreamConnectionError):
        await collect(make_provider(FakeHttp(chunks=[])))


async def test_malformed_frame_is_a_protocol_error() -> None:
    http = FakeHttp(chunks=sse(generate_response([{"text": "Hel"}], None), "{\"candidates\": [oops"))
    with pytest.raises(UpstreamProtocolError):
        await collect(make_provider(http))


async def test_error_status_on_a_stream() -> None:
    payload = google_error(429, "RESOURCE_EXHAUSTED", "quota", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"}])
    http = FakeHttp(stream_status=429, stream_headers={"content-type": "application/json"},
                    chunks=[orjson.dumps(payload)])
    with pytest.raises(RateLimited) as info:
        await collect(make_provider(http))
    assert info.value.retry_after == 5.0


async def test_closing_the_stream_early_closes_upstream() -> None:
    http = FakeHttp(chunks=sse(generate_response([{"text": "Hel"}], None),
                               generate_response([{"text": "lo"}], "STOP")))
    gen = flat(make_provider(http).stream(chat_request(stream=True), DEPLOYMENT, OPTIONS))
    assert isinstance(await anext(gen), StreamStart)
    await gen.aclose()  # type: ignore[attr-defined]
    assert http.streams[0].closed


@st.composite
def chunked_texts(draw: st.DrawFn) -> tuple[list[str], list[bytes]]:
    """Texts, and the network chunks of a stream that sends them, split anywhere."""
    texts = draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
    frames = [generate_response([{"text": t}], None) for t in texts]
    frames.append(generate_response([], "STOP", usage=USAGE))
    return texts, draw(network_chunks(b"".join(sse(*frames)), max_cuts=10))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=chunked_texts())
async def test_stream_text_survives_any_chunking(case: tuple[list[str], list[bytes]]) -> None:
    texts, chunks = case
    events = await collect(make_provider(FakeHttp(chunks=chunks)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(texts)
    assert events[-2:] == [StreamFinish("stop"), StreamUsage(Usage(120, 140, 64, 100))]


# ---------------------------------------------------------------------------------------------------
# Embeddings


async def test_embeddings_use_batch_embed_contents() -> None:
    payload = {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}
    http = FakeHttp(response=json_response(payload))
    deployment = DeploymentConfig(provider="gemini", model="gemini-embedding-001")
    request = EmbeddingRequest(model="embed", inputs=["hello world!", "日本語"], dimensions=2)
    answer = await make_provider(http).embed(request, deployment, OPTIONS)
    assert http.calls[0].url == f"{BASE_URL}/models/gemini-embedding-001:batchEmbedContents"
    assert http.calls[0].body == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello world!"}]},
         "outputDimensionality": 2},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "日本語"}]},
         "outputDimensionality": 2},
    ]}
    assert answer.vectors == [[0.1, 0.2], [0.3, 0.4]]
    # No usage from Gemini: a quarter of the UTF-8 bytes, rounded up (12 → 3, 9 → 3).
    assert answer.usage.input_tokens == 6


async def test_embeddings_refuse_token_ids() -> None:
    http = FakeHttp(response=json_response({"embeddings": []}))
    with pytest.raises(UnsupportedParameter):
        await make_provider(http).embed(EmbeddingRequest(model="e", inputs=[[1, 2]]), DEPLOYMENT, OPTIONS)
    assert http.calls == []


async def test_embeddings_with_a_missing_vector_are_a_protocol_error() -> None:
    http = FakeHttp(response=json_response({"embeddings": [{"values": [0.1]}]}))
    with pytest.raises(UpstreamProtocolError):
        await make_provider(http).embed(EmbeddingRequest(model="e", inputs=["a", "b"]), DEPLOYMENT, OPTIONS)
