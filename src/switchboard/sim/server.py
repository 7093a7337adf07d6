"""The simulated-provider server: routing, lifecycle and the ``switchboard sim`` command line.

Usage::

    async with SimServer(DEFAULT_FLEET) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x")
        ...
        await sim.stats.wait_until(lambda s: s.cancelled_by_client == 1)
        sim.update_model("sim-claude", failure_rate=0.5, failure_modes=["529"])  # or POST /_sim/models/sim-claude
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import sys
from collections import deque
from types import TracebackType
from typing import Any, Self

import orjson

from switchboard.sim import anthropic_format, gemini_format, openai_format
from switchboard.sim.control import MODELS_PREFIX, UpdateModel, model_settings
from switchboard.sim.dialect import Dialect, SimContext
from switchboard.sim.fleet import DEFAULT_FLEET, Fleet, FleetError, SimModel, load_fleet
from switchboard.sim.gemini_format import GEMINI
from switchboard.sim.http import HttpConnection, Reply, Respond, SimRequest, SimStats
from switchboard.sim.openai_format import OPENAI

__all__ = ["SimServer", "main"]

_GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")


def _dialect_for_models(req: SimRequest) -> Dialect:
    """``GET /v1/models`` is shared by OpenAI and Anthropic (and Gemini's v1): tell them apart by headers."""
    if "anthropic-version" in req.headers:
        return anthropic_format.ANTHROPIC
    if "x-goog-api-key" in req.headers:
        return GEMINI
    return OPENAI


class _Router:
    """Maps a request to its endpoint; authentication is checked in the endpoint's format.

    ``update_model`` serves the control endpoint (``/_sim/models/{name}``), which needs no key.
    """

    def __init__(self, ctx: SimContext, update_model: UpdateModel) -> None:
        self.ctx = ctx
        self._update_model = update_model

    def __call__(self, req: SimRequest) -> Reply:
        ctx = self.ctx
        path = req.path
        if path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        method = req.method
        if path.startswith(MODELS_PREFIX):
            return model_settings(req, path[len(MODELS_PREFIX) :], ctx.fleet, self._update_model)
        if method == "POST":
            if path == "/v1/chat/completions":
                return self._authed(OPENAI, req) or openai_format.chat_completions(ctx, req)
            if path == "/v1/messages":
                return self._authed(anthropic_format.ANTHROPIC, req) or anthropic_format.messages(ctx, req)
            if path == "/v1/embeddings":
                return self._authed(OPENAI, req) or openai_format.embeddings(ctx, req)
            if path == "/v1/messages/count_tokens":
                return self._authed(anthropic_format.ANTHROPIC, req) or anthropic_format.count_tokens(ctx, req)
            if path.startswith(_GEMINI_PREFIXES) and ":" in path:
                model, _, action = path.split("/", 3)[3].rpartition(":")
                return self._authed(GEMINI, req) or gemini_format.model_action(ctx, req, model, action)
        elif method == "GET":
            if path == "/health":
                return Respond(200, b'{"status":"ok"}')
            if path == "/v1/models":
                d = _dialect_for_models(req)
                handler = {
                    "openai": openai_format.list_models,
                    "anthropic": anthropic_format.list_models,
                    "gemini": gemini_format.list_models,
                }[d.name]
                return self._authed(d, req) or handler(ctx, req)
            if path == "/v1beta/models":
                return self._authed(GEMINI, req) or gemini_format.list_models(ctx, req)
            if path.startswith("/v1beta/models/"):
                return self._authed(GEMINI, req) or gemini_format.get_model(ctx, req, path[len("/v1beta/models/") :])
            if path.startswith("/v1/models/"):
                d = _dialect_for_models(req)
                name = path[len("/v1/models/") :]
                if d is GEMINI:
                    return self._authed(d, req) or gemini_format.get_model(ctx, req, name)
                if d is OPENAI:
                    return self._authed(d, req) or openai_format.retrieve_model(ctx, req, name)
                return self._authed(d, req) or anthropic_format.retrieve_model(ctx, req, name)
        return self._not_found(req)

    def _authed(self, d: Dialect, req: SimRequest) -> Reply | None:
        err = d.check_auth(req, self.ctx.api_key)
        return None if err is None else d.error(err, self.ctx.new_id())

    def _not_found(self, req: SimRequest) -> Reply:
        body = {
            "error": {
                "message": f"Invalid URL ({req.method} {req.path})",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return Respond(404, orjson.dumps(body))


class SimServer:
    """Simulated OpenAI, Anthropic and Gemini endpoints serving ``fleet`` on ``host:port``.

    ``seed`` fixes the RNG behind injected failures; ``api_key``, when set, is the only key accepted
    (else any non-empty key is); ``record`` keeps the last N requests in :attr:`requests`.
    """

    def __init__(
        self,
        fleet: Fleet = DEFAULT_FLEET,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int | None = None,
        api_key: str | None = None,
        record: int = 1000,
        reuse_port: bool = False,
    ) -> None:
        self._ctx = SimContext(fleet, seed=seed, api_key=api_key, record=record)
        self._host = host
        self._requested_port = port
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()
        self._port: int | None = None

    @property
    def fleet(self) -> Fleet:
        return self._ctx.fleet

    @fleet.setter
    def fleet(self, fleet: Fleet) -> None:
        """Swap the fleet while serving, e.g. to make one model start failing."""
        self._ctx.fleet = fleet

    @property
    def stats(self) -> SimStats:
        return self._ctx.stats

    @property
    def requests(self) -> deque[SimRequest]:
        """The most recent requests received, oldest first."""
        return self._ctx.recent

    def update_model(self, name: str, /, **fields: Any) -> SimModel:
        """Change one model's settings while serving; the next request sees them. Returns the model.

        ``fields`` are :data:`~switchboard.sim.fleet.TUNABLE_FIELDS`, values as in a fleet file. An unknown
        model raises ``KeyError``, a bad field or value :class:`FleetError`; the fleet is then unchanged::

            sim.update_model("sim-claude", failure_rate=0.2, failure_modes=["529", "reset"])
        """
        fleet = self._ctx.fleet.tune(name, fields)
        self._ctx.fleet = fleet
        model = fleet.get(name)
        assert model is not None  # tune raised KeyError otherwise
        return model

    def reseed(self, seed: int) -> None:
        """Restart the failure-injection RNG from ``seed``."""
        self._ctx.scripts.rng.seed(seed)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SimServer is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self._host if self._host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        router = _Router(self._ctx, self.update_model)
        ctx = self._ctx
        self._server = await loop.create_server(
            lambda: HttpConnection(router, ctx.stats, self._connections, ctx.recent),
            self._host,
            self._requested_port,
            backlog=4096,
            reuse_port=self._reuse_port or None,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection, hanging ones included."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [t for conn in list(self._connections) if (t := conn.close()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# -- command line -----------------------------------------------------------------------------------------


def _describe(fleet: Fleet, base_url: str) -> str:
    lines = [
        f"switchboard sim serving on {base_url}",
        f"  OpenAI:    {base_url}/v1",
        f"  Anthropic: {base_url}",
        f"  Gemini:    {base_url}/v1beta",
        "models:",
    ]
    for m in fleet:
        aliases = f"  (aliases: {', '.join(m.aliases)})" if m.aliases else ""
        lines.append(f"  {m.name:<20} {m.format:<9} {m.kind:<9}{aliases}")
    return "\n".join(lines)


async def _serve(fleet: Fleet, host: str, port: int, seed: int | None, reuse_port: bool, announce: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with SimServer(fleet, host, port, seed=seed, reuse_port=reuse_port) as sim:
        if announce:
            print(_describe(fleet, sim.base_url), flush=True)
        await stop.wait()


def _run(fleet: Fleet, host: str, port: int, seed: int | None, reuse_port: bool, announce: bool) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(fleet, host, port, seed, reuse_port, announce))
    else:
        uvloop.run(_serve(fleet, host, port, seed, reuse_port, announce))


def main(argv: list[str] | None = None) -> int:
    """``switchboard sim``: serve the simulated providers until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="switchboard sim",
        description="Serve simulated OpenAI, Anthropic and Gemini endpoints for a fleet of fake models.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--fleet", metavar="PATH", help="fleet YAML file (default: the built-in fleet)")
    parser.add_argument("--seed", type=int, default=None, help="seed for injected failures")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    try:
        fleet = load_fleet(args.fleet) if args.fleet else DEFAULT_FLEET
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.workers > 1 and args.port == 0:
        parser.error("--workers > 1 needs a fixed --port")
    reuse = args.workers > 1
    procs = [
        multiprocessing.get_context("spawn").Process(
            target=_run, args=(fleet, args.host, args.port, args.seed, True, False), daemon=True
        )
        for _ in range(args.workers - 1)
    ]
    for p in procs:
        p.start()
    try:
        _run(fleet, args.host, args.port, args.seed, reuse, True)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)
    return 0
