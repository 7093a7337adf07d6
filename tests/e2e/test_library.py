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
from switchboard.telemetry.record import RequestRecord
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


async def test_a_stream_closed_before_its_first_event_is_recorded_and_let_go(sim: SimThread, fleet: Fleet) -> None:
    cfg = parse_config({**gateway_config_for_fleet(fleet, sim.base_url), "records": {"enabled": False}}, env={})
    records: list[RequestRecord] = []
    async with Gateway(cfg) as gw:
        gw.record_listeners.append(records.append)
        req = ChatRequest(model=model_for(fleet, "openai"), messages=[Message("user", [TextPart("Hello")])],
                          max_tokens=50)
        stream = await gw.stream(req)
        await stream.aclose()  # never iterated: the caller changed its mind
        (rec,) = records
        assert rec.request_id == stream.ctx.request_id
        assert rec.status == 499 and rec.partial and rec.error_type == "ClientDisconnected"
        pools = list(gw._http._pools.values())
        assert pools and all(p.count == len(p.idle) for p in pools)  # no connection still held for it
        await stream.aclose()  # closing again changes nothing
        assert len(records) == 1
        resp = await gw.chat(req)
        assert resp.choices[0].message.text()
