"""The request path's stage boundaries: concurrent requests pass a stage together, a request alone in the
gateway goes straight on, and a client that leaves at a boundary after the upstream answered still has the
answer's tokens and cost on its record; the answer leaves before the bookkeeping, a stream's end with its last
batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from switchboard import ChatRequest, Gateway, Message, RequestContext, TextPart, parse_config
from switchboard.app import SwitchboardApp, _Exchange, create_app
from switchboard.ingress.openai_wire import OpenAIStreamEncoder
from switchboard.schemas.canonical import LastBatch, StreamEvent, StreamFinish, StreamStart, TextDelta
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


async def test_requests_that_find_others_in_the_gateway_are_routed_together(sim: SimThread, fleet: Fleet) -> None:
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
    # "a" was alone and went straight on; "b" and "c" each found another request in the gateway and waited a turn.
    assert events[:4] == [("start", "a"), ("route", "a"), ("start", "b"), ("start", "c")]
    assert sorted(events[4:]) == [("route", "b"), ("route", "c")]


async def test_a_client_gone_after_the_answer_still_pays_for_it(sim: SimThread, fleet: Fleet) -> None:
    records: list[RequestRecord] = []
    async with _gateway(sim, fleet) as gw:
        gw.record_listeners.append(records.append)
        executor = gw._executor
        chat = executor.chat
        answered = asyncio.Event()

        async def answer_then_leave(route: Any, request: Any, ctx: RequestContext) -> Any:
            if ctx.request_id == "other":  # stays in the gateway until the leaver has its answer
                await answered.wait()
                return await chat(route, request, ctx)
            done = await chat(route, request, ctx)
            answered.set()
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the client goes away as the answer arrives: the next await in the request raises
            return done

        executor.chat = answer_then_leave  # type: ignore[method-assign]
        leaver = asyncio.create_task(gw.chat(_request(fleet), RequestContext.create(endpoint="chat",
                                                                                    request_id="leaver")))
        other = asyncio.create_task(gw.chat(_request(fleet), RequestContext.create(endpoint="chat",
                                                                                   request_id="other")))
        with pytest.raises(asyncio.CancelledError):
            await leaver
        await other
    rec = next(r for r in records if r.request_id == "leaver")
    assert rec.status == 499 and rec.error_type == "ClientDisconnected"
    assert rec.output_tokens > 0 and rec.cost_usd > 0 and rec.deployment


async def test_a_record_asked_for_later_is_handed_on_at_the_next_turn(sim: SimThread, fleet: Fleet) -> None:
    records: list[RequestRecord] = []
    async with _gateway(sim, fleet) as gw:
        gw.record_listeners.append(records.append)
        ctx = RequestContext.create(endpoint="chat", record_later=True)
        resp = await gw.chat(_request(fleet), ctx)
        assert records == []  # the caller has the answer before the record's listeners run
        await asyncio.sleep(0)
        assert [r.request_id for r in records] == [ctx.request_id]
        assert records[0].status == 200 and records[0].output_tokens == resp.usage.output_tokens
        await gw.chat(_request(fleet))  # without the flag: at once
        assert len(records) == 2


async def test_a_stream_is_complete_for_the_client_before_its_record_is_settled(sim: SimThread, fleet: Fleet) -> None:
    """The end of a stream leaves with its last batch: the client has every byte before the stream's clean-up
    (breaker verdict, usage, cost, record) runs."""
    cfg = parse_config({**gateway_config_for_fleet(fleet, sim.base_url), "records": {"enabled": False}}, env={})
    app = create_app(cfg)
    order: list[str] = []
    finish = app.gateway._finish

    def finishing(ctx: RequestContext) -> None:
        order.append("settled")
        finish(ctx)

    app.gateway._finish = finishing  # type: ignore[method-assign]
    body = orjson.dumps({"model": model_for(fleet, "openai"), "stream": True, "max_tokens": 8,
                         "messages": [{"role": "user", "content": "Hello"}]})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1"}
    chunks: list[bytes] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not chunks and not order:
            chunks.append(b"")  # the request body is read once
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays until the test ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message["body"])
            if not message.get("more_body"):
                order.append("sent")

    async with app.gateway:
        await app(scope, receive, send)
    assert order == ["sent", "settled"]
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


async def test_a_batch_held_back_whole_writes_nothing_and_the_stream_goes_on() -> None:
    """With redaction a read may carry only the start of a placeholder, held back until the next one: the batch
    is empty, nothing is written for it, and the stream ends as usual."""

    class Held:
        complete = False
        ctx = RequestContext.create(endpoint="chat")

        async def _batches(self) -> AsyncIterator[list[StreamEvent]]:
            yield [StreamStart("chatcmpl-1", "m"), TextDelta("Mail ")]
            yield []
            self.complete = True
            yield LastBatch([TextDelta("[EMAIL_1] now"), StreamFinish("stop")])

        def batches(self) -> AsyncIterator[list[StreamEvent]]:
            return self._batches()

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    ex = _Exchange("req_1", {}, "openai", {"type": "http"})
    await SwitchboardApp._pump(send, Held(), OpenAIStreamEncoder("m", False), ex)  # type: ignore[arg-type]
    assert [m["more_body"] for m in sent] == [True, False]
    assert b"[EMAIL_1] now" in sent[1]["body"] and sent[1]["body"].endswith(b"data: [DONE]\n\n")
