"""``switchboard serve``: start the gateway.

Configuration comes from ``--config``, else ``./switchboard.yaml``, else provider keys in the
environment, else the simulated fleet (started in-process on a free port) — and the banner says which.

Usage::

    switchboard serve --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard import __version__
from switchboard.config.load import ConfigError, config_from_environment, load_config, parse_config
from switchboard.config.model import Config

__all__ = ["ResolvedConfig", "add_parser", "resolve_config", "run", "worker_app"]

# How the parent process tells worker processes where their configuration comes from.
_SOURCE_VAR = "SWITCHBOARD_CONFIG_SOURCE"
_HOST_VAR = "SWITCHBOARD_HOST"
_PORT_VAR = "SWITCHBOARD_PORT"


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


def resolve_config(path: str | None, env: Mapping[str, str], *, start_sim: bool = True) -> ResolvedConfig:
    """Find the configuration: explicit file, ./switchboard.yaml, environment keys, or the sim fleet."""
    source = env.get(_SOURCE_VAR)
    if source and path is None:
        return _from_source(source, env)
    if path is not None:
        return ResolvedConfig(load_config(path, env=env), f"file:{Path(path).resolve()}")
    if Path("switchboard.yaml").is_file():
        return ResolvedConfig(load_config("switchboard.yaml", env=env), f"file:{Path('switchboard.yaml').resolve()}")
    cfg = config_from_environment(env)
    if cfg is not None:
        return ResolvedConfig(cfg, "env")
    if not start_sim:
        raise ConfigError([("(root)", "no configuration found")], "configuration")
    sim = _SimThread()
    url = sim.start()
    return ResolvedConfig(_sim_config(url, env), f"sim:{url}", sim)


def _sim_config(url: str, env: Mapping[str, str]) -> Config:
    from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet

    return parse_config(gateway_config_for_fleet(DEFAULT_FLEET, url), env=env, source="simulated fleet")


def _from_source(source: str, env: Mapping[str, str]) -> ResolvedConfig:
    if source.startswith("file:"):
        return ResolvedConfig(load_config(source[5:], env=env), source)
    if source.startswith("sim:"):
        return ResolvedConfig(_sim_config(source[4:], env), source)
    cfg = config_from_environment(env)
    if cfg is None:
        raise ConfigError([("(environment)", "provider keys disappeared")], "environment")
    return ResolvedConfig(cfg, source)


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
    rec = cfg.records
    lines.append(f"Request records: {rec.path if rec.enabled else 'off'}"
                 + (" (see: switchboard logs)" if rec.enabled else ""))
    first_chat = next((n for n, m in cfg.models.items() if m.kind == "chat"), None)
    if first_chat:
        body = f'{{"model": "{first_chat}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
        lines.append(f"Try: curl {url}/v1/chat/completions -H 'content-type: application/json' -d '{body}'")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        resolved = resolve_config(args.config, os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    cfg = _with_overrides(resolved.config, args.host, args.port, args.workers)
    resolved.config = cfg
    print(banner(resolved), file=sys.stderr, flush=True)
    common: dict[str, Any] = {
        "host": cfg.server.host, "port": cfg.server.port, "loop": "uvloop", "http": "httptools",
        "lifespan": "on", "access_log": False, "log_level": args.log_level, "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": cfg.server.drain_timeout,
    }
    if cfg.server.workers > 1:
        if resolved.sim is not None:
            print("note: with several workers the simulated fleet runs in the parent process", file=sys.stderr)
        os.environ[_SOURCE_VAR] = resolved.source
        os.environ[_HOST_VAR] = cfg.server.host
        os.environ[_PORT_VAR] = str(cfg.server.port)
        uvicorn.run("switchboard.cli.serve:worker_app", factory=True, workers=cfg.server.workers, **common)
        return 0
    from switchboard.app import create_app

    uvicorn.run(create_app(cfg), **common)
    return 0


def worker_app() -> Any:
    """The app factory a worker process calls (configuration handed over by the parent)."""
    from switchboard.app import create_app

    env = os.environ
    resolved = resolve_config(None, env, start_sim=False)
    cfg = _with_overrides(resolved.config, env.get(_HOST_VAR), int(env.get(_PORT_VAR, "8080")), None)
    return create_app(cfg)
