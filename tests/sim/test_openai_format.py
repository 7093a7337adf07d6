"""The OpenAI endpoints, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx2
import jsonschema
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageFunctionToolCall

from switchboard.sim import SimServer

USER: list[Any] = [{"role": "user", "content": "Tell me about rivers"}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "detailed": {"type": "boolean"},
    },
    "required": ["city", "days", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather forecast", "parameters": WEATHER_SCHEMA},
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    },
]


async def test_reply_is_deterministic_and_counts_tokens(oai: openai.AsyncOpenAI) -> None:
    a = await oai.chat.completions.create(model="sim-gpt-small", messages=USER)
    b = await oai.chat.completions.create(model="sim-gpt-small", messages=USER)
    other = await oai.chat.completions.create(model="sim-gpt-small", messages=[{"role": "user", "content": "Hi"}])
    assert a.object == "chat.completion"
    assert a.model == "sim-gpt-small"
    assert a.choices[0].message.content == b.choices[0].message.content != other.choices[0].message.content
    assert a.choices[0].finish_reason == "stop"
    assert a.usage is not None
    assert a.usage.completion_tokens == 40  # the model's output_tokens
    assert a.usage.prompt_tokens == 4 + 4 + 3  # words + per-message overhead + primer
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert a.usage.prompt_tokens_details is not None
    assert a.usage.prompt_tokens_details.cached_tokens == 0


async def test_max_tokens_cuts_the_reply(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, max_tokens=5)
    content = r.choices[0].message.content
    assert content is not None
    assert len(content.split()) == 5
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 5
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, max_completion_tokens=100)
    assert r.choices[0].finish_reason == "stop"


async def test_aliases_resolve_to_the_model(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="fast", messages=USER)
    assert r.model == "sim-gpt-small"


async def test_stream_has_one_chunk_per_token_and_a_usage_chunk(oai: openai.AsyncOpenAI) -> None:
    headers = {"x-sim-output-tokens": "20"}
    stream = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    chunks = [c async for c in stream]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 20
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 20
    whole = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=headers)
    assert "".join(content) == whole.choices[0].message.content


async def test_stream_without_include_usage_has_no_usage_chunk(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, stream=True, max_tokens=3)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_n_choices(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, n=3, max_tokens=6)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage is not None
    assert r.usage.completion_tokens == 18
    stream = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, n=2, max_tokens=6, stream=True)
    texts = ["", ""]
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in r.choices[:2]]


async def test_scripted_reply_and_stop_sequence(oai: openai.AsyncOpenAI) -> None:
    reply = "The quiet river runs  past the mill.\n"
    header = {"x-sim-reply": json.dumps(reply)}  # a JSON string literal: header values cannot hold newlines
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=header)
    assert r.choices[0].message.content == reply
    stream = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, stream=True, extra_headers=header)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces == ["The", " quiet", " river", " runs", "  past", " the", " mill.\n"]
    r = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, extra_headers={"x-sim-reply": "plain text"}
    )
    assert r.choices[0].message.content == "plain text"
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, stop=["river"], extra_headers=header)
    assert r.choices[0].message.content == "The quiet "
    assert r.choices[0].finish_reason == "stop"


async def test_tool_call(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)


async def test_forced_and_disabled_tools(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    calls = r.choices[0].message.tool_calls
    assert calls is not None
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "lookup"
    assert set(json.loads(calls[0].function.arguments)) == {"word"}
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, tools=TOOLS, tool_choice="none")
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    r = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, tools=TOOLS, extra_headers={"x-sim-tool-call": "never"}
    )
    assert r.choices[0].message.tool_calls is None


async def test_tool_result_gets_a_text_answer(oai: openai.AsyncOpenAI) -> None:
    first = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, tools=TOOLS)
    calls = first.choices[0].message.tool_calls
    assert calls is not None
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    messages: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0].id,
                    "type": "function",
                    "function": {"name": calls[0].function.name, "arguments": calls[0].function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 degrees"},
    ]
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=messages, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content
    r = await oai.chat.completions.create(
        model="sim-gpt-small", messages=messages, tools=TOOLS, extra_headers={"x-sim-tool-call": "always"}
    )
    assert r.choices[0].finish_reason == "tool_calls"


async def test_streamed_tool_call_fragments(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, tools=TOOLS, stream=True)
    fragments = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            fragments += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    first, rest = fragments[0], fragments[1:]
    assert first.index == 0
    assert first.id
    assert first.type == "function"
    assert first.function is not None
    assert first.function.name == "get_weather"
    assert first.function.arguments == ""
    assert len(rest) > 1
    assert all(f.index == 0 and f.id is None and f.function is not None and f.function.name is None for f in rest)
    arguments = "".join(f.function.arguments or "" for f in rest if f.function is not None)
    jsonschema.validate(json.loads(arguments), WEATHER_SCHEMA)
    assert finish == "tool_calls"


PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        "address": {"$ref": "#/$defs/Address"},
        "kind": {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["a", "b"]}]},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "age", "score", "tags", "address", "kind", "email"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
}


async def test_json_schema_reply_conforms(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    content = r.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), PERSON_SCHEMA)
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


class Step(pydantic.BaseModel):
    explanation: str
    output: int


class Solution(pydantic.BaseModel):
    steps: list[Step]
    final_answer: str


async def test_sdk_parse_with_a_pydantic_model(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.parse(model="sim-gpt-small", messages=USER, response_format=Solution)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Solution)
    assert parsed.steps


async def test_cached_and_reasoning_tokens_in_usage(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        max_tokens=4,
        extra_headers={"x-sim-cached-tokens": "6", "x-sim-reasoning-tokens": "30"},
    )
    u = r.usage
    assert u is not None
    assert u.prompt_tokens_details is not None
    assert u.completion_tokens_details is not None
    assert u.prompt_tokens_details.cached_tokens == 6
    assert u.completion_tokens_details.reasoning_tokens == 30
    assert u.completion_tokens == 4 + 30
    stream = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-sim-cached-tokens": "1000"},
    )
    chunks = [c async for c in stream]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens  # capped at the prompt


async def test_embeddings(oai: openai.AsyncOpenAI) -> None:
    texts = ["the quiet river runs", "the quiet river runs", "a quiet river flows", "copper pots and spices"]
    r = await oai.embeddings.create(model="sim-embed", input=texts)  # the SDK asks for base64
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2, 3]
    assert all(len(v) == 256 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[1]

    def cos(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[2]) > cos(vectors[0], vectors[3]) + 0.2
    assert r.usage.prompt_tokens == 4 + 4 + 4 + 4
    floats = await oai.embeddings.create(model="sim-embed", input=texts[0], encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    short = await oai.embeddings.create(model="embed", input=texts[0], dimensions=64)
    assert len(short.data[0].embedding) == 64


async def test_kind_mismatch_is_a_bad_request(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await oai.embeddings.create(model="sim-gpt-small", input="x")
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="sim-embed", messages=USER)
    with pytest.raises(openai.BadRequestError):
        await oai.embeddings.create(model="sim-embed", input="x", dimensions=4096)


async def test_models(oai: openai.AsyncOpenAI, sim: SimServer) -> None:
    page = await oai.models.list()
    assert [m.id for m in page.data] == [m.name for m in sim.fleet]
    model = await oai.models.retrieve("sim-gpt-large")
    assert model.id == "sim-gpt-large"
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nope")


async def test_unknown_model(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await oai.chat.completions.create(model="gpt-nonexistent", messages=USER)
    assert exc.value.code == "model_not_found"
    assert exc.value.response.headers["x-request-id"].startswith("req_")


async def test_context_overflow(oai: openai.AsyncOpenAI, sim: SimServer) -> None:
    sim.fleet = sim.fleet.replace("sim-gpt-small", context_window=50)
    with pytest.raises(openai.BadRequestError) as exc:
        await oai.chat.completions.create(model="sim-gpt-small", messages=[{"role": "user", "content": "w " * 60}])
    assert exc.value.code == "context_length_exceeded"
    assert exc.value.type == "invalid_request_error"
    assert "maximum context length is 50 tokens" in exc.value.message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_scripted_status(oai: openai.AsyncOpenAI, status: int, error: type[openai.APIStatusError]) -> None:
    with pytest.raises(error) as exc:
        await oai.chat.completions.create(
            model="sim-gpt-small", messages=USER, stream=True, extra_headers={"x-sim-status": str(status)}
        )
    assert exc.value.status_code == status
    assert isinstance(exc.value.body, dict)
    assert set(exc.value.body) == {"message", "type", "param", "code"}


async def test_rate_limit_message_and_retry_after(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        await oai.chat.completions.create(
            model="sim-gpt-small",
            messages=USER,
            extra_headers={
                "x-sim-status": "429",
                "x-sim-retry-after": "3",
                "x-sim-error-message": "slow down",
            },
        )
    assert exc.value.response.headers["retry-after"] == "3"
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.message.endswith("slow down")


async def test_reset_without_a_response(oai: openai.AsyncOpenAI, sim: SimServer) -> None:
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(
            model="sim-gpt-small", messages=USER, extra_headers={"x-sim-reset-after": "0"}
        )
    assert sim.stats.resets == 1


async def collect_text(stream: openai.AsyncStream[ChatCompletionChunk], got: list[str]) -> None:
    """Append each content delta to ``got`` (which keeps them when the stream then fails)."""
    async for chunk in stream:
        got += [c.delta.content for c in chunk.choices if c.delta.content]


async def test_reset_mid_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, stream=True, extra_headers={"x-sim-reset-after": "3"}
    )
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await collect_text(stream, got)
    assert len(got) == 3


async def test_in_band_stream_error(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, stream=True, extra_headers={"x-sim-stream-error-after": "2"}
    )
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        await collect_text(stream, got)
    assert not isinstance(exc.value, openai.APIConnectionError)
    assert len(got) == 2
    with pytest.raises(openai.InternalServerError):  # the same script without streaming
        await oai.chat.completions.create(
            model="sim-gpt-small", messages=USER, extra_headers={"x-sim-stream-error-after": "2"}
        )


async def test_malformed_bodies(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(json.JSONDecodeError):
        await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers={"x-sim-malformed": "1"})
    stream = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, stream=True, extra_headers={"x-sim-malformed": "1"}
    )
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


async def test_timeout_hangs_until_the_client_leaves(oai: openai.AsyncOpenAI, sim: SimServer) -> None:
    with pytest.raises(openai.APITimeoutError):
        await oai.chat.completions.create(
            model="sim-gpt-small", messages=USER, timeout=0.2, extra_headers={"x-sim-timeout": "1"}
        )
    await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1)
    assert sim.stats.in_flight == 0


async def test_client_disconnect_mid_stream_is_counted(oai: openai.AsyncOpenAI, sim: SimServer) -> None:
    stream = await oai.chat.completions.create(
        model="sim-gpt-small",
        messages=USER,
        stream=True,
        extra_headers={"x-sim-tps": "20", "x-sim-output-tokens": "1000"},
    )
    seen = 0
    async for chunk in stream:
        seen += sum(1 for c in chunk.choices if c.delta.content)
        if seen == 2:
            break
    await stream.close()
    await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1)


async def test_target_and_times(oai: openai.AsyncOpenAI) -> None:
    script = {"x-sim-status": "503", "x-sim-target": "smart"}
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=script)
    assert r.choices[0].message.content
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model="sim-gpt-large", messages=USER, extra_headers=script)
    once = {"x-sim-status": "503", "x-sim-times": "1", "x-sim-id": "test_target_and_times"}
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=once)
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=once)
    assert r.choices[0].message.content


REFUSAL = "I can't help with that."


async def test_refusal(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, tools=TOOLS, extra_headers={"x-sim-refusal": REFUSAL}
    )
    choice = r.choices[0]
    assert choice.message.content is None
    assert choice.message.refusal == REFUSAL
    assert choice.message.tool_calls is None  # a refusal wins over tools
    assert choice.finish_reason == "stop"


async def test_refusal_streamed_as_refusal_deltas(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="sim-gpt-small", messages=USER, stream=True, n=2, extra_headers={"x-sim-refusal": REFUSAL}
    )
    refusals: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str | None] = {}
    async for chunk in stream:
        for c in chunk.choices:
            assert not c.delta.content
            refusals[c.index] += c.delta.refusal or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert refusals == {0: REFUSAL, 1: REFUSAL}
    assert finishes == {0: "stop", 1: "stop"}


async def test_refusal_follows_target_and_times(oai: openai.AsyncOpenAI) -> None:
    script = {"x-sim-refusal": REFUSAL, "x-sim-target": "smart"}
    r = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=script)
    assert (r.choices[0].message.refusal, bool(r.choices[0].message.content)) == (None, True)
    r = await oai.chat.completions.create(model="sim-gpt-large", messages=USER, extra_headers=script)
    assert r.choices[0].message.refusal == REFUSAL
    once = {"x-sim-refusal": REFUSAL, "x-sim-times": "1", "x-sim-id": "test_refusal_follows_target_and_times"}
    first = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=once)
    second = await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers=once)
    assert first.choices[0].message.refusal == REFUSAL
    assert second.choices[0].message.refusal is None and second.choices[0].message.content


async def test_bad_scripting_headers_are_rejected(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="x-sim-output-tokens"):
        await oai.chat.completions.create(
            model="sim-gpt-small", messages=USER, extra_headers={"x-sim-output-tokens": "many"}
        )
    with pytest.raises(openai.BadRequestError, match="x-sim-colour"):
        await oai.chat.completions.create(model="sim-gpt-small", messages=USER, extra_headers={"x-sim-colour": "1"})


async def test_invalid_requests(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="sim-gpt-small", messages=[])
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="sim-gpt-small", messages=USER, max_tokens=0)


async def test_authentication(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "sim-gpt-small", "messages": USER})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    async with SimServer(sim.fleet, api_key="secret") as strict:
        for key, ok in (("wrong", False), ("secret", True)):
            client = openai.AsyncOpenAI(base_url=f"{strict.base_url}/v1", api_key=key, max_retries=0)
            try:
                if ok:
                    assert (await client.chat.completions.create(model="sim-gpt-small", messages=USER)).choices
                else:
                    with pytest.raises(openai.AuthenticationError):
                        await client.chat.completions.create(model="sim-gpt-small", messages=USER)
            finally:
                await client.close()
