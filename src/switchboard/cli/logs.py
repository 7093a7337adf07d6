"""``switchboard logs``: look at recorded requests — a table for people, JSON lines for tools.

Rows print oldest first, so the newest is at the bottom and ``--follow`` continues below it.

Usage::

    switchboard logs --since 1h --model fast --errors
    switchboard logs --request-id req_01J… --json
    switchboard logs -f
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import TextIO

import orjson

from switchboard.storage.records import FollowableReader, RecordQuery, RecordStoreError, open_reader
from switchboard.telemetry.record import Attempt, RequestRecord

__all__ = ["add_parser", "follow", "format_header", "format_record", "parse_time", "run"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_FOLLOW_BATCH = 1000
_WIDTH = 120

# (header, width, align) — 119 characters with two-space gaps: fits a 120-column terminal.
_TABLE = (
    ("TIME", 14, "<"),
    ("REQUEST ID", 22, "<"),
    ("MODEL → DEPLOYMENT", 26, "<"),
    ("STATUS", 6, "<"),
    ("LAT ms", 8, ">"),
    ("TTFT ms", 7, ">"),
    ("TOKENS IN/OUT", 13, ">"),
    ("COST $", 9, ">"),
)


def parse_time(text: str, *, now: float) -> float:
    """A point in time as unix seconds: a duration back from ``now`` (``15m``, ``2h``, ``1d``,
    ``1h30m``; units s m h d w) or an ISO 8601 timestamp (local time unless it carries an offset)."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        return now - sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError(
            f"expected a duration like 15m, 2h or 1d, or an ISO timestamp like 2025-01-31T09:00, got {text!r}"
        ) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "logs",
        help="show recorded requests",
        description="Show recorded requests, oldest first (newest at the bottom).",
    )
    p.add_argument("--db", default="switchboard.db",
                   help="the records: a SQLite file (default: switchboard.db) or a postgresql:// URL")
    p.add_argument("--schema", default="public", help="the PostgreSQL schema of the records (default: public)")
    p.add_argument("--since", type=_time_arg, help="from this time: 15m, 2h, 1d or an ISO timestamp")
    p.add_argument("--until", type=_time_arg, help="before this time (same forms as --since)")
    p.add_argument("--model", help="only this public model name")
    p.add_argument("--router", help="only requests to this router")
    p.add_argument("--deployment", help="only this deployment id (e.g. openai/gpt-4o-mini)")
    p.add_argument("--status", type=int, help="only this HTTP status")
    p.add_argument("--errors", action="store_true", help="only failures (status >= 400 or a cut stream)")
    p.add_argument("--caller", help="only this caller")
    p.add_argument("--request-id", help="only this request id")
    p.add_argument("--limit", type=_limit_arg, default=50, help="the newest N records (default: 50; 0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with attempts")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing records as they are written")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        reader = open_reader(args.db, schema=args.schema)
    except FileNotFoundError:
        print(
            f"switchboard logs: no records database at {args.db}\n"
            "  `switchboard serve` writes one there when records are enabled; use --db to point at another.",
            file=sys.stderr,
        )
        return 1
    except RecordStoreError as exc:
        print(f"switchboard logs: {exc}", file=sys.stderr)
        return 1
    q = RecordQuery(
        since=args.since,
        until=args.until,
        public_model=args.model,
        deployment=args.deployment,
        status=args.status,
        only_errors=args.errors,
        caller=args.caller,
        request_id=args.request_id,
        router=args.router,
        limit=args.limit or None,
    )
    out = sys.stdout
    emit = _json_lines if args.json else _table_lines
    try:
        with reader:
            if not args.follow:
                records = reader.query(q)
                if not records and not args.json:
                    print("no matching records", file=sys.stderr)
                _write(out, emit(reversed(records), header=True))
                return 0
            records, position = reader.query_and_position(q)
            _write(out, emit(reversed(records), header=True))
            for batch in follow(reader, q, position, interval=args.interval):
                _write(out, emit(batch, header=False))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `switchboard logs | head`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def follow(
    reader: FollowableReader,
    q: RecordQuery,
    position: int,
    *,
    interval: float = 1.0,
    wait: Callable[[float], None] = time.sleep,
) -> Iterator[list[RequestRecord]]:
    """Yield the records matching ``q`` written after ``position``, batch by batch, forever.

    Between empty polls it calls ``wait(interval)``.
    """
    q = replace(q, limit=_FOLLOW_BATCH)
    while True:
        records, position = reader.query_after(position, q)
        if records:
            yield records
        if len(records) < _FOLLOW_BATCH:
            wait(interval)


def format_header() -> str:
    return "  ".join(f"{name:{align}{width}}" for name, width, align in _TABLE).rstrip()


def format_record(r: RequestRecord) -> list[str]:
    """One table row for ``r``, plus an indented line for its error and one for its attempts when
    it took more than one."""
    cells = (
        time.strftime("%m-%d %H:%M:%S", time.localtime(r.started_at)),
        _clip_middle(r.request_id, _TABLE[1][1]),
        _route(r.public_model or "?", r.deployment or "-", _TABLE[2][1]),
        f"{r.status}*" if r.partial else str(r.status),
        f"{r.latency_ms:.0f}",
        "-" if r.ttft_ms is None else f"{r.ttft_ms:.0f}",
        f"{r.input_tokens}/{r.output_tokens}",
        _cost(r.cost_usd),
    )
    row = "  ".join(f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, _TABLE, strict=True))
    lines = [row.rstrip()]
    if r.error_type or r.error_message or r.partial:
        what = ": ".join(filter(None, (r.error_type, r.error_message))) or "error"
        prefix = "stream cut after content — " if r.partial else ""
        lines.append(_clip(f"    ↳ {prefix}{what}".replace("\n", " "), _WIDTH))
    if len(r.attempts) > 1 or (r.attempts and r.attempts[0].outcome != "ok"):
        steps = " → ".join(_step(a, r.public_model) for a in r.attempts)
        lines.append(_clip(f"    ↳ attempts: {steps}".replace("\n", " "), _WIDTH))
    if r.unsatisfactory:
        lines.append(_clip(f"    ↳ every answer failed validation; delivered anyway: {r.unsatisfactory}", _WIDTH))
    if r.router is not None and r.route is not None:
        last = (r.route.get("steps") or [{}])[-1]
        why = last.get("outcome", "") if isinstance(last, dict) else ""
        lines.append(_clip(f"    ↳ router {r.router}: {why}".replace("\n", " "), _WIDTH))
    return lines


def _step(a: Attempt, public_model: str | None) -> str:
    """``deployment outcome(reason) 12ms``, marking hedges and attempts on a fallback model."""
    what = a.outcome if a.outcome == "ok" or not (a.reason or a.error) else (
        f"{a.outcome}({a.reason})" if a.reason else a.error or a.outcome)
    extras = "".join((" hedge" if a.hedge else "", f" via {a.model}" if a.model and a.model != public_model else ""))
    return f"{a.deployment} {what}{extras} {a.latency_ms:.0f}ms"


def _table_lines(records: Iterable[RequestRecord], *, header: bool) -> Iterator[str]:
    if header:
        yield format_header()
    for record in records:
        yield from format_record(record)


def _json_lines(records: Iterable[RequestRecord], *, header: bool) -> Iterator[str]:
    for record in records:
        yield orjson.dumps(record).decode()


def _write(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")
    out.flush()


def _route(model: str, deployment: str, width: int) -> str:
    """``model → deployment`` in ``width`` characters: a part that fits whole stays whole."""
    room = width - 3
    if len(model) + len(deployment) > room:
        half = room // 2
        if len(model) <= half:
            deployment = _clip_middle(deployment, room - len(model))
        elif len(deployment) <= room - half:
            model = _clip(model, room - len(deployment))
        else:
            model, deployment = _clip(model, half), _clip_middle(deployment, room - half)
    return f"{model} → {deployment}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clip_middle(text: str, width: int) -> str:
    # Ids differ at both ends (time-ordered prefix, random suffix): keep both.
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _cost(usd: float) -> str:
    if usd == 0:
        return "0"
    return f"{usd:.4f}" if usd >= 1 else f"{usd:.6f}"


def _time_arg(text: str) -> float:
    try:
        return parse_time(text, now=time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (all) or more")
    return value
