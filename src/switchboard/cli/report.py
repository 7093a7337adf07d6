"""``switchboard report``: traffic, latency, errors, fallbacks, tokens, cost and savings against a reference
model, per group, from the request records — a table, or CSV / JSON to export.

Usage::

    switchboard report --since 7d --by public_model --reference gpt-4.1
    switchboard report --since 24h --by router --csv > routers.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from switchboard.config.load import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("report", help="analytics and savings from the request records")
    p.add_argument("--db", default="switchboard.db",
                   help="the records: a SQLite file (default: switchboard.db) or a postgresql:// URL")
    p.add_argument("--schema", default="public", help="the PostgreSQL schema of the records (default: public)")
    p.add_argument("--since", default="24h", help="from this time: 15m, 2h, 1d or an ISO timestamp (default 24h)")
    p.add_argument("--until", help="before this time (same forms as --since)")
    p.add_argument("--by", default="public_model",
                   help="group by public_model, deployment, provider, router, caller, tag, endpoint, status or none")
    p.add_argument("--reference", help="a model of the configuration: what every request would have cost there")
    p.add_argument("--config", help="the configuration pricing --reference (default: ./switchboard.yaml, else "
                                    "the simulated fleet)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV, one row per group")
    out.add_argument("--json", action="store_true", help="JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from switchboard.cli.logs import parse_time
    from switchboard.cli.route import config_for_cli
    from switchboard.storage.records import RecordQuery, RecordStoreError, open_reader
    from switchboard.telemetry.analytics import GROUPINGS, analyze, render_csv, render_table

    def fail(message: str) -> int:
        print(f"switchboard report: {message}", file=sys.stderr)
        return 2

    if args.by not in GROUPINGS:
        return fail(f"cannot group by {args.by!r} (choose from {', '.join(GROUPINGS)})")
    try:
        now = time.time()
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now) if args.until else None
    except ValueError as exc:
        return fail(str(exc))
    reference = None
    if args.reference is not None:
        try:
            cfg = config_for_cli(args.config)
        except ConfigError as exc:
            return fail(str(exc))
        reference = cfg.models.get(args.reference)
        if reference is None:
            return fail(f"no model named {args.reference!r} in the configuration to price the reference with")
    try:
        with open_reader(args.db, schema=args.schema) as reader:
            records = reader.query(RecordQuery(since=since, until=until, limit=None))
    except RecordStoreError as exc:
        return fail(str(exc))
    report = analyze(records, by=args.by, reference=reference, reference_name=args.reference)
    if args.json:
        body = {"by": report.by, "reference": report.reference, "since": since, "until": until,
                "groups": [g.as_dict() for g in report.groups], "total": report.total.as_dict()}
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.csv:
        sys.stdout.write(render_csv(report))
    else:
        print(render_table(report))
    return 0
