"""The Anthropic Messages endpoints, driven by the official ``anthropic`` SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from switchboard.sim import SimServer

USER: list[Any] = [{"role": "user", "content": "Tell me about rivers"}]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather forecast",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        },
    },
    {
        "name": "lookup",
        "description": "Look a word up",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
]
HEADERS = {"x-api-key": "x", "anthropic-version": "2023-06-01"}


async def test_message(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(model="sim-claude", max_tokens=1000, messages=USER, system="You are terse.")
    again = await claude.messages.create(model="claude", max_tokens=1000, messages=USER, system="You are terse.")
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.model == "sim-claude"
    assert m.id.startswith("msg_")
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    block = m.content[0]
    assert block.type == "text"
    assert len(block.text.split()) == m.usage.output_tokens == 60
    assert again.content == m.content
    assert m.usage.input_tokens == 3 + 4 + 4 + 3  # system words + message words + overhead + primer


async def test_max_tokens_and_stop_sequences(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(model="sim-claude", max_tokens=3, messages=USER)
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 3
    m = await claude.messages.create(
        model="sim-claude",
        max_tokens=100,
        messages=USER,
        stop_sequences=["mill"],
        extra_headers={"x-sim-reply": "down by the mill pond"},
    )
    assert m.stop_reason == "stop_sequence"
    assert m.stop_sequence == "mill"
    assert m.content[0].type == "text"
    assert m.content[0].text == "down by the "


async def test_max_tokens_is_required(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=HEADERS) as http:
        r = await http.post("/v1/messages", json={"model": "sim-claude", "messages": USER})
        assert r.status_code == 400
        assert r.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
        r = await http.post(
            "/v1/messages",
            json={"model": "sim-claude", "max_tokens": 5, "messages": USER},
            headers={"anthropic-version": ""},
        )
        assert r.status_code == 200
        r = await http.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["type"] == "error"


async def test_missing_version_or_key(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        body = {"model": "sim-claude", "max_tokens": 5, "messages": USER}
        r = await http.post("/v1/messages", json=body, headers={"x-api-key": "x"})
        assert r.status_code == 400
        assert "anthropic-version" in r.json()["error"]["message"]
        r = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"


async def test_stream_matches_the_whole_message(claude: anthropic.AsyncAnthropic) -> None:
    headers = {"x-sim-output-tokens": "20"}
    async with claude.messages.stream(
        model="sim-claude", max_tokens=100, messages=USER, extra_headers=headers
    ) as stream:
        deltas = [e async for e in stream if e.type == "content_block_delta"]
        final = await stream.get_final_message()
    whole = await claude.messages.create(model="sim-claude", max_tokens=100, messages=USER, extra_headers=headers)
    assert len(deltas) == 20
    assert [b.model_dump(include={"type", "text"}) for b in final.content] == [
        b.model_dump(include={"type", "text"}) for b in whole.content
    ]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 20
    assert final.usage.input_tokens == whole.usage.input_tokens


REFUSAL = "I can't help with that."


async def test_refusal(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(
        model="sim-claude", max_tokens=100, messages=USER, extra_headers={"x-sim-refusal": REFUSAL}
    )
    assert m.stop_reason == "refusal"
    assert [b.model_dump(include={"type", "text"}) for b in m.content] == [{"type": "text", "text": REFUSAL}]
    empty = await claude.messages.create(
        model="sim-claude", max_tokens=100, messages=USER, extra_headers={"x-sim-refusal": ""}
    )
    assert (empty.content, empty.stop_reason) == ([], "refusal")


async def test_refusal_streamed(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="sim-claude", max_tokens=100, messages=USER, extra_headers={"x-sim-refusal": REFUSAL}
    ) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_message()
    assert kinds.index("content_block_start") < kinds.index("message_delta")
    assert final.stop_reason == "refusal"
    assert [b.model_dump(include={"type", "text"}) for b in final.content] == [{"type": "text", "text": REFUSAL}]


async def test_raw_event_order(sim: SimServer) -> None:
    body = {"model": "sim-claude", "max_tokens": 5, "messages": USER, "stream": True}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=HEADERS) as http:
        r = await http.post("/v1/messages", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["request-id"].startswith("req_")
    events = []
    for frame in r.text.split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        name, data = event_line[7:], json.loads(data_line[6:])
        assert data["type"] == name
        events.append(data)
    names = [e["type"] for e in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert all(e["delta"]["type"] == "text_delta" and e["index"] == 0 for e in events[3:8])
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["output_tokens"] == 5


async def test_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(model="sim-claude", max_tokens=100, messages=USER, tools=TOOLS)
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.id.startswith("toolu_")
    jsonschema.validate(block.input, TOOLS[0]["input_schema"])
    forced = await claude.messages.create(
        model="sim-claude",
        max_tokens=100,
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "lookup"},
    )
    assert forced.content[0].type == "tool_use"
    assert forced.content[0].name == "lookup"
    none = await claude.messages.create(
        model="sim-claude", max_tokens=100, messages=USER, tools=TOOLS, tool_choice={"type": "none"}
    )
    assert none.stop_reason == "end_turn"
    followup: list[Any] = [
        *USER,
        {"role": "assistant", "content": [block.model_dump(include={"type", "id", "name", "input"})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ]
    answer = await claude.messages.create(model="sim-claude", max_tokens=100, messages=followup, tools=TOOLS)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"


async def test_streamed_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(model="sim-claude", max_tokens=100, messages=USER, tools=TOOLS) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert len(starts) == 1
    assert starts[0].content_block.type == "tool_use"
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert deltas
    assert all(d.type == "input_json_delta" for d in deltas)
    partial = "".join(d.partial_json for d in deltas if d.type == "input_json_delta")
    block = final.content[0]
    assert block.type == "tool_use"
    assert json.loads(partial) == block.input
    assert final.stop_reason == "tool_use"


async def test_structured_output(claude: anthropic.AsyncAnthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title", "year"],
        "additionalProperties": False,
    }
    m = await claude.messages.create(
        model="sim-claude",
        max_tokens=500,
        messages=USER,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    assert m.content[0].type == "text"
    jsonschema.validate(json.loads(m.content[0].text), schema)


async def test_cache_and_thinking_usage(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(
        model="sim-claude",
        max_tokens=5,
        messages=USER,
        extra_headers={
            "x-sim-cached-tokens": "4",
            "x-sim-cache-write-tokens": "3",
            "x-sim-reasoning-tokens": "10",
        },
    )
    u = m.usage
    assert u.cache_read_input_tokens == 4
    assert u.cache_creation_input_tokens == 3
    assert u.input_tokens == 11 - 4 - 3  # Anthropic's input_tokens excludes cache reads and writes
    assert u.output_tokens == 5 + 10
    assert u.output_tokens_details is not None
    assert u.output_tokens_details.thinking_tokens == 10
    async with claude.messages.stream(
        model="sim-claude", max_tokens=5, messages=USER, extra_headers={"x-sim-cached-tokens": "4"}
    ) as stream:
        final = await stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 4
    assert final.usage.input_tokens == 7


async def test_overloaded(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as exc:
        await claude.messages.create(
            model="sim-claude",
            max_tokens=5,
            messages=USER,
            extra_headers={"x-sim-status": "529", "x-sim-retry-after": "2"},
        )
    assert exc.value.status_code == 529
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "overloaded_error"
    assert exc.value.response.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
    ],
)
async def test_scripted_status(
    claude: anthropic.AsyncAnthropic, status: int, error_type: str, error: type[anthropic.APIStatusError]
) -> None:
    with pytest.raises(error) as exc:
        await claude.messages.create(
            model="sim-claude", max_tokens=5, messages=USER, extra_headers={"x-sim-status": str(status)}
        )
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["type"] == error_type


async def collect_deltas(claude: anthropic.AsyncAnthropic, headers: dict[str, str], got: list[object]) -> None:
    """Stream a message, appending each content delta to ``got`` (kept when the stream then fails)."""
    async with claude.messages.stream(
        model="sim-claude", max_tokens=100, messages=USER, extra_headers=headers
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                got.append(event)


async def test_in_band_overloaded_error(claude: anthropic.AsyncAnthropic) -> None:
    got: list[object] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        await collect_deltas(claude, {"x-sim-stream-error-after": "2"}, got)
    assert len(got) == 2
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.OverloadedError):
        await claude.messages.create(
            model="sim-claude", max_tokens=100, messages=USER, extra_headers={"x-sim-stream-error-after": "2"}
        )


async def test_reset_mid_stream(claude: anthropic.AsyncAnthropic) -> None:
    got: list[object] = []
    # anthropic 2.x does not wrap transport errors raised mid-stream: the reset surfaces as httpx2's
    with pytest.raises(httpx2.TransportError):
        await collect_deltas(claude, {"x-sim-reset-after": "4"}, got)
    assert len(got) == 4


async def test_unknown_model_and_overflow(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        await claude.messages.create(model="claude-nope", max_tokens=5, messages=USER)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["message"] == "model: claude-nope"
    sim.fleet = sim.fleet.replace("sim-claude", context_window=30)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(
            model="sim-claude", max_tokens=5, messages=[{"role": "user", "content": "word " * 40}]
        )
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["message"] == "prompt is too long: 47 tokens > 30 maximum"


async def test_count_tokens_and_models(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    counted = await claude.messages.count_tokens(model="sim-claude", messages=USER)
    created = await claude.messages.create(model="sim-claude", max_tokens=5, messages=USER)
    assert counted.input_tokens == created.usage.input_tokens
    models = [m async for m in claude.models.list()]
    assert [m.id for m in models] == [m.name for m in sim.fleet]
    assert models[0].type == "model"
    assert models[0].max_input_tokens == sim.fleet.models[0].context_window
    info = await claude.models.retrieve("sim-claude")
    assert info.id == "sim-claude"
