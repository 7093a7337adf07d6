"""The Gemini endpoints, driven by the official ``google-genai`` SDK (and raw HTTP for the framing)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import jsonschema
import pytest
from google import genai
from google.genai import errors, types

from switchboard.sim import SimServer

PROMPT = "Tell me about rivers"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather forecast",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
)
KEY = {"x-goog-api-key": "x"}


def scripted(**headers: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers))


async def test_generate_content(gemini: genai.Client) -> None:
    r = await gemini.aio.models.generate_content(
        model="sim-gemini",
        contents=PROMPT,
        config=types.GenerateContentConfig(system_instruction="Be brief", temperature=0.2),
    )
    again = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=PROMPT, config=types.GenerateContentConfig(system_instruction="Be brief")
    )
    assert r.text
    assert r.text == again.text
    assert r.candidates
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.candidates[0].content
    assert r.candidates[0].content.role == "model"
    u = r.usage_metadata
    assert u is not None
    assert u.candidates_token_count == 50 == len(r.text.split())
    assert u.prompt_token_count == 2 + 4 + 4 + 3  # system words + prompt words + overhead + primer
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.model_version == "sim-gemini"


async def test_max_output_tokens(gemini: genai.Client) -> None:
    r = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=PROMPT, config=types.GenerateContentConfig(max_output_tokens=4)
    )
    assert r.candidates
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.text
    assert len(r.text.split()) == 4


async def test_stream_one_frame_per_token(gemini: genai.Client) -> None:
    frames = [
        f
        async for f in await gemini.aio.models.generate_content_stream(
            model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-output-tokens": "20"})
        )
    ]
    texts = [f.text for f in frames if f.text]
    assert len(texts) == 20
    last = frames[-1]
    assert last.candidates
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == 20
    whole = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-output-tokens": "20"})
    )
    assert "".join(texts) == whole.text


async def test_raw_sse_frames(sim: SimServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"maxOutputTokens": 3},
    }
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=KEY) as http:
        r = await http.post("/v1beta/models/sim-gemini:streamGenerateContent?alt=sse", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content.endswith(b"\r\n\r\n")
    assert b"[DONE]" not in r.content
    frames = [f for f in r.content.split(b"\r\n\r\n") if f]
    assert len(frames) == 4  # three tokens, then the finish frame
    payloads = []
    for f in frames:
        assert f.startswith(b"data: ")
        payloads.append(json.loads(f[6:]))
    assert all(
        "candidates" in p and "usageMetadata" in p and p["responseId"] == payloads[0]["responseId"] for p in payloads
    )
    assert [p["candidates"][0]["content"].get("parts") for p in payloads[:3]] == [
        [{"text": t}]
        for t in (
            payloads[0]["candidates"][0]["content"]["parts"][0]["text"],
            payloads[1]["candidates"][0]["content"]["parts"][0]["text"],
            payloads[2]["candidates"][0]["content"]["parts"][0]["text"],
        )
    ]
    assert payloads[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert payloads[-1]["usageMetadata"]["candidatesTokenCount"] == 3


REFUSAL = "I can't help with that."


async def test_refusal_is_a_safety_finish_without_content(gemini: genai.Client) -> None:
    r = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-refusal": REFUSAL})
    )
    assert r.candidates
    cand = r.candidates[0]
    assert cand.finish_reason == types.FinishReason.SAFETY
    assert cand.content is None or not cand.content.parts
    assert cand.safety_ratings and cand.safety_ratings[0].blocked
    assert r.usage_metadata is not None and not r.usage_metadata.candidates_token_count


async def test_refusal_streams_one_safety_frame(sim: SimServer) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers={**KEY, "x-sim-refusal": REFUSAL}) as http:
        whole = await http.post("/v1beta/models/sim-gemini:generateContent", json=body)
        r = await http.post("/v1beta/models/sim-gemini:streamGenerateContent?alt=sse", json=body)
    frames = [json.loads(f[6:]) for f in r.content.split(b"\r\n\n") if f]
    assert len(frames) == 1
    assert frames[0]["candidates"] == whole.json()["candidates"]
    (cand,) = frames[0]["candidates"]
    assert cand["finishReason"] == "SAFETY"
    assert cand["finishMessage"] == REFUSAL  # the text has nowhere else to go
    assert "content" not in cand


async def test_raw_json_array_stream(sim: SimServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"maxOutputTokens": 3},
    }
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=KEY) as http:
        r = await http.post("/v1beta/models/sim-gemini:streamGenerateContent", json=body)
        broken = await http.post(
            "/v1beta/models/sim-gemini:streamGenerateContent",
            json=body,
            headers={"x-sim-stream-error-after": "1"},
        )
    items = json.loads(r.content)
    assert isinstance(items, list)
    assert len(items) == 4
    assert items[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    broken_items = json.loads(broken.content)
    assert broken_items[-1] == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }


async def test_function_call(gemini: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER])]
    r = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=PROMPT, config=types.GenerateContentConfig(tools=tools)
    )
    assert r.function_calls
    call = r.function_calls[0]
    assert call.name == "get_weather"
    assert WEATHER.parameters_json_schema is not None
    jsonschema.validate(call.args, WEATHER.parameters_json_schema)
    contents: list[Any] = [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        types.Content(role="model", parts=[types.Part(function_call=call)]),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"forecast": "sunny"})],
        ),
    ]
    answer = await gemini.aio.models.generate_content(
        model="sim-gemini", contents=contents, config=types.GenerateContentConfig(tools=tools)
    )
    assert answer.text
    assert not answer.function_calls
    off = await gemini.aio.models.generate_content(
        model="sim-gemini",
        contents=PROMPT,
        config=types.GenerateContentConfig(
            tools=tools,
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE")),
        ),
    )
    assert off.text
    assert not off.function_calls
    frames = [
        f
        async for f in await gemini.aio.models.generate_content_stream(
            model="sim-gemini", contents=PROMPT, config=types.GenerateContentConfig(tools=tools)
        )
    ]
    streamed = [c for f in frames for c in (f.function_calls or [])]
    assert [c.name for c in streamed] == ["get_weather"]
    assert streamed[0].args == call.args


async def test_json_schema_reply(gemini: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "pages": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "pages", "tags"],
    }
    r = await gemini.aio.models.generate_content(
        model="sim-gemini",
        contents=PROMPT,
        config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema),
    )
    jsonschema.validate(json.loads(r.text or ""), schema)
    openapi = types.Schema(
        type=types.Type.OBJECT, properties={"name": types.Schema(type=types.Type.STRING)}, required=["name"]
    )
    r = await gemini.aio.models.generate_content(
        model="sim-gemini",
        contents=PROMPT,
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=openapi),
    )
    assert isinstance(json.loads(r.text or "")["name"], str)


async def test_cached_and_thoughts_usage(gemini: genai.Client) -> None:
    r = await gemini.aio.models.generate_content(
        model="sim-gemini",
        contents=PROMPT,
        config=scripted(**{"x-sim-cached-tokens": "5", "x-sim-reasoning-tokens": "12", "x-sim-output-tokens": "3"}),
    )
    u = r.usage_metadata
    assert u is not None
    assert u.cached_content_token_count == 5
    assert u.thoughts_token_count == 12
    assert u.candidates_token_count == 3
    assert u.total_token_count == (u.prompt_token_count or 0) + 3 + 12


async def test_errors(gemini: genai.Client, sim: SimServer) -> None:
    with pytest.raises(errors.ClientError) as exc:
        await gemini.aio.models.generate_content(
            model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-status": "429"})
        )
    assert exc.value.code == 429
    assert exc.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ServerError) as server:
        await gemini.aio.models.generate_content(
            model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-status": "503"})
        )
    assert server.value.status == "UNAVAILABLE"
    with pytest.raises(errors.ClientError) as missing:
        await gemini.aio.models.generate_content(model="gemini-nope", contents=PROMPT)
    assert missing.value.code == 404
    assert missing.value.status == "NOT_FOUND"
    sim.fleet = sim.fleet.replace("sim-gemini", context_window=20)
    with pytest.raises(errors.ClientError) as overflow:
        await gemini.aio.models.generate_content(model="sim-gemini", contents="word " * 30)
    assert overflow.value.status == "INVALID_ARGUMENT"
    assert "input token count (37) exceeds the maximum number of tokens allowed (20)" in (overflow.value.message or "")


async def test_in_band_stream_error(gemini: genai.Client) -> None:
    texts: list[str | None] = []

    async def consume() -> None:
        async for frame in await gemini.aio.models.generate_content_stream(
            model="sim-gemini", contents=PROMPT, config=scripted(**{"x-sim-stream-error-after": "3"})
        ):
            texts.append(frame.text)

    with pytest.raises(errors.ServerError) as exc:
        await consume()
    assert len(texts) == 3
    assert exc.value.code == 503


async def test_embeddings(gemini: genai.Client) -> None:
    contents: list[Any] = [
        types.Content(parts=[types.Part(text="quiet river")]),
        types.Content(parts=[types.Part(text="quiet river")]),
        types.Content(parts=[types.Part(text="copper pots")]),
    ]
    r = await gemini.aio.models.embed_content(
        model="sim-gemini-embed", contents=contents, config=types.EmbedContentConfig(output_dimensionality=32)
    )
    assert r.embeddings is not None
    values = [e.values for e in r.embeddings]
    assert [len(v or ()) for v in values] == [32, 32, 32]
    assert values[0] == values[1] != values[2]
    with pytest.raises(errors.ClientError):
        await gemini.aio.models.embed_content(model="sim-gemini", contents="x")


async def test_embed_content_raw(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=KEY) as http:
        r = await http.post(
            "/v1beta/models/sim-gemini-embed:embedContent",
            json={"content": {"parts": [{"text": "quiet river"}]}},
        )
    assert r.status_code == 200
    assert len(r.json()["embedding"]["values"]) == 256


async def test_models_and_count_tokens(gemini: genai.Client, sim: SimServer) -> None:
    models = [m async for m in await gemini.aio.models.list()]
    assert [m.name for m in models] == [f"models/{m.name}" for m in sim.fleet]
    model = await gemini.aio.models.get(model="sim-gemini")
    assert model.input_token_limit == 1_048_576
    counted = await gemini.aio.models.count_tokens(model="sim-gemini", contents=PROMPT)
    assert counted.total_tokens == 4 + 4 + 3


async def test_key_must_be_in_the_header(sim: SimServer) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.post("/v1beta/models/sim-gemini:generateContent?key=x", json=body)
        assert r.status_code == 403
        assert r.json()["error"]["status"] == "PERMISSION_DENIED"
        r = await http.post("/v1beta/models/sim-gemini:generateContent", json=body)
        assert r.status_code == 403
        r = await http.post("/v1/models/sim-gemini:generateContent", json=body, headers=KEY)  # v1 works too
        assert r.status_code == 200
