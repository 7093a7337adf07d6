"""A real OTLP/HTTP trace collector for tests: it decodes each export's protobuf and hands the spans over.

Usage::

    with serve_collector() as collector:     # or serve_collector(Collector(status=500))
        ...                                  # export to collector.url
        server, client = collector.take(2)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

WAIT = 10.0  # seconds a test waits for the collector before it fails


@dataclass
class Received:
    """One span as the collector decoded it, with its resource and instrumentation scope."""

    span: Span
    resource: dict[str, Any]
    scope: tuple[str, str]

    @property
    def attrs(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


@dataclass
class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: each export to ``/v1/traces`` is decoded and its spans put on
    ``spans``. It answers ``status``; with a ``gate`` it says ``arrived`` and holds every answer until
    the gate opens."""

    status: int = 200
    gate: threading.Event | None = None
    spans: queue.Queue[Received] = field(default_factory=queue.Queue)
    headers: queue.Queue[dict[str, str]] = field(default_factory=queue.Queue)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def take(self, n: int) -> list[Received]:
        """The next ``n`` spans, waiting for each at most ``WAIT`` seconds."""
        out = []
        for _ in range(n):
            try:
                out.append(self.spans.get(timeout=WAIT))
            except queue.Empty:
                pytest.fail(f"the collector received {len(out)} spans, expected {n}")
        return out

    def remaining(self) -> list[Received]:
        """Whatever else arrived (call it after the tracer is closed: nothing more can come)."""
        out = []
        while not self.spans.empty():
            out.append(self.spans.get_nowait())
        return out


def attributes(kvs: Any) -> dict[str, Any]:
    def value(kv: KeyValue) -> Any:
        kind = kv.value.WhichOneof("value")
        return getattr(kv.value, kind) if kind else None

    return {kv.key: value(kv) for kv in kvs}


def handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            collector.headers.put({k.lower(): v for k, v in self.headers.items()})
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        collector.spans.put(Received(span, resource, (ss.scope.name, ss.scope.version)))
            if collector.gate is not None:
                collector.arrived.set()
                collector.gate.wait(WAIT)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(collector.status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler



@contextmanager
def serve_collector(collector: Collector | None = None) -> Iterator[Collector]:
    """Serve ``collector`` (a new one by default) on 127.0.0.1 until the block ends; sets its ``url``."""
    collector = collector or Collector()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(collector))
    server.daemon_threads = True
    # A short poll interval: shutdown() waits for the next poll.
    threading.Thread(target=server.serve_forever, args=(0.01,), name="otlp-collector", daemon=True).start()
    collector.url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
