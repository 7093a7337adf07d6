"""A byte relay: the floor any proxy pays for one more hop and one more process.

It accepts connections and copies bytes both ways to the upstream, doing nothing else — no parsing, no
JSON, no logging. Measured in place of a gateway, its added latency is what the hop itself costs on
this machine (loopback, process wake-ups), so what a gateway adds beyond it is the gateway's own work.

Usage::

    python bench/relay.py --port 9100 --upstream-port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.backlog: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.backlog.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    def client_side() -> _Pipe:
        down = _Pipe()

        async def connect() -> None:
            try:
                up_transport, up = await loop.create_connection(_Pipe, "127.0.0.1", upstream_port)
            except OSError:
                if down.transport is not None:
                    down.transport.close()
                return
            up.peer = down.transport
            down.peer = up_transport
            for chunk in down.backlog:
                up_transport.write(chunk)
            down.backlog.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return down

    await serve_until_stopped(client_side, port)


async def serve_until_stopped(factory: Callable[[], asyncio.Protocol], port: int) -> None:
    """Serve connections on 127.0.0.1:``port`` with ``factory``'s protocols until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run(doc: str | None, serve: Callable[[int, int], Awaitable[None]]) -> None:
    """The command line of a reference server: ``--port`` and ``--upstream-port``, on uvloop when present."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    a = p.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(a.port, a.upstream_port))


if __name__ == "__main__":
    run(__doc__, serve)
