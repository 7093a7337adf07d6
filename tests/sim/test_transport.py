"""The HTTP/1.1 layer on a raw socket: framing, keep-alive, pipelining, disconnects, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest

from switchboard.sim import SimServer

CHAT = json.dumps(
    {"model": "sim-gpt-small", "max_tokens": 3, "messages": [{"role": "user", "content": "hello"}]}
).encode()


def post(body: bytes, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        assert headers["transfer-encoding"] == "chunked"
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return int(status_line.split()[1]), headers, body


@pytest.fixture
async def conn(sim: SimServer) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    yield reader, writer
    writer.close()
    await writer.wait_closed()


async def test_keep_alive_serves_many_requests_on_one_connection(
    sim: SimServer, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    reader, writer = conn
    for _ in range(3):
        writer.write(post(CHAT))
        status, headers, body = await read_response(reader)
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["choices"][0]["finish_reason"] == "length"
    assert sim.stats.connections == 1
    assert sim.stats.requests == 3


async def test_pipelined_requests_are_answered_in_order(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    reader, writer = conn
    slow = post(CHAT, extra="x-sim-ttft-ms: 30\r\nx-sim-reply: first\r\n")
    fast = post(CHAT, extra="x-sim-reply: second\r\n")
    writer.write(slow + fast)
    replies = [json.loads((await read_response(reader))[2])["choices"][0]["message"]["content"] for _ in range(2)]
    assert replies == ["first", "second"]


async def test_chunked_request_body(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    reader, writer = conn
    half = len(CHAT) // 2
    chunks = [CHAT[:half], CHAT[half:]]
    encoded = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer x\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + encoded
    )
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"


async def test_sse_response_is_chunked(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    reader, writer = conn
    body = json.loads(CHAT)
    body["stream"] = True
    writer.write(post(json.dumps(body).encode()))
    status, headers, payload = await read_response(reader)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["x-request-id"].startswith("req_")
    assert payload.endswith(b"data: [DONE]\n\n")


async def test_connection_close_is_honoured(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    reader, writer = conn
    writer.write(post(CHAT, extra="connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["connection"] == "close"
    assert await reader.read() == b""


async def test_garbage_is_a_bad_request(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    reader, writer = conn
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 400
    assert await reader.read() == b""


async def test_unknown_path_and_health(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        missing = await http.post("/v2/whatever", json={})
        health = await http.get("/health")
    assert missing.status_code == 404
    assert "Invalid URL" in missing.json()["error"]["message"]
    assert health.json() == {"status": "ok"}


async def test_disconnect_during_a_delayed_answer_is_counted(
    sim: SimServer, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    _, writer = conn
    writer.write(post(CHAT, extra="x-sim-ttft-ms: 60000\r\n"))
    await sim.stats.wait_until(lambda s: s.in_flight == 1)
    writer.close()
    await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1 and s.in_flight == 0)


async def test_reset_is_not_counted_as_a_client_cancel(sim: SimServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
    try:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="sim-gpt-small",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-sim-reset-after": "0", "x-sim-ttft-ms": "5"},
            )
    finally:
        await client.close()
    await sim.stats.wait_until(lambda s: s.in_flight == 0)
    assert sim.stats.resets == 1
    assert sim.stats.cancelled_by_client == 0


async def test_close_drops_hanging_connections() -> None:
    sim = SimServer()
    await sim.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(post(CHAT, extra="x-sim-timeout: 1\r\n"))
    await sim.stats.wait_until(lambda s: s.in_flight == 1)
    await sim.close()
    assert await reader.read() == b""
    assert sim.stats.in_flight == 0
    assert sim.stats.cancelled_by_client == 0
    writer.close()
    await writer.wait_closed()


async def test_base_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError):
        _ = SimServer().base_url


def test_works_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    user: list[Any] = [{"role": "user", "content": "hello"}]

    async def scenario() -> None:
        async with SimServer() as sim:
            client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
            try:
                quick = {"x-sim-ttft-ms": "0", "x-sim-tps": "0"}
                r = await client.chat.completions.create(model="fast", messages=user, extra_headers=quick)
                assert r.choices[0].message.content
                stream = await client.chat.completions.create(
                    model="fast", messages=user, stream=True, extra_headers={**quick, "x-sim-reset-after": "3"}
                )
                assert isinstance(stream, openai.AsyncStream)
                got: list[str] = []

                async def consume() -> None:
                    async for chunk in stream:
                        got.extend(c.delta.content for c in chunk.choices if c.delta.content)

                with pytest.raises(openai.APIConnectionError):
                    await consume()
                assert len(got) == 3
                with pytest.raises(openai.APITimeoutError):
                    await client.chat.completions.create(
                        model="fast", messages=user, timeout=0.2, extra_headers={"x-sim-timeout": "1"}
                    )
                await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1)
                reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
                writer.write(post(CHAT, extra="x-sim-timeout: 1\r\n"))
                await sim.stats.wait_until(lambda s: s.in_flight == 1)
            finally:
                await client.close()
        assert await reader.read() == b""
        writer.close()

    uvloop.run(scenario())
