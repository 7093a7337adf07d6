"""Switchboard's HTTP/1.1 server on a real socket, spoken to in raw bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchboard.server import serve

Scope = dict[str, Any]
#: What ``/watch`` requests saw: the callbacks the server made, and when the app had its disconnect.
WATCHED: dict[str, Any] = {}


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the method, path and body; ``/stream`` answers in three chunks; ``/boom`` fails."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    msg = await receive()
    if scope["path"] == "/watch":  # ?leave: the client leaves mid-request; ?stop: the app stops watching first
        mode = scope["query_string"].decode()
        calls: list[str] = WATCHED.setdefault("calls", [])
        watch = scope["extensions"]["switchboard.disconnect"]["watch"]
        watch(lambda: calls.append(mode))
        if mode == "stop":
            watch(None)
        if mode == "answer":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        WATCHED["registered"].set()
        assert (await receive())["type"] == "http.disconnect"
        WATCHED[mode] = list(calls)  # the server called back before the app heard of the disconnect
        WATCHED["done"].set()
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if scope["path"] == "/lines":  # header lines the app rendered, where the server offers to take them
        offered = "switchboard.header_lines" in scope.get("extensions", {})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")],
                    "header_lines": b"x-b: 2\r\nx-c: 3\r\n" if offered else b""})
        await send({"type": "http.response.body", "body": b"lines"})
        return
    body = b"%s %s %d" % (scope["method"].encode(), scope["path"].encode(), len(msg["body"]))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Running:
    def __init__(self, port: int, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.port, self.stop, self.task = port, stop, task

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(echo_app, sock=sock, max_body=1000, drain_timeout=5, keep_alive=5,
                                     on_ready=ready.set, stop=stop))
    await ready.wait()
    yield Running(sock.getsockname()[1], stop, task)
    stop.set()
    await task
    sock.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
    if b"content-length" in headers:
        return lines[0], await reader.readexactly(int(headers[b"content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readline()).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return lines[0], body
        body += chunk[:-2]


async def test_keep_alive_and_pipelining_answer_in_order(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
                 b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"POST /a 3")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"GET /b 0")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"POST /c 2")
    writer.close()
    await writer.wait_closed()


async def test_streamed_body_is_chunked(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"one two three")
    writer.close()
    await writer.wait_closed()


async def test_head_requests_get_the_head_and_never_a_body(server: Running) -> None:
    """A HEAD response carries the length the body would have (or its chunked framing), and no byte of it: the
    next response on the connection starts right after the head."""
    reader, writer = await server.connect()
    writer.write(b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"HEAD /stream HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"  # "HEAD /a 0"
    assert await reader.readuntil(b"\r\n\r\n") == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                                                   b"transfer-encoding: chunked\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"GET /b 0")
    writer.write(b"HEAD /boom HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and b"content-length: 21\r\n" in head
    assert await reader.read() == b""  # closed, with no body
    writer.close()
    await writer.wait_closed()


async def test_a_target_in_absolute_form_is_served_by_its_path(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET http://127.0.0.1/b?x=1 HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"GET HTTPS://example.com HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"GET /b 0")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"GET / 0")
    writer.close()
    await writer.wait_closed()


async def test_the_app_may_word_the_refusals_the_server_makes_before_it() -> None:
    seen: list[tuple[int, str, bytes]] = []

    def rejection(status: int, message: str, path: bytes) -> tuple[bytes, bytes]:
        seen.append((status, message, path))
        return b"content-type: application/json\r\nx-request-id: r1\r\n", b'{"refused":true}'

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(echo_app, sock=sock, max_body=1000, drain_timeout=5, on_ready=ready.set,
                                     stop=stop, rejection=rejection))
    await ready.wait()
    reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    writer.write(b"POST http://h/v1/messages?beta=true HTTP/1.1\r\nhost: x\r\ncontent-length: x\r\n\r\n")
    assert await reader.read() == (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                   b"x-request-id: r1\r\ncontent-length: 16\r\nconnection: close\r\n\r\n"
                                   b'{"refused":true}')
    assert seen == [(400, "The request is not valid HTTP/1.1.", b"/v1/messages")]
    writer.close()
    stop.set()
    await task
    sock.close()


@pytest.mark.parametrize("connection", [b"", b"connection: keep-alive\r\n"])
async def test_a_streamed_body_to_http_1_0_ends_with_the_connection(server: Running, connection: bytes) -> None:
    """HTTP/1.0 has no chunked encoding: a body of unknown length is sent as it is, and the connection closes
    after it, even when the client asked to keep it."""
    reader, writer = await server.connect()
    writer.write(b"GET /stream HTTP/1.0\r\n" + connection + b"\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in head
    assert b"transfer-encoding" not in head and b"content-length" not in head
    assert await reader.read() == b"one two three"
    writer.close()
    await writer.wait_closed()


async def test_header_lines_from_the_app_follow_its_headers(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET /lines HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head == b"HTTP/1.1 200 OK\r\nx-a: 1\r\nx-b: 2\r\nx-c: 3\r\ncontent-length: 5\r\n\r\n"
    assert await reader.readexactly(5) == b"lines"
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("mode", ["leave", "stop"])
async def test_the_app_may_watch_for_the_client_leaving(server: Running, mode: str) -> None:
    WATCHED.clear()
    WATCHED.update(registered=asyncio.Event(), done=asyncio.Event())
    _reader, writer = await server.connect()
    writer.write(b"GET /watch?%s HTTP/1.1\r\nhost: x\r\n\r\n" % mode.encode())
    await WATCHED["registered"].wait()
    writer.close()
    await writer.wait_closed()
    await WATCHED["done"].wait()
    assert WATCHED[mode] == (["leave"] if mode == "leave" else [])


async def test_a_watcher_is_not_called_once_the_response_is_complete(server: Running) -> None:
    WATCHED.clear()
    reader, writer = await server.connect()
    writer.write(b"GET /watch?answer HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"ok")
    writer.close()
    await writer.wait_closed()
    server.stop.set()
    await server.task  # every connection closed and handled
    assert WATCHED["calls"] == []


async def test_malformed_request_gets_400_and_close(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _ = await read_response(reader)
    assert status.startswith(b"HTTP/1.1 400")
    assert await reader.read() == b""  # closed
    writer.close()
    await writer.wait_closed()


async def test_an_invalid_request_is_refused_after_the_responses_before_it(server: Running) -> None:
    """Pipelined requests are answered in order, a refused one too: the requests before it keep their answers,
    and the connection closes after the refusal."""
    reader, writer = await server.connect()
    writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi"
                 b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n"
                 b"GET /d HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"GET /a 0")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"POST /b 2")
    assert await read_response(reader) == (b"HTTP/1.1 400 Bad Request", b"The request is not valid HTTP/1.1.")
    assert await reader.read() == b""  # /d is never read: nothing after a refused request can be framed
    writer.close()
    await writer.wait_closed()


async def test_oversized_headers_get_431(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
    status, _ = await read_response(reader)
    assert status.startswith(b"HTTP/1.1 431")
    writer.close()
    await writer.wait_closed()


async def test_oversized_body_reaches_the_app_capped_then_the_connection_closes(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
    status, body = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and body == b"POST /big 1001"  # the app sees more than the limit
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_app_failure_is_a_500(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
    status, body = await read_response(reader)
    assert status.startswith(b"HTTP/1.1 500") and body == b"Internal Server Error"
    writer.close()
    await writer.wait_closed()


async def test_expect_continue(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"POST /e 2")
    writer.close()
    await writer.wait_closed()


async def test_stop_closes_idle_connections_and_refuses_new_ones(server: Running) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
    await read_response(reader)
    server.stop.set()
    await server.task
    assert await reader.read() == b""  # the idle keep-alive connection was closed
    with pytest.raises(ConnectionRefusedError):
        await server.connect()
    writer.close()
    await writer.wait_closed()


async def test_stop_tells_the_app_before_refusing_connections() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    stop, ready = asyncio.Event(), asyncio.Event()
    told: list[bool] = []
    port = sock.getsockname()[1]

    async def refusing() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    def on_stop() -> None:
        told.append(True)

    task = asyncio.create_task(serve(echo_app, sock=sock, max_body=1000, drain_timeout=5, keep_alive=5,
                                     on_ready=ready.set, on_stop=on_stop, stop=stop))
    await ready.wait()
    assert not told and not await refusing()
    stop.set()
    await task
    sock.close()
    assert told == [True]
