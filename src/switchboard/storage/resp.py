"""A small Redis client for the request path: one connection, commands pipelined automatically.

Every command issued during one turn of the event loop leaves in a single write, and the replies are matched
to their callers in order as they arrive. Under load that turns many concurrent admissions into one system
call each way, which is what lets limits in Redis cost a request a few microseconds rather than a round trip
of a general-purpose client. It speaks RESP2 over TCP (``redis://``) or TLS (``rediss://``), authenticates
and selects the database from the URL, runs Lua scripts by digest (loading them once when the server does
not know them), and fails every waiting command with :class:`RedisUnavailable` when the connection breaks or
a reply is later than ``timeout``. A broken connection is reopened by the next command.

Usage::

    client = RedisClient("redis://127.0.0.1:6379/0")
    await client.call("SET", "k", "v")
    script = Script("return redis.call('GET', KEYS[1])")
    await client.run(script, ["k"], [])               # "v"
    await client.aclose()
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit

__all__ = ["RedisClient", "RedisUnavailable", "ReplyError", "Script", "bulk"]


class RedisUnavailable(Exception):
    """The server could not be reached, the connection broke, or it did not answer in time."""


class ReplyError(Exception):
    """The server answered a command with an error (``-ERR …``)."""


class Script:
    """A Lua script, known to the server by its SHA-1 digest."""

    __slots__ = ("digest", "head", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.digest = hashlib.sha1(source.encode()).hexdigest()
        self.head = bulk(["EVALSHA", self.digest])


def bulk(args: Sequence[str | bytes | int | float]) -> bytes:
    """``args`` as consecutive RESP bulk strings: the body of a command, or a piece of one to reuse."""
    parts: list[str] = []
    raw: list[bytes] | None = None
    for arg in args:
        if isinstance(arg, bytes):  # rare: keep the text path simple and join the two at the end
            raw = raw or []
            raw.append(b"".join([("".join(parts)).encode(), b"$%d\r\n%s\r\n" % (len(arg), arg)]))
            parts = []
            continue
        text = arg if isinstance(arg, str) else str(arg)
        size = len(text) if text.isascii() else len(text.encode())
        parts.append(f"${size}\r\n{text}\r\n")
    tail = "".join(parts).encode()
    return tail if raw is None else b"".join([*raw, tail])


def encode(args: Sequence[str | bytes | int | float]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), bulk(args))


_INCOMPLETE = object()


def _parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply from ``buf`` at ``pos``: ``(value, next position)``, or ``(_INCOMPLETE, pos)``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind = buf[pos]
    line = buf[pos + 1:end]
    nxt = end + 2
    if kind == 43:  # +
        return line.decode(), nxt
    if kind == 45:  # -
        return ReplyError(bytes(line).decode(errors="replace")), nxt
    if kind == 58:  # :
        return int(line), nxt
    if kind == 36:  # $
        size = int(line)
        if size < 0:
            return None, nxt
        if len(buf) < nxt + size + 2:
            return _INCOMPLETE, pos
        return buf[nxt:nxt + size].decode(errors="replace"), nxt + size + 2
    if kind == 42:  # *
        count = int(line)
        if count < 0:
            return None, nxt
        items = []
        for _ in range(count):
            item, nxt = _parse(buf, nxt)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, nxt
    raise RedisUnavailable(f"unexpected reply type {chr(kind)!r} from the server")


class _Waiter(Protocol):
    """What hears a reply: a future, or a :class:`_Detached` command's bookkeeping."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class _Connection(asyncio.Protocol):
    """One socket: writes what the client queued, hands each parsed reply to the oldest waiter."""

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[_Waiter, float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.buf = bytearray()
        self.lost: Exception | None = None
        self.timeout = timeout
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.queue(payload, fut)
        return fut

    def queue(self, payload: bytes, waiter: _Waiter, *, at_once: bool = False) -> None:
        """Queue ``payload`` for the next write (``at_once``: write it and what is queued before it now);
        ``waiter`` hears its reply or failure."""
        if self.lost is not None:
            waiter.set_exception(RedisUnavailable(str(self.lost)))
            return
        self.waiting.append((waiter, self.loop.time() + self.timeout))
        self.out.append(payload)
        if at_once:
            self._flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.timeout, self._check_deadline)

    def _flush(self) -> None:
        self.flush_scheduled = False  # a flush still scheduled finds nothing left to write
        if self.out and self.transport is not None and self.lost is None:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out = []
            self.transport.write(data)

    def _check_deadline(self) -> None:
        self.watchdog = None
        if not self.waiting:
            return
        oldest = self.waiting[0][1]
        if self.loop.time() >= oldest:
            self._fail(RedisUnavailable(f"no answer within {self.timeout:g} s"))
            if self.transport is not None:
                self.transport.abort()
        else:
            self.watchdog = self.loop.call_at(oldest, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        # Parsed from the bytes received when nothing is left over from before (the usual case), else from
        # the buffer that holds the rest.
        if self.buf:
            self.buf += data
            buf: bytes | bytearray = self.buf
        else:
            buf = data
        pos = 0
        try:
            while pos < len(buf):
                value, nxt = _parse(buf, pos)
                if value is _INCOMPLETE:
                    break
                pos = nxt
                if not self.waiting:
                    raise RedisUnavailable("a reply arrived that no command asked for")
                fut, _ = self.waiting.popleft()
                if not fut.done():
                    if isinstance(value, ReplyError):
                        fut.set_exception(value)
                    else:
                        fut.set_result(value)
        except (RedisUnavailable, ValueError) as exc:
            self._fail(RedisUnavailable(f"unreadable reply: {exc}"))
            if self.transport is not None:
                self.transport.abort()
            return
        if buf is self.buf:
            del self.buf[:pos]
        elif pos < len(buf):
            self.buf = bytearray(buf[pos:])

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(f"connection lost: {exc}" if exc else "connection closed by the server"))

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            fut, _ = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(RedisUnavailable(str(exc)))
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None


class RedisClient:
    """A pipelining client over one connection (opened on first use, reopened after a failure). ``scripts`` are
    loaded whenever a connection opens: a script the server has forgotten otherwise costs its first caller a
    second try, which later commands may overtake."""

    def __init__(self, url: str, *, timeout: float = 2.0, scripts: Sequence[Script] = ()) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {parts.scheme}://")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.where = f"{self.host}:{self.port}"  # for messages: never the password
        self._tls = parts.scheme == "rediss"
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        path = parts.path.lstrip("/")
        self._db = int(path) if path else 0
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._opening: asyncio.Future[_Connection] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._detached = 0  # commands of run_nowait not answered yet
        self._drained: asyncio.Event | None = None
        # Loaded on every new connection, so that they run by digest from the first call, in the order made.
        self._scripts = tuple(scripts)

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self._tls else None
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self._timeout), self.host, self.port, ssl=context), self._timeout)
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailable(f"cannot connect to {self.where}: {exc or type(exc).__name__}") from None
        hello: list[asyncio.Future[Any]] = []
        if self._password is not None:
            auth = ["AUTH", self._user, self._password] if self._user else ["AUTH", self._password]
            hello.append(conn.send(encode(auth)))
        if self._db:
            hello.append(conn.send(encode(["SELECT", self._db])))
        hello.extend(conn.send(encode(["SCRIPT", "LOAD", script.source])) for script in self._scripts)
        try:
            for fut in hello:
                await fut
        except ReplyError as exc:
            if conn.transport is not None:
                conn.transport.close()
            raise RedisUnavailable(f"{self.where} refused the connection: {exc}") from None
        self._conn = conn
        return conn

    async def call(self, *args: str | bytes | int | float) -> Any:
        """Send one command; its reply (``str``, ``int``, ``None`` or a list of them). A connection that broke
        is reopened and the command tried once more, so commands must be safe to repeat."""
        payload = encode(args)
        for attempt in (0, 1):
            conn = await self._connection()
            try:
                return await conn.send(payload)
            except RedisUnavailable:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run a Lua script by digest, loading it first if the server does not have it."""
        return await self.run_encoded(script, len(keys) + len(args) + 1, bulk([len(keys), *keys, *args]))

    async def run_encoded(self, script: Script, count: int, body: bytes) -> Any:
        """:meth:`run` with the arguments already encoded: ``body`` is ``count`` bulk strings (the number of
        keys, the keys, the arguments) as :func:`bulk` makes them, so that a caller can keep the parts that do
        not change from call to call."""
        payload = b"*%d\r\n%s%s" % (count + 2, script.head, body)
        reconnected = loaded = False  # one more try after each: a new connection, loading the script
        while True:
            conn = self._conn
            if conn is None or conn.lost is not None:
                conn = await self._connection()
            try:
                return await conn.send(payload)
            except RedisUnavailable:
                if reconnected:
                    raise
                reconnected = True
            except ReplyError as exc:
                if loaded or not str(exc).startswith("NOSCRIPT"):
                    raise
                loaded = True
                await self.call("SCRIPT", "LOAD", script.source)

    def run_nowait(self, script: Script, count: int, body: bytes, on_error: Callable[[BaseException], None],
                   on_result: Callable[[Any], None] | None = None, *, at_once: bool = False) -> None:
        """:meth:`run_encoded` without waiting for the answer: ``on_result`` (if given) hears it, ``on_error`` of
        a failure. On an open connection this costs no task and no future: the command joins the next write
        (``at_once``: it is written now, with the commands queued before it). A script the server does not know
        yet, or a broken connection, gets one more try through :meth:`run_encoded`."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            self._spawn(self.run_encoded(script, count, body), on_error, on_result)
            return
        self._detached += 1
        conn.queue(b"*%d\r\n%s%s" % (count + 2, script.head, body),
                   _Detached(self, script, count, body, on_error, on_result), at_once=at_once)

    def _answered(self) -> None:
        self._detached -= 1
        if not self._detached and self._drained is not None:
            self._drained.set()

    def _spawn(self, work: Coroutine[Any, Any, Any], on_error: Callable[[BaseException], None],
               on_result: Callable[[Any], None] | None) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._background.discard(t)
            if t.cancelled():
                on_error(RedisUnavailable("cancelled"))
            elif (exc := t.exception()) is not None:
                on_error(exc)
            elif on_result is not None:
                on_result(t.result())

        task.add_done_callback(done)

    async def scan(self, match: str, count: int = 1000) -> AsyncIterator[str]:
        """Every key matching the glob ``match`` (``SCAN``: walks the whole database)."""
        cursor = "0"
        while True:
            cursor, keys = await self.call("SCAN", cursor, "MATCH", match, "COUNT", count)
            for key in keys:
                yield key
            if cursor == "0":
                return

    async def aclose(self) -> None:
        """Wait for the commands still on their way (at most ``timeout``), then close the connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        # A command answered NOSCRIPT is sent again by a new task: wait for those too.
        while (self._background or self._detached) and (left := deadline - loop.time()) > 0:
            waits = list(self._background)
            if self._detached:
                self._drained = asyncio.Event()
                waits.append(asyncio.ensure_future(self._drained.wait()))
            _, pending = await asyncio.wait(waits, timeout=left)
            for w in pending:
                if w not in self._background:
                    w.cancel()
        self._drained = None
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()


class _Detached:
    """The waiter of a command sent by :meth:`RedisClient.run_nowait`: counts it answered and hands the answer to
    ``on_result``; on a failure sends it once more (NOSCRIPT, a broken connection) or tells ``on_error``."""

    __slots__ = ("body", "client", "count", "on_error", "on_result", "script")

    def __init__(self, client: RedisClient, script: Script, count: int, body: bytes,
                 on_error: Callable[[BaseException], None], on_result: Callable[[Any], None] | None) -> None:
        self.client, self.script, self.count, self.body = client, script, count, body
        self.on_error, self.on_result = on_error, on_result

    def done(self) -> bool:
        return False

    def set_result(self, result: Any, /) -> None:
        self.client._answered()
        if self.on_result is not None:
            self.on_result(result)

    def set_exception(self, exception: BaseException, /) -> None:
        client = self.client
        client._answered()
        if isinstance(exception, RedisUnavailable) or str(exception).startswith("NOSCRIPT"):
            client._spawn(client.run_encoded(self.script, self.count, self.body), self.on_error, self.on_result)
        else:
            self.on_error(exception)
