"""The dashboard's JSON API over records with known values: the admin credential, the figures of the
summary and the time series, the request list and drill-down, health, and parameters that are refused."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from switchboard.app import SwitchboardApp, create_app
from switchboard.config.load import ConfigError, parse_config
from switchboard.dashboard import Dashboard
from switchboard.storage.records import RecordQuery, SinkStats
from switchboard.telemetry.record import Attempt, RequestRecord

KEY = "adm-test-key-0123456789"
NOW = 1_700_000_000.0


class ListStore:
    """A record store in a list; queries follow :meth:`RecordQuery.matches`, newest first."""

    def __init__(self, records: list[RequestRecord]) -> None:
        self.records = records

    def start(self) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...

    def submit(self, record: RequestRecord) -> bool:
        self.records.append(record)
        return True

    @property
    def stats(self) -> SinkStats:
        return SinkStats(0, len(self.records), 0, 0, 0, None)

    def query(self, q: RecordQuery) -> list[RequestRecord]:
        found = sorted((r for r in self.records if q.matches(r)), key=lambda r: -r.started_at)
        return found if q.limit is None else found[: q.limit]


def raw_config(admin_key: str | None = KEY) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"}},
        "models": {
            "small": {"deployments": [{"provider": "p", "model": "s", "price": {"input": 1, "output": 2}}]},
            "large": {"deployments": [{"provider": "p", "model": "l", "price": {"input": 10, "output": 30}}]},
        },
        "routers": {"auto": {"models": ["small", "large"]}},
        "records": {"enabled": False},
    }
    if admin_key is not None:
        raw["admin"] = {"key": "env:SB_ADMIN"}
    return raw


def rec(i: int, model: str, *, ago: float, status: int = 200, latency: float = 100.0, cost: float = 0.001,
        router: str | None = None, attempts: list[Attempt] | None = None, **extra: Any) -> RequestRecord:
    return RequestRecord(
        request_id=f"req_{i}", started_at=NOW - ago, endpoint="chat", dialect="openai", public_model=model,
        deployment=f"p/{model[0]}", provider="p", status=status, latency_ms=latency, input_tokens=1000,
        output_tokens=100, cost_usd=cost, router=router,
        attempts=attempts if attempts is not None else [Attempt(f"p/{model[0]}", "p", "ok", latency)], **extra)


ROUTE = {"router": "auto", "model": "large", "ranking": ["large", "small"], "context": None,
         "steps": [{"stage": "rules", "outcome": "no rule matched"},
                   {"stage": "objective", "outcome": "best score", "detail": {"quality": 1.0}}],
         "scores": {"large": {"quality": 0.9, "score": 0.7}, "small": {"quality": 0.6, "score": 0.5}},
         "input": {"prompt": "<b>hi</b>"}}

RECORDS = [
    # Inside the last hour: 4 small (one failed), 2 large through the router (one rescued by a fallback).
    rec(1, "small", ago=3000, latency=10.0, cost=0.0002),
    rec(2, "small", ago=2000, latency=20.0, cost=0.0002),
    rec(3, "small", ago=1000, latency=30.0, cost=0.0002),
    rec(4, "small", ago=500, status=502, latency=900.0, cost=0.0, error_message="upstream said no",
        attempts=[Attempt("p/s", "p", "error", 900.0, http_status=500, reason="http_500", error="boom")]),
    rec(5, "large", ago=400, latency=300.0, cost=0.02, router="auto", route=ROUTE,
        metadata={"team": "search", "note": "<script>alert(1)</script>"},
        attempts=[Attempt("p/s", "p", "error", 50.0, reason="timeout"), Attempt("p/l", "p", "ok", 250.0)]),
    rec(6, "large", ago=100, latency=400.0, cost=0.02, router="auto", caller="alice"),
    # Two hours ago: outside the default window.
    rec(7, "small", ago=7200, latency=5.0, cost=0.0002),
]


@pytest.fixture
def app() -> SwitchboardApp:
    app = create_app(parse_config(raw_config(), env={"SB_ADMIN": KEY}), records=ListStore(list(RECORDS)))
    app.dashboard = Dashboard(app.config, app.gateway.breakers, app.records, clock=lambda: NOW)
    return app


async def call(app: SwitchboardApp, path: str, query: str = "", *, key: str | None = KEY, method: str = "GET",
               auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"host", b"test")]
    if auth is not None or key is not None:
        headers.append((b"authorization", (auth if auth is not None else f"Bearer {key}").encode()))
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(), "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    start = sent[0]
    resp_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], resp_headers, b"".join(m.get("body", b"") for m in sent[1:])


async def get_json(app: SwitchboardApp, path: str, query: str = "") -> dict[str, Any]:
    status, _, body = await call(app, path, query)
    assert status == 200, body
    data: dict[str, Any] = orjson.loads(body)
    return data


# -- the credential ---------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "])
async def test_the_api_refuses_a_missing_or_wrong_key(app: SwitchboardApp, auth: str | None) -> None:
    status, headers, body = await call(app, "/dashboard/api/summary", key=None, auth=auth)
    assert status == 401
    assert headers["x-request-id"]
    assert orjson.loads(body)["error"]["type"] == "authentication_error"


async def test_the_right_key_opens_the_api(app: SwitchboardApp) -> None:
    status, headers, _ = await call(app, "/dashboard/api/health")
    assert status == 200
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


async def test_the_page_loads_without_the_key_under_a_strict_policy(app: SwitchboardApp) -> None:
    for path, kind in [("/dashboard", "text/html"), ("/dashboard/", "text/html"),
                       ("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")]:
        status, headers, body = await call(app, path, key=None)
        assert status == 200 and headers["content-type"].startswith(kind) and body
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    _, _, html = await call(app, "/dashboard", key=None)
    assert b"<script>" not in html and b"style=" not in html  # nothing inline: the policy would block it
    status, _, _ = await call(app, "/dashboard/../pyproject.toml", key=None)
    assert status == 404


async def test_without_an_admin_key_the_dashboard_does_not_exist() -> None:
    app = create_app(parse_config(raw_config(admin_key=None), env={}), records=ListStore(list(RECORDS)))
    for path in ["/dashboard", "/dashboard/app.js", "/dashboard/api/summary"]:
        status, headers, body = await call(app, path)
        assert status == 404 and headers["x-request-id"]
        assert orjson.loads(body)["error"]["type"] == "not_found_error"


def test_the_admin_key_is_a_secret_reference() -> None:
    cfg = parse_config(raw_config(), env={"SB_ADMIN": KEY})
    assert cfg.admin.key is not None and cfg.admin.key.get_secret_value() == KEY
    assert KEY not in repr(cfg)
    with pytest.raises(ConfigError, match=r"admin\.key"):
        parse_config(raw_config(), env={})
    with pytest.raises(ConfigError, match=r"admin\.key"):
        parse_config({**raw_config(), "admin": {"key": "  "}}, env={})


async def test_dashboard_requests_are_not_api_traffic(app: SwitchboardApp) -> None:
    await call(app, "/dashboard/api/summary")
    await call(app, "/dashboard/api/summary", key=None)
    metrics = (await app.metrics.arender()).decode()
    assert "dashboard" not in metrics
    assert len(app.records.records) == len(RECORDS)  # type: ignore[union-attr]


async def test_only_get(app: SwitchboardApp) -> None:
    status, headers, _ = await call(app, "/dashboard/api/summary", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, _ = await call(app, "/dashboard/api/summary", method="HEAD")  # served as GET; the server
    assert status == 200 and headers["content-type"].startswith("application/json")  # drops the body


# -- the figures ------------------------------------------------------------------------------------

async def test_summary_says_what_the_records_say(app: SwitchboardApp) -> None:
    data = await get_json(app, "/dashboard/api/summary", "since=1h&reference=large")
    total = data["total"]
    assert (total["requests"], total["errors"], total["rescued"]) == (6, 1, 1)
    assert total["error_rate"] == pytest.approx(1 / 6)
    # Successful latencies 10, 20, 30, 300, 400: nearest-rank p50 = 30, p95 = 400.
    assert (total["latency_p50_ms"], total["latency_p95_ms"]) == (30.0, 400.0)
    assert total["cost_usd"] == pytest.approx(3 * 0.0002 + 2 * 0.02)
    # Each successful request at "large": 1000 in × $10/M + 100 out × $30/M = $0.013.
    assert total["reference_cost_usd"] == pytest.approx(5 * 0.013)
    assert total["savings_usd"] == pytest.approx(5 * 0.013 - 0.0406)
    assert [(g["key"], g["requests"]) for g in data["groups"]] == [("small", 4), ("large", 2)]
    assert data["reference_choices"] == ["large", "small"]
    by_router = await get_json(app, "/dashboard/api/summary", "since=3h&by=router")
    assert {g["key"]: g["requests"] for g in by_router["groups"]} == {"(none)": 5, "auto": 2}


async def test_summary_of_a_window_that_ended_and_as_csv(app: SwitchboardApp) -> None:
    earlier = await get_json(app, "/dashboard/api/summary", "since=3h&until=1h")
    assert (earlier["total"]["requests"], earlier["until"]) == (1, NOW - 3600)
    assert [g["key"] for g in earlier["groups"]] == ["small"]
    status, headers, body = await call(app, "/dashboard/api/summary", "since=1h&reference=large&format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["key"], r["requests"], r["errors"]) for r in rows] == [("small", "4", "1"), ("large", "2", "0"),
                                                                   ("total", "6", "1")]
    assert float(rows[-1]["savings_usd"]) == pytest.approx(5 * 0.013 - 0.0406)


async def test_timeseries_buckets_the_window(app: SwitchboardApp) -> None:
    data = await get_json(app, "/dashboard/api/timeseries", "since=1h&bucket=10m&reference=large")
    assert data["bucket_seconds"] == 600 and data["models"] == ["small", "large"]
    buckets = data["buckets"]
    assert sum(b["requests"] for b in buckets) == 6 and sum(b["errors"] for b in buckets) == 1
    assert sum(b["cost_usd"] for b in buckets) == pytest.approx(0.0406)
    assert all(b["t"] % 600 == 0 for b in buckets) and buckets[0]["t"] <= NOW - 3600 < buckets[0]["t"] + 600
    last = next(b for b in buckets if b["t"] <= NOW - 100 < b["t"] + 600)
    assert last["by_model"] == {"large": 1} and last["latency_p95_ms"] == 400.0
    assert last["savings_usd"] == pytest.approx(0.013 - 0.02)
    empty = [b for b in buckets if b["requests"] == 0]
    assert empty and all(b["latency_p50_ms"] is None and b["by_model"] == {} for b in empty)
    auto = await get_json(app, "/dashboard/api/timeseries", "since=24h")
    assert auto["bucket_seconds"] == 1800 and len(auto["buckets"]) <= 60


async def test_requests_newest_first_with_filters(app: SwitchboardApp) -> None:
    data = await get_json(app, "/dashboard/api/requests", "since=1h")
    assert [r["request_id"] for r in data["requests"]] == ["req_6", "req_5", "req_4", "req_3", "req_2", "req_1"]
    assert data["requests"][1]["attempts"] == 2
    ids = lambda d: [r["request_id"] for r in d["requests"]]  # noqa: E731
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&status=error")) == ["req_4"]
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&status=502")) == ["req_4"]
    assert len(ids(await get_json(app, "/dashboard/api/requests", "since=1h&status=ok"))) == 5
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&model=auto")) == ["req_6", "req_5"]
    assert ids(await get_json(app, "/dashboard/api/requests", "since=3h&model=small&limit=2")) == ["req_4", "req_3"]
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&q=SEARCH")) == ["req_5"]
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&q=said%20no")) == ["req_4"]
    assert ids(await get_json(app, "/dashboard/api/requests", "since=1h&q=alice")) == ["req_6"]


async def test_drill_down_returns_the_whole_record(app: SwitchboardApp) -> None:
    data = (await get_json(app, "/dashboard/api/requests/req_5"))["request"]
    assert data["route"] == ROUTE
    assert [(a["deployment"], a["outcome"], a["reason"]) for a in data["attempts"]] == [
        ("p/s", "error", "timeout"), ("p/l", "ok", None)]
    assert data["metadata"]["note"] == "<script>alert(1)</script>"
    assert (data["latency_ms"], data["cost_usd"], data["input_tokens"]) == (300.0, 0.02, 1000)
    status, _, body = await call(app, "/dashboard/api/requests/req_404")
    assert status == 404 and orjson.loads(body)["error"]["param"] == "id"


async def test_health_shows_breakers_and_recent_errors(app: SwitchboardApp) -> None:
    for _ in range(5):
        app.gateway.breakers.get("p/s").record_failure()
    data = await get_json(app, "/dashboard/api/health")
    by_id = {d["deployment"]: d for d in data["deployments"]}
    assert by_id["p/s"]["state"] == "open" and by_id["p/s"]["opened_count"] == 1
    assert by_id["p/s"]["available_in_s"] > 0
    assert by_id["p/l"]["state"] == "closed" and by_id["p/l"]["models"] == ["large"]
    # The last five minutes hold req_6 only (one ok attempt on p/l).
    assert (by_id["p/l"]["recent_attempts"], by_id["p/l"]["recent_errors"]) == (1, 0)
    assert by_id["p/s"]["recent_error_rate"] is None


@pytest.mark.parametrize(("path", "query", "param"), [
    ("summary", "since=yesterday", "since"),
    ("summary", "since=-5", "since"),
    ("summary", "by=colour", "by"),
    ("summary", "reference=gpt-9", "reference"),
    ("summary", "until=soon", "until"),
    ("summary", "since=1h&until=2h", "until"),
    ("summary", "format=xml", "format"),
    ("requests", "format=csv", "format"),
    ("timeseries", "since=7d&bucket=1s", "bucket"),
    ("timeseries", "bucket=fast", "bucket"),
    ("requests", "limit=0", "limit"),
    ("requests", "limit=many", "limit"),
    ("requests", "status=broken", "status"),
    ("requests", "q=" + "x" * 201, "q"),
    ("requests/bad%20id!", "", "id"),
])
async def test_bad_parameters_are_named(app: SwitchboardApp, path: str, query: str, param: str) -> None:
    status, headers, body = await call(app, f"/dashboard/api/{path}", query)
    assert status == 400, body
    err = orjson.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and headers["x-request-id"]


async def test_without_records_the_record_views_say_so() -> None:
    app = create_app(parse_config(raw_config(), env={"SB_ADMIN": KEY}))
    assert app.records is None
    status, _, body = await call(app, "/dashboard/api/summary")
    assert status == 404 and b"records" in body
    health = await get_json(app, "/dashboard/api/health")
    assert health["records"] is False and len(health["deployments"]) == 2
