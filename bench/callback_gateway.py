"""Switchboard's own per-request work with nothing but callbacks: the floor of a gateway built like the forwarder.

Each chat request goes through the steps of the gateway's plain path, done by Switchboard's own functions: the
body parsed into the canonical request, the model resolved and a deployment chosen (breaker and live statistics
included), the provider's wire body built, the answer — or each stream event — translated back, usage and cost
settled, the response rendered in the OpenAI dialect with the gateway's headers, and the request recorded to
SQLite after the response is written. Unlike the gateway, every step runs in the event loop's protocol
callbacks, as in ``http_forwarder.py``: no task, no coroutine, no ASGI server and no async client.

Measured in the gateway's place it splits what the gateway adds over the callback forwarder into the work
itself (this) and the asynchronous machinery around it (the gateway). It is a reference, not a gateway: it
serves only ``POST /v1/chat/completions`` in the OpenAI dialect, and an upstream error, a bad request or a lost
connection just closes the client's connection — no retries, fallbacks, deadlines, limits or guardrails.

Usage::

    python bench/callback_gateway.py --port 9400 --upstream-port 9000 --models bench-0ms,bench-50ms
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import http_forwarder
from switchboard.app import create_app
from switchboard.config.load import load_config
from switchboard.gateway import RequestContext, new_request_id
from switchboard.ingress.openai_wire import OpenAIStreamEncoder, parse_chat_request, render_chat_response
from switchboard.providers.base import CallOptions
from switchboard.providers.http import _encode_request, _parse_url
from switchboard.providers.openai import StreamTranslator, build_chat_body, parse_chat_response
from switchboard.providers.sse import SSEDecoder, translate_batch
from switchboard.routing.features import features_of
from switchboard.schemas.canonical import ChatRequest, StreamUsage, TextDelta, Usage
from switchboard.server import Lifespan
from switchboard.telemetry.record import Attempt

SIM_KEY = "sim-key"


@functools.cache
def _target(url: str) -> Any:
    return _parse_url(url)


class _Exchange:
    """One request on its way: what the answer's callbacks need to finish it."""

    def __init__(self, gw: Any, request: ChatRequest, headers: dict[str, str]) -> None:
        self.gw = gw
        self.request = request
        ctx = self.ctx = RequestContext.create(endpoint="chat", dialect="openai", request_id=new_request_id(),
                                               client_headers=headers, caller=request.user, record_later=True)
        ctx.record.stream = request.stream
        public, model = gw.lookup(request.model, "chat")
        ctx.record.public_model = public
        route = gw._route(public, model, features_of(request, public, for_rules=False), ctx, None)
        dep = self.deployment = route.plan.candidates[0].deployment
        executor = gw._executor
        self.breaker = executor.breakers.get(dep.id)
        self.breaker.allow()
        self.attempt = Attempt(dep.id, dep.provider, "pending", 0.0, model=public, input_price=dep.price.input)
        ctx.record.attempts.append(self.attempt)
        self.stats = executor.stats.for_deployment(dep.id)
        self.stats.begin()
        self.provider = executor._providers[dep.provider]
        self.t0 = time.perf_counter()
        self.usage: Usage | None = None
        self.first_content = False

    def upstream_request(self) -> bytes:
        """The wire request for the chosen deployment, head and body in one piece."""
        p, dep, req = self.provider, self.deployment, self.request
        body = orjson.dumps(build_chat_body(req, dep.model, official=p._official, stream=req.stream))
        opts = CallOptions(self.ctx.request_id, self.gw._forwarding_for(dep, self.ctx.client_headers))
        accept = "text/event-stream" if req.stream else None
        head, tail = _encode_request("POST", _target(p._chat_url), p._link.headers(opts, accept=accept), body)
        return head + (tail or b"")

    def head(self, content_type: bytes, framing: bytes, upstream_id: str | None) -> bytes:
        rec = self.ctx.record
        lines = [b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n%s\r\nx-request-id: %s\r\n" % (
            content_type, framing, self.ctx.request_id.encode())]
        lines.append(b"x-switchboard-model: %s\r\nx-switchboard-deployment: %s\r\nx-switchboard-attempts: 1\r\n" % (
            (rec.public_model or "").encode(), self.deployment.id.encode()))
        if not rec.stream:
            lines.append(b"x-switchboard-cost-usd: %.8f\r\n" % rec.cost_usd)
        if upstream_id:
            lines.append(b"x-switchboard-upstream-id: %s\r\n" % upstream_id.encode())
        lines.append(b"\r\n")
        return b"".join(lines)

    def answered(self) -> None:
        """The upstream's answer (a stream's first content) arrived: the attempt succeeded."""
        elapsed = time.perf_counter() - self.t0
        self.attempt.latency_ms = elapsed * 1000
        self.attempt.outcome = "ok"
        self.breaker.record_success()
        self.stats.observe_outcome(True)
        self.stats.observe_ttft(elapsed)

    def settle(self, usage: Usage | None) -> None:
        """Usage and cost on the record; the record leaves at the loop's next turn, after the response."""
        self.stats.end()
        rec = self.ctx.record
        self.gw._settle(rec, self.deployment, usage, self.attempt)
        rec.latency_ms = (time.perf_counter() - self.ctx.started) * 1000
        self.gw._finish(self.ctx)


class _Upstream(http_forwarder._Upstream):
    """The connection to the upstream for one client connection; answers go back in order, translated."""

    def __init__(self, client: _Client) -> None:
        super().__init__(client)
        self.client: _Client = client
        self.body: list[bytes] = []
        self.exchange: _Exchange | None = None
        self.decoder = SSEDecoder()
        self.translator: StreamTranslator | None = None
        self.encoder: OpenAIStreamEncoder | None = None
        self.finished = False
        self.held = b""
        self.sent_head = False

    def forward(self, exchange: _Exchange) -> None:
        self.exchange = exchange
        self.send(exchange.upstream_request())

    def on_message_begin(self) -> None:
        self.body = []
        self.finished = False
        self.held = b""
        self.sent_head = False
        ex = self.exchange
        if ex is not None and ex.request.stream:
            self.decoder = SSEDecoder()
            self.translator = StreamTranslator(ex.deployment.model, provider=ex.deployment.provider,
                                               link=ex.provider._link)
            self.encoder = OpenAIStreamEncoder(ex.deployment.model, ex.request.include_usage)

    def on_header(self, name: bytes, value: bytes) -> None:
        pass  # the response's head is the gateway's own

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() != 200:
            self.client.close()

    def on_body(self, body: bytes) -> None:
        if self.translator is None:
            self.body.append(body)
        else:
            self._events(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        if self.translator is not None:
            if not self.finished:
                self._events(None)
            self.translator = None
            return
        resp = parse_chat_response(orjson.loads(b"".join(self.body)), ex.deployment.model,
                                   provider=ex.deployment.provider)
        ex.answered()
        ex.settle(resp.usage)
        model = resp.model or ex.ctx.record.upstream_model or ex.request.model
        payload = orjson.dumps(render_chat_response(resp, model=model))
        self.client.write(ex.head(b"application/json", b"content-length: %d" % len(payload), resp.id) + payload)

    def _events(self, chunk: bytes | None) -> None:
        """Translate one read of the upstream's stream (``None``: its end) and write it on as body chunks; the
        response head leaves with the first content, the closing frame with the last batch."""
        ex, translator, encoder = self.exchange, self.translator, self.encoder
        assert ex is not None and translator is not None and encoder is not None
        batch, error = translate_batch(self.decoder, translator, chunk)
        if error is not None:
            self.client.close()
            return
        if chunk is None:
            batch += translator.end_of_body()
        frames = []
        for event in batch:
            if isinstance(event, StreamUsage):
                ex.usage = event.usage
            elif not ex.first_content and isinstance(event, TextDelta):
                ex.first_content = True
                ex.answered()
            frames.append(encoder.encode(event))
        if translator.done:
            self.finished = True
            frames.append(encoder.done())
        data = self.held + b"".join(frames)
        if not ex.first_content and not self.finished:
            self.held = data  # nothing is sent before the first content
            return
        self.held = b""
        head = b"" if self.sent_head else ex.head(b"text/event-stream; charset=utf-8", b"transfer-encoding: chunked",
                                                   None)
        self.sent_head = True
        out = head + (b"%x\r\n%s\r\n" % (len(data), data) if data else b"")
        if self.finished:
            self.client.write(out + b"0\r\n\r\n")
            ex.settle(ex.usage)
        elif out:
            self.client.write(out)


class _Client(http_forwarder._Client):
    """One client connection: each parsed request goes upstream as it completes."""

    upstream: _Upstream | None  # type: ignore[assignment]  # always this module's translating kind

    def __init__(self, gw: Any, upstream: tuple[str, int]) -> None:
        super().__init__(upstream)
        self.gw = gw
        self.fields: dict[str, str] = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        headers, self.fields = self.fields, {}
        body, self.body = b"".join(self.body), []
        try:
            exchange = _Exchange(self.gw, parse_chat_request(orjson.loads(body)), headers)
        except Exception:  # a reference: anything but a plain, valid request ends the connection
            self.close()
            return
        if self.upstream is None:
            self.upstream = self._connect(_Upstream(self))
        self.upstream.forward(exchange)


async def serve(port: int, upstream_port: int, models: list[str]) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="callback-gateway-"))
    cfg = run_dir / "config.json"
    cfg.write_text(json.dumps({
        "providers": {"sim": {"type": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                              "api_key": SIM_KEY}},
        "models": {m: {"deployments": [{"provider": "sim", "model": m}]} for m in models},
        "records": {"enabled": True, "path": str(run_dir / "records.db")},
    }))
    app = create_app(load_config(cfg, env=os.environ))
    lifespan = Lifespan(app)
    await lifespan.startup()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(app.gateway, ("127.0.0.1", upstream_port)),
                                      "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with server:
            await stop.wait()
        await lifespan.shutdown()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--models", default="bench-0ms,bench-50ms", help="the upstream's models, comma-separated")
    a = p.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(a.port, a.upstream_port, [m for m in a.models.split(",") if m]))


if __name__ == "__main__":
    main()
