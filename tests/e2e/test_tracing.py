"""Traces end to end: the official SDKs through a real gateway, the spans at a real OTLP/HTTP collector, and the
``traceparent`` each upstream call carried, so a provider's own spans hang below the gateway's."""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.sim.fleet import Fleet, gateway_config_for_fleet
from tests.e2e.conftest import model_for
from tests.e2e.servers import GatewayThread, SimThread
from tests.otlp import WAIT, Collector, Received, serve_collector

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class Upstream:
    """An OpenAI-compatible upstream on 127.0.0.1 that notes the ``traceparent`` of every call: the model
    ``flaky`` answers 503, any other a short completion."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[str, str | None]] = queue.Queue()  # (model, traceparent)
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                model = body["model"]
                calls.put((model, self.headers.get("traceparent")))
                if model == "flaky":
                    payload, status = {"error": {"message": "overloaded", "type": "server_error"}}, 503
                else:
                    payload, status = {
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
                    }, 200
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with serve_collector() as c:
        yield c


@pytest.fixture
def traced_gateway(sim: SimThread, fleet: Fleet, upstream: Upstream,
                   collector: Collector) -> Iterator[Callable[..., GatewayThread]]:
    """Start a gateway exporting to ``collector`` (``tracing`` settings added); stopped after the test."""
    started: list[GatewayThread] = []

    def start(**tracing: Any) -> GatewayThread:
        raw = gateway_config_for_fleet(fleet, sim.base_url)
        raw["providers"]["capture"] = {"type": "openai", "base_url": upstream.url, "api_key": "up-key"}
        raw["models"]["traced"] = {"deployments": [
            {"provider": "capture", "model": "flaky", "weight": 1000},
            {"provider": "capture", "model": "good", "weight": 0.001},
        ]}
        raw["resilience"] = {"retries": {"attempts": 1}, "breaker": {"enabled": False}}
        raw["records"] = {"enabled": False}
        raw["tracing"] = {"enabled": True, "endpoint": collector.url, "batch_size": 1, **tracing}
        g = GatewayThread(create_app(parse_config(raw, env={})))
        started.append(g)
        return g

    yield start
    for g in started:
        g.close()


def _by_kind(spans: list[Received]) -> tuple[Received, list[Received]]:
    servers = [s for s in spans if s.span.kind == Span.SPAN_KIND_SERVER]
    clients = [s for s in spans if s.span.kind == Span.SPAN_KIND_CLIENT]
    assert len(servers) == 1, spans
    return servers[0], clients


def test_a_fallback_is_traced_below_the_clients_span_and_each_call_carries_its_span(
        traced_gateway: Callable[..., GatewayThread], collector: Collector, upstream: Upstream) -> None:
    gateway = traced_gateway()
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        answer = client.chat.completions.create(
            model="traced", messages=[{"role": "user", "content": "Say hello to ada@example.com"}],
            extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1"})
    assert answer.choices[0].message.content == "Hello."

    server, clients = _by_kind(collector.take(3))
    assert server.span.trace_id.hex() == TRACE and server.span.parent_span_id.hex() == PARENT
    assert server.span.name == "chat traced"
    assert server.attrs["gen_ai.request.model"] == "traced"
    assert server.attrs["gen_ai.response.model"] == "good"
    assert server.attrs["gen_ai.usage.input_tokens"] == 7 and server.attrs["gen_ai.usage.output_tokens"] == 2
    assert server.attrs["switchboard.fallback"] is True and server.attrs["switchboard.attempts"] == 2
    assert server.attrs["http.response.status_code"] == 200
    assert "gen_ai.input.messages" not in server.attrs  # prompts stay out unless captured
    assert server.resource["service.name"] == "switchboard"

    assert len(clients) == 2
    failed = next(c for c in clients if c.attrs["switchboard.deployment"].endswith("flaky"))
    served = next(c for c in clients if c.attrs["switchboard.deployment"].endswith("good"))
    assert failed.span.status.code == Status.STATUS_CODE_ERROR
    assert failed.attrs["http.response.status_code"] == 503
    assert served.span.status.code != Status.STATUS_CODE_ERROR
    for c in clients:
        assert c.span.trace_id.hex() == TRACE and c.span.parent_span_id == server.span.span_id
        assert server.span.start_time_unix_nano <= c.span.start_time_unix_nano
        assert c.span.end_time_unix_nano <= server.span.end_time_unix_nano
    assert failed.span.end_time_unix_nano <= served.span.start_time_unix_nano

    # What the upstream saw: each call named its own client span as the parent, in the client's trace.
    seen = dict(upstream.calls.get(timeout=WAIT) for _ in range(2))
    assert seen == {"flaky": f"00-{TRACE}-{failed.span.span_id.hex()}-01",
                    "good": f"00-{TRACE}-{served.span.span_id.hex()}-01"}


def test_a_stream_without_a_traceparent_starts_a_trace(
        traced_gateway: Callable[..., GatewayThread], collector: Collector, fleet: Fleet) -> None:
    gateway = traced_gateway()
    model = model_for(fleet, "anthropic")
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=30)
    with client, client.messages.stream(model=model, max_tokens=20,
                                        messages=[{"role": "user", "content": "Count to three"}]) as stream:
        text = "".join(stream.text_stream)
    assert text

    server, clients = _by_kind(collector.take(2))
    assert len(server.span.trace_id) == 16 and server.span.trace_id.hex() != TRACE
    assert server.span.parent_span_id == b""
    assert server.attrs["switchboard.stream"] is True and server.attrs["gen_ai.request.model"] == model
    assert server.attrs["switchboard.ttft_ms"] > 0
    assert [c.span.parent_span_id for c in clients] == [server.span.span_id]


def test_captured_prompts_are_redacted_and_unsampled_requests_are_not_sent(
        traced_gateway: Callable[..., GatewayThread], collector: Collector) -> None:
    gateway = traced_gateway(capture_prompts=True, sample_ratio=0.0)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        # Not sampled: the ratio is 0 and the client sampled nothing.
        client.chat.completions.create(model="traced", messages=[{"role": "user", "content": "one"}],
                                       extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})
        client.chat.completions.create(model="traced", messages=[{"role": "user", "content": "two"}])
        # Sampled by the client: exported whatever the ratio, with the prompt redacted.
        client.chat.completions.create(
            model="traced", messages=[{"role": "user", "content": "Mail ada@example.com the plan"}],
            extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    server, _ = _by_kind(collector.take(3))
    captured = server.attrs["gen_ai.input.messages"]
    assert "ada@example.com" not in captured and "Mail" in captured
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'switchboard_trace_spans_total{outcome="exported"}' in metrics
    tracer = gateway.app.gateway.tracer
    assert tracer is not None
    tracer.close()  # flushes what is queued: anything unsampled would arrive now
    assert collector.remaining() == []
    assert (tracer.exported, tracer.failed, tracer.dropped) == (3, 0, 0)


def test_refused_requests_are_traced_too(traced_gateway: Callable[..., GatewayThread], collector: Collector) -> None:
    gateway = traced_gateway()
    parent = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30) as client, \
            pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers=parent)
    bad = urllib.request.Request(f"{gateway.url}/v1/chat/completions", data=b"{not json", method="POST",
                                 headers={"content-type": "application/json", **parent})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400
    err.value.close()
    spans = sorted(collector.take(2), key=lambda r: r.attrs["http.response.status_code"])
    assert [s.attrs["http.response.status_code"] for s in spans] == [400, 404]
    for s in spans:
        assert s.span.kind == Span.SPAN_KIND_SERVER and s.span.parent_span_id.hex() == PARENT
        assert s.attrs["error.type"] and s.span.trace_id.hex() == TRACE
