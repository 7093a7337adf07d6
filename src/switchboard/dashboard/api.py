"""The dashboard's HTTP surface: the static page and its read-only JSON API over the request records.

Everything answers 404 while no ``admin.key`` is configured. The static files (which carry no data) load
without a credential; every ``/dashboard/api/…`` call needs ``Authorization: Bearer <admin.key>``.
Record queries and the arithmetic over them run in a worker thread, never on the event loop; breaker
state is read on the loop, which owns it.

Usage::

    dashboard = Dashboard(config, gateway.breakers, records)
    response = await dashboard.handle("GET", "/dashboard/api/summary", "since=1h&by=router", headers)
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import orjson

from switchboard.config.model import Config
from switchboard.errors import AuthenticationFailed, InvalidRequest, MethodNotAllowed, NotFound
from switchboard.execution.breaker import BreakerBoard
from switchboard.storage.records import RecordQuery
from switchboard.telemetry.analytics import GROUPINGS, Group, analyze, csv_of
from switchboard.telemetry.record import RequestRecord

__all__ = ["SECURITY_HEADERS", "Dashboard", "Response", "parse_bucket", "parse_since"]

Headers = list[tuple[bytes, bytes]]
Query = Callable[[RecordQuery], list[RequestRecord]]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "app.css": "text/css; charset=utf-8"}
MAX_SCAN = 200_000
"""At most this many records (the newest) feed one summary, time series or health figure."""
SEARCH_SCAN = 5_000
"""A text search or status filter looks through at most this many of the newest records in the window."""
HEALTH_WINDOW = 300.0
MAX_BUCKETS = 720
_OTHER = "(other)"
_TOP_MODELS = 7
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NICE_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)


@dataclass(frozen=True, slots=True)
class Response:
    """What the app sends back: status, body and the headers (content type and security headers included)."""

    status: int
    body: bytes
    headers: Headers


def parse_since(text: str | None, *, now: float, default: str = "1h", param: str = "since") -> float:
    """The start (or end) of a window: a duration back from ``now`` (``15m``, ``24h``, ``7d``, ``1h30m``) or
    unix seconds."""
    value = (text or default).strip()
    if _DURATION.fullmatch(value):
        return now - sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    try:
        ts = float(value)
    except ValueError:
        ts = math.nan
    if not math.isfinite(ts) or ts < 0:
        raise InvalidRequest(f"{param} must be a duration like 15m, 1h or 7d, or unix seconds; got {value!r}.",
                             param=param)
    return ts


def parse_bucket(text: str | None, span: float) -> int:
    """Bucket width in seconds: ``auto`` (about 60 buckets over ``span``), a duration, or whole seconds."""
    value = (text or "auto").strip()
    if value == "auto":
        return next((b for b in _NICE_BUCKETS if span / b <= 60), _NICE_BUCKETS[-1])
    if _DURATION.fullmatch(value):
        width = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    elif value.isdigit():
        width = float(value)
    else:
        raise InvalidRequest(f"bucket must be auto, a duration like 5m, or seconds; got {value!r}.", param="bucket")
    if width < 1 or span / width > MAX_BUCKETS:
        raise InvalidRequest(f"bucket {value!r} gives more than {MAX_BUCKETS} buckets over this window.",
                             param="bucket")
    return int(width)


class Dashboard:
    """Serves ``/dashboard`` (the page) and ``/dashboard/api/…`` (its data).

    ``records`` is the app's record store; anything with ``query(RecordQuery)`` can be read (SQLite,
    Postgres). Without one the record views answer 404 and the health view shows breakers only.
    """

    def __init__(self, config: Config, breakers: BreakerBoard, records: object | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._key = config.admin.key.get_secret_value().encode() if config.admin.key is not None else None
        self._breakers = breakers
        query = getattr(records, "query", None)
        self._query: Query | None = query if callable(query) else None
        self._clock = clock
        self._assets: dict[str, bytes] = {}
        self._routers = set(config.routers) | {a for r in config.routers.values() for a in r.aliases}

    @property
    def enabled(self) -> bool:
        """Whether an admin key is configured (without one every dashboard path answers 404)."""
        return self._key is not None

    async def handle(self, method: str, path: str, query_string: str, headers: Mapping[str, str]) -> Response:
        """Answer one request under ``/dashboard``; errors are raised as :class:`SwitchboardError`."""
        if self._key is None:
            raise NotFound(f"Unknown endpoint: {method} {path}")
        if method != "GET":
            raise MethodNotAllowed(f"Method {method} is not allowed on {path}; the dashboard is read-only.",
                                   allow=("GET",))
        if path.startswith("/dashboard/api/"):
            self._authorize(headers, self._key)
            params = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
            fmt = params.get("format") or "json"
            if fmt not in ("json", "csv") or (fmt == "csv" and path != "/dashboard/api/summary"):
                raise InvalidRequest("format must be json, or csv for the summary; got " + repr(fmt) + ".",
                                     param="format")
            payload = await self._api(path.removeprefix("/dashboard/api/"), params)
            if fmt == "csv":
                return Response(200, csv_of([*payload["groups"], payload["total"]]).encode(), [
                    (b"content-type", b"text/csv; charset=utf-8"), (b"cache-control", b"no-store"),
                    (b"content-disposition", b'attachment; filename="switchboard-report.csv"'), *SECURITY_HEADERS])
            return Response(200, orjson.dumps(payload), [(b"content-type", b"application/json"),
                                                         (b"cache-control", b"no-store"), *SECURITY_HEADERS])
        name = path.removeprefix("/dashboard").lstrip("/") or "index.html"
        content_type = _STATIC.get(name)
        if content_type is None:
            raise NotFound(f"Unknown endpoint: {method} {path}")
        body = self._assets.get(name)
        if body is None:
            body = self._assets[name] = await asyncio.to_thread(_read_asset, name)
        return Response(200, body, [(b"content-type", content_type.encode()), (b"cache-control", b"no-cache"),
                                    *SECURITY_HEADERS])

    @staticmethod
    def _authorize(headers: Mapping[str, str], key: bytes) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # Compare even when the scheme is wrong, so the answer takes as long either way.
        ok = hmac.compare_digest(token.strip().encode("latin-1", "replace"), key)
        if not ok or scheme.lower() != "bearer":
            raise AuthenticationFailed("The dashboard API needs the admin key: send Authorization: Bearer <admin.key>.")

    async def _api(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        now = self._clock()
        if name == "health":
            return await self._health(now)
        query = self._query
        if query is None:
            raise NotFound("Request records are disabled (records.enabled: false), so there is nothing to show.")
        if name == "summary":
            since = parse_since(params.get("since"), now=now)
            until = now
            if params.get("until"):
                until = parse_since(params["until"], now=now, param="until")
                if until <= since:
                    raise InvalidRequest("until must be later than since.", param="until")
            by = params.get("by") or "public_model"
            if by not in GROUPINGS:
                raise InvalidRequest(f"by must be one of {', '.join(GROUPINGS)}; got {by!r}.", param="by")
            return await asyncio.to_thread(self._summary, query, since, until, by, self._reference(params))
        if name == "timeseries":
            since = parse_since(params.get("since"), now=now)
            bucket = parse_bucket(params.get("bucket"), max(now - since, 1.0))
            return await asyncio.to_thread(self._timeseries, query, since, now, bucket, self._reference(params))
        if name == "requests":
            return await asyncio.to_thread(self._requests, query, self._request_filters(params, now), params)
        if name.startswith("requests/"):
            request_id = name.removeprefix("requests/")
            if not _REQUEST_ID.fullmatch(request_id):
                raise InvalidRequest("id must be 1–128 characters from A–Z a–z 0–9 . _ : -.", param="id")
            found = await asyncio.to_thread(query, RecordQuery(request_id=request_id, limit=1))
            if not found:
                raise NotFound(f"No request with id '{request_id}' is recorded.", param="id")
            return {"request": _record_json(found[0])}
        raise NotFound(f"Unknown dashboard API endpoint: {name}")

    # -- parameters ------------------------------------------------------------------------------

    def _reference(self, params: dict[str, str]) -> str | None:
        name = params.get("reference") or None
        if name is not None and name not in self._config.models:
            raise InvalidRequest(f"reference must be a model of the configuration; got {name!r}.", param="reference")
        return name

    def _request_filters(self, params: dict[str, str], now: float) -> RecordQuery:
        since = parse_since(params.get("since"), now=now)
        raw_limit = params.get("limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise InvalidRequest(f"limit must be a whole number from 1 to 500; got {raw_limit!r}.", param="limit")
        model = params.get("model") or None
        status = (params.get("status") or "all").lower()
        code: int | None = None
        if status.isdigit() and 100 <= int(status) <= 599:
            code = int(status)
        elif status not in ("all", "ok", "error"):
            raise InvalidRequest(f"status must be all, ok, error or an HTTP status; got {status!r}.", param="status")
        text = params.get("q") or ""
        if len(text) > 200:
            raise InvalidRequest("q must be at most 200 characters.", param="q")
        scan = SEARCH_SCAN if text or status == "ok" else int(raw_limit)
        is_router = model in self._routers
        return RecordQuery(since=since, public_model=None if is_router else model, router=model if is_router else None,
                           status=code, only_errors=status == "error", limit=scan)

    # -- views (run in a worker thread) ----------------------------------------------------------

    def _summary(self, query: Query, since: float, until: float, by: str, reference: str | None) -> dict[str, Any]:
        records = query(RecordQuery(since=since, until=until, limit=MAX_SCAN))
        ref = self._config.models[reference] if reference is not None else None
        report = analyze(records, by=by, reference=ref, reference_name=reference)
        return {"since": since, "until": until, "by": by, "reference": reference,
                "reference_choices": self._reference_choices(), "truncated": len(records) >= MAX_SCAN,
                "groups": [g.as_dict() for g in report.groups], "total": report.total.as_dict()}

    def _timeseries(self, query: Query, since: float, now: float, bucket: int,
                    reference: str | None) -> dict[str, Any]:
        records = query(RecordQuery(since=since, limit=MAX_SCAN))
        ref = self._config.models[reference] if reference is not None else None
        start = math.floor(since / bucket) * bucket
        count = max(1, math.ceil((now - start) / bucket))
        slots: list[list[RequestRecord]] = [[] for _ in range(count)]
        totals: dict[str, int] = {}
        for rec in records:
            index = min(count - 1, max(0, int((rec.started_at - start) // bucket)))
            slots[index].append(rec)
            model = rec.public_model or "(none)"
            totals[model] = totals.get(model, 0) + 1
        ranked = sorted(totals, key=lambda m: (-totals[m], m))
        shown = ranked if len(ranked) <= _TOP_MODELS + 1 else [*ranked[:_TOP_MODELS], _OTHER]
        buckets = []
        for i, slot in enumerate(slots):
            report = analyze(slot, by="public_model", reference=ref)
            by_model: dict[str, int] = {}
            for g in report.groups:
                key = g.key if g.key in shown else _OTHER
                by_model[key] = by_model.get(key, 0) + g.requests
            buckets.append({"t": start + i * bucket, **_bucket_figures(report.total), "by_model": by_model})
        return {"since": since, "until": now, "bucket_seconds": bucket, "reference": reference, "models": shown,
                "truncated": len(records) >= MAX_SCAN, "buckets": buckets}

    @staticmethod
    def _requests(query: Query, q: RecordQuery, params: dict[str, str]) -> dict[str, Any]:
        records = query(q)
        scanned = len(records)
        if (params.get("status") or "").lower() == "ok":
            records = [r for r in records if r.status < 400 and not r.partial]
        text = (params.get("q") or "").strip().lower()
        if text:
            records = [r for r in records if text in _haystack(r)]
        limit = int(params.get("limit") or "50")
        return {"requests": [_row(r) for r in records[:limit]], "scanned": scanned,
                "truncated": q.limit is not None and scanned >= q.limit and q.limit > limit}

    async def _health(self, now: float) -> dict[str, Any]:
        snapshots = self._breakers.snapshot()  # on the loop: the breakers belong to it
        mono = time.monotonic()
        recent: dict[str, list[int]] = {}
        if self._query is not None:
            recent = await asyncio.to_thread(_attempt_counts, self._query, now - HEALTH_WINDOW)
        seen: dict[str, dict[str, Any]] = {}
        for model_name, model in self._config.models.items():
            for dep in model.deployments:
                entry = seen.get(dep.id)
                if entry is not None:
                    entry["models"].append(model_name)
                    continue
                snap = snapshots.get(dep.id)
                calls, errors = recent.get(dep.id, [0, 0])
                seen[dep.id] = {
                    "deployment": dep.id, "provider": dep.provider, "upstream_model": dep.model,
                    "models": [model_name],
                    "state": snap.state if snap is not None else "closed",
                    "window_requests": snap.requests if snap is not None else 0,
                    "window_failures": snap.failures if snap is not None else 0,
                    "opened_count": snap.opened_count if snap is not None else 0,
                    "available_in_s": (max(0.0, snap.available_at - mono)
                                       if snap is not None and snap.available_at is not None else None),
                    "recent_attempts": calls, "recent_errors": errors,
                    "recent_error_rate": errors / calls if calls else None,
                }
        return {"window_seconds": HEALTH_WINDOW, "records": self._query is not None,
                "deployments": list(seen.values())}

    def _reference_choices(self) -> list[str]:
        chat = [(n, m) for n, m in self._config.models.items() if m.kind == "chat"]
        price = {n: min(d.price.input + d.price.output for d in m.deployments) for n, m in chat}
        return sorted(price, key=lambda n: (-price[n], n))


def _read_asset(name: str) -> bytes:
    return (resources.files("switchboard.dashboard") / "static" / name).read_bytes()


def _bucket_figures(g: Group) -> dict[str, Any]:
    return {"requests": g.requests, "errors": g.errors, "latency_p50_ms": g.latency_p50_ms,
            "latency_p95_ms": g.latency_p95_ms, "cost_usd": g.cost_usd, "savings_usd": g.savings_usd}


def _attempt_counts(query: Query, since: float) -> dict[str, list[int]]:
    """Deployment id → [attempts that reached it, attempts that failed] since ``since``."""
    out: dict[str, list[int]] = {}
    for rec in query(RecordQuery(since=since, limit=MAX_SCAN)):
        for a in rec.attempts:
            if a.outcome in ("skipped", "cancelled"):
                continue
            counts = out.setdefault(a.deployment, [0, 0])
            counts[0] += 1
            counts[1] += a.outcome != "ok"
    return out


def _row(rec: RequestRecord) -> dict[str, Any]:
    return {"request_id": rec.request_id, "started_at": rec.started_at, "endpoint": rec.endpoint,
            "caller": rec.caller, "public_model": rec.public_model, "router": rec.router,
            "deployment": rec.deployment, "status": rec.status, "partial": rec.partial, "stream": rec.stream,
            "latency_ms": rec.latency_ms, "input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens,
            "cost_usd": rec.cost_usd, "attempts": len(rec.attempts), "error_type": rec.error_type,
            "error_message": rec.error_message}


def _record_json(rec: RequestRecord) -> dict[str, Any]:
    return asdict(rec)


def _haystack(rec: RequestRecord) -> str:
    parts = [rec.request_id, rec.public_model, rec.router, rec.deployment, rec.caller, rec.error_message,
             rec.error_type, *rec.metadata.keys(), *rec.metadata.values()]
    return "\n".join(p for p in parts if p).lower()
