"""``switchboard route explain``: how a request would be routed — the router's stages, scores and ranking,
and the deployment order — without calling any upstream.

Usage::

    switchboard route explain --model auto "Write a haiku about the sea"
    switchboard route explain --config switchboard.yaml --model auto --tools --user alice --json "…"
    switchboard route explain --request body.json        # an OpenAI chat-completions body
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from switchboard.config.load import ConfigError, load_config, parse_config
from switchboard.config.model import Config
from switchboard.errors import SwitchboardError

__all__ = ["add_parser", "config_for_cli", "run_explain"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("route", help="explain routing decisions")
    route_sub = p.add_subparsers(dest="route_command", metavar="SUBCOMMAND", required=True)
    e = route_sub.add_parser("explain", help="show how a request would be routed, calling no upstream")
    e.add_argument("text", nargs="?", help="the user message (or use --request)")
    e.add_argument("--config", help="configuration file (default: ./switchboard.yaml, else the simulated fleet)")
    e.add_argument("--model", help="the model or router the request names")
    e.add_argument("--request", help="a JSON file holding an OpenAI chat-completions request body")
    e.add_argument("--system", help="a system message")
    e.add_argument("--user", help="the caller (the request's user field)")
    e.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="request metadata")
    e.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="a request header")
    e.add_argument("--tools", action="store_true", help="the request offers a tool")
    e.add_argument("--json-mode", action="store_true", help="the request asks for a JSON object")
    e.add_argument("--json", action="store_true", help="print the explanation as JSON")
    e.set_defaults(run=run_explain)


def config_for_cli(path: str | None) -> Config:
    """The configuration a command that calls no upstream works with: ``path``, else ./switchboard.yaml,
    else the simulated fleet (with its demo router)."""
    if path is not None:
        return load_config(path, env=os.environ)
    if Path("switchboard.yaml").is_file():
        return load_config("switchboard.yaml", env=os.environ)
    from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet

    # Nothing is sent upstream, so the simulated fleet needs no server here.
    raw = gateway_config_for_fleet(DEFAULT_FLEET, "http://127.0.0.1:9")
    raw["routers"] = demo_router(DEFAULT_FLEET)
    raw["records"] = {"enabled": False}
    return parse_config(raw, env=os.environ, source="simulated fleet")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.request is not None:
        data = orjson.loads(Path(args.request).read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"{args.request}: expected a JSON object")
        if args.model:
            data["model"] = args.model
        return data
    if not args.text or not args.model:
        raise ValueError("give --model and the message text, or --request FILE")
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.text})
    body: dict[str, Any] = {"model": args.model, "messages": messages}
    if args.user:
        body["user"] = args.user
    if args.metadata:
        body["metadata"] = dict(_pair(m, "=") for m in args.metadata)
    if args.tools:
        body["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    if args.json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


def _pair(text: str, sep: str) -> tuple[str, str]:
    key, found, value = text.partition(sep)
    if not found or not key.strip():
        raise ValueError(f"expected NAME{sep}VALUE, got {text!r}")
    return key.strip(), value.strip()


def run_explain(args: argparse.Namespace) -> int:
    from switchboard.gateway import Gateway, RequestContext
    from switchboard.ingress.openai_wire import parse_chat_request
    from switchboard.routing.explain import explanation, render_text

    try:
        cfg = config_for_cli(args.config)
        body = _body(args)
        headers = {k.lower(): v for k, v in (_pair(h, ":") for h in args.header)}
        request = parse_chat_request(body)
    except (ConfigError, ValueError, OSError, orjson.JSONDecodeError) as exc:
        print(f"switchboard route explain: {exc}", file=sys.stderr)
        return 2
    except SwitchboardError as exc:
        print(f"switchboard route explain: {exc.message}", file=sys.stderr)
        return 2

    async def explain() -> Any:
        async with Gateway(cfg) as gw:
            ctx = RequestContext.create(endpoint="chat", client_headers=headers, caller=request.user)
            return await gw.plan(request, ctx)

    try:
        plan = asyncio.run(explain())
    except SwitchboardError as exc:
        print(f"switchboard route explain: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(explanation(plan), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_text(plan))
    return 0
