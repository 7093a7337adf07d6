"""Walking a route plan: one attempt per candidate until one succeeds or a failure is final.

Each attempt is recorded on the request record. A retryable failure moves on to the next
candidate; a non-retryable one (the caller's mistake) returns at once. Streams count as succeeded
once the upstream produced its first content-bearing event — nothing has reached the client
before then, so failing over is invisible.

Usage::

    done = await executor.chat(plan, request, ctx)
    done.deployment.id, done.value.choices[0]
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from switchboard.config.model import DeploymentConfig
from switchboard.errors import SwitchboardError, UpstreamProtocolError
from switchboard.providers.base import CallOptions, Provider
from switchboard.routing.plan import RoutePlan
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
    StreamStart,
)
from switchboard.telemetry.record import Attempt

if TYPE_CHECKING:
    from switchboard.gateway import RequestContext

__all__ = ["Attempted", "Executor", "StartedStream"]

T = TypeVar("T")
# The events up to and including the first content, and the batches still to come.
StartedStream = tuple[list[StreamEvent], AsyncIterator[list[StreamEvent]]]


@dataclass(slots=True)
class Attempted(Generic[T]):
    """The result of the attempt that succeeded and the deployment that produced it."""

    deployment: DeploymentConfig
    value: T


class Executor:
    """Runs attempts against providers in plan order."""

    def __init__(self, providers: Mapping[str, Provider],
                 forwarding: Callable[[DeploymentConfig, Mapping[str, str]], dict[str, str]]) -> None:
        self._providers = providers
        self._forwarding = forwarding

    async def chat(self, plan: RoutePlan, request: ChatRequest, ctx: RequestContext) -> Attempted[ChatResponse]:
        def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions) -> Awaitable[ChatResponse]:
            return provider.chat(request, dep, opts)
        return await self._walk(plan, ctx, call)

    async def embed(self, plan: RoutePlan, request: EmbeddingRequest,
                    ctx: RequestContext) -> Attempted[EmbeddingResponse]:
        def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions) -> Awaitable[EmbeddingResponse]:
            return provider.embed(request, dep, opts)
        return await self._walk(plan, ctx, call)

    async def stream(self, plan: RoutePlan, request: ChatRequest,
                     ctx: RequestContext) -> Attempted[StartedStream]:
        def call(provider: Provider, dep: DeploymentConfig, opts: CallOptions) -> Awaitable[StartedStream]:
            return _first_content(provider.stream(request, dep, opts))
        return await self._walk(plan, ctx, call)

    async def _walk(self, plan: RoutePlan, ctx: RequestContext,
                    call: Callable[[Provider, DeploymentConfig, CallOptions], Awaitable[T]]) -> Attempted[T]:
        last: SwitchboardError | None = None
        attempts = ctx.record.attempts
        for cand in plan.candidates:
            dep = cand.deployment
            opts = CallOptions(ctx.request_id, self._forwarding(dep, ctx.client_headers))
            t0 = time.perf_counter()
            try:
                value = await call(self._providers[dep.provider], dep, opts)
            except SwitchboardError as exc:
                attempts.append(Attempt(dep.id, dep.provider, "error", (time.perf_counter() - t0) * 1000,
                                        error=f"{type(exc).__name__}: {exc.message[:200]}",
                                        http_status=getattr(exc, "upstream_status", exc.status)))
                if not exc.retryable:
                    raise
                last = exc
                continue
            attempts.append(Attempt(dep.id, dep.provider, "ok", (time.perf_counter() - t0) * 1000))
            return Attempted(dep, value)
        assert last is not None, "a route plan always has at least one candidate"
        raise last


async def _first_content(stream: AsyncIterator[list[StreamEvent]]) -> StartedStream:
    """Pull batches until one carries content (any event but ``StreamStart``); close the stream on failure."""
    buffered: list[StreamEvent] = []
    it = aiter(stream)
    try:
        while True:
            try:
                batch = await anext(it)
            except StopAsyncIteration:
                raise UpstreamProtocolError("the upstream stream ended before any content") from None
            buffered += batch
            if any(type(ev) is not StreamStart for ev in batch):
                return buffered, it
    except BaseException:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
