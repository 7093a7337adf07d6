"""``switchboard router replay``: run the recorded requests of a time window through a candidate policy
and report how its choices, cost and predicted quality differ from what was served.

Usage::

    switchboard router replay --config candidate.yaml --router auto --since 24h
    switchboard router replay --config candidate.yaml --router auto --as auto-v2 --db switchboard.db --json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from typing import Any

import orjson

from switchboard.config.load import ConfigError, load_config

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``replay`` under the ``router`` command's subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="route recorded requests again with a candidate policy, calling no upstream")
    p.add_argument("--config", required=True, help="the configuration holding the candidate router")
    p.add_argument("--router", required=True, help="the router whose recorded requests to replay")
    p.add_argument("--as", dest="candidate", help="the candidate router's name in --config (default: --router)")
    p.add_argument("--db", default="switchboard.db",
                   help="the records: a SQLite file (default: switchboard.db) or a postgresql:// URL")
    p.add_argument("--schema", default="public", help="the PostgreSQL schema of the records (default: public)")
    p.add_argument("--since", default="24h", help="from this time: 15m, 2h, 1d or an ISO timestamp (default 24h)")
    p.add_argument("--until", help="before this time (same forms as --since)")
    p.add_argument("--limit", type=int, default=None, help="at most this many records (the newest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bandit's draws (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from switchboard.cli.logs import parse_time
    from switchboard.eval.replay import replay
    from switchboard.gateway import Gateway
    from switchboard.storage.records import RecordQuery, RecordStoreError, open_reader

    def fail(message: str) -> int:
        print(f"switchboard router replay: {message}", file=sys.stderr)
        return 2

    try:
        now = time.time()
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now) if args.until else None
        cfg = load_config(args.config, env=os.environ)
    except ValueError as exc:
        return fail(str(exc))
    except ConfigError as exc:
        return fail(str(exc))
    name = args.candidate or args.router
    if name not in cfg.routers:
        return fail(f"{args.config} has no router named {name!r} (it has: {', '.join(cfg.routers) or 'none'})")
    try:
        with open_reader(args.db, schema=args.schema) as reader:
            records = reader.query(RecordQuery(since=since, until=until, router=args.router, limit=args.limit))
    except RecordStoreError as exc:
        return fail(str(exc))
    records.reverse()  # oldest first, as the traffic came

    async def go() -> Any:
        gateway = Gateway(cfg, rng=random.Random(args.seed))
        try:
            return await replay(records, gateway, name)
        finally:
            await gateway.aclose()

    report = asyncio.run(go())
    if args.json:
        sys.stdout.write(orjson.dumps(report.summary(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.render_text())
    return 0
