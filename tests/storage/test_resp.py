"""The pipelining Redis client, against the machine's Redis (db 15) and against servers that misbehave, on
both event loops the gateway runs on (asyncio's and uvloop's)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from switchboard.storage.resp import RedisClient, RedisUnavailable, ReplyError, Script, _parse, encode

URL = os.environ.get("SWITCHBOARD_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def runner(coro: Awaitable[Any]) -> Any:
        if request.param == "uvloop":
            return uvloop.run(coro)  # type: ignore[arg-type]
        return asyncio.run(coro)  # type: ignore[arg-type]

    return runner


@pytest.fixture
def redis_url() -> str:
    async def ping() -> None:
        client = RedisClient(URL, timeout=2)
        try:
            await client.call("PING")
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except RedisUnavailable as exc:
        reason = f"Redis is not reachable at {URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return URL


def test_encoding_and_parsing_round_trip() -> None:
    assert encode(["SET", "k", 1.5, b"\x00"]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n\x00\r\n"
    reply = b"*3\r\n$5\r\nhello\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n"
    assert _parse(reply, 0) == (["hello", 42, ["OK", None]], len(reply))
    for cut in range(1, len(reply)):  # a reply split anywhere waits for the rest
        value, pos = _parse(reply[:cut], 0)
        assert pos == 0 and value is not None
    err, _ = _parse(b"-NOSCRIPT No matching script\r\n", 0)
    assert isinstance(err, ReplyError) and str(err).startswith("NOSCRIPT")


def test_concurrent_commands_share_writes_and_get_their_own_replies(
        run: Callable[[Awaitable[Any]], Any], redis_url: str) -> None:
    prefix = f"sbtest:{uuid.uuid4().hex[:8]}:"

    async def main() -> None:
        client = RedisClient(redis_url)
        try:
            await asyncio.gather(*(client.call("SET", f"{prefix}{i}", i) for i in range(500)))
            values = await asyncio.gather(*(client.call("GET", f"{prefix}{i}") for i in range(500)))
            assert values == [str(i) for i in range(500)]
            script = Script(f"-- {prefix}\nreturn {{KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}}")
            assert await client.run(script, [f"{prefix}n"], ["x"]) == [f"{prefix}n", "x", 1]  # loaded on NOSCRIPT
            assert await client.run(script, [f"{prefix}n"], ["y"]) == [f"{prefix}n", "y", 2]
            with pytest.raises(ReplyError):
                await client.call("INCR", f"{prefix}0", "extra")
            found = sorted([k async for k in client.scan(f"{prefix}*")])
            assert len(found) == 501
            assert await client.call("UNLINK", *found) == 501
        finally:
            await client.aclose()

    run(main())


def test_a_server_that_never_answers_times_out_and_one_that_hangs_up_is_reported() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)  # reads the command, answers nothing, keeps the socket open
            await reader.read(1 << 16)  # until the client gives up and closes it
            writer.close()

        async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            writer.close()

        for handler, message in ((silent, "no answer within"), (rude, "closed")):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            client = RedisClient(f"redis://127.0.0.1:{port}/0", timeout=0.2)
            with pytest.raises(RedisUnavailable, match=message):
                await client.call("PING")
            await client.aclose()
            server.close()
            await server.wait_closed()
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await RedisClient("redis://127.0.0.1:1/0", timeout=1).call("PING")

    asyncio.run(main())


def test_a_connection_the_server_closed_is_reopened(run: Callable[[Awaitable[Any]], Any], redis_url: str) -> None:
    async def main() -> None:
        client = RedisClient(redis_url)
        killer = RedisClient(redis_url)
        try:
            client_id = await client.call("CLIENT", "ID")
            assert await killer.call("CLIENT", "KILL", "ID", client_id) == 1
            assert await client.call("PING") == "PONG"  # the broken connection is noticed and replaced
        finally:
            await client.aclose()
            await killer.aclose()

    run(main())


def test_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisClient("http://127.0.0.1:6379")
    client = RedisClient("redis://:s3cret@example.org:6380/3")
    assert client.where == "example.org:6380" and "s3cret" not in client.where


def test_a_script_survives_a_lost_connection_and_a_server_that_forgot_it(
        run: Callable[[Awaitable[Any]], Any], redis_url: str) -> None:
    """As after a Redis restart: the connection breaks and the server no longer knows the script. The next run
    reconnects, loads the script and runs it; a run without waiting does the same in the background."""
    prefix = f"sbtest:{uuid.uuid4().hex[:8]}:"

    async def main() -> None:
        client = RedisClient(redis_url)
        other = RedisClient(redis_url)
        errors: list[BaseException] = []
        try:
            script = Script(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
            assert await client.call("PING") == "PONG"
            assert await other.call("CLIENT", "KILL", "ID", await client.call("CLIENT", "ID")) == 1
            assert await client.run(script, [f"{prefix}n"], [2]) == 2  # reconnected, then loaded on NOSCRIPT
            fresh = Script(f"-- {prefix} again\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
            client.run_nowait(fresh, 3, encode([1, f"{prefix}n", 5]).split(b"\r\n", 1)[1], errors.append)
            client.run_nowait(fresh, 3, encode([1, f"{prefix}n", 7]).split(b"\r\n", 1)[1], errors.append)
        finally:
            await client.aclose()  # waits for what was sent without waiting
        try:
            assert errors == []
            assert await other.call("GET", f"{prefix}n") == "14"
            assert await other.call("UNLINK", f"{prefix}n") == 1
        finally:
            await other.aclose()

    run(main())


def test_a_command_sent_at_once_is_written_with_what_was_queued_before_it(
        run: Callable[[Awaitable[Any]], Any], redis_url: str) -> None:
    """A command of ``run_nowait`` joins the next write; one sent ``at_once`` is written before the call returns,
    in one write with the commands queued before it, and each still hears its own answer."""
    prefix = f"sbtest:{uuid.uuid4().hex[:8]}:"

    async def main() -> None:
        client = RedisClient(redis_url)
        errors: list[BaseException] = []
        answers: list[Any] = []
        try:
            script = Script(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
            await client.run(script, [f"{prefix}n"], [1])  # connected, and the script loaded
            conn = client._conn
            assert conn is not None and conn.transport is not None
            writes: list[bytes] = []
            real = conn.transport

            class Counted:  # the transport, with its writes counted
                def write(self, data: bytes) -> None:
                    writes.append(data)
                    real.write(data)

                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

            conn.transport = Counted()  # type: ignore[assignment]
            body = encode([1, f"{prefix}n", 2]).split(b"\r\n", 1)[1]
            client.run_nowait(script, 3, body, errors.append, answers.append)
            assert writes == []  # queued for the end of this turn of the event loop
            client.run_nowait(script, 3, body, errors.append, answers.append, at_once=True)
            assert len(writes) == 1 and writes[0].count(b"EVALSHA") == 2  # both, in one write, now
            await client.call("PING")
        finally:
            await client.aclose()
        assert errors == [] and answers == [3, 5]
        other = RedisClient(redis_url)
        try:
            assert await other.call("UNLINK", f"{prefix}n") == 1
        finally:
            await other.aclose()

    run(main())
