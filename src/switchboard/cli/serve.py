"""``switchboard serve``: start the gateway.

Configuration comes from ``--config``, else ``./switchboard.yaml``, else provider keys in the
environment, else the simulated fleet (started in-process on a free port) — and the banner says which.

Usage::

    switchboard serve --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard import __version__
from switchboard.config.load import ConfigError, config_from_environment, load_config, parse_config
from switchboard.config.model import Config
from switchboard.telemetry.logs import install_redaction

__all__ = ["ResolvedConfig", "add_parser", "banner", "resolve_config", "run", "tune_gc"]



def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="start the gateway")
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--config", help="YAML configuration (default: ./switchboard.yaml if present)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


@dataclass(slots=True)
class ResolvedConfig:
    """The configuration in force, where it came from (``file:PATH``, ``env``, ``sim:URL``) and,
    in simulated mode, the running simulator thread."""

    config: Config
    source: str
    sim: _SimThread | None = None


class _SimThread:
    """The simulated fleet, served from a background thread with its own event loop."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="switchboard-sim", daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the simulated fleet could not start: {self._error}")
        return self.base_url

    def _main(self) -> None:
        from switchboard.sim.fleet import DEFAULT_FLEET
        from switchboard.sim.server import SimServer

        async def serve() -> None:
            async with SimServer(DEFAULT_FLEET, host="127.0.0.1", port=0) as sim:
                self.base_url = sim.base_url
                self._ready.set()
                await asyncio.Event().wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()


def resolve_config(path: str | None, env: Mapping[str, str]) -> ResolvedConfig:
    """Find the configuration: explicit file, ./switchboard.yaml, environment keys, or the sim fleet."""
    if path is not None:
        return ResolvedConfig(load_config(path, env=env), f"file:{Path(path).resolve()}")
    if Path("switchboard.yaml").is_file():
        return ResolvedConfig(load_config("switchboard.yaml", env=env), f"file:{Path('switchboard.yaml').resolve()}")
    cfg = config_from_environment(env)
    if cfg is not None:
        return ResolvedConfig(cfg, "env")
    sim = _SimThread()
    url = sim.start()
    return ResolvedConfig(_sim_config(url, env), f"sim:{url}", sim)


def _sim_config(url: str, env: Mapping[str, str]) -> Config:
    from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet

    raw = gateway_config_for_fleet(DEFAULT_FLEET, url)
    raw["routers"] = demo_router(DEFAULT_FLEET)
    return parse_config(raw, env=env, source="simulated fleet")


def _with_overrides(cfg: Config, host: str | None, port: int | None, workers: int | None) -> Config:
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if workers is not None:
        update["workers"] = workers
    if not update:
        return cfg
    return cfg.model_copy(update={"server": cfg.server.model_copy(update=update)})


def banner(resolved: ResolvedConfig) -> str:
    """The start-up banner: where the configuration came from and what is served."""
    cfg = resolved.config
    url = f"http://{cfg.server.host}:{cfg.server.port}"
    lines = [f"Switchboard {__version__} — listening on {url} ({cfg.server.workers} worker(s))"]
    src = resolved.source
    if src.startswith("sim:"):
        lines += [
            "Configuration: SIMULATED FLEET — no switchboard.yaml and no provider keys were found.",
            f"  Answers come from Switchboard's simulated providers at {src[4:]}, not from a real model.",
            "  To use a real provider: export OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY,",
            "  or SWITCHBOARD_OPENAI_COMPATIBLE_URL + SWITCHBOARD_OPENAI_COMPATIBLE_MODELS for vLLM/Ollama,",
            "  or write switchboard.yaml (see docs/configuration.md), then restart.",
        ]
    elif src == "env":
        lines.append("Configuration: provider keys found in the environment ("
                     + ", ".join(sorted(cfg.providers)) + ")")
    else:
        lines.append(f"Configuration: {src[5:]}")
    lines.append("Models:")
    for name, model in cfg.models.items():
        alias = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        deps = ", ".join(d.id for d in model.deployments)
        lines.append(f"  {name}{alias} → {deps}")
    if cfg.routers:
        lines.append("Routers (pick the model per request; see: switchboard route explain):")
        for name, router in cfg.routers.items():
            alias = f" (aliases: {', '.join(router.aliases)})" if router.aliases else ""
            lines.append(f"  {name}{alias} → {', '.join(router.models)}")
    rec = cfg.records
    where = rec.path if rec.backend == "sqlite" else f"PostgreSQL, schema {rec.schema_name}"
    lines.append(f"Request records: {where if rec.enabled else 'off'}"
                 + (" (see: switchboard logs)" if rec.enabled else ""))
    if cfg.tracing.enabled:
        lines.append(f"Traces: OTLP to {cfg.tracing.endpoint} (sampling {cfg.tracing.sample_ratio:g} of requests "
                     "without a traceparent)")
    first_chat = next(iter(cfg.routers), None) or next((n for n, m in cfg.models.items() if m.kind == "chat"), None)
    if first_chat:
        body = f'{{"model": "{first_chat}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
        lines.append(f"Try: curl {url}/v1/chat/completions -H 'content-type: application/json' -d '{body}'")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        resolved = resolve_config(args.config, os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    cfg = _with_overrides(resolved.config, args.host, args.port, args.workers)
    if cfg.server.workers > 1 and cfg.auth.virtual_keys and cfg.limits.backend == "memory":
        print("virtual keys with several workers need a shared limits store: with limits.backend memory each "
              "worker would count limits and budgets of its own. Set limits.backend: redis, or run one worker.",
              file=sys.stderr)
        return 1
    resolved.config = cfg
    raise_open_file_limit()  # before the workers fork: they inherit it
    try:
        sock = _listen(cfg.server.host, cfg.server.port)
    except OSError as exc:
        print(f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(banner(resolved), file=sys.stderr, flush=True)
    if cfg.server.workers == 1:
        return _worker(cfg, sock)
    # Pre-fork: every worker accepts on the same listening socket; the parent only supervises. The
    # workers share their metrics through a directory, so any of them answers /metrics for all.
    metrics_dir = Path(tempfile.mkdtemp(prefix="switchboard-metrics-"))
    children: list[int] = []
    for _ in range(cfg.server.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _worker(cfg, sock, metrics_dir)
            except BaseException:  # said before the process ends: os._exit would swallow it
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        children.append(pid)
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    running = set(children)
    while running:
        pid, status = os.wait()
        running.discard(pid)
        code = os.waitstatus_to_exitcode(status) if status else 0
        worst = max(worst, code)
        if code and not stopping:
            # A worker that failed (at start-up, say) must not leave a server that looks up but is short of
            # workers: stop the others and exit with its code.
            print(f"worker {pid} exited with code {code}; stopping the other workers", file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return worst


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


_MAX_OPEN_FILES = 2**20  # Linux's default ceiling (fs.nr_open)


def raise_open_file_limit() -> tuple[int, int]:
    """Let the process open as many files as the system allows it: the soft ``RLIMIT_NOFILE`` (often 1,024)
    raised to the hard one, at most 2**20. Every client connection and every upstream connection takes a file
    descriptor, so a busy gateway would otherwise refuse connections long before it runs short of CPU.
    Returns the soft limit before and after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _MAX_OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # a container may forbid it: keep what there is
        return soft, soft
    return soft, target


def tune_gc(threshold: int) -> None:
    """Set up Python's cycle collector for a worker that has started: what start-up built (configuration,
    routers, models, modules) is frozen, so that full collections no longer walk it, and the youngest
    generation is collected after ``threshold`` net container allocations (0: Python's own setting).

    With Python's defaults a worker at 64 requests in flight spent about a tenth of its CPU in the collector,
    most of it in full collections over start-up objects; request data is freed by reference counting, not
    by the collector. Usage: ``tune_gc(cfg.server.gc_threshold)`` once the worker is ready.
    """
    gc.collect()  # what start-up left as garbage goes now, not frozen with the rest
    gc.freeze()
    if threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def _worker(cfg: Config, sock: socket.socket, metrics_dir: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT in this process: the app, its lifespan, graceful drain."""
    from switchboard.app import create_app
    from switchboard.server import serve

    app = create_app(cfg, metrics_dir=metrics_dir)

    def ready() -> None:
        tune_gc(cfg.server.gc_threshold)
        # One write, so that the lines of workers starting together never interleave.
        sys.stderr.write(f"Switchboard worker {os.getpid()} ready\n")
        sys.stderr.flush()

    coro = serve(app, sock=sock, max_body=cfg.server.max_body_bytes, drain_timeout=cfg.server.drain_timeout,
                 keep_alive=cfg.server.keep_alive_timeout, on_ready=ready, on_stop=app.start_draining,
                 rejection=app.render_rejection)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0
