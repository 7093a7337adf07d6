"""OpenTelemetry traces of requests, built from their finished records (optional: ``switchboard[otel]``).

The request path does no tracing work beyond ids: :meth:`Tracer.begin` reads the client's W3C
``traceparent``, picks the request's span id and decides sampling; :meth:`Tracer.finish` appends the
finished :class:`~switchboard.telemetry.record.RequestRecord` to a bounded buffer. A daemon thread turns
records into spans and sends them to a collector over OTLP/HTTP (protobuf), in batches.

What a traced request exports, following the OpenTelemetry GenAI semantic conventions:

* a SERVER span ``"{operation} {public model}"`` for the request — the child of the client's span when
  the client sent a ``traceparent`` — with ``gen_ai.operation.name`` (``chat`` or ``embeddings``),
  ``gen_ai.request.model`` (the model or router the client asked for), ``gen_ai.response.model``,
  ``gen_ai.provider.name``, ``gen_ai.usage.*`` tokens, ``http.response.status_code``, ``error.type``
  and Switchboard's own attributes under ``switchboard.`` (request id, router, model, deployment, cost,
  attempts, fallback, stream, partial, time to first token, key, team, caller);
* a CLIENT span ``"{operation} {deployment}"`` per upstream call, the server span's child, whose span id
  is the one the gateway sent upstream in that call's ``traceparent`` (so a traced provider's spans hang
  below it), with ``switchboard.attempt.*`` saying how the call went. A deployment passed over without a
  call (circuit open) is an event on the server span instead.

Prompts are not exported unless ``tracing.capture_prompts`` is on. Then the server span carries
``gen_ai.input.messages`` (the conventions' attribute for captured input; ``gen_ai.prompt`` is
deprecated): the prompt text as one user message, redacted of secrets and personal data as captured
prompts in records are, its last 16,000 characters.

Usage::

    tracer = Tracer.build(config.tracing)       # None when tracing is off
    trace = tracer.begin(headers)               # per request, on the event loop: ids and sampling
    traceparent = format_traceparent(trace.trace_id, new_span_id(), trace.sampled)  # per upstream call
    tracer.finish(record, trace)                # after the request: never blocks, never raises
    tracer.close()                              # at shutdown: exports what is queued
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from switchboard._closing import ClosesOnExit
from switchboard.config.model import ProviderConfig, TracingConfig
from switchboard.telemetry.record import Attempt, RequestRecord
from switchboard.telemetry.redaction import ERROR_KINDS, redact

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["TraceContext", "Tracer", "format_traceparent", "new_span_id", "new_trace_id", "parse_traceparent"]

log = logging.getLogger(__name__)

_INSTALL_HINT = "tracing needs OpenTelemetry: pip install 'switchboard[otel]'"
# version-traceid-parentid-flags; a version after 00 may append fields, each after a "-".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_OPERATIONS = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
_PROMPT_CHARS = 16_000  # as much of a prompt as records keep

AttributeValue = str | bool | int | float
Attributes = dict[str, AttributeValue]


# -- W3C Trace Context --------------------------------------------------------------------------


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` from a W3C ``traceparent`` header; ``None`` when it is
    absent or invalid (the request then starts a new trace, as the specification asks).

    Lowercase hex only; an all-zero trace or span id and version ``ff`` are invalid. A version after
    ``00`` is read as far as the four fields of version ``00``.
    """
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 0x01)


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """The ``traceparent`` header naming ``span_id`` of ``trace_id`` as the parent."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


# The module's generator: fast, and reseeded in a forked child, so worker processes never share ids.
def new_trace_id() -> str:
    """A random trace id: 32 lowercase hex digits, never all zeros."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random span id: 16 lowercase hex digits, never all zeros."""
    return f"{random.getrandbits(64) or 1:016x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a request belongs to. ``span_id`` is the request's (server) span, ``parent_span_id``
    the client's span from its ``traceparent``; ``sampled`` says whether the request is exported, and
    goes upstream in every ``traceparent`` the gateway sends. ``tracestate`` is the client's, passed on."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    sampled: bool
    tracestate: str | None


# -- the tracer ---------------------------------------------------------------------------------


class Tracer(ClosesOnExit):
    """Exports finished requests as spans, from a daemon thread.

    :meth:`finish` costs a deque append and never waits: when ``queue_size`` requests are waiting it
    drops the new one and counts it. The thread exports ``batch_size`` requests at a time as soon as
    that many are waiting, and whatever is waiting at least every ``flush_interval`` seconds. Counters:
    ``exported`` and ``failed`` count spans (``failed``: refused by the collector or not delivered),
    ``dropped`` counts requests (queue full, closed, or not convertible). ``providers`` (the
    configuration's) name the upstream hosts of client spans (``server.address``, ``server.port``).
    ``exporter`` is any OpenTelemetry span exporter; :meth:`build` makes the configured OTLP/HTTP one.
    Build it in the process that uses it: a forked child does not inherit the thread.
    """

    def __init__(
        self,
        config: TracingConfig,
        exporter: SpanExporter,
        *,
        providers: Mapping[str, ProviderConfig] | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import SpanExportResult
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._exporter = exporter
        self._success = SpanExportResult.SUCCESS
        self._resource = Resource.create({"service.name": config.service_name})
        self._scope = InstrumentationScope("switchboard", _package_version())
        self._servers = {name: addr for name, p in (providers or {}).items() if (addr := _address(p.base_url))}
        # Sampling without a parent follows the trace id (as OpenTelemetry's TraceIdRatioBased does), so
        # every process sampling at the same ratio keeps the same traces.
        self._bound = round(config.sample_ratio * 2**64)
        self._maxsize = config.queue_size
        self._batch_size = config.batch_size
        self._interval = config.flush_interval

        self._buf: deque[tuple[RequestRecord, TraceContext, str | None]] = deque()
        self._wake = threading.Event()
        self._closed = False  # finish() refuses from here on
        self._stopping = False  # the thread exports what is queued and ends
        # Each counter has one writing thread: _rejected the caller of finish(), the others the exporter
        # thread (or close() once that thread has ended).
        self._rejected = 0
        self._lost = 0
        self._exported = 0
        self._failed = 0
        self._thread = threading.Thread(target=self._run, name="switchboard-tracing", daemon=True)
        self._thread.start()

    @classmethod
    def build(cls, config: TracingConfig, *, providers: Mapping[str, ProviderConfig] | None = None) -> Tracer | None:
        """The configured tracer, exporting over OTLP/HTTP to ``config.endpoint``; ``None`` when tracing
        is off. Raises :class:`ImportError` naming the extra when OpenTelemetry is not installed."""
        if not config.enabled:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        headers = {name: value.get_secret_value() for name, value in config.headers.items()}
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=headers, timeout=config.timeout)
        return cls(config, exporter, providers=providers)

    # -- the request path ---------------------------------------------------------------------

    def begin(self, headers: Mapping[str, str]) -> TraceContext:
        """The trace of a new request, from its (lower-cased) ``traceparent`` and ``tracestate`` headers.

        With a valid ``traceparent`` the request joins the client's trace and follows its sampling
        decision; otherwise it starts a trace, sampled with probability ``sample_ratio``.
        """
        span_id = new_span_id()
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is None:
            trace_id = new_trace_id()
            return TraceContext(trace_id, span_id, None, int(trace_id[16:], 16) < self._bound, None)
        trace_id, parent_span_id, sampled = parent
        return TraceContext(trace_id, span_id, parent_span_id, sampled, headers.get("tracestate") or None)

    def finish(self, record: RequestRecord, trace: TraceContext, prompt: str | None = None) -> None:
        """Queue a finished request for export, when it is sampled. ``prompt`` is its text, passed only
        when ``capture_prompts`` is on (it is redacted before export). The record must not change after."""
        if not trace.sampled:
            return
        buf = self._buf
        if self._closed or len(buf) >= self._maxsize:
            self._rejected += 1
            return
        buf.append((record, trace, prompt))
        if len(buf) == self._batch_size:
            # A full batch wakes the thread; below that it wakes every flush_interval.
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def exported(self) -> int:
        """Spans the collector accepted."""
        return self._exported

    @property
    def failed(self) -> int:
        """Spans the collector refused or that could not be delivered."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Sampled requests not exported: the queue was full, the tracer closed, or the record was bad."""
        return self._rejected + self._lost

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting requests, export what is queued (waiting at most ``timeout`` seconds) and shut
        the exporter down. Idempotent. Blocks: never call it on the event loop."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._lost += len(self._buf)
            self._buf.clear()
        try:
            self._exporter.shutdown()
        except Exception as exc:  # shutting down must not fail the gateway's shutdown
            log.warning("tracing: exporter shutdown failed: %s", exc)

    # -- the exporter thread ------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self._interval
        while not self._stopping:
            self._wake.wait(max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                break
            due = time.monotonic() >= next_flush
            self._export_round(drain=due)
            if due:
                next_flush = time.monotonic() + self._interval
        self._export_round(drain=True)

    def _export_round(self, *, drain: bool) -> None:
        """Export full batches, or with ``drain`` everything queued."""
        buf = self._buf
        while buf and (drain or len(buf) >= self._batch_size):
            spans: list[ReadableSpan] = []
            for _ in range(min(self._batch_size, len(buf))):
                record, trace, prompt = buf.popleft()
                try:
                    spans += _record_spans(record, trace, prompt, self._resource, self._scope, self._servers)
                except Exception as exc:  # one bad record is dropped alone
                    log.warning("tracing: cannot convert request %s: %s", record.request_id, exc)
                    self._lost += 1
            if spans:
                self._export(spans)

    def _export(self, spans: list[ReadableSpan]) -> None:
        try:
            ok = self._exporter.export(spans) == self._success
        except Exception as exc:  # the thread must outlive any exporter failure
            log.warning("tracing: export failed: %s", exc)
            ok = False
        if ok:
            self._exported += len(spans)
        else:
            self._failed += len(spans)


# -- records to spans ---------------------------------------------------------------------------


def _record_spans(
    record: RequestRecord,
    trace: TraceContext,
    prompt: str | None,
    resource: Resource,
    scope: InstrumentationScope,
    servers: Mapping[str, tuple[str, int]],
) -> list[ReadableSpan]:
    """The server span of a request and a client span per upstream call, with the ids it used.

    The SDK's own tracer picks its own ids, so the spans are built directly as ``ReadableSpan``s.
    """
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    trace_id = int(trace.trace_id, 16)
    flags = TraceFlags(TraceFlags.SAMPLED)
    state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
    server = SpanContext(trace_id, int(trace.span_id, 16), is_remote=False, trace_flags=flags, trace_state=state)
    parent = None
    if trace.parent_span_id is not None:
        parent = SpanContext(trace_id, int(trace.parent_span_id, 16), is_remote=True, trace_flags=flags,
                             trace_state=state)
    operation = _OPERATIONS.get(record.endpoint, record.endpoint)
    start = round(record.started_at * 1e9)
    end = start + round(record.latency_ms * 1e6)

    clients: list[ReadableSpan] = []
    events: list[Event] = []
    for attempt in record.attempts:
        # Attempt times come from the request's own clock, but rounding may put one a hair outside the
        # request: keep every client span within its server span.
        a_start = min(end, start + max(0, round(attempt.started_ms * 1e6)))
        a_end = min(end, a_start + max(0, round(attempt.latency_ms * 1e6)))
        if attempt.span_id is None:
            about: Attributes = {"switchboard.deployment": attempt.deployment}
            if attempt.reason is not None:
                about["switchboard.attempt.reason"] = attempt.reason
            events.append(Event(attempt.outcome, about, a_start))
            continue
        error = attempt.outcome == "error"
        clients.append(ReadableSpan(
            name=f"{operation} {attempt.deployment}",
            context=SpanContext(trace_id, int(attempt.span_id, 16), is_remote=False, trace_flags=flags,
                                trace_state=state),
            parent=server,
            resource=resource,
            attributes=_attempt_attributes(record, attempt, operation, servers.get(attempt.provider)),
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, _error_text(attempt.error)) if error else Status(StatusCode.UNSET),
            start_time=a_start,
            end_time=a_end,
            instrumentation_scope=scope,
        ))
    error = record.status >= 500 or record.partial
    description = _error_text(record.error_message or record.error_type or ("partial" if record.partial else None))
    request = ReadableSpan(
        name=f"{operation} {record.public_model or 'unknown'}",
        context=server,
        parent=parent,
        resource=resource,
        attributes=_request_attributes(record, operation, prompt),
        events=events,
        kind=SpanKind.SERVER,
        status=Status(StatusCode.ERROR, description) if error else Status(StatusCode.UNSET),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )
    return [request, *clients]


def _request_attributes(record: RequestRecord, operation: str, prompt: str | None) -> Attributes:
    attrs: Attributes = {"gen_ai.operation.name": operation, "http.response.status_code": record.status}
    gen_ai: dict[str, AttributeValue | None] = {
        "request.model": record.router or record.public_model,
        "response.model": record.upstream_model,
        "provider.name": record.provider,
    }
    if record.input_tokens or record.output_tokens:
        gen_ai["usage.input_tokens"] = record.input_tokens
        gen_ai["usage.output_tokens"] = record.output_tokens
    gen_ai["usage.cache_read.input_tokens"] = record.cached_tokens or None
    gen_ai["usage.reasoning.output_tokens"] = record.reasoning_tokens or None
    attrs.update((f"gen_ai.{k}", v) for k, v in gen_ai.items() if v is not None)
    if record.status >= 400:
        attrs["error.type"] = record.error_type or str(record.status)
    ours: dict[str, AttributeValue | None] = {
        "request_id": record.request_id,
        "router": record.router,
        "model": record.public_model,
        "deployment": record.deployment,
        "cost_usd": record.cost_usd,
        "attempts": len(record.attempts),
        "fallback": _fell_back(record),
        "stream": record.stream,
        "partial": record.partial,
        "ttft_ms": record.ttft_ms,
        "key_id": record.key_id,
        "team": record.team,
        "caller": record.caller,
    }
    attrs.update((f"switchboard.{k}", v) for k, v in ours.items() if v is not None)
    if prompt is not None:
        text = redact(prompt)[-_PROMPT_CHARS:]
        message = {"role": "user", "parts": [{"type": "text", "content": text}]}
        attrs["gen_ai.input.messages"] = orjson.dumps([message]).decode()
    return attrs


def _attempt_attributes(
    record: RequestRecord, attempt: Attempt, operation: str, server: tuple[str, int] | None
) -> Attributes:
    attrs: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": attempt.provider,
        "switchboard.deployment": attempt.deployment,
        "switchboard.attempt.outcome": attempt.outcome,
        "switchboard.attempt.retry": attempt.retry,
        "switchboard.attempt.hedge": attempt.hedge,
    }
    model = attempt.model or record.public_model
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.request.model": model,
        "switchboard.attempt.reason": attempt.reason,
        "switchboard.attempt.cost_usd": attempt.cost_usd,
        "http.response.status_code": attempt.http_status,
    }
    if attempt.outcome == "ok" and attempt.deployment == record.deployment:
        optional["gen_ai.response.model"] = record.upstream_model
    if attempt.outcome != "ok":
        optional["error.type"] = attempt.reason or attempt.outcome
    if server is not None:
        optional["server.address"], optional["server.port"] = server
    attrs.update((k, v) for k, v in optional.items() if v is not None)
    return attrs


def _fell_back(record: RequestRecord) -> bool:
    """More than one call went upstream, or the answer came from another deployment than the first in
    line (one passed over counts)."""
    calls = sum(a.outcome != "skipped" for a in record.attempts)
    first = record.attempts[0].deployment if record.attempts else None
    return calls > 1 or (record.deployment is not None and first is not None and first != record.deployment)


def _error_text(message: str | None) -> str | None:
    return None if message is None else redact(message, ERROR_KINDS)


def _address(base_url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a provider's base URL."""
    try:
        url = urlsplit(base_url)
        port = url.port
    except ValueError:
        return None
    if url.hostname is None:
        return None
    return url.hostname, port or (443 if url.scheme == "https" else 80)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("switchboard")
    except PackageNotFoundError:
        return "unknown"
