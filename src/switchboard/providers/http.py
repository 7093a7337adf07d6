"""A lean HTTP/1.1 client for talking to upstreams: pooled keep-alive connections on asyncio.

It sits on the gateway's hot path, so it is an ``asyncio.Protocol`` feeding ``httptools`` (llhttp) with
one pool of keep-alive connections per (scheme, host, port) — no general-purpose HTTP library.

Usage::

    http = HttpClient()
    resp = await http.request("POST", "https://api.openai.com/v1/chat/completions",
                              headers={"authorization": "Bearer …"}, body=b"{…}", timeout=30)
    async with http.stream("POST", url, headers=h, body=b) as s:
        async for chunk in s.iter_bytes():
            ...

Egress proxies come from the environment as for other HTTP clients: ``HTTPS_PROXY`` for https upstreams,
``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for either (upper- or lower-case), ``NO_PROXY`` for hosts to
reach directly; loopback addresses are always reached directly. The proxy must be an ``http://`` one
(credentials in its URL are sent as Basic proxy authorisation); every upstream connection is a tunnel
through it (``CONNECT``), with TLS to the upstream inside it for https.

One client serves one event loop. Not supported: HTTP/2, request pipelining, trailers,
``Expect: 100-continue``, content decoding (no ``Accept-Encoding`` is sent, so servers send identity).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import httptools

from switchboard.errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["HttpClient", "HttpResponse", "Proxy", "StreamingResponse", "proxy_for"]

# A streaming response stops reading from the socket once this many body bytes wait for the consumer.
_HIGH_WATER: Final = 1024 * 1024
# Bodies up to this size are sent in the same write as the request head (one syscall).
_COALESCE_LIMIT: Final = 64 * 1024
_MAX_CACHED_URLS: Final = 4096
# Headers this client sets itself; a caller's copy would break framing or keep-alive (Host overrides ours).
_MANAGED_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
     "upgrade", "te", "trailer"}
)
_METHODS_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH"})


@dataclass(slots=True)
class HttpResponse:
    """A complete response. Header names are lower-case; repeated headers are joined with ``, ``."""

    status: int
    headers: dict[str, str]
    body: bytes


class StreamingResponse:
    """A response whose body is read incrementally; yielded by :meth:`HttpClient.stream`.

    Reading stops early (and the connection is closed) when the ``async with`` block is left or
    :meth:`aclose` is called; after that :meth:`iter_bytes` yields nothing more.
    """

    __slots__ = ("_conn", "_deadline", "_pool", "headers", "idle_timeout", "status")

    status: int
    headers: dict[str, str]

    def __init__(self, status: int, headers: dict[str, str], pool: _Pool, conn: _Connection,
                 deadline: float | None = None, idle_timeout: float | None = None) -> None:
        self.status = status
        self.headers = headers
        self.idle_timeout = idle_timeout
        self._deadline = deadline
        self._pool = pool
        self._conn: _Connection | None = conn

    async def read(self) -> bytes:
        """Read the rest of the body."""
        return b"".join([chunk async for chunk in self.iter_bytes()])

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield body bytes as they arrive (chunked transfer encoding already decoded).

        Raises ``UpstreamConnectionError`` if the upstream breaks off the body,
        ``UpstreamProtocolError`` if the body's framing is malformed and ``UpstreamTimeout`` when
        nothing arrives for ``idle_timeout`` seconds or the request's time runs out. Abandoning the
        iterator leaves the response open (another ``iter_bytes()`` or ``read()`` continues where it
        stopped).
        """
        conn = self._conn
        if conn is None:
            return
        idle, deadline = self.idle_timeout, self._deadline
        try:
            while True:
                chunk = conn.take_body()
                if chunk:
                    yield chunk
                    if self._conn is None:  # closed while the consumer held the chunk
                        return
                elif conn.complete:
                    break
                elif conn.error is not None:
                    raise conn.error
                else:
                    until = deadline
                    if idle is not None:
                        quiet = self._pool.loop.time() + idle
                        until = quiet if until is None else min(until, quiet)
                    await conn.wait(until)
                    if self._conn is None:  # closed while we waited
                        return
        except GeneratorExit:
            raise  # the iterator was dropped, not the response
        except BaseException:  # including cancellation: the connection must not outlive it
            self._discard()
            raise
        self._conn = None
        self._pool.release(conn)

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was fully read, else closed."""
        conn = self._conn
        if conn is not None:
            if conn.complete:
                self._conn = None
                self._pool.release(conn)
            else:
                self._discard()

    def _discard(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abort()
            self._pool.release_slot()


class HttpClient:
    """Pooled HTTP/1.1 (http and https) client. Raises only ``switchboard.errors`` upstream errors:
    ``UpstreamConnectionError`` (refused, reset, closed early), ``UpstreamTimeout``,
    ``UpstreamProtocolError`` (not HTTP).

    Invalid input — a URL that is not http(s), a header containing CR/LF or a non-latin-1 character —
    raises ``ValueError``; using the client after :meth:`aclose` raises ``RuntimeError``.
    """

    def __init__(self, *, max_connections_per_host: int = 256, connect_timeout: float = 10.0,
                 idle_timeout: float = 60.0) -> None:
        if max_connections_per_host < 1:
            raise ValueError("max_connections_per_host must be at least 1")
        if connect_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("connect_timeout and idle_timeout must be positive")
        self._max_connections = max_connections_per_host
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl_context: ssl.SSLContext | None = None
        self._closed = False

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
                      timeout: float | None = None,  # noqa: ASYNC109 - one timer on the socket is cheaper
                      connect_timeout: float | None = None) -> HttpResponse:
        """Send a request and read the whole response within ``timeout`` seconds."""
        pool, conn = await self._send(method, url, headers, body, timeout, connect_timeout, streaming=False)
        response = HttpResponse(conn.status, conn.headers, conn.take_body())
        pool.release(conn)
        return response

    def stream(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
               timeout: float | None = None, connect_timeout: float | None = None,
               idle_timeout: float | None = None) -> AbstractAsyncContextManager[StreamingResponse]:
        """Send a request; the context manager yields once the status and headers arrived. ``timeout``
        bounds the whole exchange, headers and body; ``idle_timeout`` the silence between body chunks.
        Leaving the block early closes the connection."""
        return _StreamContext(self, method, url, headers, body, timeout, connect_timeout, idle_timeout)

    def prepare_tls(self) -> ssl.SSLContext:
        """The TLS context for https upstreams, created on first use. Creating it reads the system's CA
        certificates from disk, so the gateway calls this at start-up rather than on a request."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()

    async def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                    total: float | None, connect_timeout: float | None,
                    *, streaming: bool) -> tuple[_Pool, _Connection]:
        """Send one request; return once its headers (``streaming``) or its whole body arrived.

        The returned connection holds a pool slot that the caller must hand back.
        """
        if self._closed:
            raise RuntimeError("HttpClient is closed")
        target = self._targets.get(url) or self._parse(url)
        pool = self._pools.get(target.key) or self._new_pool(target)
        head, tail = _encode_request(method, target, headers, body)
        is_head = method == "HEAD"
        deadline = None if total is None else pool.loop.time() + total
        budget = self._connect_timeout if connect_timeout is None else connect_timeout
        conn = pool.take_idle() or await pool.acquire(deadline, budget)
        try:
            try:
                await conn.exchange(head, tail, is_head, streaming, deadline)
            except _StaleConnection:
                # The server closed this pooled connection while it sat idle and the request died
                # with it; nothing was processed, so send it again on a fresh connection, once.
                conn.abort()
                conn = await pool.connect(deadline, budget)
                await conn.exchange(head, tail, is_head, streaming, deadline)
        except BaseException:
            conn.abort()
            pool.release_slot()
            raise
        return pool, conn

    def _parse(self, url: str) -> _Target:
        target = _parse_url(url)
        if len(self._targets) >= _MAX_CACHED_URLS:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _new_pool(self, target: _Target) -> _Pool:
        scheme, host, port = target.key
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self.prepare_tls()
        pool = _Pool(asyncio.get_running_loop(), host, port, context, self._max_connections,
                     self._idle_timeout, proxy_for(scheme, host))
        self._pools[target.key] = pool
        return pool


class _StreamContext(AbstractAsyncContextManager[StreamingResponse]):
    """What :meth:`HttpClient.stream` returns: sends on enter, closes the response on exit."""

    __slots__ = ("_args", "_client", "_idle", "_response", "_timeout")

    def __init__(self, client: HttpClient, method: str, url: str, headers: Mapping[str, str],
                 body: bytes | None, timeout: float | None, connect_timeout: float | None,
                 idle_timeout: float | None) -> None:
        self._client = client
        self._args = (method, url, headers, body, timeout, connect_timeout)
        self._timeout = timeout
        self._idle = idle_timeout
        self._response: StreamingResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        deadline = None if self._timeout is None else asyncio.get_running_loop().time() + self._timeout
        pool, conn = await self._client._send(*self._args, streaming=True)
        self._response = StreamingResponse(conn.status, conn.headers, pool, conn, deadline, self._idle)
        return self._response

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._response is not None:
            await self._response.aclose()


@dataclass(frozen=True, slots=True)
class _Target:
    """A parsed URL: which pool serves it and what goes in the request line and Host header."""

    key: tuple[str, str, int]
    host_header: str
    path: str


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}; use http or https")
    host = parts.hostname
    if not host:
        raise ValueError("URL has no host")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if any(ch <= " " for ch in path):
        raise ValueError("URL path contains whitespace or control characters")
    return _Target((scheme, host, port), host_header, path)


def _encode_request(method: str, target: _Target, headers: Mapping[str, str],
                    body: bytes | None) -> tuple[bytes, bytes | None]:
    """The request head, plus the body when it is too large to copy into the same write."""
    host = target.host_header
    lines = []
    for name, value in headers.items():
        lower = name.lower()
        if lower in _MANAGED_HEADERS:
            if lower == "host":
                host = value
            continue
        lines.append(f"{name}: {value}\r\n")
    if body is not None:
        length = f"Content-Length: {len(body)}\r\n"
    elif method in _METHODS_WITH_BODY:
        length = "Content-Length: 0\r\n"
    else:
        length = ""
    text = (f"{method} {target.path} HTTP/1.1\r\nHost: {host}\r\n{''.join(lines)}{length}"
            "Connection: keep-alive\r\n\r\n")
    # A CR or LF inside a name or value would smuggle in headers of the caller's choosing.
    expected = len(lines) + (5 if length else 4)
    if text.count("\n") != expected or text.count("\r") != expected:
        raise ValueError("request line or headers contain CR or LF")
    try:
        head = text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("request headers must be latin-1 text") from None
    if not body:
        return head, None
    if len(body) <= _COALESCE_LIMIT:
        return head + body, None
    return head, body


@dataclass(frozen=True, slots=True)
class Proxy:
    """An ``http://`` egress proxy: where it listens, and the ``Proxy-Authorization`` its URL's credentials
    make (empty without them)."""

    host: str
    port: int
    authorization: str = ""


def proxy_for(scheme: str, host: str) -> Proxy | None:
    """The proxy that connections to ``host`` over ``scheme`` go through, from the environment (see the
    module's docstring); ``None`` to connect directly."""
    if _loopback(host):
        return None
    found = urllib.request.getproxies_environment()
    url = found.get(scheme) or found.get("all")
    if not url or _bypassed(host, found.get("no", "")):
        return None
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamConnectionError(f"unsupported proxy {parts.scheme}://{parts.hostname or ''}: "
                                      "only http:// proxies are supported")
    authorization = ""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names ``host``: ``*``, the host itself, a domain it is in (``example.com`` or
    ``.example.com``), or an address block it is in (``10.0.0.0/8``)."""
    host = host.strip("[]").lower()
    for entry in no_proxy.replace(" ", "").lower().split(","):
        if not entry:
            continue
        if entry == "*" or host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TunnelOpener(asyncio.Protocol):
    """Asks an HTTP proxy for a tunnel (``CONNECT host:port``) and waits for its 2xx; the connection then
    goes to the upstream's protocol."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._head += data
        if b"\r\n\r\n" in self._head and not self._answer.done():
            self._answer.set_result(self._head)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(UpstreamConnectionError(f"the proxy closed the connection: {exc or 'EOF'}"))

    async def open(self, host: str, port: int, proxy: Proxy) -> None:
        assert self._transport is not None
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"host: {target}"]
        if proxy.authorization:
            lines.append(f"proxy-authorization: {proxy.authorization}")
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head, _, rest = (await self._answer).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status) < 2 or not status[1].isdigit() or not 200 <= int(status[1]) < 300:
            line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
            raise UpstreamConnectionError(f"proxy {proxy.host}:{proxy.port} refused a tunnel to {target}: {line}")
        if rest:
            raise UpstreamProtocolError(f"proxy {proxy.host}:{proxy.port} sent bytes before the tunnel opened")


class _Pool:
    """The connections to one (scheme, host, port): idle ones (reused newest first), a bound on how
    many exist, and the requests waiting for one.

    A *slot* is the right to own one connection; ``count`` slots are taken. Whoever holds a
    connection holds its slot and gives both back through :meth:`release` (reusable) or
    ``conn.abort()`` + :meth:`release_slot`. Freed connections and slots go to waiters first.
    """

    __slots__ = ("_closed", "_context", "_idle_timeout", "_limit", "_proxy", "_sweeper", "conns", "count", "host",
                 "idle", "loop", "port", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, context: ssl.SSLContext | None,
                 limit: int, idle_timeout: float, proxy: Proxy | None = None) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self._context = context
        self._proxy = proxy
        self._limit = limit
        self._idle_timeout = idle_timeout
        self.count = 0
        self.idle: list[_Connection] = []  # oldest first
        self.conns: set[_Connection] = set()  # every open transport, for aclose()
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection, if any is still open."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if conn.usable:
                return conn
            conn.abort()
            self.release_slot()
        return None

    async def acquire(self, deadline: float | None, connect_timeout: float) -> _Connection:
        """A connection with its slot: a new one, or one handed over by a finishing request."""
        if self.count < self._limit:
            self.count += 1
        else:
            handed = await self._wait_for_slot(deadline)
            if handed is not None:
                return handed
        try:
            return await self.connect(deadline, connect_timeout)
        except BaseException:
            self.release_slot()
            raise

    async def connect(self, deadline: float | None, connect_timeout: float) -> _Connection:
        """Open a new connection for a slot the caller already holds."""
        if self._closed:
            raise UpstreamConnectionError("the HTTP client was closed")
        budget = connect_timeout if deadline is None else min(connect_timeout, deadline - self.loop.time())
        try:
            async with asyncio.timeout(budget):
                if self._proxy is not None:
                    return await self._tunnel(self._proxy)
                _, conn = await self.loop.create_connection(
                    self._new_connection, self.host, self.port, ssl=self._context,
                    server_hostname=self.host if self._context is not None else None)
        except TimeoutError:
            raise UpstreamTimeout(f"timed out connecting to {self.host}:{self.port}") from None
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    async def _tunnel(self, proxy: Proxy) -> _Connection:
        """A connection to the upstream through ``proxy``: ``CONNECT``, then TLS inside the tunnel for https."""
        transport, opener = await self.loop.create_connection(_TunnelOpener, proxy.host, proxy.port)
        try:
            await opener.open(self.host, self.port, proxy)
            conn = self._new_connection()
            if self._context is not None:
                tls = await self.loop.start_tls(transport, conn, self._context, server_hostname=self.host)
                if tls is None:
                    raise UpstreamConnectionError(f"no TLS through the proxy to {self.host}:{self.port}")
                transport = tls
            else:
                transport.set_protocol(conn)
            conn.connection_made(transport)
        except BaseException:
            transport.abort()
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        """Take back a connection whose exchange is over: keep it if it can carry another request."""
        conn.end_exchange()
        if not conn.reusable or self._closed:
            conn.abort()
            self.release_slot()
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        conn.in_pool = True
        self.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + self._idle_timeout, self._sweep)

    def release_slot(self) -> None:
        """Give back a slot whose connection was closed (or never opened)."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.count -= 1

    def forget(self, conn: _Connection) -> None:
        """Called when a connection's transport is gone."""
        self.conns.discard(conn)
        if conn.in_pool:
            conn.in_pool = False
            self.idle.remove(conn)
            self.release_slot()

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectionError("the HTTP client was closed"))
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
        lost = [conn.lost() for conn in conns]
        if lost:
            await asyncio.wait(lost)

    async def _wait_for_slot(self, deadline: float | None) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we gave up: pass it on
                if handed is None:
                    self.release_slot()
                else:
                    self.release(handed)
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"timed out waiting for a free connection to {self.host}:{self.port}"
                                      ) from None
            raise

    def _new_connection(self) -> _Connection:
        return _Connection(self)

    def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout``; they sit oldest first."""
        self._sweeper = None
        idle = self.idle
        cutoff = self.loop.time() - self._idle_timeout + 0.001
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= cutoff:
            expired += 1
        for conn in idle[:expired]:
            conn.in_pool = False
            conn.abort()
            self.release_slot()
        del idle[:expired]
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + self._idle_timeout, self._sweep)


class _StaleConnection(Exception):
    """A reused connection died before the response's first byte: the server had closed it."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, feeds the answer to httptools, keeps the parsed
    response for the one exchange in flight and wakes the task waiting for it."""

    __slots__ = ("_buffered", "_chunks", "_eof_ends_body", "_got_bytes", "_is_head", "_lost", "_parser",
                 "_paused", "_pool", "_requests", "_reused", "_streaming", "_transport", "_waiter", "active",
                 "complete", "dead", "error", "headers", "headers_done", "idle_since", "in_pool",
                 "keep_alive", "status")

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser: Any = None
        self._lost: asyncio.Future[None] | None = None
        self._requests = 0
        self.dead = False  # closed or closing; never reuse
        self.in_pool = False
        self.idle_since = 0.0
        self.active = False
        self._reset(is_head=False, streaming=False)

    def _reset(self, *, is_head: bool, streaming: bool) -> None:
        self._is_head = is_head
        self._streaming = streaming
        self._reused = self._requests > 0
        self._got_bytes = False
        self._eof_ends_body = False
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None

    # -- the exchange, driven by the requesting task ------------------------------------------------

    async def exchange(self, head: bytes, tail: bytes | None, is_head: bool, streaming: bool,
                       deadline: float | None) -> None:
        """Send a request and wait for its headers (``streaming``) or its whole response."""
        transport = self._transport
        if transport is None or self.dead or transport.is_closing():
            # It closed after it was handed to us; for a pooled connection that is the stale case.
            if self._requests:
                raise _StaleConnection
            raise UpstreamConnectionError("upstream closed the connection right after accepting it")
        self._reset(is_head=is_head, streaming=streaming)
        self._requests += 1
        self._parser = httptools.HttpResponseParser(self)
        self.active = True
        transport.write(head)
        if tail is not None:
            transport.write(tail)
        while not (self.headers_done if streaming else self.complete):
            if self.error is not None:
                raise self.error
            await self.wait(deadline)

    async def wait(self, deadline: float | None) -> None:
        """Wait until something happens to the response (data, the end, an error, the deadline)."""
        loop = self._pool.loop
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = None if deadline is None else loop.call_at(deadline, self._on_deadline)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take_body(self) -> bytes:
        """The body bytes received and not yet taken; reading resumes if it was paused."""
        chunks = self._chunks
        if not chunks:
            return b""
        self._chunks = []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._buffered = 0
        if self._paused:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return data

    def end_exchange(self) -> None:
        self.active = False
        self.take_body()

    @property
    def reusable(self) -> bool:
        """Whether the exchange ended cleanly on a connection that can carry another request."""
        return self.complete and self.keep_alive and self.usable

    @property
    def usable(self) -> bool:
        """Whether the socket is open and not closing (an EOF may already be in)."""
        transport = self._transport
        return not self.dead and transport is not None and not transport.is_closing()

    def abort(self) -> None:
        """Close the socket now, without waiting to flush, and wake whoever waits on it."""
        if not self.dead:
            self.dead = True
            if self._transport is not None:
                self._transport.abort()
        self._wake()

    def lost(self) -> asyncio.Future[None]:
        """A future that is done once the transport is closed."""
        if self._lost is None:
            self._lost = self._pool.loop.create_future()
            if self._transport is None:
                self._lost.set_result(None)
        return self._lost

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.abort()
        self._wake()

    def _on_deadline(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self.headers_done:
                what = "more of the response"
            else:
                what = "response headers" if self._streaming else "a complete response"
            self.error = UpstreamTimeout(
                f"{self._pool.host}:{self._pool.port} did not send {what} in time")
            waiter.set_result(None)

    # -- asyncio protocol callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._pool.conns.add(self)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.abort()  # bytes nobody asked for: the framing can no longer be trusted
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:
                self.keep_alive = False  # junk after a complete response
            else:
                self._fail(UpstreamProtocolError(f"invalid HTTP response from upstream: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("upstream switched protocols unasked"))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self._transport = None
        self._pool.forget(self)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if not self.active or self.complete or self.error is not None:
            return
        if self.headers_done and self._eof_ends_body:
            self.keep_alive = False
            self.complete = True
        elif self._reused and not self._got_bytes and exc is None:
            # A clean close of a kept-alive connection with no answer: the server timed it out as we
            # reused it and never read the request. A reset (exc set) may come after it did: not resent.
            self.error = _StaleConnection()
        elif exc is not None:
            self.error = UpstreamConnectionError(f"connection to upstream lost: {exc}")
        else:
            self.error = UpstreamConnectionError(
                "upstream closed the connection before the response was complete")
        self._wake()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.keep_alive = False  # a second response to one request

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # chunked trailers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        parser = self._parser
        status: int = parser.get_status_code()
        self.status = status
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("upstream switched protocols unasked")
            return  # an interim response (103 Early Hints …); the real one follows
        self.headers_done = True
        self.keep_alive = parser.should_keep_alive()
        if self._is_head:
            # No body follows, whatever Content-Length says; a fresh parser serves the next request.
            self.complete = True
            self._wake()
            return
        headers = self.headers
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            self._eof_ends_body = not encoding.rstrip().lower().endswith("chunked")
        else:
            self._eof_ends_body = "content-length" not in headers and status != 204 and status != 304
        if self._streaming:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False  # a body after HEAD
            return
        self._chunks.append(body)
        if self._streaming:
            self._buffered += len(body)
            if self._buffered >= _HIGH_WATER and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            self.headers = {}  # end of an interim response
            return
        if not self.complete:
            self.complete = True
            self._wake()
