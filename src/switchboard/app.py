"""The HTTP application: a small ASGI app over :class:`~switchboard.gateway.Gateway`.

Composition only: parse the client's dialect, call the gateway, render the answer in the same
dialect. Every response — errors and streams included — carries ``x-request-id``.

Usage::

    app = create_app(config)            # then: switchboard.server.serve(app, sock=..., ...)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from switchboard.config.model import Config, RecordsConfig
from switchboard.dashboard import Dashboard
from switchboard.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SwitchboardError,
)
from switchboard.gateway import ChatStream, Gateway, RequestContext, new_request_id
from switchboard.ingress import anthropic_wire, openai_wire
from switchboard.ingress.feedback_wire import parse_feedback
from switchboard.policy.admin_api import AdminAPI
from switchboard.policy.governor import quota_headers, quota_lines
from switchboard.policy.keys import VirtualKey
from switchboard.routing.explain import explanation
from switchboard.routing.features import estimate_input_tokens
from switchboard.schemas.canonical import ChatRequest
from switchboard.storage.records import RecordSink
from switchboard.telemetry.metrics import Metrics
from switchboard.telemetry.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from switchboard.telemetry.record import RequestRecord

__all__ = ["SwitchboardApp", "create_app"]

log = logging.getLogger("switchboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class _Encoder(Protocol):
    def encode(self, event: Any) -> bytes: ...
    def done(self) -> bytes: ...
    def error(self, err: SwitchboardError) -> bytes: ...


class _ClientGone(Exception):
    """The client disconnected before the request body was read."""


class SwitchboardApp:
    """The ASGI application. ``draining`` turns readiness off during shutdown."""

    def __init__(self, gateway: Gateway, config: Config, records: RecordSink | None = None,
                 metrics: Metrics | None = None) -> None:
        self.gateway = gateway
        self.config = config
        self.records = records
        self.metrics = metrics or Metrics()
        self.draining = False
        self._max_body = config.server.max_body_bytes
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send, _Exchange], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/chat/completions"): self._chat_completions,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("POST", "/v1/feedback"): self._feedback,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/health/live"): self._live,
            ("GET", "/health/ready"): self._ready,
        }
        self._allow: dict[str, list[str]] = {}  # each path's methods, for a 405's Allow header
        for method, path in self._routes:
            self._allow.setdefault(path, []).append(method)
        self._authenticate = gateway.governor.authenticator is not None
        self.dashboard = Dashboard(config, gateway.breakers, records)
        self.admin = AdminAPI(config, gateway.governor, records)
        self._retention: asyncio.Task[None] | None = None

    def render_rejection(self, status: int, message: str, path: bytes) -> tuple[bytes, bytes]:
        """The answer to a request the server refused before the app saw it (see ``server.Rejection``): an
        error in the dialect its path implies, with a request id of its own."""
        dialect = _dialect(path.decode("latin-1"), {})
        render = anthropic_wire.render_error if dialect == "anthropic" else openai_wire.render_error
        lines = b"content-type: application/json\r\nx-should-retry: false\r\nx-request-id: %s\r\n" % (
            new_request_id().encode())
        return lines, orjson.dumps(render(InvalidRequest(message)))

    def start_draining(self) -> None:
        """Shutdown has begun: readiness answers 503 from now on, so load balancers stop sending."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.gateway.start()
                    await self.gateway.governor.check_limiter()
                    if self.records is not None:
                        await asyncio.to_thread(self.records.start)
                    self.metrics.start()
                    if self.records is not None and self.config.records.retention_days is not None:
                        self._retention = asyncio.get_running_loop().create_task(self._retention_loop())
                except Exception as exc:  # a broken record store must not hide behind a hang
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.draining = True
                if self._retention is not None:
                    self._retention.cancel()
                await self.gateway.aclose()
                if self.records is not None:
                    await asyncio.to_thread(self.records.close)
                await self.metrics.aclose()  # after the records: their final counts are included
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def apply_retention(self) -> int:
        """Delete the records older than ``records.retention_days``; returns how many went."""
        days = self.config.records.retention_days
        prune = getattr(self.records, "delete_older_than", None)
        if days is None or prune is None:
            return 0
        deleted: int = await asyncio.to_thread(prune, time.time() - days * 86400)
        if deleted:
            log.info("retention: deleted %d records older than %g days", deleted, days)
        return deleted

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except Exception:
                log.exception("retention: could not delete old records")
            await asyncio.sleep(_RETENTION_INTERVAL)

    # -- dispatch ----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            # Switchboard's own headers come from Switchboard: a client may send only the documented ones.
            if name.startswith("x-switchboard-") and name not in _CLIENT_HEADERS:
                continue
            headers[name] = v.decode("latin-1")
        rid = headers.get("x-request-id")
        if rid is None or not _REQUEST_ID_OK.fullmatch(rid):
            rid = new_request_id()
        path: str = scope["path"]
        ex = _Exchange(rid, headers, _dialect(path, headers), scope)
        endpoint = _API_ENDPOINTS.get(path)
        if endpoint is not None:
            self.metrics.request_started(endpoint)
        try:
            if self._authenticate and (endpoint is not None or path in _KEYED_PATHS or path.startswith(_MODEL_PATHS)):
                governor = self.gateway.governor
                key = governor.known_key(headers)
                ex.key = key if key is not None else await governor.authenticate(headers)
            # HEAD is answered as GET; the server sends the head of that response without its body.
            method: str = scope["method"]
            handler = self._routes.get(("GET" if method == "HEAD" else method, path))
            if handler is None and path.startswith(("/v1/models/", "/models/")):
                if method != "GET" and method != "HEAD":
                    raise MethodNotAllowed(f"Method {method} is not allowed on {path}.", allow=("GET",))
                handler = self._model_by_id
            if handler is None and (path == "/dashboard" or path.startswith("/dashboard/")):
                handler = self._dashboard
            if handler is None and path.startswith("/admin/"):
                handler = self._admin
            if handler is None:
                allow = self._allow.get(path)
                if allow is not None:
                    raise MethodNotAllowed(f"Method {method} is not allowed on {path}.", allow=allow)
                raise NotFound(f"Unknown endpoint: {method} {path}")
            await handler(scope, receive, send, ex)
        except SwitchboardError as exc:
            await self._send_error(send, ex, exc)
            self._record_rejection(ex, path, exc)
        except _ClientGone:
            return
        except Exception:
            log.exception("internal error handling request %s", rid)
            if not ex.started:
                await self._send_error(send, ex, InternalError(f"Internal error (request id {rid})."))
        finally:
            if endpoint is not None:
                self.metrics.request_finished(endpoint)

    # -- endpoints ---------------------------------------------------------------------------

    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self._json_body(scope, receive, ex)
        req = openai_wire.parse_chat_request(body)
        ctx = self._context(ex, "chat", req)
        if _dry_run(ex):
            await self._explain(send, ex, ctx, req)
            return
        if req.stream:
            include_usage = req.include_usage

            def encoder(model: str) -> _Encoder:
                return openai_wire.OpenAIStreamEncoder(model, include_usage)
            await self._stream(send, receive, ex, ctx, req, encoder)
            return
        resp = await self._until_disconnect(receive, ex, self.gateway.chat(req, ctx))
        payload = openai_wire.render_chat_response(resp, model=resp.model or ctx.record.upstream_model or req.model)
        await self._send(send, ex, 200, orjson.dumps(payload), self._result_headers(ctx, resp.id))

    async def _messages(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self._json_body(scope, receive, ex)
        req = anthropic_wire.parse_messages_request(body)
        ctx = self._context(ex, "messages", req)
        if _dry_run(ex):
            await self._explain(send, ex, ctx, req)
            return
        if req.stream:
            await self._stream(send, receive, ex, ctx, req, anthropic_wire.AnthropicStreamEncoder)
            return
        resp = await self._until_disconnect(receive, ex, self.gateway.chat(req, ctx))
        payload = anthropic_wire.render_message_response(resp, model=resp.model or req.model)
        await self._send(send, ex, 200, orjson.dumps(payload), self._result_headers(ctx, resp.id))

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        """Anthropic's token count: the prompt's estimated input tokens (``estimate_input_tokens``) for a model the
        caller may use. No upstream is called and nothing is recorded: clients such as Claude Code count often."""
        req = anthropic_wire.parse_count_tokens_request(await self._json_body(scope, receive, ex))
        self.gateway.governor.check_model(ex.key, req.model)
        if req.model not in self.gateway.routers:
            self.gateway.lookup(req.model, None)
        await self._send(send, ex, 200, orjson.dumps({"input_tokens": estimate_input_tokens(req)}), [])

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self._json_body(scope, receive, ex)
        req = openai_wire.parse_embedding_request(body)
        ex.recorded = True
        ctx = RequestContext.create(endpoint="embeddings", dialect=ex.dialect, request_id=ex.request_id,
                                    client_headers=ex.headers, caller=req.user, timeout=_client_timeout(ex),
                                    record_later=True)  # the answer leaves first
        _identify(ctx, ex)
        ex.ctx = ctx
        resp = await self._until_disconnect(receive, ex, self.gateway.embed(req, ctx))
        payload = openai_wire.render_embedding_response(resp, model=resp.model or req.model,
                                                        encoding_format=req.encoding_format)
        await self._send(send, ex, 200, orjson.dumps(payload), self._result_headers(ctx, None))

    async def _models(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        names = [(n, t) for n, t in self.gateway.model_names() if ex.key is None or ex.key.allows_model(n)]
        if ex.dialect == "anthropic":
            payload = _anthropic_models([n for n, _ in names])
        else:
            payload = openai_wire.render_models([(n, "switchboard") for n, _ in names], created=_STARTED)
        await self._send(send, ex, 200, orjson.dumps(payload), [])

    async def _model_by_id(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        name = scope["path"].split("/models/", 1)[1]
        self.gateway.governor.check_model(ex.key, name)
        if name not in self.gateway.routers:
            self.gateway.lookup(name, None)
        payload: dict[str, Any]
        if ex.dialect == "anthropic":
            payload = _anthropic_model(name)
        else:
            payload = {"id": name, "object": "model", "created": _STARTED, "owned_by": "switchboard"}
        await self._send(send, ex, 200, orjson.dumps(payload), [])

    async def _explain(self, send: Send, ex: _Exchange, ctx: RequestContext, req: ChatRequest) -> None:
        """The dry run: how the request would be routed, without calling any upstream (and unrecorded)."""
        ex.recorded = True
        plan = await self.gateway.plan(req, ctx)
        await self._send(send, ex, 200, orjson.dumps(explanation(plan)), [])

    async def _feedback(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self._json_body(scope, receive, ex)
        request_id, feedback = parse_feedback(body)
        result = await self.gateway.feedback(request_id, feedback)
        await self._send(send, ex, 200, orjson.dumps(result), [])

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self.metrics.arender()
        ex.started = True
        headers = [(b"content-type", METRICS_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": ex.with_id(headers)})
        await send({"type": "http.response.body", "body": body})

    async def _dashboard(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        resp = await self.dashboard.handle(_as_get(scope["method"]), scope["path"], query, ex.headers)
        ex.started = True
        headers = [*resp.headers, (b"content-length", str(len(resp.body)).encode())]
        await send({"type": "http.response.start", "status": resp.status, "headers": ex.with_id(headers)})
        await send({"type": "http.response.body", "body": resp.body})

    async def _admin(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        body = await self._raw_body(scope, receive, ex)
        query = scope.get("query_string", b"").decode("latin-1")
        status, payload = await self.admin.handle(_as_get(scope["method"]), scope["path"], query, ex.headers, body,
                                                  ex.request_id)
        await self._send(send, ex, status, orjson.dumps(payload), [(b"cache-control", b"no-store")])

    async def _live(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        await self._send(send, ex, 200, b'{"status":"live"}', [])

    async def _ready(self, scope: Scope, receive: Receive, send: Send, ex: _Exchange) -> None:
        if self.draining:
            await self._send(send, ex, 503, b'{"status":"draining"}', [])
        elif not self.gateway.ready:  # routers still embedding their examples or loading their models
            await self._send(send, ex, 503, b'{"status":"warming"}', [])
        else:
            await self._send(send, ex, 200, b'{"status":"ready"}', [])

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, send: Send, receive: Receive, ex: _Exchange, ctx: RequestContext, req: ChatRequest,
                      make_encoder: Callable[[str], _Encoder]) -> None:
        task = asyncio.current_task()
        assert task is not None
        # From here on a client that goes away cancels the work, also while waiting for the first token.
        unwatch = _watch_disconnect(receive, ex, task)
        stream: ChatStream | None = None
        try:
            stream = await self.gateway.stream(req, ctx)
            encoder = make_encoder(stream.deployment.model)
            headers = _SSE_HEADERS + self._result_headers(ctx, None)
            ex.started = True
            await send(ex.response_start(200, headers))
            await self._pump(send, stream, encoder, ex)
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
        finally:
            unwatch()
            if stream is not None:
                await stream.aclose()

    @staticmethod
    async def _pump(send: Send, stream: ChatStream, encoder: _Encoder, ex: _Exchange) -> None:
        # What arrived from the upstream in one read leaves in one write; the end leaves with the last batch,
        # before the stream settles its record.
        encode = encoder.encode
        try:
            async for batch in stream.batches():
                chunk = encode(batch[0]) if len(batch) == 1 else b"".join([encode(event) for event in batch])
                if stream.complete:
                    ex.finished = True  # from here a "disconnect" only means the response is complete
                    await send({"type": "http.response.body", "body": chunk + encoder.done(), "more_body": False})
                elif chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except SwitchboardError as exc:
            log.warning("stream for %s failed after content was sent: %s", stream.ctx.request_id, exc.message)
            if not ex.finished:
                ex.finished = True
                await send({"type": "http.response.body", "body": encoder.error(exc), "more_body": False})
            return
        if not ex.finished:
            ex.finished = True
            await send({"type": "http.response.body", "body": encoder.done(), "more_body": False})

    # -- helpers -----------------------------------------------------------------------------

    def _record_rejection(self, ex: _Exchange, path: str, exc: SwitchboardError) -> None:
        """Requests refused before they reached the gateway (bad JSON, invalid fields, oversized body)
        still leave a record, so that bad input shows in ``switchboard logs`` and the error rates."""
        endpoint = _API_ENDPOINTS.get(path)
        if ex.recorded or endpoint is None:
            return
        rec = RequestRecord(
            request_id=ex.request_id, started_at=time.time(), endpoint=endpoint, dialect=ex.dialect,
            status=exc.status, error_type=type(exc).__name__, error_message=exc.message[:500],
        )
        self.metrics.observe_record(rec)
        if self.records is not None:
            self.records.submit(rec)
        tracer = self.gateway.tracer
        if tracer is not None:
            tracer.finish(rec, tracer.begin(ex.headers))

    def _context(self, ex: _Exchange, endpoint: str, req: ChatRequest) -> RequestContext:
        timeout = _client_timeout(ex)
        ex.recorded = True
        ctx = RequestContext.create(endpoint=endpoint, dialect=ex.dialect, request_id=ex.request_id,
                                    client_headers=ex.headers, caller=req.user, timeout=timeout,
                                    record_later=True)  # the answer leaves first
        if req.metadata:
            ctx.record.metadata = dict(req.metadata)
        _identify(ctx, ex)
        ex.ctx = ctx
        return ctx

    @staticmethod
    async def _until_disconnect(receive: Receive, ex: _Exchange, work: Awaitable[T]) -> T:
        """Await ``work``, cancelling it if the client disconnects first (the upstream call with it)."""
        task = asyncio.current_task()
        assert task is not None
        unwatch = _watch_disconnect(receive, ex, task)
        try:
            return await work
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
            raise _ClientGone from None
        finally:
            unwatch()

    async def _json_body(self, scope: Scope, receive: Receive, ex: _Exchange) -> Any:
        body = await self._raw_body(scope, receive, ex)
        if not body:
            raise InvalidRequest("The request body is empty; expected a JSON object.")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.") from None

    async def _raw_body(self, scope: Scope, receive: Receive, ex: _Exchange) -> bytes:
        declared = ex.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLarge(f"Request body is larger than the limit of {self._max_body} bytes.")
        msg = await receive()
        body: bytes = msg.get("body", b"")
        if msg["type"] == "http.disconnect":
            raise _ClientGone
        if msg.get("more_body"):
            parts = [body]
            size = len(body)
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > self._max_body:
                    raise PayloadTooLarge(f"Request body is larger than the limit of {self._max_body} bytes.")
                parts.append(chunk)
                if not msg.get("more_body"):
                    break
            body = b"".join(parts)
        elif len(body) > self._max_body:
            raise PayloadTooLarge(f"Request body is larger than the limit of {self._max_body} bytes.")
        return body

    @staticmethod
    def _result_headers(ctx: RequestContext, upstream_id: str | None) -> Headers:
        rec = ctx.record
        attempts = rec.attempts
        out: Headers = [
            (b"x-switchboard-model", (rec.public_model or "").encode("latin-1", "replace")),
            *([(b"x-switchboard-router", rec.router.encode("latin-1", "replace"))] if rec.router else []),
            (b"x-switchboard-deployment", (rec.deployment or "").encode("latin-1", "replace")),
            (b"x-switchboard-attempts", str(len(attempts)).encode()),
        ]
        if len(attempts) > 1 or (attempts and attempts[0].outcome != "ok"):
            out.append((b"x-switchboard-attempt-log", _attempt_log(rec)))
        if rec.unsatisfactory is not None:
            out.append((b"x-switchboard-unsatisfactory", rec.unsatisfactory[:200].encode("latin-1", "replace")))
        if not rec.stream:
            out.append((b"x-switchboard-cost-usd", f"{rec.cost_usd:.8f}".encode()))
        if upstream_id:
            out.append((b"x-switchboard-upstream-id", upstream_id.encode("latin-1", "replace")))
        return out

    @staticmethod
    async def _send(send: Send, ex: _Exchange, status: int, payload: bytes, headers: Headers) -> None:
        ex.started = True
        headers.append(_JSON)
        headers.append((b"content-length", str(len(payload)).encode()))
        await send(ex.response_start(status, headers))
        await send({"type": "http.response.body", "body": payload})

    async def _send_error(self, send: Send, ex: _Exchange, exc: SwitchboardError) -> None:
        if ex.started:
            return
        render = anthropic_wire.render_error if ex.dialect == "anthropic" else openai_wire.render_error
        payload = render(exc)
        headers: Headers = []
        if ex.ctx is not None and ex.ctx.record.attempts:
            rec = ex.ctx.record
            headers.append((b"x-switchboard-model", (rec.public_model or "").encode("latin-1", "replace")))
            headers.append((b"x-switchboard-attempts", str(len(rec.attempts)).encode()))
            headers.append((b"x-switchboard-attempt-log", _attempt_log(rec)))
        if not exc.retryable:
            headers.append((b"x-should-retry", b"false"))
        if exc.retry_after is not None:
            headers.append((b"retry-after", str(math.ceil(exc.retry_after)).encode()))
            headers.append((b"retry-after-ms", str(int(exc.retry_after * 1000)).encode()))
        if isinstance(exc, MethodNotAllowed):
            headers.append((b"allow", ", ".join(exc.allow).encode("ascii")))
        await self._send(send, ex, exc.status, orjson.dumps(payload), headers)


class _Exchange:
    """Per-request state the app needs: id, headers, dialect, and whether a response started."""

    __slots__ = ("client_gone", "ctx", "dialect", "finished", "headers", "key", "recorded", "request_id", "scope",
                 "started")

    def __init__(self, request_id: str, headers: dict[str, str], dialect: str, scope: Scope) -> None:
        self.request_id = request_id
        self.scope = scope
        self.headers = headers
        self.dialect = dialect
        self.ctx: RequestContext | None = None
        self.started = False
        self.client_gone = False
        self.recorded = False  # the gateway keeps this request's record
        self.finished = False  # the last byte of the response is on its way
        self.key: VirtualKey | None = None  # the caller's virtual key, when the API requires keys

    def with_id(self, headers: Headers) -> Headers:
        headers.append((b"x-request-id", self.request_id.encode()))
        return headers

    def response_start(self, status: int, headers: Headers) -> Message:
        """The ``http.response.start`` message of an API response: ``headers``, the request id, and what the
        key's limits answered (``x-ratelimit-*``), as header lines where the server takes them."""
        headers.append((b"x-request-id", self.request_id.encode()))
        message: Message = {"type": "http.response.start", "status": status, "headers": headers}
        admission = self.ctx.admission if self.ctx is not None else None
        if admission is not None:
            if "switchboard.header_lines" in (self.scope.get("extensions") or ()):
                message["header_lines"] = quota_lines(admission)
            else:
                headers.extend(quota_headers(admission))
        return message


def _watch_disconnect(receive: Receive, ex: _Exchange, task: asyncio.Task[Any]) -> Callable[[], object]:
    """Cancel ``task`` if the client disconnects before the last byte of the response is on its way; returns
    what stops watching. Switchboard's server calls back itself (its ``switchboard.disconnect`` extension);
    under any other ASGI server a task waits in ``receive()`` for ``http.disconnect``."""

    def gone() -> None:
        if not ex.finished:
            ex.client_gone = True
            task.cancel()

    extensions = ex.scope.get("extensions")
    disconnect = extensions.get("switchboard.disconnect") if extensions else None
    if disconnect is not None:
        watch = disconnect["watch"]
        watch(gone)
        return functools.partial(watch, None)
    return asyncio.create_task(_cancel_on_disconnect(receive, gone)).cancel


async def _cancel_on_disconnect(receive: Receive, gone: Callable[[], None]) -> None:
    """Call ``gone`` when the client disconnects (the server reports it through ``receive``)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            gone()
            return


def _identify(ctx: RequestContext, ex: _Exchange) -> None:
    """Who made the request, from its virtual key: the key's id and team (never the client's say-so), and
    the key's user when the request names no end user."""
    key = ex.key
    if key is None:
        return
    ctx.key = key
    rec = ctx.record
    rec.key_id = key.id
    rec.team = key.team
    if rec.caller is None:
        rec.caller = key.user
    if key.team is not None:
        rec.metadata["team"] = key.team


def _client_timeout(ex: _Exchange) -> float | None:
    """The caller's deadline for the whole request, from ``x-switchboard-timeout`` (seconds)."""
    raw = ex.headers.get("x-switchboard-timeout")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"The header x-switchboard-timeout must be a positive number of seconds, got {raw!r}.",
                             param="x-switchboard-timeout")
    return value


def _attempt_log(rec: RequestRecord) -> bytes:
    """``deployment;outcome[;reason][;model=…][;hedge]`` per attempt, in the order they started."""
    parts = []
    for a in rec.attempts:
        item = f"{a.deployment};{a.outcome}"
        if a.reason and a.outcome != "ok":
            item += f";{a.reason}"
        if a.model and a.model != rec.public_model:
            item += f";model={a.model}"
        if a.hedge:
            item += ";hedge"
        parts.append(item)
    return ", ".join(parts).encode("latin-1", "replace")


_STARTED = int(time.time())


def _as_get(method: str) -> str:
    """The method a handler serves a request as: HEAD as GET (the server drops the body)."""
    return "GET" if method == "HEAD" else method


def _dry_run(ex: _Exchange) -> bool:
    value = ex.headers.get("x-switchboard-dry-run")
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequest("The x-switchboard-dry-run header must be true or false.", param="x-switchboard-dry-run")


_RETENTION_INTERVAL = 3600.0  # seconds between two passes of the records retention job

#: The ``x-switchboard-*`` request headers a client may send; any other is dropped on arrival.
_CLIENT_HEADERS = frozenset({"x-switchboard-timeout", "x-switchboard-dry-run", "x-switchboard-tags"})

#: Paths besides the API endpoints that need a virtual key when keys are required.
_KEYED_PATHS = frozenset({"/v1/models", "/models", "/v1/feedback", "/v1/messages/count_tokens"})
_MODEL_PATHS = ("/v1/models/", "/models/")

_API_ENDPOINTS = {"/v1/chat/completions": "chat", "/chat/completions": "chat", "/v1/messages": "messages",
                  "/v1/embeddings": "embeddings", "/embeddings": "embeddings"}


def _dialect(path: str, headers: dict[str, str]) -> str:
    """Whose shapes a request gets: Anthropic's on the Messages API, and on the model list and model lookups
    when the client says it speaks Anthropic's API (the Anthropic SDKs send ``anthropic-version``)."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if "anthropic-version" in headers and path.startswith(("/v1/models", "/models")):
        return "anthropic"
    return "openai"


def _anthropic_model(name: str) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_STARTED))
    return {"type": "model", "id": name, "display_name": name, "created_at": created}


def _anthropic_models(names: list[str]) -> dict[str, Any]:
    data = [_anthropic_model(n) for n in names]
    return {"data": data, "has_more": False, "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None}


def _record_writer(cfg: RecordsConfig) -> RecordSink:
    """The configured record store's writer."""
    if cfg.backend == "postgres":
        from switchboard.storage.postgres import PostgresRecordWriter

        assert cfg.dsn is not None  # the config requires it
        return PostgresRecordWriter(cfg.dsn.get_secret_value(), schema=cfg.schema_name, queue_size=cfg.queue_size,
                                    batch_size=cfg.batch_size, flush_interval=cfg.flush_interval)
    from switchboard.storage.sqlite import SQLiteRecordWriter

    return SQLiteRecordWriter(cfg)


def create_app(config: Config, *, records: RecordSink | None = None,
               metrics_dir: Path | None = None) -> SwitchboardApp:
    """Build the ASGI app for ``config``. ``records`` defaults to the configured record store;
    ``metrics_dir`` is where the workers of one server share their metrics (``None``: one process)."""
    if records is None and config.records.enabled:
        records = _record_writer(config.records)
    gateway = Gateway(config, records=records)
    metrics = Metrics(metrics_dir)
    gateway.record_listeners.append(metrics.observe_record)
    gateway.breaker_listeners.append(metrics.breaker_changed)
    metrics.declare_deployments(d.id for m in config.models.values() for d in m.deployments)
    if records is not None:
        sink = records
        metrics.watch_records(lambda: sink.stats)
    if gateway.tracer is not None:
        metrics.watch_tracer(gateway.tracer)
    return SwitchboardApp(gateway, config, records, metrics)
