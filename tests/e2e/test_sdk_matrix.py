"""Every ingress dialect × every upstream wire format, driven by the official SDKs over real sockets."""

from __future__ import annotations

import json
import re

import anthropic
import openai
import pytest

from switchboard.sim.fleet import Fleet
from tests.contract.openapi import validate
from tests.e2e.conftest import model_for
from tests.e2e.servers import SimThread

FORMATS = ["openai", "anthropic", "gemini"]
REPLY = "The quick brown fox jumps over the lazy dog."
WEATHER_OAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
WEATHER_ANT = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER_OAI["function"]["parameters"],  # type: ignore[index]
}
ANTHROPIC_ORDER = re.compile(
    r"message_start (ping )?(content_block_start (ping )?(content_block_delta (ping )?)*content_block_stop (ping )?)+"
    r"message_delta message_stop"
)


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_chat(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=model_for(fleet, fmt),
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say the line."}],
        max_tokens=50,
        extra_headers={"x-sim-reply": REPLY},
    )
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-switchboard-deployment"]
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    resp = raw.parse()
    assert resp.choices[0].message.content == REPLY
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_stream(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    frames = []
    with oai.chat.completions.with_streaming_response.create(
        model=model_for(fleet, fmt),
        messages=[{"role": "user", "content": "Say the line."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-sim-reply": REPLY},
    ) as resp:
        assert resp.headers["x-request-id"].startswith("req_")
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                frames.append(json.loads(line[6:]))
            elif line.startswith("data: "):
                frames.append("[DONE]")
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == REPLY
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_stream_via_sdk_iterator(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    stream = oai.chat.completions.create(
        model=model_for(fleet, fmt), messages=[{"role": "user", "content": "Hi"}], stream=True,
        extra_headers={"x-sim-reply": REPLY},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == REPLY


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_tool_call(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    model = model_for(fleet, fmt)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    resp = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER_OAI],  # type: ignore[list-item]
                                       tool_choice="required")
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert isinstance(args["city"], str)
    # Second turn: the tool result goes back, a text answer comes out.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 18}'})
    follow = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER_OAI],  # type: ignore[list-item,arg-type]
                                         extra_headers={"x-sim-reply": "It is 18 degrees."})
    assert follow.choices[0].message.content == "It is 18 degrees."


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_tool_call_streamed(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    stream = oai.chat.completions.create(
        model=model_for(fleet, fmt), messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_OAI], tool_choice="required", stream=True,  # type: ignore[list-item]
    )
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    args: dict[int, str] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or []:
            if tc.id:
                ids[tc.index] = tc.id
            if tc.function and tc.function.name:
                names[tc.index] = tc.function.name
            if tc.function and tc.function.arguments:
                args[tc.index] = args.get(tc.index, "") + tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert names[0] == "get_weather" and ids[0]
    assert isinstance(json.loads(args[0])["city"], str)


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_message(ant: anthropic.Anthropic, fleet: Fleet, fmt: str) -> None:
    raw = ant.messages.with_raw_response.create(
        model=model_for(fleet, fmt), max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "Say the line."}],
        extra_headers={"x-sim-reply": REPLY},
    )
    assert raw.headers["x-request-id"].startswith("req_")
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_stream_event_order(ant: anthropic.Anthropic, fleet: Fleet, fmt: str) -> None:
    kinds = []
    with ant.messages.stream(
        model=model_for(fleet, fmt), max_tokens=100, messages=[{"role": "user", "content": "Say the line."}],
        extra_headers={"x-sim-reply": REPLY},
    ) as stream:
        for event in stream:
            if event.type in ("text", "input_json"):
                continue  # helper events the SDK derives from deltas
            kinds.append(event.type)
        final = stream.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    assert ANTHROPIC_ORDER.fullmatch(" ".join(kinds)), kinds
    assert text == REPLY
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_tool_use(ant: anthropic.Anthropic, fleet: Fleet, fmt: str) -> None:
    model = model_for(fleet, fmt)
    msg = ant.messages.create(model=model, max_tokens=200, tools=[WEATHER_ANT],  # type: ignore[list-item]
                              tool_choice={"type": "any"},
                              messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert msg.stop_reason == "tool_use"
    tool = next(b for b in msg.content if b.type == "tool_use")
    assert tool.name == "get_weather" and isinstance(tool.input["city"], str)  # type: ignore[index]
    follow = ant.messages.create(
        model=model, max_tokens=200, tools=[WEATHER_ANT],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": msg.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "18C"}]},
        ],
        extra_headers={"x-sim-reply": "It is 18 degrees."},
    )
    assert follow.content[0].type == "text" and follow.content[0].text == "It is 18 degrees."


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_tool_use_streamed(ant: anthropic.Anthropic, fleet: Fleet, fmt: str) -> None:
    with ant.messages.stream(
        model=model_for(fleet, fmt), max_tokens=200, tools=[WEATHER_ANT],  # type: ignore[list-item]
        tool_choice={"type": "any"}, messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and isinstance(tool.input["city"], str)  # type: ignore[index]
    assert final.stop_reason == "tool_use"


REFUSAL = "I can't help with that."


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_refusal(oai: openai.OpenAI, fleet: Fleet, fmt: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=model_for(fleet, fmt), messages=[{"role": "user", "content": "Something forbidden."}],
        extra_headers={"x-sim-refusal": REFUSAL},
    )
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    choice = raw.parse().choices[0]
    assert choice.message.refusal is not None and REFUSAL in choice.message.refusal
    if fmt == "openai":  # passed through as OpenAI sent it
        assert choice.message.refusal == REFUSAL
        assert choice.message.content is None
        assert choice.finish_reason == "stop"
    else:
        assert choice.finish_reason == "content_filter"


def test_openai_sdk_refusal_streamed(oai: openai.OpenAI, fleet: Fleet) -> None:
    stream = oai.chat.completions.create(
        model=model_for(fleet, "openai"), messages=[{"role": "user", "content": "Something forbidden."}],
        stream=True, extra_headers={"x-sim-refusal": REFUSAL},
    )
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REFUSAL
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["content_filter"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_refusal(ant: anthropic.Anthropic, fleet: Fleet, fmt: str) -> None:
    msg = ant.messages.create(
        model=model_for(fleet, fmt), max_tokens=100, messages=[{"role": "user", "content": "Something forbidden."}],
        extra_headers={"x-sim-refusal": REFUSAL},
    )
    assert msg.stop_reason == "refusal"
    assert msg.content[0].type == "text" and REFUSAL in msg.content[0].text
    with ant.messages.stream(
        model=model_for(fleet, fmt), max_tokens=100, messages=[{"role": "user", "content": "Something forbidden."}],
        extra_headers={"x-sim-refusal": REFUSAL},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal"


def test_models_list_openai(oai: openai.OpenAI, fleet: Fleet) -> None:
    raw = oai.models.with_raw_response.list()
    validate("ListModelsResponse", json.loads(raw.content))
    ids = {m.id for m in raw.parse()}
    for m in fleet.models:
        assert m.name in ids
        assert set(m.aliases) <= ids


def test_models_list_anthropic(ant: anthropic.Anthropic, fleet: Fleet) -> None:
    ids = {m.id for m in ant.models.list()}
    assert {m.name for m in fleet.models} <= ids


def test_token_counts_for_the_anthropic_sdk(ant: anthropic.Anthropic, fleet: Fleet, sim: SimThread) -> None:
    """Claude Code counts tokens often (``/v1/messages/count_tokens?beta=true``): answered by the gateway's
    estimate, for any model the gateway serves, without calling an upstream."""
    name = next(m.name for m in fleet.models if m.kind != "embedding")
    before = sim.stats().requests
    text = "Count these words, please, all of them."
    plain = ant.messages.count_tokens(model=name, messages=[{"role": "user", "content": text}])
    assert plain.input_tokens == (len(text) + 3) // 4
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    fuller = ant.beta.messages.count_tokens(  # Claude Code's call: the beta path, with a thinking budget
        model=name, system="Be brief.", messages=[{"role": "user", "content": text}], tools=[tool],
        thinking={"type": "enabled", "budget_tokens": 2048})
    assert fuller.input_tokens > plain.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": text}])
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.count_tokens(model=name, messages=[])
    assert sim.stats().requests == before


def test_model_lookup_in_both_dialects(oai: openai.OpenAI, ant: anthropic.Anthropic, fleet: Fleet) -> None:
    name = fleet.models[0].name
    raw = oai.models.with_raw_response.retrieve(name)
    validate("Model", json.loads(raw.content))
    info = ant.models.retrieve(name)
    assert (info.type, info.id, info.display_name) == ("model", name, name) and info.created_at is not None
    with pytest.raises(anthropic.NotFoundError) as err:  # in Anthropic's error shape, which the SDK reads
        ant.models.retrieve("no-such-model")
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error" and "no-such-model" in body["error"]["message"]


def test_embeddings(oai: openai.OpenAI, fleet: Fleet) -> None:
    for model in (m for m in fleet.models if m.kind == "embedding"):
        raw = oai.embeddings.with_raw_response.create(model=model.name, input=["hello", "world"],
                                                      encoding_format="float")
        validate("CreateEmbeddingResponse", json.loads(raw.content))
        resp = raw.parse()
        assert [d.index for d in resp.data] == [0, 1]
        assert len(resp.data[0].embedding) > 0 and resp.data[0].embedding != resp.data[1].embedding
        # The SDK's default asks for base64 and decodes it: the same vectors must come back.
        again = oai.embeddings.create(model=model.name, input=["hello", "world"])
        assert again.data[0].embedding == pytest.approx(resp.data[0].embedding, rel=1e-6)
