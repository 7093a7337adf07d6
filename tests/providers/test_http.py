"""HttpClient against a scripted HTTP/1.1 server on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import uvloop

from switchboard.errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamTimeout
from switchboard.providers.http import HttpClient

SECRET = "sk-test-must-never-leak"
AUTH = {"Authorization": f"Bearer {SECRET}"}
PATTERN = bytes(range(256)) * 256  # 64 KiB; any slice of a repetition is checkable by its offset

# A throwaway self-signed certificate for 127.0.0.1 / localhost (valid until 2126), for the TLS tests only.
TEST_CERT = """-----BEGIN CERTIFICATE-----
MIIBmTCCAT6gAwIBAgIUS/pS0V7kO1Mk4+4iKm55E4vztjYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNDExMzIzOFoYDzIxMjYxMDMx
MTEzMjM4WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASrHHBJWKFHqONuM9aIsuj4TgWUlkQY+b4FoxYjwxlGXvi7+w9T5qnC
4F+kLbHMseaN9SQCAu5aM2YpfGljze1fo2wwajAdBgNVHQ4EFgQUCmC+AH3VYFQd
oGDjUrBjoEmhYpIwHwYDVR0jBBgwFoAUCmC+AH3VYFQdoGDjUrBjoEmhYpIwGgYD
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E
AwIDSQAwRgIhAJJLPaNSoNu9xkrosQfQbxoYdolFxXlHmDfbu/ixfg5MAiEAtEly
DO0E2l4kZ+eRvZtbb3kZLII61A6nkaegUEBB2lA=
-----END CERTIFICATE-----
"""
TEST_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLUDzYrJaVkHBnspg
cHbda29uRhLwN7syT80wALTt2lGhRANCAASrHHBJWKFHqONuM9aIsuj4TgWUlkQY
+b4FoxYjwxlGXvi7+w9T5qnC4F+kLbHMseaN9SQCAu5aM2YpfGljze1f
-----END PRIVATE KEY-----
"""


def pattern_at(offset: int, size: int) -> bytes:
    """``size`` bytes of the endless repetition of PATTERN starting at ``offset``."""
    start = offset % 256
    reps = (start + size) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + size]


# -- the scripted upstream --------------------------------------------------------------------------


@dataclass
class Request:
    conn: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


Writer = asyncio.StreamWriter
Reader = asyncio.StreamReader


class Upstream:
    """A raw HTTP/1.1 server whose answer is chosen by the request path (see ``_routes``).

    It counts connections, records every request and every connection the client closed, and lets
    tests wait for those facts instead of sleeping.
    """

    def __init__(self) -> None:
        self.port = 0
        self.scheme = "http"
        self.requests: list[Request] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.closed_by_client: set[int] = set()
        self.gate = asyncio.Event()
        self.steps: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.backed_up = asyncio.Event()
        self._drop_next: set[int] = set()
        self._partial_next: set[int] = set()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Callable[[Request, Reader, Writer], Awaitable[bool]]] = {
            "/ok": self._ok,
            "/echo": self._echo,
            "/chunked": self._chunked,
            "/close-delimited": self._close_delimited,
            "/http10": self._http10,
            "/headers": self._headers,
            "/head": self._head,
            "/no-content": self._no_content,
            "/not-modified": self._not_modified,
            "/early-hints": self._early_hints,
            "/connection-close": self._connection_close,
            "/ok-then-close": self._ok_then_close,
            "/extra-bytes": self._extra_bytes,
            "/big": self._big,
            "/big-chunked": self._big_chunked,
            "/stall": self._stall,
            "/stall-body": self._stall_body,
            "/reset": self._reset,
            "/chunked-cut": self._chunked_cut,
            "/close-after-headers": self._close_after_headers,
            "/drop": self._drop,
            "/garbage": self._garbage,
            "/drop-next": self._drop_next_request,
            "/partial-next": self._partial_next_request,
            "/gate": self._gate,
            "/steps": self._steps,
            "/one-then-wait": self._one_then_wait,
            "/endless": self._endless,
        }

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self.scheme = "https" if ssl_context is not None else "http"

    async def stop(self) -> None:
        await stop_server(self._server, self._tasks)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), self._changed:  # a guard against hanging, not a sleep
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = self.connections
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                request = await self._read_request(reader, conn)
                if request is None:
                    break
                self.requests.append(request)
                await self._notify()
                if not await self._respond(request, reader, writer):
                    break
        except ConnectionError:
            self.closed_by_client.add(conn)
        finally:
            self.open -= 1
            writer.close()
            await self._notify()
            self._tasks.discard(task)

    async def _read_request(self, reader: Reader, conn: int) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.add(conn)
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        body = await reader.readexactly(length) if length else b""
        return Request(conn, method, target, headers, body)

    async def _respond(self, request: Request, reader: Reader, writer: Writer) -> bool:
        if request.conn in self._drop_next:
            self._drop_next.discard(request.conn)
            return False
        if request.conn in self._partial_next:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            await writer.drain()
            return False
        return await self._routes[urlsplit(request.target).path](request, reader, writer)

    async def _wait_client_close(self, reader: Reader, conn: int) -> bool:
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.closed_by_client.add(conn)
        return False

    @staticmethod
    def _reply(writer: Writer, body: bytes = b"", status: str = "200 OK", extra: str = "") -> None:
        writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    # -- routes: each returns whether the connection stays open for another request

    async def _ok(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._reply(writer, b"hello", extra="Content-Type: text/plain\r\n")
        return True

    async def _echo(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._reply(writer, request.body, extra=f"X-Method: {request.method}\r\n")
        await writer.drain()
        return True

    async def _chunked(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nhel\r\n3\r\nlo \r\n5\r\nworld\r\n0\r\n\r\n")
        return True

    async def _close_delimited(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the very end")
        return False

    async def _http10(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold school")
        return False

    async def _headers(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Multi: a\r\nx-multi: b\r\nContent-TYPE: text/plain\r\n"
                     b"Set-Cookie: c=1\r\nX-Multi: c\r\nContent-Length: 0\r\n\r\n")
        return True

    async def _head(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n")
        return True

    async def _no_content(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        return True

    async def _not_modified(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
        return True

    async def _early_hints(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        await writer.drain()
        self._reply(writer, b"ok", extra="X-Final: yes\r\n")
        return True

    async def _connection_close(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._reply(writer, b"ok", extra="Connection: close\r\n")
        return False

    async def _ok_then_close(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._reply(writer, b"ok")  # says keep-alive, then closes anyway (an idle timeout upstream)
        await writer.drain()
        return False

    async def _extra_bytes(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK")
        return await self._wait_client_close(reader, request.conn)

    async def _big(self, request: Request, reader: Reader, writer: Writer) -> bool:
        size = int(parse_qs(urlsplit(request.target).query)["n"][0])
        self._reply(writer, pattern_at(0, size))
        await writer.drain()
        return True

    async def _big_chunked(self, request: Request, reader: Reader, writer: Writer) -> bool:
        size = int(parse_qs(urlsplit(request.target).query)["n"][0])
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for offset in range(0, size, 100_000):
            piece = pattern_at(offset, min(100_000, size - offset))
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async def _stall(self, request: Request, reader: Reader, writer: Writer) -> bool:
        return await self._wait_client_close(reader, request.conn)

    async def _stall_body(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        return await self._wait_client_close(reader, request.conn)

    async def _reset(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await writer.drain()
        writer.transport.abort()
        return False

    async def _chunked_cut(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        return False

    async def _close_after_headers(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await writer.drain()
        return False

    async def _drop(self, request: Request, reader: Reader, writer: Writer) -> bool:
        return False

    async def _garbage(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return await self._wait_client_close(reader, request.conn)

    async def _drop_next_request(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._drop_next.add(request.conn)
        return await self._ok(request, reader, writer)

    async def _partial_next_request(self, request: Request, reader: Reader, writer: Writer) -> bool:
        self._partial_next.add(request.conn)
        return await self._ok(request, reader, writer)

    async def _gate(self, request: Request, reader: Reader, writer: Writer) -> bool:
        await self.gate.wait()
        return await self._ok(request, reader, writer)

    async def _steps(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while (piece := await self.steps.get()) is not None:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        return True

    async def _one_then_wait(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        return await self._wait_client_close(reader, request.conn)

    async def _endless(self, request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(PATTERN), PATTERN)
        try:
            while True:
                writer.write(frame)
                if writer.transport.get_write_buffer_size():
                    self.backed_up.set()  # the socket is full: the client stopped reading
                await writer.drain()
                await asyncio.sleep(0)  # let the client read; a client that keeps reading never backs us up
        except ConnectionError:
            self.closed_by_client.add(request.conn)
            return False


async def stop_server(server: asyncio.Server | None, tasks: set[asyncio.Task[None]]) -> None:
    """Close a test server and cancel the tasks that serve its connections."""
    assert server is not None
    server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


async def start_upstream(ssl_context: ssl.SSLContext | None = None) -> Upstream:
    upstream = Upstream()
    await upstream.start(ssl_context)
    return upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await start_upstream()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.aclose()


# -- requests and responses -------------------------------------------------------------------------


async def test_content_length_response(upstream: Upstream, client: HttpClient) -> None:
    response = await client.request("GET", upstream.url("/ok"), headers={})
    assert response.status == 200
    assert response.body == b"hello"
    assert response.headers == {"content-type": "text/plain", "content-length": "5"}


async def test_request_line_and_headers(upstream: Upstream, client: HttpClient) -> None:
    await client.request("POST", upstream.url("/echo?a=1&b=%20x"), headers={"X-Custom": "v", **AUTH},
                         body=b"payload")
    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.target == "/echo?a=1&b=%20x"
    assert request.header("host") == [f"127.0.0.1:{upstream.port}"]
    assert request.header("content-length") == ["7"]
    assert request.header("connection") == ["keep-alive"]
    assert request.header("x-custom") == ["v"]
    assert request.header("authorization") == [f"Bearer {SECRET}"]
    assert request.body == b"payload"


async def test_caller_host_and_length_are_not_duplicated(upstream: Upstream, client: HttpClient) -> None:
    headers = {"HOST": "api.example.com", "content-length": "999", "Connection": "close",
               "Transfer-Encoding": "chunked"}
    response = await client.request("POST", upstream.url("/echo"), headers=headers, body=b"abc")
    assert response.body == b"abc"
    (request,) = upstream.requests
    assert request.header("host") == ["api.example.com"]
    assert request.header("content-length") == ["3"]
    assert request.header("connection") == ["keep-alive"]
    assert request.header("transfer-encoding") == []


async def test_bodiless_requests(upstream: Upstream, client: HttpClient) -> None:
    await client.request("GET", upstream.url("/echo"), headers={})
    await client.request("POST", upstream.url("/echo"), headers={})
    get, post = upstream.requests
    assert get.header("content-length") == []
    assert post.header("content-length") == ["0"]
    assert upstream.requests[0].target == "/echo"


async def test_path_defaults_to_slash(upstream: Upstream, client: HttpClient) -> None:
    upstream._routes["/"] = upstream._ok
    response = await client.request("GET", f"http://127.0.0.1:{upstream.port}", headers={})
    assert response.body == b"hello"
    assert upstream.requests[0].target == "/"


@pytest.mark.parametrize(("name", "value"), [("X-Evil", "a\r\nInjected: 1"), ("X-Evil\r\nA", "b"),
                                             ("X-Evil", "bare\ncr")])
async def test_header_injection_is_refused(upstream: Upstream, client: HttpClient, name: str,
                                           value: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        await client.request("GET", upstream.url("/ok"), headers={name: value})
    assert upstream.requests == []


async def test_invalid_urls_are_refused(client: HttpClient) -> None:
    with pytest.raises(ValueError, match="scheme"):
        await client.request("GET", "ftp://example.com/", headers={})
    with pytest.raises(ValueError, match="host"):
        await client.request("GET", "http:///path", headers={})


async def test_response_headers_lower_cased_and_joined(upstream: Upstream, client: HttpClient) -> None:
    response = await client.request("GET", upstream.url("/headers"), headers={})
    assert response.headers == {"x-multi": "a, b, c", "content-type": "text/plain", "set-cookie": "c=1",
                                "content-length": "0"}


async def test_chunked_response(upstream: Upstream, client: HttpClient) -> None:
    response = await client.request("GET", upstream.url("/chunked"), headers={})
    assert response.body == b"hello world"
    assert response.headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize(("path", "body"), [("/close-delimited", b"until the very end"),
                                            ("/http10", b"old school")])
async def test_close_delimited_body_is_not_reused(upstream: Upstream, client: HttpClient, path: str,
                                                  body: bytes) -> None:
    response = await client.request("GET", upstream.url(path), headers={})
    assert response.body == body
    await client.request("GET", upstream.url("/ok"), headers={})
    assert upstream.connections == 2


async def test_head_has_no_body_and_keeps_the_connection(upstream: Upstream, client: HttpClient) -> None:
    response = await client.request("HEAD", upstream.url("/head"), headers={})
    assert (response.status, response.body) == (200, b"")
    assert response.headers["content-length"] == "100"
    again = await client.request("GET", upstream.url("/ok"), headers={})
    assert again.body == b"hello"
    assert upstream.connections == 1


@pytest.mark.parametrize(("path", "status"), [("/no-content", 204), ("/not-modified", 304)])
async def test_bodiless_statuses(upstream: Upstream, client: HttpClient, path: str, status: int) -> None:
    response = await client.request("GET", upstream.url(path), headers={})
    assert (response.status, response.body) == (status, b"")
    await client.request("GET", upstream.url("/ok"), headers={})
    assert upstream.connections == 1


async def test_interim_response_is_skipped(upstream: Upstream, client: HttpClient) -> None:
    response = await client.request("GET", upstream.url("/early-hints"), headers={})
    assert (response.status, response.body) == (200, b"ok")
    assert "link" not in response.headers
    assert response.headers["x-final"] == "yes"


async def test_large_bodies_both_ways(upstream: Upstream, client: HttpClient) -> None:
    size = 8 * 1024 * 1024 + 17
    response = await client.request("GET", upstream.url(f"/big?n={size}"), headers={})
    assert response.body == pattern_at(0, size)
    upload = pattern_at(5, 5 * 1024 * 1024)
    echoed = await client.request("PUT", upstream.url("/echo"), headers={}, body=upload)
    assert echoed.body == upload
    assert upstream.connections == 1


async def test_large_chunked_stream(upstream: Upstream, client: HttpClient) -> None:
    size = 6 * 1024 * 1024 + 3
    async with client.stream("GET", upstream.url(f"/big-chunked?n={size}"), headers={}) as response:
        assert await response.read() == pattern_at(0, size)


# -- keep-alive and the pool ------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(upstream: Upstream, client: HttpClient) -> None:
    for _ in range(5):
        response = await client.request("GET", upstream.url("/ok"), headers={})
        assert response.body == b"hello"
    async with client.stream("GET", upstream.url("/chunked"), headers={}) as streamed:
        assert await streamed.read() == b"hello world"
    await client.request("GET", upstream.url("/chunked"), headers={})
    assert upstream.connections == 1
    assert len(upstream.requests) == 7


@pytest.mark.parametrize("path", ["/connection-close", "/extra-bytes", "/ok-then-close"])
async def test_connection_not_reused(upstream: Upstream, client: HttpClient, path: str) -> None:
    response = await client.request("GET", upstream.url(path), headers={})
    assert response.body == b"ok"
    again = await client.request("GET", upstream.url("/ok"), headers={})
    assert again.body == b"hello"
    assert upstream.connections == 2


async def test_pool_bound_queues_requests(upstream: Upstream) -> None:
    client = HttpClient(max_connections_per_host=2)
    tasks = [asyncio.create_task(client.request("GET", upstream.url("/gate"), headers={})) for _ in range(6)]
    await upstream.wait_for(lambda: len(upstream.requests) == 2)
    assert upstream.connections == 2
    upstream.gate.set()
    responses = await asyncio.gather(*tasks)
    assert [r.body for r in responses] == [b"hello"] * 6
    assert (upstream.connections, upstream.max_open, len(upstream.requests)) == (2, 2, 6)
    await client.aclose()


async def test_waiting_for_a_free_connection_times_out(upstream: Upstream) -> None:
    client = HttpClient(max_connections_per_host=1)
    blocked = asyncio.create_task(client.request("GET", upstream.url("/gate"), headers={}))
    await upstream.wait_for(lambda: len(upstream.requests) == 1)
    with pytest.raises(UpstreamTimeout, match="free connection"):
        await client.request("GET", upstream.url("/ok"), headers={}, timeout=0.2)
    upstream.gate.set()
    assert (await blocked).body == b"hello"
    assert (await client.request("GET", upstream.url("/ok"), headers={})).body == b"hello"
    assert upstream.connections == 1
    await client.aclose()


async def test_idle_connections_are_closed_after_idle_timeout(upstream: Upstream) -> None:
    client = HttpClient(idle_timeout=0.1)
    await client.request("GET", upstream.url("/ok"), headers={})
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    await client.request("GET", upstream.url("/ok"), headers={})
    assert upstream.connections == 2
    await client.aclose()


async def test_aclose_closes_pooled_connections(upstream: Upstream) -> None:
    client = HttpClient()
    await client.request("GET", upstream.url("/ok"), headers={})
    await client.aclose()
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    with pytest.raises(RuntimeError, match="closed"):
        await client.request("GET", upstream.url("/ok"), headers={})


async def test_aclose_fails_requests_in_flight(upstream: Upstream) -> None:
    client = HttpClient()
    pending = asyncio.create_task(client.request("GET", upstream.url("/stall"), headers={}))
    await upstream.wait_for(lambda: len(upstream.requests) == 1)
    await client.aclose()
    with pytest.raises(UpstreamConnectionError):
        await pending


# -- the stale-connection retry ---------------------------------------------------------------------


async def test_stale_pooled_connection_is_retried_once(upstream: Upstream, client: HttpClient) -> None:
    await client.request("GET", upstream.url("/drop-next"), headers={})
    response = await client.request("POST", upstream.url("/echo"), headers={}, body=b"again")
    assert response.body == b"again"
    assert [(r.conn, r.target) for r in upstream.requests] == [(1, "/drop-next"), (1, "/echo"), (2, "/echo")]


async def test_retry_happens_only_once(upstream: Upstream, client: HttpClient) -> None:
    await client.request("GET", upstream.url("/drop-next"), headers={})
    with pytest.raises(UpstreamConnectionError):
        await client.request("GET", upstream.url("/drop"), headers={})
    assert [(r.conn, r.target) for r in upstream.requests] == [(1, "/drop-next"), (1, "/drop"), (2, "/drop")]


async def test_fresh_connection_closed_early_is_not_retried(upstream: Upstream, client: HttpClient) -> None:
    with pytest.raises(UpstreamConnectionError, match="closed the connection"):
        await client.request("GET", upstream.url("/drop"), headers={})
    assert len(upstream.requests) == 1


async def test_no_retry_once_response_bytes_arrived(upstream: Upstream, client: HttpClient) -> None:
    await client.request("GET", upstream.url("/partial-next"), headers={})
    with pytest.raises(UpstreamConnectionError):
        await client.request("GET", upstream.url("/ok"), headers={})
    assert len(upstream.requests) == 2


# -- streaming --------------------------------------------------------------------------------------


async def test_iter_bytes_yields_chunks_as_they_arrive(upstream: Upstream, client: HttpClient) -> None:
    async with client.stream("POST", upstream.url("/steps"), headers=AUTH, body=b"{}") as response:
        assert response.status == 200
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.iter_bytes()
        for piece in (b"data: one\n\n", b"data: two\n\n", b"x" * 5000):
            await upstream.steps.put(piece)
            assert await anext(chunks) == piece
        await upstream.steps.put(None)
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
    await client.request("GET", upstream.url("/ok"), headers={})
    assert upstream.connections == 1


async def test_iteration_can_resume_after_a_break(upstream: Upstream, client: HttpClient) -> None:
    async with client.stream("GET", upstream.url("/steps"), headers={}) as response:
        await upstream.steps.put(b"first")
        async for chunk in response.iter_bytes():
            assert chunk == b"first"
            break
        await upstream.steps.put(b"second")
        await upstream.steps.put(None)
        assert await response.read() == b"second"
    await client.request("GET", upstream.url("/ok"), headers={})
    assert upstream.connections == 1


async def test_leaving_the_block_early_closes_the_connection(upstream: Upstream,
                                                             client: HttpClient) -> None:
    async with client.stream("GET", upstream.url("/one-then-wait"), headers={}) as response:
        async for chunk in response.iter_bytes():
            assert chunk == b"first"
            break
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    assert (await client.request("GET", upstream.url("/ok"), headers={})).body == b"hello"
    assert upstream.connections == 2


async def test_aclose_interrupts_a_waiting_reader(upstream: Upstream, client: HttpClient) -> None:
    async with client.stream("GET", upstream.url("/one-then-wait"), headers={}) as response:
        received: list[bytes] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for chunk in response.iter_bytes():
                received.append(chunk)
                first.set()

        reader = asyncio.create_task(consume())
        await first.wait()  # the reader now waits for more
        await response.aclose()
        await reader  # ends quietly: whoever closed the response knows why
        await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    assert received == [b"first"]
    assert await response.read() == b""


async def test_streamed_body_cut_short_raises(upstream: Upstream, client: HttpClient) -> None:
    received: list[bytes] = []

    async def consume() -> None:
        async with client.stream("GET", upstream.url("/chunked-cut"), headers=AUTH) as response:
            async for chunk in response.iter_bytes():
                received.append(chunk)

    with pytest.raises(UpstreamConnectionError) as caught:
        await consume()
    assert received == [b"hello"]
    assert SECRET not in str(caught.value)


async def test_backpressure_pauses_reading(upstream: Upstream, client: HttpClient) -> None:
    async with client.stream("GET", upstream.url("/endless"), headers={}) as response:
        chunks = response.iter_bytes()
        first = await anext(chunks)
        async with asyncio.timeout(10):  # a hang guard: fails if the client never stops reading
            await upstream.backed_up.wait()
        offset = len(first)
        while offset < 16 * 1024 * 1024:  # reading resumes and every byte is intact
            chunk = await anext(chunks)
            assert chunk == pattern_at(offset, len(chunk))
            offset += len(chunk)
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)


async def test_stream_timeout_covers_headers_only(upstream: Upstream, client: HttpClient) -> None:
    with pytest.raises(UpstreamTimeout, match="headers"):
        async with client.stream("GET", upstream.url("/stall"), headers=AUTH, timeout=0.2):
            pass
    async with client.stream("GET", upstream.url("/stall-body"), headers={}, timeout=0.2) as response:
        chunks = response.iter_bytes()
        assert await anext(chunks) == b"ab"
    await upstream.wait_for(lambda: {1, 2} <= upstream.closed_by_client)


# -- cancellation -----------------------------------------------------------------------------------


async def test_cancelled_request_closes_its_connection(upstream: Upstream, client: HttpClient) -> None:
    task = asyncio.create_task(client.request("GET", upstream.url("/stall"), headers={}))
    await upstream.wait_for(lambda: len(upstream.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    assert (await client.request("GET", upstream.url("/ok"), headers={})).body == b"hello"
    assert upstream.connections == 2


async def test_cancelled_stream_reader_closes_its_connection(upstream: Upstream, client: HttpClient) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async with client.stream("GET", upstream.url("/one-then-wait"), headers={}) as response:
            async for _ in response.iter_bytes():
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)
    assert (await client.request("GET", upstream.url("/ok"), headers={})).body == b"hello"
    assert upstream.connections == 2


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "error"), [
    ("/reset", UpstreamConnectionError),
    ("/chunked-cut", UpstreamConnectionError),
    ("/close-after-headers", UpstreamConnectionError),
    ("/drop", UpstreamConnectionError),
    ("/garbage", UpstreamProtocolError),
])
async def test_broken_responses(upstream: Upstream, client: HttpClient, path: str,
                                error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await client.request("POST", upstream.url(path), headers=AUTH, body=b"{}")
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert (await client.request("GET", upstream.url("/ok"), headers={})).body == b"hello"


@pytest.mark.parametrize("path", ["/stall", "/stall-body"])
async def test_request_timeout_covers_the_whole_exchange(upstream: Upstream, client: HttpClient,
                                                         path: str) -> None:
    with pytest.raises(UpstreamTimeout) as caught:
        await client.request("GET", upstream.url(path), headers=AUTH, timeout=0.2)
    assert SECRET not in str(caught.value)
    await upstream.wait_for(lambda: 1 in upstream.closed_by_client)


async def test_connection_refused(client: HttpClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamConnectionError, match=f"127.0.0.1:{port}") as caught:
        await client.request("GET", f"http://127.0.0.1:{port}/", headers=AUTH)
    assert SECRET not in str(caught.value)


async def test_dns_failure(client: HttpClient) -> None:
    with pytest.raises(UpstreamConnectionError, match=r"nonexistent\.invalid"):
        await client.request("GET", "http://nonexistent.invalid/v1/models", headers=AUTH)


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full, so that a new connection attempt hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


async def test_connect_timeout(unresponsive_port: int) -> None:
    client = HttpClient(connect_timeout=0.2)
    with pytest.raises(UpstreamTimeout, match="connecting"):
        await client.request("GET", f"http://127.0.0.1:{unresponsive_port}/", headers=AUTH)
    with pytest.raises(UpstreamTimeout, match="connecting"):
        await client.request("GET", f"http://127.0.0.1:{unresponsive_port}/", headers=AUTH,
                             connect_timeout=0.1, timeout=30)
    await client.aclose()


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    cert = tmp_path / "cert.pem"
    cert.write_text(TEST_CERT)
    (tmp_path / "key.pem").write_text(TEST_KEY)
    return cert


@pytest.fixture
async def tls_upstream(certificate: Path) -> AsyncIterator[Upstream]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, certificate.with_name("key.pem"))
    server = await start_upstream(context)
    yield server
    await server.stop()


async def test_https_with_keep_alive(tls_upstream: Upstream, certificate: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # trust the test certificate
    client = HttpClient()
    for _ in range(3):
        response = await client.request("POST", tls_upstream.url("/echo"), headers={}, body=b"secure")
        assert response.body == b"secure"
    async with client.stream("GET", tls_upstream.url("/chunked"), headers={}) as streamed:
        assert await streamed.read() == b"hello world"
    assert tls_upstream.connections == 1
    await client.aclose()


async def test_https_rejects_an_untrusted_certificate(tls_upstream: Upstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = HttpClient()
    with pytest.raises(UpstreamConnectionError, match="certificate"):
        await client.request("GET", tls_upstream.url("/ok"), headers=AUTH)
    await client.aclose()


# -- the same behaviour on uvloop -------------------------------------------------------------------

UVLOOP_SCENARIOS = [
    test_content_length_response,
    test_chunked_response,
    test_keep_alive_reuses_one_connection,
    test_large_bodies_both_ways,
    test_stale_pooled_connection_is_retried_once,
    test_iter_bytes_yields_chunks_as_they_arrive,
    test_leaving_the_block_early_closes_the_connection,
    test_backpressure_pauses_reading,
    test_cancelled_request_closes_its_connection,
    test_cancelled_stream_reader_closes_its_connection,
    test_fresh_connection_closed_early_is_not_retried,
    test_streamed_body_cut_short_raises,
]


@pytest.mark.parametrize("scenario", UVLOOP_SCENARIOS, ids=lambda f: f.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[[Upstream, HttpClient], Awaitable[None]]) -> None:
    async def run() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        server = await start_upstream()
        http = HttpClient()
        try:
            await scenario(server, http)
        finally:
            await http.aclose()
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


@pytest.mark.parametrize("path", ["/reset", "/garbage", "/chunked-cut"])
def test_broken_responses_on_uvloop(path: str) -> None:
    async def run() -> None:
        server = await start_upstream()
        http = HttpClient()
        try:
            with pytest.raises((UpstreamConnectionError, UpstreamProtocolError)):
                await http.request("GET", server.url(path), headers={})
            assert (await http.request("GET", server.url("/ok"), headers={})).body == b"hello"
        finally:
            await http.aclose()
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
