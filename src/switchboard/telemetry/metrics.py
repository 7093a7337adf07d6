"""Prometheus metrics for the gateway, summed over its worker processes.

One :class:`Metrics` per worker counts what the finished :class:`RequestRecord` objects say
(:meth:`Metrics.observe_record`: a few dictionary updates, no I/O), plus in-flight requests, breaker
transitions, the record queue and event-loop lag. Labels come only from bounded sets (endpoint,
public model, router, deployment, provider, status class, error type, attempt outcome and reason,
stream) — never caller, key, tag or request id — and each metric keeps at most ``max_series``
label sets, folding the rest into an ``other`` series.

Several workers: ``serve --workers N`` forks N processes and a scrape reaches one of them. With a
``multiprocess_dir`` (one fresh directory per server, made by the parent before it forks), each
worker writes a snapshot of its series to ``worker-<pid>.json`` there every ``snapshot_interval``
seconds and on shutdown, from a background task through a thread — never on the request path. A
scrape merges the scraping worker's live series with the other workers' files: counters and
histograms add up (also from workers that have exited), gauges add up over the workers whose
snapshot is fresh — so ``switchboard_breaker_state`` counts the workers in each state.

Usage::

    metrics = Metrics(multiprocess_dir)          # in the worker, after the fork
    metrics.start()                              # on the loop: snapshots, event-loop lag probe
    metrics.observe_record(record)               # once per finished request
    body = await metrics.arender()               # GET /metrics, with CONTENT_TYPE
    await metrics.aclose()                       # at shutdown: the last snapshot
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from switchboard.storage.records import SinkStats
from switchboard.telemetry.prometheus import CONTENT_TYPE, Family, Kind, Snapshot, merge, render
from switchboard.telemetry.record import RequestRecord
from switchboard.telemetry.tracing import Tracer

__all__ = ["CONTENT_TYPE", "Metrics", "loop_lag_probe"]

log = logging.getLogger("switchboard.metrics")

# OpenTelemetry GenAI semantic conventions: the advised bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BREAKER_STATES = ("closed", "open", "half_open")
_OPERATION = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
_FORMAT = 1  # the snapshot file layout


class Metrics:
    """This worker's metrics, and the exposition merged over all workers.

    Everything but :meth:`render`, :meth:`flush` and :meth:`aclose` is CPU-only and cheap, for the
    event loop. Not thread-safe: one event loop owns it.

    Usage::

        metrics = Metrics(None)                  # one process
        metrics.request_started("chat"); ...; metrics.request_finished("chat")
        metrics.breaker_changed("openai/gpt-4o", "closed", "open")
    """

    def __init__(self, multiprocess_dir: Path | None = None, *, max_series: int = 1000,
                 snapshot_interval: float = 1.0, worker_id: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not snapshot_interval > 0:
            raise ValueError("snapshot_interval must be positive")
        self.multiprocess_dir = multiprocess_dir
        self.snapshot_interval = snapshot_interval
        # A worker whose snapshot is older than this has stopped: its gauges no longer count.
        self.stale_after = max(5.0, 5 * snapshot_interval)
        self._worker_id = worker_id
        self._clock = clock
        self._records: Callable[[], SinkStats] | None = None
        self._tracer: Tracer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_failing = False

        def family(name: str, kind: Kind, help: str, labels: tuple[str, ...] = (), *,
                   buckets: tuple[float, ...] = ()) -> Family:
            return Family(name, kind, help, labels, buckets=buckets, max_series=max_series)

        self.operation_duration = family(
            "gen_ai_client_operation_duration_seconds", "histogram",
            "Duration of each call to an upstream deployment (every attempt but those skipped).",
            ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "deployment", "error_type"),
            buckets=DURATION_BUCKETS)
        self.token_usage = family(
            "gen_ai_client_token_usage", "histogram", "Tokens per answered request, by direction.",
            ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS)
        self.requests = family(
            "switchboard_requests_total", "counter", "Finished requests, by the status the client saw.",
            ("endpoint", "model", "router", "deployment", "provider", "status_class", "stream"))
        self.request_duration = family(
            "switchboard_request_duration_seconds", "histogram",
            "Duration of whole requests as clients saw them (retries, fallbacks and streaming included).",
            ("endpoint", "model", "router", "status_class", "stream"), buckets=DURATION_BUCKETS)
        self.ttft = family(
            "switchboard_time_to_first_token_seconds", "histogram",
            "Time from the request's arrival to the first content of its answer.",
            ("endpoint", "model", "deployment", "stream"), buckets=TTFT_BUCKETS)
        self.errors = family(
            "switchboard_errors_total", "counter",
            "Requests that failed, or streams cut after content was sent, by error type.",
            ("endpoint", "model", "error_type", "status_class"))
        self.attempts = family(
            "switchboard_attempts_total", "counter", "Attempts on deployments, by outcome and reason.",
            ("model", "deployment", "provider", "outcome", "reason"))
        self.fallbacks = family(
            "switchboard_fallbacks_total", "counter",
            "Attempts on a further deployment after the first choice failed or was passed over.",
            ("model", "fallback_model", "deployment"))
        self.tokens = family(
            "switchboard_tokens_total", "counter",
            "Tokens of answered requests: input, output, cached_input and reasoning (parts of input and output).",
            ("model", "deployment", "provider", "token_type"))
        self.cost = family(
            "switchboard_cost_usd_total", "counter", "What requests cost upstream, in US dollars.",
            ("model", "router", "deployment", "provider"))
        self.in_flight = family(
            "switchboard_requests_in_flight", "gauge", "Requests being handled now.", ("endpoint",))
        self.breaker_state = family(
            "switchboard_breaker_state", "gauge",
            "Worker processes whose circuit breaker for the deployment is in this state.", ("deployment", "state"))
        self.breaker_transitions = family(
            "switchboard_breaker_transitions_total", "counter",
            "Circuit breaker transitions, by the state entered.", ("deployment", "state"))
        self.records_queued = family(
            "switchboard_records_queued", "gauge", "Request records waiting to be written.")
        self.records_written = family(
            "switchboard_records_written_total", "counter", "Request records written to storage.")
        self.records_dropped = family(
            "switchboard_records_dropped_total", "counter",
            "Request records dropped (queue full, or given up after a failed write).")
        self.record_write_errors = family(
            "switchboard_record_write_errors_total", "counter", "Failed writes of request record batches.")
        self.trace_spans = family(
            "switchboard_trace_spans_total", "counter",
            "Spans sent to the OpenTelemetry collector, by whether it took them (exported) or not (failed).",
            ("outcome",))
        self.traces_dropped = family(
            "switchboard_traces_dropped_total", "counter",
            "Sampled requests whose spans were not sent (the tracing queue was full).")
        self.loop_lag = family(
            "switchboard_event_loop_lag_seconds", "histogram",
            "How late the event loop ran a periodic probe: time it could not spend on requests.",
            buckets=LAG_BUCKETS)
        self.gc_collections = family(
            "python_gc_collections_total", "counter",
            "Runs of Python's cycle collector, by generation (see server.gc_threshold).", ("generation",))
        self.gc_collected = family(
            "python_gc_objects_collected_total", "counter",
            "Objects Python's cycle collector found unreachable and freed, by generation.", ("generation",))
        self.workers = family(
            "switchboard_metrics_workers", "gauge", "Worker processes whose metrics this scrape includes.")
        self.overflow = family(
            "switchboard_metrics_overflow_total", "counter",
            "Observations counted into an 'other' series because a metric reached its label-set limit.",
            ("metric",))
        self.families: tuple[Family, ...] = (
            self.operation_duration, self.token_usage, self.requests, self.request_duration, self.ttft,
            self.errors, self.attempts, self.fallbacks, self.tokens, self.cost, self.in_flight,
            self.breaker_state, self.breaker_transitions, self.records_queued, self.records_written,
            self.records_dropped, self.record_write_errors, self.trace_spans, self.traces_dropped, self.loop_lag,
            self.gc_collections, self.gc_collected, self.workers, self.overflow,
        )

    @property
    def worker_id(self) -> str:
        """This worker's name in the snapshot directory: its pid unless given."""
        return self._worker_id or str(os.getpid())

    # -- the hot path ------------------------------------------------------------------------

    def observe_record(self, rec: RequestRecord) -> None:
        """Count one finished request. Call it once per record, when the record is complete."""
        endpoint = rec.endpoint
        model = rec.public_model or ""
        router = rec.router or ""
        deployment = rec.deployment or ""
        provider = rec.provider or ""
        status = f"{rec.status // 100}xx"
        stream = "true" if rec.stream else "false"
        operation = _OPERATION.get(endpoint, endpoint)

        self.requests.inc((endpoint, model, router, deployment, provider, status, stream))
        self.request_duration.observe((endpoint, model, router, status, stream), rec.latency_ms / 1000)
        if rec.status >= 400 or rec.partial:
            self.errors.inc((endpoint, model, rec.error_type or "", status))
        if rec.ttft_ms is not None:
            self.ttft.observe((endpoint, model, deployment, stream), rec.ttft_ms / 1000)
        if rec.input_tokens or rec.output_tokens:
            self.token_usage.observe((operation, provider, model, "input"), rec.input_tokens)
            self.tokens.inc((model, deployment, provider, "input"), rec.input_tokens)
            if operation != "embeddings":  # embeddings have input tokens only
                self.token_usage.observe((operation, provider, model, "output"), rec.output_tokens)
                self.tokens.inc((model, deployment, provider, "output"), rec.output_tokens)
            if rec.cached_tokens:
                self.tokens.inc((model, deployment, provider, "cached_input"), rec.cached_tokens)
            if rec.reasoning_tokens:
                self.tokens.inc((model, deployment, provider, "reasoning"), rec.reasoning_tokens)

        attributed = 0.0
        for i, a in enumerate(rec.attempts):
            a_model = a.model or model
            reason = a.reason or ""
            self.attempts.inc((a_model, a.deployment, a.provider, a.outcome, reason))
            if a.outcome != "skipped":
                error = "" if a.outcome == "ok" else reason or a.outcome
                self.operation_duration.observe((operation, a.provider, a_model, a.deployment, error),
                                                a.latency_ms / 1000)
                if i and not a.hedge and not a.retry:
                    self.fallbacks.inc((model, a_model, a.deployment))
            if a.cost_usd:
                self.cost.inc((a_model, router, a.deployment, a.provider), a.cost_usd)
                attributed += a.cost_usd
        # What no attempt accounts for belongs to the deployment that answered.
        if rec.cost_usd - attributed > 1e-12:
            self.cost.inc((model, router, deployment, provider), rec.cost_usd - attributed)

    def request_started(self, endpoint: str) -> None:
        """A request came in; pair with exactly one :meth:`request_finished` for the same endpoint."""
        self.in_flight.inc((endpoint,))

    def request_finished(self, endpoint: str) -> None:
        self.in_flight.inc((endpoint,), -1.0)

    def breaker_changed(self, deployment: str, old: str, new: str) -> None:
        """A breaker transition: a :data:`~switchboard.execution.breaker.ChangeHook`."""
        for state in BREAKER_STATES:
            self.breaker_state.set((deployment, state), 1.0 if state == new else 0.0)
        self.breaker_transitions.inc((deployment, new))

    def declare_deployments(self, deployments: Iterable[str]) -> None:
        """Show these deployments' breakers as closed until they change, so that every deployment has
        a ``switchboard_breaker_state`` series from the start."""
        for deployment in deployments:
            if not self.breaker_state.has((deployment, "closed")):
                for state in BREAKER_STATES:
                    self.breaker_state.set((deployment, state), 1.0 if state == "closed" else 0.0)

    def watch_records(self, read: Callable[[], SinkStats]) -> None:
        """Read the record sink's counters (``lambda: sink.stats``) whenever a snapshot is taken."""
        self._records = read

    def watch_tracer(self, tracer: Tracer) -> None:
        """Read the tracer's counters whenever a snapshot is taken."""
        self._tracer = tracer

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe((), seconds)

    # -- exposition --------------------------------------------------------------------------

    def collect(self) -> dict[str, Snapshot]:
        """A copy of this worker's series, family name → series (on the loop: reads the record sink)."""
        if self._records is not None:
            stats = self._records()
            self.records_queued.set((), stats.queued)
            self.records_written.set((), stats.written)
            self.records_dropped.set((), stats.dropped)
            self.record_write_errors.set((), stats.write_errors)
        if self._tracer is not None:
            self.trace_spans.set(("exported",), self._tracer.exported)
            self.trace_spans.set(("failed",), self._tracer.failed)
            self.traces_dropped.set((), self._tracer.dropped)
        for generation, runs in enumerate(gc.get_stats()):
            self.gc_collections.set((str(generation),), runs["collections"])
            self.gc_collected.set((str(generation),), runs["collected"])
        self.workers.set((), 1.0)
        for family in self.families:
            if family.overflowed:
                self.overflow.set((family.name,), family.overflowed)
        return {family.name: family.snapshot() for family in self.families}

    def render(self) -> bytes:
        """The text exposition, merged over workers. Reads the other workers' snapshot files: off the
        event loop, use :meth:`arender`."""
        return self._render_with(self.collect())

    async def arender(self) -> bytes:
        """:meth:`render` for the event loop: this worker's series are copied here, files read in a thread."""
        local = self.collect()
        if self.multiprocess_dir is None:
            return self._render_with(local)
        return await asyncio.to_thread(self._render_with, local)

    def _render_with(self, local: dict[str, Snapshot]) -> bytes:
        snapshots: list[tuple[dict[str, object], bool]] = [(dict(local), True)]
        if self.multiprocess_dir is not None:
            snapshots += self._read_others()
        return render(self.families, merge(self.families, snapshots))

    # -- several workers ---------------------------------------------------------------------

    def start(self, *, loop_lag_interval: float | None = 1.0) -> None:
        """Start the background work on the running loop: the periodic snapshot (with a
        ``multiprocess_dir``) and the event-loop lag probe (unless ``loop_lag_interval`` is None)."""
        loop = asyncio.get_running_loop()
        if self.multiprocess_dir is not None:
            self._tasks.append(loop.create_task(self._snapshots(), name="switchboard-metrics-snapshots"))
        if loop_lag_interval is not None:
            self._tasks.append(loop.create_task(loop_lag_probe(self, loop_lag_interval),
                                                name="switchboard-loop-lag"))

    async def flush(self) -> None:
        """Write this worker's snapshot now (the series are copied here, the file written in a thread)."""
        if self.multiprocess_dir is not None:
            await asyncio.to_thread(self.write_snapshot, self._encode(live=True))

    async def aclose(self) -> None:
        """Stop the background work and write the last snapshot, marked as from a worker that has
        stopped: its counters still count, its gauges no longer do."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.multiprocess_dir is not None:
            await asyncio.to_thread(self.write_snapshot, self._encode(live=False))

    def write_snapshot(self, data: bytes | None = None) -> None:
        """Write ``data`` (default: a live snapshot taken now, so call it from the loop's thread or
        with no loop running) as this worker's file, atomically. Blocks: off the event loop."""
        directory = self.multiprocess_dir
        if directory is None:
            return
        if data is None:
            data = self._encode(live=True)
        tmp = directory / f".worker-{self.worker_id}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / f"worker-{self.worker_id}.json")

    def _encode(self, *, live: bool) -> bytes:
        return orjson.dumps({"format": _FORMAT, "worker": self.worker_id, "time": self._clock(), "live": live,
                             "families": self.collect()})

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_interval)
            try:
                await self.flush()
            except OSError as exc:
                if not self._write_failing:
                    log.warning("metrics: cannot write this worker's snapshot (%s); other workers' scrapes "
                                "miss its latest counts", exc)
                self._write_failing = True
            else:
                self._write_failing = False

    def _read_others(self) -> list[tuple[dict[str, object], bool]]:
        directory = self.multiprocess_dir
        assert directory is not None
        own = f"worker-{self.worker_id}.json"
        now = self._clock()
        out: list[tuple[dict[str, object], bool]] = []
        for path in sorted(directory.glob("worker-*.json")):
            if path.name == own:
                continue
            try:
                raw = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # gone, or being replaced: the next scrape reads it
            if not isinstance(raw, dict) or raw.get("format") != _FORMAT or not isinstance(raw.get("families"), dict):
                continue
            at = raw.get("time")
            fresh = isinstance(at, (int, float)) and now - at <= self.stale_after
            out.append((raw["families"], raw.get("live") is True and fresh))
        return out


async def loop_lag_probe(metrics: Metrics, interval: float = 1.0, *, samples: int | None = None) -> None:
    """Every ``interval`` seconds, observe how much later than asked the loop woke this task up.

    Runs until cancelled, or for ``samples`` observations. Usage: ``asyncio.create_task(loop_lag_probe(m))``
    """
    loop = asyncio.get_running_loop()
    taken = 0
    while samples is None or taken < samples:
        start = loop.time()
        await asyncio.sleep(interval)
        metrics.observe_loop_lag(max(0.0, loop.time() - start - interval))
        taken += 1
