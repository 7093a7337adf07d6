"""An HTTP-aware forwarder with nothing but callbacks: the floor of a proxy that parses HTTP.

It parses each request with httptools, sends it upstream on a keep-alive connection of its own, parses
the answer with httptools and writes it back as it arrives (the head at once, then each piece of the body,
length-framed or chunked as the upstream framed it). No tasks, no coroutines, no JSON, no routing: every
step runs in the protocol callbacks of the event loop (uvloop). Measured in place of a gateway, it shows
what parsing HTTP twice and forwarding once costs on this machine — against the byte relay, which parses
nothing, and the pass-through, which adds an ASGI server and an async upstream client.

Usage::

    python bench/http_forwarder.py --port 9300 --upstream-port 9000
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import httptools

from relay import run, serve_until_stopped

_FORWARDED = (b"authorization", b"content-type", b"accept")
U = TypeVar("U", bound=asyncio.Protocol)


class _Upstream(asyncio.Protocol):
    """The forwarder's connection to the upstream for one client connection; answers go back in order."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)
        self.head: list[bytes] = []
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def on_message_begin(self) -> None:
        self.head = [b""]  # the status line, once the status is known
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"transfer-encoding":
            self.chunked = True
        elif lower in (b"content-type", b"content-length"):
            self.head.append(b"%s: %s\r\n" % (lower, value))

    def on_headers_complete(self) -> None:
        self.head[0] = b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()
        if self.chunked:
            self.head.append(b"transfer-encoding: chunked\r\n")
        self.head.append(b"\r\n")
        self.client.write(b"".join(self.head))

    def on_body(self, body: bytes) -> None:
        self.client.write(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self.client.write(b"0\r\n\r\n")


class _Client(asyncio.Protocol):
    """One client connection: each parsed request goes upstream as it completes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: _Upstream | None = None
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _FORWARDED:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        method = self.parser.get_method()
        request = b"%s %s HTTP/1.1\r\nhost: upstream\r\n%scontent-length: %d\r\n\r\n%s" % (
            method, self.url, b"".join(self.headers), len(body), body)
        self.headers, self.body = [], []
        if self.upstream is None:
            self.upstream = self._connect(_Upstream(self))
        self.upstream.send(request)

    def _connect(self, upstream: U) -> U:
        """Open the upstream connection for ``upstream`` (what is sent before it opens waits in it)."""
        loop = asyncio.get_running_loop()
        host, port = self.upstream_address
        connecting = loop.create_task(loop.create_connection(lambda: upstream, host, port))
        connecting.add_done_callback(self._connected)
        return upstream

    def _connected(self, task: asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.close()


async def serve(port: int, upstream_port: int) -> None:
    await serve_until_stopped(lambda: _Client(("127.0.0.1", upstream_port)), port)


if __name__ == "__main__":
    run(__doc__, serve)
