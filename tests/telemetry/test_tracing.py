"""OpenTelemetry traces: W3C trace context, and the spans a real OTLP/HTTP collector receives."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags, Status

import switchboard
from switchboard.config.load import ConfigError, parse_config
from switchboard.config.model import ProviderConfig, TracingConfig
from switchboard.telemetry.record import Attempt, RequestRecord
from switchboard.telemetry.tracing import (
    TraceContext,
    Tracer,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from tests.otlp import WAIT, Collector, attributes, serve_collector

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

@pytest.fixture
def serve() -> Iterator[Any]:
    """Start collectors; all are stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda collector: stack.enter_context(serve_collector(collector))


@pytest.fixture
def collector(serve: Any) -> Collector:
    result: Collector = serve(Collector())
    return result


@pytest.fixture
def tracers() -> Iterator[Any]:
    """Build tracers (exporting at once: a batch is one request); all are closed after the test."""
    built: list[Tracer] = []

    def build(collector: Collector, **overrides: Any) -> Tracer:
        settings: dict[str, Any] = {"enabled": True, "endpoint": collector.url, "service_name": "switchboard-test",
                                    "batch_size": 1, "flush_interval": 60.0, **overrides}
        providers = settings.pop("providers", None)
        tracer = Tracer.build(TracingConfig(**settings), providers=providers)
        assert tracer is not None
        built.append(tracer)
        return tracer

    yield build
    for tracer in built:
        tracer.close()


def plain_record(request_id: str = "req_plain", **overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {"request_id": request_id, "started_at": 1_700_000_000.0, "endpoint": "chat",
                              "dialect": "openai", "public_model": "fast", "latency_ms": 10.0, **overrides}
    return RequestRecord(**values)


# -- W3C trace context ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"00-{TRACE}-{PARENT}-09", (TRACE, PARENT, True)),  # unknown flags are ignored
        (f" 00-{TRACE}-{PARENT}-01\t", (TRACE, PARENT, True)),  # surrounding whitespace
        (f"cc-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),  # a future version, same fields
        (f"cc-{TRACE}-{PARENT}-01-what-comes-next", (TRACE, PARENT, True)),  # ... and more after them
        (f"00-{TRACE.upper()}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT.upper()}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        (f"cc-{TRACE}-{PARENT}-01extra", None),
        (f"00-{TRACE}-{PARENT}-1", None),
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT[:-1]}-01", None),
        (f"0-{TRACE}-{PARENT}-01", None),
        (f"00_{TRACE}_{PARENT}_01", None),
        (f"00-{TRACE}-{PARENT}-0g", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, expected: tuple[str, str, bool] | None) -> None:
    assert parse_traceparent(header) == expected


def test_ids_are_fixed_width_lowercase_hex_and_round_trip() -> None:
    for _ in range(200):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
        assert re.fullmatch(r"[0-9a-f]{16}", span_id) and span_id != "0" * 16
        for sampled in (True, False):
            assert parse_traceparent(format_traceparent(trace_id, span_id, sampled)) == (trace_id, span_id, sampled)
    assert format_traceparent(TRACE, PARENT, True) == f"00-{TRACE}-{PARENT}-01"
    assert len({new_span_id() for _ in range(1000)}) == 1000


def test_begin_joins_the_clients_trace_or_starts_one(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector)
    joined = tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE"})
    assert (joined.trace_id, joined.parent_span_id, joined.sampled, joined.tracestate) == (
        TRACE, PARENT, True, "congo=t61rcWkgMzE")
    assert joined.span_id not in (PARENT, "0" * 16) and re.fullmatch(r"[0-9a-f]{16}", joined.span_id)

    unsampled = tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert unsampled.trace_id == TRACE and not unsampled.sampled

    for headers in ({}, {"traceparent": "garbage", "tracestate": "congo=t61rcWkgMzE"}):
        fresh = tracer.begin(headers)
        assert fresh.trace_id != TRACE and fresh.parent_span_id is None and fresh.tracestate is None
        assert fresh.sampled  # sample_ratio 1


# -- spans --------------------------------------------------------------------------------------------


def fallback_record(span_ids: tuple[str, str]) -> RequestRecord:
    """A chat request whose first deployment failed with a 503 and whose second answered."""
    return RequestRecord(
        request_id="req_fallback", started_at=1_700_000_000.25, endpoint="chat", dialect="openai", caller="alice",
        public_model="fast", deployment="backup/gpt-4o-mini", provider="backup", upstream_model="gpt-4o-mini-2024",
        status=200, latency_ms=900.0, ttft_ms=410.0, input_tokens=12, output_tokens=34, cost_usd=0.0012,
        key_id="key_1", team="research",
        attempts=[
            Attempt("primary/gpt-4o-mini", "primary", "error", 300.0, error="upstream said 503", http_status=503,
                    reason="http_503", model="fast", started_ms=5.0, span_id=span_ids[0]),
            Attempt("backup/gpt-4o-mini", "backup", "ok", 500.0, http_status=200, model="fast", cost_usd=0.0012,
                    started_ms=320.0, span_id=span_ids[1]),
        ],
    )


def test_a_fallback_is_one_server_span_and_a_client_span_per_call(collector: Collector, tracers: Any) -> None:
    providers = {"backup": ProviderConfig(type="openai", base_url="https://llm.example.com/v1")}
    tracer = tracers(collector, providers=providers)
    trace = tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE"})
    calls = (new_span_id(), new_span_id())
    record = fallback_record(calls)
    tracer.finish(record, trace)

    spans = {r.span.span_id.hex(): r for r in collector.take(3)}
    assert set(spans) == {trace.span_id, *calls}
    server, first, second = spans[trace.span_id], spans[calls[0]], spans[calls[1]]
    assert {r.span.trace_id.hex() for r in spans.values()} == {TRACE}
    assert {r.span.trace_state for r in spans.values()} == {"congo=t61rcWkgMzE"}
    assert server.resource["service.name"] == "switchboard-test"
    assert server.scope == ("switchboard", switchboard.__version__)

    # The request: below the client's span, which is remote.
    assert server.span.name == "chat fast"
    assert server.span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert server.span.parent_span_id.hex() == PARENT
    assert server.span.flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    assert server.span.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert server.attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "fast",
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.provider.name": "backup",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
        "http.response.status_code": 200,
        "switchboard.request_id": "req_fallback",
        "switchboard.model": "fast",
        "switchboard.deployment": "backup/gpt-4o-mini",
        "switchboard.cost_usd": 0.0012,
        "switchboard.attempts": 2,
        "switchboard.fallback": True,
        "switchboard.stream": False,
        "switchboard.partial": False,
        "switchboard.ttft_ms": 410.0,
        "switchboard.key_id": "key_1",
        "switchboard.team": "research",
        "switchboard.caller": "alice",
    }

    # The calls: children of the request's span, local.
    for client, deployment in ((first, "primary/gpt-4o-mini"), (second, "backup/gpt-4o-mini")):
        assert client.span.name == f"chat {deployment}"
        assert client.span.kind == Span.SpanKind.SPAN_KIND_CLIENT
        assert client.span.parent_span_id.hex() == trace.span_id
        assert not client.span.flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    assert first.span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert first.span.status.message == "upstream said 503"
    assert first.attrs == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "primary", "gen_ai.request.model": "fast",
        "switchboard.deployment": "primary/gpt-4o-mini", "switchboard.attempt.outcome": "error",
        "switchboard.attempt.reason": "http_503", "switchboard.attempt.retry": 0, "switchboard.attempt.hedge": False,
        "http.response.status_code": 503, "error.type": "http_503",
    }
    assert second.span.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert second.attrs == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "backup", "gen_ai.request.model": "fast",
        "gen_ai.response.model": "gpt-4o-mini-2024", "switchboard.deployment": "backup/gpt-4o-mini",
        "switchboard.attempt.outcome": "ok", "switchboard.attempt.retry": 0, "switchboard.attempt.hedge": False,
        "switchboard.attempt.cost_usd": 0.0012, "http.response.status_code": 200,
        "server.address": "llm.example.com", "server.port": 443,
    }

    # Times: the request's own, and every call inside it, where the record put it.
    start = server.span.start_time_unix_nano
    assert abs(start - 1_700_000_000_250_000_000) < 1_000  # the record's wall clock, to float precision
    assert server.span.end_time_unix_nano - start == 900_000_000
    assert first.span.start_time_unix_nano - start == 5_000_000
    assert first.span.end_time_unix_nano - first.span.start_time_unix_nano == 300_000_000
    assert second.span.start_time_unix_nano - start == 320_000_000
    for client in (first, second):
        assert start <= client.span.start_time_unix_nano <= client.span.end_time_unix_nano
        assert client.span.end_time_unix_nano <= server.span.end_time_unix_nano
    tracer.close()  # the collector has the spans; the tracer counts them once it has the answer
    assert (tracer.exported, tracer.failed, tracer.dropped) == (3, 0, 0)


def test_a_deployment_passed_over_is_an_event_not_a_span(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector)
    trace = tracer.begin({})
    call = new_span_id()
    record = plain_record(
        "req_embed", endpoint="embeddings", public_model="embed", deployment="b/embed", provider="b",
        upstream_model="text-embedding-3-small", input_tokens=8, latency_ms=40.0,
        attempts=[Attempt("a/embed", "a", "skipped", 0.0, reason="circuit_open", model="embed", started_ms=1.0),
                  Attempt("b/embed", "b", "ok", 30.0, model="embed", started_ms=2.0, span_id=call)])
    tracer.finish(record, trace)

    spans = {r.span.span_id.hex(): r for r in collector.take(2)}
    assert set(spans) == {trace.span_id, call}
    server = spans[trace.span_id]
    assert server.span.name == "embeddings embed" and server.span.parent_span_id == b""
    assert not server.span.flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    assert server.attrs["gen_ai.operation.name"] == "embeddings"
    assert (server.attrs["gen_ai.usage.input_tokens"], server.attrs["gen_ai.usage.output_tokens"]) == (8, 0)
    assert server.attrs["switchboard.fallback"] is True  # the first deployment in line did not answer
    assert server.attrs["switchboard.attempts"] == 2
    [event] = server.span.events
    assert event.name == "skipped"
    assert attributes(event.attributes) == {"switchboard.deployment": "a/embed",
                                            "switchboard.attempt.reason": "circuit_open"}
    assert event.time_unix_nano - server.span.start_time_unix_nano == 1_000_000
    assert spans[call].span.name == "embeddings b/embed"
    assert spans[call].attrs["gen_ai.operation.name"] == "embeddings"


@pytest.mark.parametrize(
    ("overrides", "code", "error_type"),
    [
        ({"status": 502, "error_type": "UpstreamError", "error_message": "every deployment failed"},
         Status.StatusCode.STATUS_CODE_ERROR, "UpstreamError"),
        ({"status": 429, "error_type": "RateLimited"}, Status.StatusCode.STATUS_CODE_UNSET, "RateLimited"),
        ({"status": 503}, Status.StatusCode.STATUS_CODE_ERROR, "503"),
        ({"status": 200, "stream": True, "partial": True}, Status.StatusCode.STATUS_CODE_ERROR, None),
        ({"status": 200}, Status.StatusCode.STATUS_CODE_UNSET, None),
    ],
)
def test_the_request_status(collector: Collector, tracers: Any, overrides: dict[str, Any], code: int,
                            error_type: str | None) -> None:
    """Server errors and broken streams are errors; a client's mistake (4xx) is not the server's."""
    tracer = tracers(collector)
    tracer.finish(plain_record(**overrides), tracer.begin({}))
    [server] = collector.take(1)
    assert server.span.status.code == code
    assert server.attrs.get("error.type") == error_type
    assert server.attrs["http.response.status_code"] == overrides["status"]
    if "error_message" in overrides:
        assert server.span.status.message == overrides["error_message"]


def test_the_prompt_is_exported_only_when_passed_and_redacted(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector)
    tracer.finish(plain_record("req_with"), tracer.begin({}), prompt="I am bob@example.com. What is 2+2?")
    tracer.finish(plain_record("req_without"), tracer.begin({}))

    spans = {r.attrs["switchboard.request_id"]: r for r in collector.take(2)}
    messages = json.loads(spans["req_with"].attrs["gen_ai.input.messages"])
    assert messages == [{"role": "user", "parts": [{"type": "text", "content": "I am [REDACTED:email]. What is 2+2?"}]}]
    assert "gen_ai.input.messages" not in spans["req_without"].attrs
    assert not any("prompt" in key for key in spans["req_without"].attrs)


def test_an_unsampled_parent_exports_nothing(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector)
    tracer.finish(plain_record("req_unsampled"), tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-00"}))
    tracer.finish(plain_record("req_sampled"), tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-01"}))
    tracer.close()
    assert [r.attrs["switchboard.request_id"] for r in collector.remaining()] == ["req_sampled"]
    assert (tracer.exported, tracer.dropped) == (1, 0)


def test_sample_ratio_zero_traces_only_what_the_client_sampled(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector, sample_ratio=0.0)
    unparented = [tracer.begin({}) for _ in range(50)]
    assert not any(t.sampled for t in unparented)
    for i, trace in enumerate(unparented):
        tracer.finish(plain_record(f"req_{i}"), trace)
    tracer.finish(plain_record("req_parent"), tracer.begin({"traceparent": f"00-{TRACE}-{PARENT}-01"}))
    tracer.close()
    assert [r.attrs["switchboard.request_id"] for r in collector.remaining()] == ["req_parent"]


def test_a_full_queue_drops_and_counts(serve: Any, tracers: Any) -> None:
    collector = serve(Collector(gate=threading.Event()))
    assert collector.gate is not None
    tracer = tracers(collector, queue_size=1)
    tracer.finish(plain_record("req_1"), tracer.begin({}))
    assert collector.arrived.wait(WAIT)  # the thread holds req_1 and waits on the collector
    tracer.finish(plain_record("req_2"), tracer.begin({}))  # queued
    tracer.finish(plain_record("req_3"), tracer.begin({}))  # the queue is full
    assert tracer.dropped == 1
    collector.gate.set()
    tracer.close()
    assert sorted(r.attrs["switchboard.request_id"] for r in collector.remaining()) == ["req_1", "req_2"]
    assert (tracer.exported, tracer.failed, tracer.dropped) == (2, 0, 1)


def test_a_refusing_collector_counts_failures(serve: Any, tracers: Any) -> None:
    collector = serve(Collector(status=500))
    tracer = tracers(collector)
    trace = tracer.begin({})
    tracer.finish(fallback_record((new_span_id(), new_span_id())), trace)
    collector.take(3)  # it received them, and refused
    tracer.close()
    assert (tracer.exported, tracer.failed, tracer.dropped) == (0, 3, 0)


def test_an_unreachable_collector_counts_failures(serve: Any, tracers: Any) -> None:
    collector = serve(Collector())
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    collector.url = f"http://127.0.0.1:{probe.server_address[1]}/v1/traces"
    probe.server_close()  # nothing listens there any more
    tracer = tracers(collector, timeout=0.5)  # gives up at once: no time for a retry
    tracer.finish(plain_record(), tracer.begin({}))
    tracer.close(timeout=WAIT)
    assert (tracer.exported, tracer.failed) == (0, 1)


def test_close_exports_what_is_queued(collector: Collector, tracers: Any) -> None:
    tracer = tracers(collector, batch_size=100, flush_interval=3600.0)
    for i in range(5):
        tracer.finish(plain_record(f"req_{i}"), tracer.begin({}))
    tracer.close()
    assert len(collector.remaining()) == 5
    assert (tracer.exported, tracer.dropped) == (5, 0)
    tracer.close()  # idempotent
    tracer.finish(plain_record("req_late"), tracer.begin({}))
    assert tracer.dropped == 1


def test_collector_headers_are_sent(collector: Collector, tracers: Any) -> None:
    cfg = parse_config({"tracing": {"enabled": True, "endpoint": collector.url, "batch_size": 1,
                                    "headers": {"authorization": "env:OTEL_TOKEN"}}},
                       env={"OTEL_TOKEN": "Bearer s3cret-token"})
    tracer = Tracer.build(cfg.tracing)
    assert tracer is not None
    try:
        tracer.finish(plain_record(), tracer.begin({}))
        assert collector.headers.get(timeout=WAIT)["authorization"] == "Bearer s3cret-token"
    finally:
        tracer.close()


# -- building and configuring -------------------------------------------------------------------------


def test_build_returns_none_when_tracing_is_off() -> None:
    assert Tracer.build(TracingConfig()) is None
    assert parse_config({}, env={}).tracing.enabled is False


def test_build_names_the_extra_when_opentelemetry_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'switchboard[otel]'")):
        Tracer.build(TracingConfig(enabled=True))


def test_the_loader_names_the_extra_when_opentelemetry_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    with pytest.raises(ConfigError) as e:
        parse_config({"tracing": {"enabled": True}}, env={})
    assert e.value.problems == [("tracing.enabled", "tracing needs OpenTelemetry: pip install 'switchboard[otel]'")]
    assert parse_config({"tracing": {"enabled": False}}, env={}).tracing.enabled is False


def test_the_module_imports_without_opentelemetry() -> None:
    code = ("import sys; sys.modules['opentelemetry'] = None\n"
            "from switchboard.telemetry.tracing import Tracer, parse_traceparent\n"
            "from switchboard.config.model import TracingConfig\n"
            "assert Tracer.build(TracingConfig()) is None\n"
            "assert 'opentelemetry.sdk' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("tracing", "path"),
    [
        ({"endpoint": "ftp://collector:4318/v1/traces"}, "tracing.endpoint"),
        ({"endpoint": "127.0.0.1:4318/v1/traces"}, "tracing.endpoint"),
        ({"endpoint": "http:///v1/traces"}, "tracing.endpoint"),
        ({"sample_ratio": -0.1}, "tracing.sample_ratio"),
        ({"sample_ratio": 1.5}, "tracing.sample_ratio"),
        ({"queue_size": 0}, "tracing.queue_size"),
        ({"flush_interval": 0}, "tracing.flush_interval"),
        ({"exporter": "zipkin"}, "tracing.exporter"),
    ],
)
def test_bad_tracing_settings_are_named(tracing: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"tracing": tracing}, env={})
    assert [p for p, _ in e.value.problems] == [path]


def test_good_tracing_settings() -> None:
    cfg = parse_config({"tracing": {"enabled": True, "endpoint": "https://otel.example.com/v1/traces",
                                    "sample_ratio": 0.25, "service_name": "gateway-eu"}}, env={})
    assert cfg.tracing.endpoint == "https://otel.example.com/v1/traces"
    assert (cfg.tracing.sample_ratio, cfg.tracing.service_name, cfg.tracing.capture_prompts) == (0.25, "gateway-eu",
                                                                                                 False)
    with pytest.raises(ValueError, match="frozen"):
        cfg.tracing.enabled = False  # type: ignore[misc]


def test_header_secrets_are_resolved_and_never_printed(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer from-a-file\n")
    cfg = parse_config({"tracing": {"headers": {"authorization": "env:OTEL_TOKEN", "x-tenant": f"file:{token}",
                                                "x-plain": "acme"}}},
                       env={"OTEL_TOKEN": "Bearer s3cret-token"})
    headers = {name: value.get_secret_value() for name, value in cfg.tracing.headers.items()}
    assert headers == {"authorization": "Bearer s3cret-token", "x-tenant": "Bearer from-a-file", "x-plain": "acme"}
    assert "s3cret-token" not in repr(cfg) and "from-a-file" not in str(cfg.tracing)


def test_a_missing_header_secret_is_named_once() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"tracing": {"headers": {"authorization": "env:OTEL_TOKEN"}}}, env={})
    assert e.value.problems == [("tracing.headers.authorization", "environment variable OTEL_TOKEN is not set")]


def test_trace_context_is_a_value() -> None:
    trace = TraceContext(TRACE, PARENT, None, True, None)
    assert trace == TraceContext(TRACE, PARENT, None, True, None)
    with pytest.raises(AttributeError):
        trace.sampled = False  # type: ignore[misc]
