"""A small HTTP/1.1 server on raw asyncio, able to misbehave on purpose.

Requests are parsed with ``httptools`` (keep-alive, Content-Length and chunked bodies, pipelining is
answered in order). A handler returns a :data:`Reply` describing what to do, not bytes on a socket:

* :class:`Respond` — a whole response, optionally after a delay;
* :class:`StreamReply` — a chunked (SSE) response: head and preamble, one frame per content chunk at
  a pace, then an epilogue; or, on cue, a TCP reset or an in-band error frame mid-stream;
* :class:`Hang` — never answer, until the client goes away;
* :class:`Abort` — drop the connection without a response.

Replies with no delay are written synchronously from ``data_received``; only timed replies get a
task. A client that disconnects while its reply is being generated cancels that task and is counted
in :attr:`SimStats.cancelled_by_client`.

Usage::

    loop.create_server(lambda: HttpConnection(handler, stats, connections), "127.0.0.1", 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

import httptools
import orjson

__all__ = [
    "Abort",
    "Hang",
    "HttpConnection",
    "Reply",
    "Respond",
    "SimRequest",
    "SimStats",
    "StreamReply",
    "header_lines",
]

log = logging.getLogger("switchboard.sim")

JSON = b"application/json"
SSE = b"text/event-stream"
MAX_BODY = 64 * 1024 * 1024

_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    422: b"Unprocessable Entity",
    429: b"Too Many Requests",
    499: b"Client Closed Request",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    529: b"Overloaded",
}


class SimRequest:
    """One parsed request. ``headers`` have lower-case names; ``sim`` holds just the ``x-sim-*`` ones."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query", "sim")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        sim: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.sim = sim
        self.body = body
        self.keep_alive = keep_alive

    def json(self) -> Any:
        """The body parsed as JSON (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.body)

    def query_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.query.split("&"):
            if part:
                k, _, v = part.partition("=")
                out[unquote(k)] = unquote(v.replace("+", " "))
        return out

    def __repr__(self) -> str:
        return f"<SimRequest {self.method} {self.path}>"


@dataclass(slots=True)
class Respond:
    """A whole response. ``headers`` are extra pre-encoded ``name: value\\r\\n`` lines."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: bytes = b""
    delay: float = 0.0


@dataclass(slots=True)
class StreamReply:
    """A chunked response paced frame by frame.

    ``chunks`` are the content chunks (one token each); ``ttft`` is waited before the first one and
    ``interval`` between the others. With ``eager_preamble`` the head and preamble go out before the
    ttft wait, else together with the first chunk. ``reset_after`` / ``error_after`` (a chunk count)
    abort the connection / end the stream with ``error_frame`` instead of carrying on.
    """

    preamble: list[bytes]
    chunks: list[bytes]
    epilogue: list[bytes]
    content_type: bytes = SSE
    headers: bytes = b""
    ttft: float = 0.0
    interval: float = 0.0
    eager_preamble: bool = False
    reset_after: int | None = None
    error_after: int | None = None
    error_frame: bytes = b""

    @property
    def plain(self) -> bool:
        """No pacing and no scripted breakage: can be written in one go."""
        return self.ttft <= 0 and self.interval <= 0 and self.reset_after is None and self.error_after is None


@dataclass(slots=True)
class Hang:
    """Accept the request and never answer."""


@dataclass(slots=True)
class Abort:
    """Drop the connection (TCP reset) after ``delay`` seconds, without a response."""

    delay: float = 0.0


Reply = Respond | StreamReply | Hang | Abort
Handler = Callable[[SimRequest], Reply]


def header_lines(*pairs: tuple[str, str | None]) -> bytes:
    """Encode extra response headers; pairs whose value is ``None`` are skipped."""
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in pairs if v is not None)


@dataclass(slots=True)
class SimStats:
    """Counters of one server. ``wait_until`` lets tests await a condition without sleeping."""

    connections: int = 0
    requests: int = 0
    responses: int = 0
    cancelled_by_client: int = 0
    resets: int = 0
    failures_injected: int = 0
    in_flight: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    _waiters: list[tuple[Callable[[SimStats], bool], asyncio.Future[None]]] = field(default_factory=list, repr=False)

    def changed(self) -> None:
        if not self._waiters:
            return
        keep = []
        for predicate, fut in self._waiters:
            if fut.done():
                continue
            if predicate(self):
                fut.set_result(None)
            else:
                keep.append((predicate, fut))
        self._waiters[:] = keep

    async def wait_until(self, predicate: Callable[[SimStats], bool]) -> None:
        """Return once ``predicate(stats)`` holds (wrap in ``asyncio.timeout`` to bound the wait)."""
        if predicate(self):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        await fut


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


_END = b"0\r\n\r\n"


def _head(status: int, content_type: bytes, extra: bytes, length: int | None, keep_alive: bool) -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    conn = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %d %b\r\ncontent-type: %b\r\n%b%bserver: switchboard-sim\r\n%b\r\n" % (
        status,
        reason,
        content_type,
        framing,
        conn,
        extra,
    )


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, writes (or withholds) replies."""

    def __init__(
        self,
        handler: Handler,
        stats: SimStats,
        connections: set[HttpConnection],
        recent: deque[SimRequest] | None = None,
    ) -> None:
        self._handler = handler
        self._stats = stats
        self._connections = connections
        self._recent = recent
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._sim: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._keep_alive = True
        self._method = "GET"
        self._queue: deque[SimRequest] = deque()
        self._task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.server_closing = False

    # -- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._connections.add(self)
        self._stats.connections += 1
        self._stats.changed()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b"upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        self._queue.clear()
        task = self._task
        if task is not None and not task.done():
            if not self.server_closing:
                self._stats.cancelled_by_client += 1
            task.cancel()
        self._task = None
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._stats.changed()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = {}
        self._sim = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        self._headers[key] = val
        if key.startswith("x-sim-"):
            self._sim[key] = val

    def on_headers_complete(self) -> None:
        self._method = self._parser.get_method().decode("ascii", "replace")
        self._keep_alive = self._parser.should_keep_alive()
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= MAX_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closed:
            return
        if self._body_size > MAX_BODY:
            self._reject(413, b"request body too large")
            return
        url = b"".join(self._url).decode("latin-1")
        path, _, query = url.partition("?")
        if "%" in path:
            path = unquote(path)
        body = b"".join(self._body)
        req = SimRequest(self._method, path, query, self._headers, self._sim, body, self._keep_alive)
        if self._task is not None or self._queue:
            self._queue.append(req)
        else:
            self._process(req)

    # -- replying ---------------------------------------------------------------------------------------

    def _reject(self, status: int, message: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        body = orjson.dumps(
            {
                "error": {
                    "message": message.decode("utf-8", "replace"),
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        )
        self._transport.write(_head(status, JSON, b"", len(body), False) + body)
        self._transport.close()

    def _process(self, req: SimRequest) -> None:
        while True:
            stats = self._stats
            stats.requests += 1
            if self._recent is not None:
                self._recent.append(req)
            try:
                reply = self._handler(req)
            except Exception:
                log.exception("sim handler failed for %s %s", req.method, req.path)
                body = orjson.dumps(
                    {
                        "error": {
                            "message": "simulator bug",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                reply = Respond(500, body)
            if isinstance(reply, Respond) and reply.delay <= 0:
                self._write_response(reply, req.keep_alive)
            elif isinstance(reply, StreamReply) and reply.plain:
                self._write_plain_stream(reply, req.keep_alive)
            else:
                stats.in_flight += 1
                self._task = self._loop.create_task(self._run(reply, req.keep_alive))
                stats.changed()
                return
            stats.changed()
            if self._closed or not req.keep_alive or not self._queue:
                return
            req = self._queue.popleft()

    def _done(self, keep_alive: bool) -> None:
        self._stats.responses += 1
        if not keep_alive and self._transport is not None:
            self._transport.close()

    def _write_response(self, r: Respond, keep_alive: bool) -> None:
        assert self._transport is not None
        self._transport.write(_head(r.status, r.content_type, r.headers, len(r.body), keep_alive) + r.body)
        self._done(keep_alive)

    def _write_plain_stream(self, s: StreamReply, keep_alive: bool) -> None:
        assert self._transport is not None
        body = b"".join(s.preamble) + b"".join(s.chunks) + b"".join(s.epilogue)
        self._transport.write(_head(200, s.content_type, s.headers, None, keep_alive) + _chunk(body) + _END)
        self._done(keep_alive)

    async def _run(self, reply: Reply, keep_alive: bool) -> None:
        try:
            if isinstance(reply, Respond):
                await asyncio.sleep(reply.delay)
                self._write_response(reply, keep_alive)
            elif isinstance(reply, StreamReply):
                await self._stream(reply, keep_alive)
            elif isinstance(reply, Hang):
                await self._loop.create_future()
            else:
                if reply.delay > 0:
                    await asyncio.sleep(reply.delay)
                self._reset()
                return
        except asyncio.CancelledError:
            return  # the client went away (counted in connection_lost) or the server is closing
        finally:
            self._stats.in_flight -= 1
            self._stats.changed()
        self._task = None
        if self._queue and not self._closed and keep_alive:
            self._process(self._queue.popleft())

    async def _drain(self) -> None:
        if self._write_paused and not self._closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    async def _stream(self, s: StreamReply, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        head = _head(200, s.content_type, s.headers, None, keep_alive)
        preamble = _chunk(b"".join(s.preamble))
        if s.eager_preamble:
            transport.write(head + preamble)
        if s.ttft > 0:
            await asyncio.sleep(s.ttft)
        if not s.eager_preamble:
            transport.write(head + preamble)
        n = len(s.chunks)
        reset_at = n + 1 if s.reset_after is None else s.reset_after
        error_at = n + 1 if s.error_after is None else s.error_after
        for i, chunk in enumerate(s.chunks):
            if i == reset_at:
                await self._reset_after_flush()
                return
            if i == error_at:
                break
            if i and s.interval > 0:
                await asyncio.sleep(s.interval)
            if self._write_paused:
                await self._drain()
            transport.write(_chunk(chunk))
        else:
            if reset_at <= n:
                await self._reset_after_flush()
                return
        if error_at <= n:
            transport.write(_chunk(s.error_frame) + _END)
        else:
            transport.write(_chunk(b"".join(s.epilogue)) + _END)
        self._done(keep_alive)

    async def _reset_after_flush(self) -> None:
        """Let what was written reach the client, then reset the connection."""
        transport = self._transport
        if transport is not None and not self._closed and transport.get_write_buffer_size():
            transport.set_write_buffer_limits(high=0)  # pause_writing now, resume_writing once flushed
            await self._drain()
        self._reset()

    def _reset(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        self._stats.resets += 1
        self._task = None  # our own doing: not a client cancellation
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self._closed = True  # nothing more goes out, not even answers to pipelined requests
        self._queue.clear()

    def close(self) -> asyncio.Task[None] | None:
        """Abort this connection now (server shutdown); returns the reply task to await, if any."""
        self.server_closing = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        else:
            task = None
        if self._transport is not None:
            self._transport.abort()
        return task
