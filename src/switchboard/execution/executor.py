"""Executing a route: attempts, retries, fallbacks, hedging and validation, under one deadline.

Each concern wraps the one below it and keeps its interface (``Attempted[T]`` out):

* **attempt** — one call to one deployment with its timeouts; the outcome goes to the deployment's
  breaker and live statistics, the answer through the response validators;
* **lane** — candidates in plan order, then the model's fallback models. A transient failure puts the
  deployment back at the end of the model's own candidates, to be tried again after the others (with
  what is left of its jittered backoff, or its ``retry-after``, never past the deadline): a healthy
  deployment answers sooner than a backoff ends. A context overflow jumps to the model's
  ``context_fallback`` and a refusal to its ``refusal_fallback``;
* **race** — when hedging is on and the first lane has no first token in time, a second lane starts
  on the next candidate; the first to deliver wins and the other is cancelled.

Streams count as delivered once the upstream produced its first content-bearing event: nothing has
reached the client before then, so every failure up to that point fails over invisibly.

Usage::

    done = await executor.chat(route, request, ctx)
    done.deployment.id, done.value.choices[0], ctx.record.attempts
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from switchboard.config.model import DeploymentConfig, ResilienceConfig
from switchboard.errors import (
    NoHealthyDeployment,
    SwitchboardError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from switchboard.execution.breaker import BreakerBoard, CircuitBreaker
from switchboard.execution.hedging import HedgeBudget, hedge_delay
from switchboard.execution.live import LiveStats
from switchboard.execution.retry import Failure, classify, retry_delay
from switchboard.execution.validators import Validator, first_failure, response_from_events
from switchboard.providers.base import CallOptions, Provider
from switchboard.routing.plan import Candidate, RoutePlan
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    LastBatch,
    StreamEvent,
    StreamStart,
    Usage,
)
from switchboard.telemetry.record import Attempt, cost_usd
from switchboard.telemetry.tracing import format_traceparent, new_span_id

if TYPE_CHECKING:
    from switchboard.gateway import RequestContext

__all__ = ["Attempted", "Executor", "ModelPolicy", "Route", "StartedStream"]

T = TypeVar("T")
# The events up to and including the first content, and the batches still to come.
StartedStream = tuple[list[StreamEvent], AsyncIterator[list[StreamEvent]]]
Call = Callable[[Provider, DeploymentConfig, CallOptions, float], Awaitable[T]]
Judge = Callable[[T], "tuple[str, str] | None"]


@dataclass(slots=True)
class Attempted(Generic[T]):
    """The answer that was delivered, the deployment that produced it and its attempt record."""

    deployment: DeploymentConfig
    value: T
    attempt: Attempt
    unsatisfactory: str | None = None  # why the answer failed validation, when nothing better came


@dataclass(slots=True)
class ModelPolicy:
    """How requests for one public model are executed; built once from the configuration."""

    name: str
    resilience: ResilienceConfig
    validators: tuple[Validator, ...] = ()
    fallbacks: tuple[str, ...] = ()
    context_fallback: str | None = None
    refusal_fallback: str | None = None
    hedge_budget: HedgeBudget | None = None


@dataclass(slots=True)
class Route:
    """One request's route: its plan, its policy, how to plan a fallback model, and its deadline
    (event-loop time)."""

    plan: RoutePlan
    policy: ModelPolicy
    plan_for: Callable[[str], RoutePlan]
    deadline: float


class Executor:
    """Runs a route's attempts against the providers."""

    def __init__(self, providers: Mapping[str, Provider],
                 forwarding: Callable[[DeploymentConfig, Mapping[str, str]], dict[str, str]], *,
                 breakers: BreakerBoard, stats: LiveStats, rng: random.Random | None = None) -> None:
        self._providers = providers
        self._forwarding = forwarding
        self.breakers = breakers
        self.stats = stats
        self._rng = rng or random.Random()

    async def chat(self, route: Route, request: ChatRequest, ctx: RequestContext) -> Attempted[ChatResponse]:
        def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions, ttft: float) -> Awaitable[ChatResponse]:
            return provider.chat(request, dep, opts)

        validators = route.policy.validators

        def judge(resp: ChatResponse) -> tuple[str, str] | None:
            return first_failure(validators, request, resp)

        return await _Run(self, route, ctx).walk(call, judge if validators else None)

    async def embed(self, route: Route, request: EmbeddingRequest,
                    ctx: RequestContext) -> Attempted[EmbeddingResponse]:
        def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions,
                 ttft: float) -> Awaitable[EmbeddingResponse]:
            return provider.embed(request, dep, opts)

        return await _Run(self, route, ctx).walk(call, None)

    async def stream(self, route: Route, request: ChatRequest, ctx: RequestContext) -> Attempted[StartedStream]:
        validators = route.policy.validators
        whole = route.policy.resilience.buffer_streams and bool(validators)

        async def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions,
                       ttft: float) -> StartedStream:
            try:
                async with asyncio.timeout(ttft):
                    return await _first_content(provider.stream(request, dep, opts), whole=whole)
            except TimeoutError:
                raise UpstreamTimeout(f"{dep.id} sent no content within {ttft:.3g} s") from None

        def judge(started: StartedStream) -> tuple[str, str] | None:
            return first_failure(validators, request, response_from_events(started[0]))

        # The breaker's verdict on a stream waits for its end (the stream records it): a stream cut
        # after its first content is a failure of the deployment, not a success.
        run = _Run(self, route, ctx, streaming=True, defer_verdict=not whole)
        return await run.walk(call, judge if whole else None, discard=_close_started)


class _Next(Exception):
    """Move on to the next candidate."""


class _Retry(Exception):
    """Try the same deployment again."""


@dataclass(slots=True)
class _Item:
    candidate: Candidate
    model: str
    retry: int = 0  # earlier tries of this deployment in this request
    retry_after: float | None = None  # what the last failure asked for
    failed_at: float = 0.0  # event-loop time of the last failure


@dataclass(slots=True)
class _Unsatisfactory(Generic[T]):
    deployment: DeploymentConfig
    value: T
    attempt: Attempt
    reason: str


@dataclass(slots=True)
class _Run:
    """The state of one request's execution."""

    ex: Executor
    route: Route
    ctx: RequestContext
    queue: deque[_Item] = field(default_factory=deque)
    pending: deque[str] = field(default_factory=deque)
    used: set[str] = field(default_factory=set)
    last: SwitchboardError | None = None
    decisive: SwitchboardError | None = None
    kept: _Unsatisfactory[Any] | None = None
    streaming: bool = False
    defer_verdict: bool = False

    def __post_init__(self) -> None:
        route = self.route
        model = route.policy.name
        self.used.add(model)
        self.queue.extend(_Item(c, model) for c in route.plan.candidates)
        self.pending.extend(route.policy.fallbacks)

    # -- the race (hedging) ------------------------------------------------------------------

    async def walk(self, call: Call[T], judge: Judge[T] | None,
                   discard: Callable[[T], Awaitable[None]] | None = None) -> Attempted[T]:
        policy = self.route.policy
        hedge = policy.resilience.hedge
        budget = policy.hedge_budget
        if hedge.after is None or budget is None or not self.queue:
            return await self.lane(call, judge, hedged=False)
        budget.earn()
        delay = hedge_delay(hedge.after, self.ex.stats.for_deployment(self.queue[0].candidate.deployment.id))
        if delay is None:  # "p95" before the deployment has enough history
            return await self.lane(call, judge, hedged=False)
        first = asyncio.ensure_future(self.lane(call, judge, hedged=False))
        lanes: set[asyncio.Future[Attempted[T]]] = {first}
        try:
            await asyncio.wait(lanes, timeout=delay)
            if first.done() or not self.has_next() or not budget.try_spend():
                return await first
            lanes.add(asyncio.ensure_future(self.lane(call, judge, hedged=True)))
            failure: BaseException | None = None
            while lanes:
                done, lanes = await asyncio.wait(lanes, return_when=asyncio.FIRST_COMPLETED)
                winner: Attempted[T] | None = None
                for task in done:
                    if task.exception() is not None:
                        failure = failure or task.exception()
                    elif winner is None:
                        winner = task.result()
                    elif discard is not None:  # both delivered in the same instant
                        lost = task.result()
                        await discard(lost.value)
                        if self.defer_verdict:
                            self.ex.breakers.get(lost.deployment.id).release()
                if winner is not None:
                    await _cancel(lanes)
                    for a in self.ctx.record.attempts:
                        if a.outcome == "cancelled":
                            a.outcome, a.reason = "error", "hedge_lost"
                    return winner
            assert failure is not None
            raise failure
        finally:
            await _cancel(lanes)

    # -- the lane (fallbacks) ----------------------------------------------------------------

    async def lane(self, call: Call[T], judge: Judge[T] | None, *, hedged: bool) -> Attempted[T]:
        while (item := self.next()) is not None:
            dep = item.candidate.deployment
            if item.retry and not await self.backoff(item):
                continue
            if not self.ex.breakers.get(dep.id).allow():
                self.ctx.record.attempts.append(Attempt(dep.id, dep.provider, "skipped", 0.0, reason="circuit_open",
                                                        model=item.model, retry=item.retry, hedge=hedged))
                continue
            try:
                return await self.attempt(item, call, judge, hedged)
            except _Retry:
                # Try it again after the other candidates: a healthy one answers sooner than a backoff ends.
                if item.retry + 1 < self.route.policy.resilience.retries.attempts:
                    last = self.last
                    self.queue.append(_Item(item.candidate, item.model, item.retry + 1,
                                            None if last is None else last.retry_after,
                                            asyncio.get_running_loop().time()))
            except _Next:
                continue
        kept = self.kept
        if kept is not None:
            return Attempted(kept.deployment, kept.value, kept.attempt, kept.reason)
        raise self.final_error()

    async def backoff(self, item: _Item) -> bool:
        """Wait out what is left of the backoff before retrying ``item``; ``False`` if it must be skipped
        (its ``retry-after`` is too long, or the wait would pass the deadline)."""
        wait = retry_delay(item.retry, self.route.policy.resilience.retries, draw=self.ex._rng.random(),
                           retry_after=item.retry_after, remaining=self.remaining())
        if wait is None:
            return False
        wait -= asyncio.get_running_loop().time() - item.failed_at  # the other candidates took time too
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def next(self) -> _Item | None:
        while not self.queue and self.pending:
            self.expand(self.pending.popleft(), front=False)
        return self.queue.popleft() if self.queue else None

    def has_next(self) -> bool:
        return bool(self.queue) or any(m not in self.used for m in self.pending)

    def expand(self, model: str, *, front: bool) -> bool:
        """Queue the candidates of fallback model ``model`` (once per request)."""
        if model in self.used:
            return False
        self.used.add(model)
        items = [_Item(c, model) for c in self.route.plan_for(model).candidates]
        if front:
            self.queue.extendleft(reversed(items))
        else:
            self.queue.extend(items)
        return True

    def final_error(self) -> SwitchboardError:
        if self.decisive is not None:
            return self.decisive
        attempts = self.ctx.record.attempts
        last = self.last
        if last is None:
            return self.no_healthy()
        tried = [a for a in attempts if a.outcome != "skipped"]
        if len(tried) > 1:
            summary = ", ".join(f"{a.deployment} {a.reason}" for a in tried)
            last.message = f"{last.message} (all {len(tried)} attempts failed: {summary})"
            last.args = (last.message,)
        return last

    def no_healthy(self) -> NoHealthyDeployment:
        unavailable = self.ex.breakers.unavailable()
        now = time.monotonic()
        waits = [until - now for until in unavailable.values() if until > now]
        return NoHealthyDeployment(
            f"Every deployment of '{self.route.policy.name}' is unavailable right now "
            "(circuit breakers open or providers cooling down); try again shortly.",
            retry_after=max(1.0, min(waits)) if waits else 1.0,
        )

    def remaining(self) -> float:
        return self.route.deadline - asyncio.get_running_loop().time()

    # -- one attempt ---------------------------------------------------------------------------

    async def attempt(self, item: _Item, call: Call[T], judge: Judge[T] | None, hedged: bool) -> Attempted[T]:
        ex = self.ex
        dep = item.candidate.deployment
        breaker = ex.breakers.get(dep.id)
        res = self.route.policy.resilience
        remaining = self.remaining()
        if remaining <= 0:
            breaker.release()
            raise self.deadline_error()
        ctx = self.ctx
        streaming = self.streaming  # a stream's time is bounded by ttft_timeout, idle_timeout and the deadline
        limit = remaining if streaming or res.attempt_timeout is None else min(remaining, res.attempt_timeout)
        opts = CallOptions(ctx.request_id, ex._forwarding(dep, ctx.client_headers), timeout=limit,
                           idle_timeout=res.idle_timeout)
        attempt = Attempt(dep.id, dep.provider, "pending", 0.0, model=item.model, retry=item.retry, hedge=hedged,
                          input_price=dep.price.input)
        trace = ctx.trace
        if trace is not None:  # the upstream call is a span of its own, the parent of the provider's spans
            attempt.span_id = new_span_id()
            opts.forward_headers["traceparent"] = format_traceparent(trace.trace_id, attempt.span_id, trace.sampled)
            if trace.tracestate is not None:
                opts.forward_headers["tracestate"] = trace.tracestate
        ctx.record.attempts.append(attempt)
        stats = ex.stats.for_deployment(dep.id)
        stats.begin()
        t0 = time.perf_counter()
        attempt.started_ms = (t0 - ctx.started) * 1000
        try:
            value = await call(ex._providers[dep.provider], dep, opts, min(res.ttft_timeout, remaining))
        except asyncio.CancelledError:
            attempt.outcome, attempt.reason = "cancelled", "cancelled"
            attempt.latency_ms = (time.perf_counter() - t0) * 1000
            breaker.release()
            raise
        except SwitchboardError as exc:
            attempt.latency_ms = (time.perf_counter() - t0) * 1000
            failure = classify(exc)
            attempt.outcome, attempt.reason = "error", failure.reason
            attempt.error = f"{type(exc).__name__}: {exc.message[:200]}"
            attempt.http_status = getattr(exc, "upstream_status", exc.status)
            self._judge_health(breaker, failure, exc)
            stats.observe_outcome(False)
            self.last = exc
            self.after_failure(item, exc, failure)
        except Exception:  # a bug, not an upstream verdict: free the breaker slot and let it surface
            attempt.outcome, attempt.reason = "error", "internal"
            breaker.release()
            raise
        finally:
            stats.end()
        elapsed = time.perf_counter() - t0
        attempt.latency_ms = elapsed * 1000
        if not self.defer_verdict:
            breaker.record_success()
        stats.observe_outcome(True)
        stats.observe_ttft(elapsed)
        verdict = judge(value) if judge is not None else None
        if verdict is None:
            attempt.outcome = "ok"
            return Attempted(dep, value, attempt)
        name, why = verdict
        attempt.outcome, attempt.reason, attempt.error = "unsatisfactory", name, why[:200]
        usage = getattr(value, "usage", None)
        if isinstance(usage, Usage):
            attempt.cost_usd = cost_usd(usage, dep.price)
        self.kept = _Unsatisfactory(dep, value, attempt, why)
        refuse_to = self.route.policy.refusal_fallback
        if name == "refusal" and refuse_to is not None:
            self.expand(refuse_to, front=True)
        raise _Next

    @staticmethod
    def _judge_health(breaker: CircuitBreaker, failure: Failure, exc: SwitchboardError) -> None:
        if failure.health == "failure":
            breaker.record_failure()
        else:
            breaker.release()
            if failure.health == "cool" and breaker.settings.enabled:
                breaker.cool_down(exc.retry_after or 1.0)

    def after_failure(self, item: _Item, exc: SwitchboardError, failure: Failure) -> NoReturn:
        """Raise what comes next after a failed attempt: ``_Retry``, ``_Next`` or ``exc`` itself."""
        policy = self.route.policy
        if failure.reason == "context_length":
            window = item.candidate.deployment.context_window
            if window is not None:  # the rest of the plan that cannot fit the prompt either
                self.queue = deque(i for i in self.queue
                                   if (w := i.candidate.deployment.context_window) is None or w > window)
            if policy.context_fallback is not None:
                self.expand(policy.context_fallback, front=True)
            if self.has_next():
                self.decisive = exc
                raise _Next
            raise exc
        if failure.reason == "refusal":
            if policy.refusal_fallback is not None and self.expand(policy.refusal_fallback, front=True):
                self.decisive = exc
                raise _Next
            raise exc
        if not failure.fall_back:
            raise exc
        if failure.retry_same:
            raise _Retry
        raise _Next

    def deadline_error(self) -> UpstreamTimeout:
        tried = [a for a in self.ctx.record.attempts if a.outcome != "skipped"]
        return UpstreamTimeout(f"The request's deadline passed after {len(tried)} attempt(s).")


async def _first_content(stream: AsyncIterator[list[StreamEvent]], *, whole: bool = False) -> StartedStream:
    """Pull batches until one carries content (any event but ``StreamStart``) — or, with ``whole``, to
    the end of the stream; close the stream on failure. What was pulled is a :class:`LastBatch` if the
    stream's end came with it."""
    buffered: list[StreamEvent] = []
    it = aiter(stream)
    try:
        while True:
            try:
                batch = await anext(it)
            except StopAsyncIteration:
                if whole and any(type(ev) is not StreamStart for ev in buffered):
                    return LastBatch(buffered), _empty()
                raise UpstreamProtocolError("the upstream stream ended before any content") from None
            buffered += batch
            if not whole and any(type(ev) is not StreamStart for ev in batch):
                return (LastBatch(buffered) if type(batch) is LastBatch else buffered), it
    except BaseException:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
        raise


async def _empty() -> AsyncIterator[list[StreamEvent]]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _close_started(started: StartedStream) -> None:
    aclose = getattr(started[1], "aclose", None)
    if aclose is not None:
        await aclose()


async def _cancel(tasks: Sequence[asyncio.Future[Any]] | set[asyncio.Future[Any]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
