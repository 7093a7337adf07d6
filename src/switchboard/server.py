"""The gateway's HTTP/1.1 server: an ASGI server on raw asyncio and httptools, lean on purpose.

It serves one ASGI application (the gateway's) with what that application needs and nothing more:
keep-alive, pipelined requests answered in order, Content-Length and chunked request bodies, request
targets in origin or absolute form, responses whose head and first body chunk leave in one write, chunked
streaming with write back-pressure (to HTTP/1.0 clients: unframed, ended by closing the connection), HEAD
requests answered with the head of the app's response and never its body, client disconnects reported to
the app at once, idle keep-alive timeouts, header-size limits, ``Expect: 100-continue``, the lifespan
protocol, and graceful shutdown (stop accepting, let in-flight requests finish up to a deadline, close idle
connections). What it refuses before the app sees a request (invalid HTTP, oversized headers) it answers
itself, in its turn after the responses to the requests before it and in words the app may supply
(``Rejection``), then closes the connection.

It offers the application two extensions (in ``scope["extensions"]``, as ASGI provides for):

- ``switchboard.header_lines``: an ``http.response.start`` message may carry ``header_lines``, header lines the
  application rendered itself (``b"name: value\\r\\n"`` each, names lower-case, no ``content-length``),
  written after its ``headers`` as they are;
- ``switchboard.disconnect``: its ``watch(callback)`` has ``callback()`` called once, at once, if the client
  disconnects before the response is complete (``watch(None)`` stops watching) — what a task waiting in
  ``receive()`` for ``http.disconnect`` would learn, without the task.

Usage::

    asyncio.run(serve(app, host="127.0.0.1", port=8080, drain_timeout=30))
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast
from urllib.parse import unquote

import httptools

__all__ = ["HttpProtocol", "Lifespan", "Rejection", "serve"]

log = logging.getLogger("switchboard.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
#: How a request refused before the app sees it (malformed HTTP, headers too large) is answered: given the
#: status, what was wrong and the request's path as far as it was read, the header lines (``b"name: value\r\n"``
#: each, without ``content-length``) and the body.
Rejection = Callable[[int, str, bytes], tuple[bytes, bytes]]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_PIPELINED = 8
_ASGI = {"version": "3.0", "spec_version": "2.3"}
#: What the server offers beyond ASGI's core (see the module's docstring).
_HEADER_LINES: dict[str, Any] = {}
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            413: b"Payload Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
            499: b"Client Closed Request", 500: b"Internal Server Error", 502: b"Bad Gateway",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))


def _plain(status: int, message: str, path: bytes) -> tuple[bytes, bytes]:
    """The server's own words for a refused request, when the app offers none."""
    return b"content-type: text/plain\r\n", message.encode()


def _origin_form(path: bytes) -> bytes:
    """A request target's path: as it is in origin form (``/v1/models``); without scheme and authority in
    absolute form (``http://host:8080/v1/models``), which servers must accept (RFC 9112, 3.2.2)."""
    scheme, sep, rest = path.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return path
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"


class _Request:
    """One parsed request waiting for (or being served by) the app."""

    __slots__ = ("body", "headers", "keep_alive", "method", "refusal", "size", "too_large", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.method = b""
        self.keep_alive = True
        self.too_large = False
        #: Set on a request the server refuses itself: (status, what was wrong, its path as far as read).
        self.refusal: tuple[int, str, bytes] | None = None


class _Cycle:
    """The ASGI ``receive``/``send`` pair for one request on one connection."""

    __slots__ = (
        "_body",
        "_conn",
        "_disconnect",
        "_head",
        "_on_disconnect",
        "chunked",
        "complete",
        "head_only",
        "keep_alive",
        "started",
        "status",
    )

    def __init__(self, conn: HttpProtocol, body: bytes, keep_alive: bool, head_only: bool = False) -> None:
        self._conn = conn
        self._body: bytes | None = body
        self.keep_alive = keep_alive
        self.head_only = head_only  # a HEAD request: the response's head leaves, its body never does
        self.started = False
        self.complete = False
        self.chunked = False
        self.status = 0
        self._head: bytes = b""
        self._disconnect: asyncio.Future[None] | None = None
        self._on_disconnect: Callable[[], None] | None = None

    async def receive(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        conn = self._conn
        if not conn.closed and not self.complete:
            self._disconnect = conn.loop.create_future()
            conn.waiters.add(self._disconnect)
            try:
                await self._disconnect
            finally:
                conn.waiters.discard(self._disconnect)
        return {"type": "http.disconnect"}

    def wake(self) -> None:
        if self._disconnect is not None and not self._disconnect.done():
            self._disconnect.set_result(None)

    def watch(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once if the client disconnects before the response is complete (``None``: stop)."""
        self._on_disconnect = callback

    def client_left(self) -> None:
        """The connection closed: tell whoever watches, unless the response was already complete."""
        callback = self._on_disconnect
        if callback is not None:
            self._on_disconnect = None
            if not self.complete:
                callback()

    async def send(self, message: Message) -> None:
        conn = self._conn
        if conn.closed or self.complete:
            return
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.started = True
            self.status = message["status"]
            parts = [_status_line(self.status)]
            has_length = False
            for name, value in message.get("headers", ()):
                if len(name) == 14 and name.lower() == b"content-length":
                    has_length = True
                parts += (name, b": ", value, b"\r\n")
            lines = message.get("header_lines")
            if lines:
                parts.append(lines)
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            self.chunked = not has_length
            self._head = b"".join(parts)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        head = self._head
        if head:
            self._head = b""
            if self.chunked and not more:
                # The whole body in one message: send it with a length instead of chunks.
                self.chunked = False
                head += b"content-length: %d\r\n" % len(body)
            elif self.chunked and self._conn.parser.get_http_version() == "1.0":
                # HTTP/1.0 has no chunked encoding (nginx proxies with it unless told otherwise): the body
                # ends where the connection does. A connection's requests all share its version.
                self.chunked = False
                if self.keep_alive:
                    self.keep_alive = False
                    head += b"connection: close\r\n"
            elif self.chunked:
                head += b"transfer-encoding: chunked\r\n"
            head += b"\r\n"
        if self.head_only:
            data = head
        elif self.chunked:
            data = head + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (b"" if more else b"0\r\n\r\n")
        else:
            data = head + body
        if data:
            conn.transport.write(data)
        if not more:
            self.complete = True
            conn.response_done(self)
        elif conn.write_paused:
            await conn.drain()


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests, run the app for each in order, write its responses."""

    def __init__(self, app: ASGIApp, state: _ServerState) -> None:
        self.app = app
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.write_paused = False
        self.waiters: set[asyncio.Future[None]] = set()
        self._drain: asyncio.Future[None] | None = None
        self._pending: deque[_Request] = deque()
        self._current: _Request | None = None
        self._header_bytes = 0
        self._refused = False  # a request was refused: nothing after it on this connection is read
        self._cycle: _Cycle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._client: tuple[str, int] | None = None
        self._server: tuple[str, int] | None = None

    # -- transport callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.state.connections.add(self)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self._server = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError:
            # httptools wraps exceptions raised in callbacks, so the header limit shows up here too.
            if self._header_bytes > _MAX_HEADER_BYTES:
                self._reject(431, f"The request's headers exceed {_MAX_HEADER_BYTES // 1024} KiB.")
            else:
                self._reject(400, "The request is not valid HTTP/1.1.")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        for fut in list(self.waiters):
            if not fut.done():
                fut.set_result(None)
        if self._cycle is not None:
            self._cycle.client_left()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._pending.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self._drain = self.loop.create_future()
            await self._drain

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Request()
        self._header_bytes = 0
        # A request that starts must arrive whole in reasonable time (no slow-header/slow-body hold).
        self._arm_idle(self.state.read_timeout)

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise _HeadersTooLarge
        self._current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        req = self._current
        assert req is not None
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive() and not self.state.stopping
        for name, value in req.headers:
            if name == b"expect" and value.lower() == b"100-continue" and not self._pending and self._cycle is None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req = self._current
        assert req is not None
        if req.too_large:
            return
        req.body.append(body)
        req.size += len(body)
        if req.size > self.state.max_body:
            req.too_large = True  # the app answers 413; the connection closes after that

    def on_message_complete(self) -> None:
        req = self._current
        assert req is not None
        self._current = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._pending.append(req)
        if len(self._pending) >= _MAX_PIPELINED:
            self.transport.pause_reading()  # a client flooding pipelined requests waits for answers
        if self._cycle is None:
            self._start_next()

    # -- request cycle -----------------------------------------------------------------------

    def _start_next(self) -> None:
        if not self._pending or self.closed:
            return
        req = self._pending.popleft()
        if req.refusal is not None:
            self._refuse(*req.refusal)
            return
        if len(self._pending) == _MAX_PIPELINED - 1 and not self._refused:
            self.transport.resume_reading()
        body = b"".join(req.body)
        if req.too_large:
            body = body[: self.state.max_body + 1]
            req.keep_alive = False
        raw_path, _, query = req.url.partition(b"?")
        if raw_path[:1] != b"/":
            raw_path = _origin_form(raw_path)
        cycle = _Cycle(self, body, req.keep_alive, req.method == b"HEAD")
        scope: Scope = {
            "type": "http", "asgi": _ASGI, "http_version": "1.1", "method": req.method.decode("ascii"),
            "scheme": "http", "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": req.headers, "client": self._client,
            "server": self._server, "state": {},
            "extensions": {"switchboard.header_lines": _HEADER_LINES, "switchboard.disconnect": {"watch": cycle.watch}},
        }
        self._cycle = cycle
        self.state.in_flight += 1
        task = self.loop.create_task(self._run(scope, cycle))
        self.state.tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self.state.tasks.discard)

    async def _run(self, scope: Scope, cycle: _Cycle) -> None:
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception:
            log.exception("unhandled error in the application")
        finally:
            self.state.in_flight -= 1
            if not cycle.complete:
                # The app ended without finishing its response: answer 500 if nothing was sent, and
                # close the connection either way — it cannot carry another request.
                self._cycle = None
                if not self.closed:
                    if not cycle.started:
                        self.transport.write(_status_line(500) + b"content-length: 21\r\nconnection: close\r\n\r\n"
                                             + (b"" if cycle.head_only else b"Internal Server Error"))
                    self.transport.close()
            self.state.request_finished()

    def response_done(self, cycle: _Cycle) -> None:
        """The app sent its last byte: keep the connection for the next request, or close it."""
        self._cycle = None
        cycle.wake()
        if not cycle.keep_alive or self.state.stopping:
            self.transport.close()
            return
        if self._pending:
            self._start_next()
        else:
            self._arm_idle()

    def _arm_idle(self, seconds: float | None = None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(seconds or self.state.keep_alive, self._idle_timeout)

    def _idle_timeout(self) -> None:
        """Idle between requests too long, or a request took too long to arrive: close."""
        self._idle = None
        if self._cycle is None and not self._pending and not self.closed:
            self.transport.close()

    def close_if_idle(self) -> None:
        if self._cycle is None and not self._pending and not self.closed:
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        """Refuse the request being read. Its answer takes its turn after the responses to the requests before
        it on the connection; then the connection closes, as nothing after it can be framed."""
        if self.closed or self._refused:
            return
        self._refused = True
        path = b"" if self._current is None else _origin_form(self._current.url.partition(b"?")[0])
        self._current = None
        if self._cycle is None and not self._pending:
            self._refuse(status, message, path)
            return
        self.transport.pause_reading()
        marker = _Request()
        marker.refusal = (status, message, path)
        self._pending.append(marker)

    def _refuse(self, status: int, message: str, path: bytes) -> None:
        lines, body = self.state.rejection(status, message, path)
        self.transport.write(_status_line(status) + lines + b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (len(body), body))
        self.transport.close()


class _HeadersTooLarge(Exception):
    pass


class _ServerState:
    """What the connections of one server share: limits, the in-flight count, shutdown."""

    def __init__(self, max_body: int, keep_alive: float, read_timeout: float = 30.0,
                 rejection: Rejection = _plain) -> None:
        self.max_body = max_body
        self.rejection = rejection
        self.keep_alive = keep_alive
        self.read_timeout = read_timeout
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.stopping = False
        self._idle: asyncio.Event | None = None

    def request_finished(self) -> None:
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()


class Lifespan:
    """Drives the ASGI lifespan protocol of ``app``: ``await startup()`` … ``await shutdown()``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        async def receive() -> Message:
            return await self._inbox.get()

        async def send(message: Message) -> None:
            await self._outbox.put(message)

        async def run() -> None:
            await self._app({"type": "lifespan", "asgi": _ASGI, "state": {}}, receive, send)

        self._task = asyncio.create_task(run())
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._outbox.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"application start-up failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        await self._task


async def serve(app: ASGIApp, *, sock: socket.socket, max_body: int, drain_timeout: float,
                keep_alive: float = 5.0, on_ready: Callable[[], None] | None = None,
                on_stop: Callable[[], None] | None = None, stop: asyncio.Event | None = None,
                rejection: Rejection = _plain) -> None:
    """Serve ``app`` on the listening socket ``sock`` until ``stop`` is set (by default: SIGTERM or
    SIGINT), then shut down gracefully: call ``on_stop`` (the app turns its readiness off), refuse new
    connections, close idle ones, let in-flight requests finish for up to ``drain_timeout`` seconds,
    run the app's lifespan shutdown. ``rejection`` words the answer to a request refused before the app
    sees it (plain text by default)."""
    loop = asyncio.get_running_loop()
    lifespan = Lifespan(app)
    await lifespan.startup()
    state = _ServerState(max_body, keep_alive, rejection=rejection)
    server = await loop.create_server(lambda: HttpProtocol(app, state), sock=sock, backlog=2048)
    signals = stop is None
    stop = stop or asyncio.Event()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready()
    hurry = asyncio.Event()
    try:
        await stop.wait()
    finally:
        if signals:  # a second signal while draining means: stop waiting for in-flight requests
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, hurry.set)
        state.stopping = True
        if on_stop is not None:
            on_stop()
        server.close()  # no new connections
        for conn in list(state.connections):
            conn.close_if_idle()
        drained = asyncio.ensure_future(state.wait_idle())
        hurried = asyncio.ensure_future(hurry.wait())
        done, _ = await asyncio.wait({drained, hurried}, timeout=drain_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()
        hurried.cancel()
        if drained not in done:
            log.warning("shutting down with %d request(s) still in flight", state.in_flight)
        for conn in list(state.connections):
            conn.transport.close()
        await lifespan.shutdown()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
