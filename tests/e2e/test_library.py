"""Library mode: the same core in-process, without the HTTP server."""

from __future__ import annotations

import pytest

from switchboard import (
    ChatRequest,
    EmbeddingRequest,
    Gateway,
    Message,
    ModelNotFound,
    StreamStart,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallStart,
    ToolSpec,
    parse_config,
)
from switchboard.sim.fleet import Fleet, gateway_config_for_fleet
from tests.e2e.conftest import model_for
from tests.e2e.servers import SimThread


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
async def test_library_chat_and_stream(sim: SimThread, fleet: Fleet, fmt: str) -> None:
    cfg = parse_config({**gateway_config_for_fleet(fleet, sim.base_url), "records": {"enabled": False}}, env={})
    async with Gateway(cfg) as gw:
        req = ChatRequest(model=model_for(fleet, fmt), messages=[Message("user", [TextPart("Hello")])], max_tokens=8)
        resp = await gw.chat(req)
        assert resp.choices[0].message.text()
        assert resp.usage.output_tokens > 0
        stream = await gw.stream(req)
        events = [ev async for ev in stream]
        assert isinstance(events[0], StreamStart)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == resp.choices[0].message.text()
        assert any(isinstance(e, StreamUsage) for e in events)
        assert stream.ctx.record.output_tokens > 0 and stream.ctx.record.deployment


async def test_library_tools_and_errors(sim: SimThread, fleet: Fleet) -> None:
    cfg = parse_config({**gateway_config_for_fleet(fleet, sim.base_url), "records": {"enabled": False}}, env={})
    tool = ToolSpec("lookup", "Look something up", {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]})
    async with Gateway(cfg) as gw:
        req = ChatRequest(model=model_for(fleet, "gemini"), messages=[Message("user", [TextPart("find x")])],
                          tools=[tool])
        stream = await gw.stream(req)
        events = [ev async for ev in stream]
        starts = [e for e in events if isinstance(e, ToolCallStart)]
        assert starts and starts[0].name == "lookup"
        assert "q" in "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
        with pytest.raises(ModelNotFound):
            await gw.chat(ChatRequest(model="nope", messages=[Message("user", [TextPart("x")])]))
        emb = next(m.name for m in fleet.models if m.kind == "embedding")
        out = await gw.embed(EmbeddingRequest(model=emb, inputs=["a", "b"]))
        assert len(out.vectors) == 2
