"""The request path's stage boundaries: concurrent requests pass a stage together, and a client that leaves at
a boundary after the upstream answered still has the answer's tokens and cost on its record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard import ChatRequest, Gateway, Message, RequestContext, TextPart, parse_config
from switchboard.sim.fleet import Fleet, gateway_config_for_fleet
from switchboard.telemetry.record import RequestRecord
from tests.e2e.conftest import model_for
from tests.e2e.servers import SimThread


def _gateway(sim: SimThread, fleet: Fleet) -> Gateway:
    cfg = parse_config({**gateway_config_for_fleet(fleet, sim.base_url), "records": {"enabled": False}}, env={})
    return Gateway(cfg)


def _request(fleet: Fleet) -> ChatRequest:
    return ChatRequest(model=model_for(fleet, "openai"), messages=[Message("user", [TextPart("Hello")])],
                       max_tokens=8)


async def test_requests_started_together_are_all_routed_before_any_goes_on(sim: SimThread, fleet: Fleet) -> None:
    events: list[tuple[str, str]] = []
    async with _gateway(sim, fleet) as gw:
        route = gw._route

        def logged_route(public: str, model: Any, features: Any, ctx: RequestContext, decision: Any = None) -> Any:
            events.append(("route", ctx.request_id))
            return route(public, model, features, ctx, decision)

        gw._route = logged_route  # type: ignore[method-assign]

        async def call(name: str) -> None:
            events.append(("start", name))
            await gw.chat(_request(fleet), RequestContext.create(endpoint="chat", request_id=name))

        await asyncio.gather(call("a"), call("b"), call("c"))
    assert events[:3] == [("start", "a"), ("start", "b"), ("start", "c")]
    assert sorted(events[3:]) == [("route", "a"), ("route", "b"), ("route", "c")]


async def test_a_client_gone_after_the_answer_still_pays_for_it(sim: SimThread, fleet: Fleet) -> None:
    records: list[RequestRecord] = []
    async with _gateway(sim, fleet) as gw:
        gw.record_listeners.append(records.append)
        executor = gw._executor
        chat = executor.chat

        async def answer_then_leave(*args: Any) -> Any:
            done = await chat(*args)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the client goes away as the answer arrives: the next await in the request raises
            return done

        executor.chat = answer_then_leave  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(gw.chat(_request(fleet)))
    (rec,) = records
    assert rec.status == 499 and rec.error_type == "ClientDisconnected"
    assert rec.output_tokens > 0 and rec.cost_usd > 0 and rec.deployment
