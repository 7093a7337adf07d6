"""Real servers on real sockets for end-to-end tests: the simulated fleet and the gateway on its own HTTP server,
each on its own thread and event loop, so the official SDKs talk to them exactly as users do."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from switchboard.app import SwitchboardApp
from switchboard.server import serve
from switchboard.sim.fleet import Fleet
from switchboard.sim.server import SimServer
from switchboard.storage.records import RecordSink
from switchboard.telemetry.record import RequestRecord


class LoopThread:
    """Runs one coroutine (a server) on a private event loop in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def _call() -> Any:
            return fn()
        return self.run(_call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class SimThread:
    """The simulated providers on 127.0.0.1, in a thread."""

    def __init__(self, fleet: Fleet) -> None:
        self._lt = LoopThread("sim")
        self.server = SimServer(fleet, host="127.0.0.1", port=0)
        self._lt.run(self.server.start())
        self.base_url: str = self.server.base_url

    def stats(self) -> Any:
        return self._lt.call(lambda: self.server.stats)

    def wait_until(self, predicate: Callable[[Any], bool], timeout: float = 10) -> None:
        """Block until ``predicate(stats)`` holds on the simulator's own loop (event-driven, bounded)."""
        async def wait() -> None:
            async with asyncio.timeout(timeout):
                await self.server.stats.wait_until(predicate)
        self._lt.run(wait(), timeout + 5)

    def close(self) -> None:
        self._lt.run(self.server.close())
        self._lt.stop()


class GatewayThread:
    """The gateway's ASGI app served by Switchboard's own HTTP server on an ephemeral 127.0.0.1 port."""

    def __init__(self, app: SwitchboardApp) -> None:
        self.app = app
        self._recorded: set[str] = set()
        self._recorded_changed = threading.Condition()
        if app.records is not None:
            self._watch_records(app.records)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop = uvloop.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("gateway did not start")

    def _watch_records(self, sink: RecordSink) -> None:
        # The gateway submits a record when a request ends, which for a client that left or an upstream call
        # that was cancelled can be after the client and the upstream have both seen the end of it.
        submit = sink.submit

        def submit_and_note(record: RequestRecord) -> bool:
            accepted = submit(record)
            with self._recorded_changed:
                self._recorded.add(record.request_id)
                self._recorded_changed.notify_all()
            return accepted

        sink.submit = submit_and_note  # type: ignore[method-assign]

    def wait_recorded(self, request_id: str, timeout: float = 10) -> bool:
        """Block until the gateway has submitted the record of ``request_id`` (event-driven, bounded)."""
        with self._recorded_changed:
            return self._recorded_changed.wait_for(lambda: request_id in self._recorded, timeout)

    def _serve(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            listening = asyncio.Event()
            server = asyncio.ensure_future(serve(
                self.app, sock=self._sock, max_body=self.app.config.server.max_body_bytes, drain_timeout=5,
                on_ready=listening.set, stop=self._stop, rejection=self.app.render_rejection))
            up = asyncio.ensure_future(listening.wait())
            await asyncio.wait([server, up], return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            if not server.done():
                await self.app.gateway.wait_ready()  # as a deployment waits for /health/ready
                self._ready.set()
            await server

        self._loop.run_until_complete(main())
        self._loop.close()

    def close(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._sock.close()
