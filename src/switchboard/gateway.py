"""The gateway core: resolve the public model, plan, execute against providers, record.

The HTTP app is a thin layer over this; the same object serves library users in-process.

Usage::

    async with Gateway(load_config("switchboard.yaml", env=os.environ)) as gw:
        resp = await gw.chat(ChatRequest(model="fast", messages=[Message("user", [TextPart("Hi")])]))
        print(resp.choices[0].message.text())
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from switchboard.config.model import Config, DeploymentConfig, ModelConfig, ProviderConfig
from switchboard.errors import InvalidRequest, ModelNotFound, SwitchboardError
from switchboard.execution.breaker import BreakerBoard, BreakerSettings, BreakerState, ChangeHook
from switchboard.execution.executor import Executor, ModelPolicy, Route
from switchboard.execution.hedging import HedgeBudget
from switchboard.execution.live import LiveStats
from switchboard.execution.probes import HealthProber, ProbeTarget
from switchboard.execution.validators import load_validator
from switchboard.providers.base import Provider, create_provider
from switchboard.providers.http import HttpClient
from switchboard.routing.plan import RequestFeatures, RoutePlan
from switchboard.routing.strategies import weighted
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    StreamEvent,
    StreamUsage,
    Usage,
)
from switchboard.schemas.ids import new_id
from switchboard.storage.records import RecordSink
from switchboard.telemetry.record import Attempt, RequestRecord, cost_usd

__all__ = ["ChatStream", "Gateway", "RequestContext", "new_request_id"]

log = logging.getLogger("switchboard")

# Client headers that carry credentials or hop-by-hop meaning are never passed upstream.
_NEVER_FORWARD = frozenset({
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "host", "content-length",
    "content-type", "connection", "transfer-encoding", "anthropic-version", "proxy-authorization",
})


def new_request_id() -> str:
    """A fresh request id: ``req_`` and 24 hex digits."""
    return new_id("req_")


@dataclass(slots=True)
class RequestContext:
    """One request's identity and its record, shared by the gateway and the layer that called it."""

    request_id: str
    record: RequestRecord
    client_headers: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    timeout: float | None = None  # the caller's own deadline in seconds, if it set one

    @classmethod
    def create(cls, *, endpoint: str, dialect: str = "library", request_id: str | None = None,
               client_headers: Mapping[str, str] | None = None, caller: str | None = None,
               timeout: float | None = None) -> RequestContext:
        rid = request_id or new_request_id()
        rec = RequestRecord(request_id=rid, started_at=time.time(), endpoint=endpoint, dialect=dialect,
                            caller=caller)
        return cls(rid, rec, client_headers or {}, timeout=timeout)


class _Forwarding:
    """Which client headers one provider receives (from its ``forward_headers`` setting)."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, config: ProviderConfig) -> None:
        names = [h.lower() for h in config.forward_headers]
        self.exact = frozenset(n for n in names if not n.endswith("*"))
        self.prefixes = tuple(n[:-1] for n in names if n.endswith("*"))

    def pick(self, headers: Mapping[str, str]) -> dict[str, str]:
        if not self.exact and not self.prefixes:
            return {}
        return {k: v for k, v in headers.items()
                if k not in _NEVER_FORWARD and (k in self.exact or (self.prefixes and k.startswith(self.prefixes)))}


class Gateway:
    """Routes canonical requests to upstream deployments and records what happened."""

    def __init__(self, config: Config, *, records: RecordSink | None = None, http: HttpClient | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._own_http = http is None
        self._http = http or HttpClient(
            max_connections_per_host=max((pc.max_connections for pc in config.providers.values()), default=256))
        self._providers: dict[str, Provider] = {
            name: create_provider(pc, self._http) for name, pc in config.providers.items()
        }
        self._forwarding = {name: _Forwarding(pc) for name, pc in config.providers.items()}
        if any(pc.base_url.startswith("https://") for pc in config.providers.values()):
            self._http.prepare_tls()  # disk reads belong to start-up, not to the first request
        self._names: dict[str, tuple[str, ModelConfig]] = {}
        for name, model in config.models.items():
            self._names[name] = (name, model)
            for alias in model.aliases:
                self._names[alias] = (name, model)
        self._records = records
        self._rng = rng or random.Random()
        self._policies = {name: _policy(name, model, config) for name, model in config.models.items()}
        breaker_settings: dict[str, BreakerSettings] = {}
        for name, model in config.models.items():
            for dep in model.deployments:
                breaker_settings.setdefault(dep.id, _breaker_settings(config, name))
        default_breaker = _breaker_settings(config, None)
        self.breaker_listeners: list[ChangeHook] = []
        self.breakers = BreakerBoard(lambda dep_id: breaker_settings.get(dep_id, default_breaker),
                                     on_change=self._breaker_changed)
        self._prober = HealthProber(self.breakers, _probe_targets(config, self._providers))
        self.stats = LiveStats()
        self._executor = Executor(self._providers, self._forwarding_for, breakers=self.breakers,
                                  stats=self.stats, rng=self._rng)

    async def __aenter__(self) -> Gateway:
        self.start()
        return self

    def start(self) -> None:
        """Start background work (active health probes, when configured); needs a running loop."""
        self._prober.start()

    def _breaker_changed(self, deployment: str, old: BreakerState, new: BreakerState) -> None:
        if new == "open":
            log.warning("deployment %s: circuit open (was %s), traffic goes elsewhere", deployment, old)
        else:
            log.info("deployment %s: circuit %s (was %s)", deployment, new.replace("_", "-"), old)
        for listener in self.breaker_listeners:
            listener(deployment, old, new)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop background work; close upstream connections (when the gateway owns its HTTP client)."""
        await self._prober.aclose()
        if self._own_http:
            await self._http.aclose()

    # -- model catalogue ---------------------------------------------------------------------

    def model_names(self) -> list[tuple[str, str]]:
        """``(name, target)`` for every public model and alias; ``target`` is the model an alias names."""
        out: list[tuple[str, str]] = []
        for name, model in self.config.models.items():
            out.append((name, name))
            out.extend((alias, name) for alias in model.aliases)
        return out

    def lookup(self, name: str, kind: str | None = "chat") -> tuple[str, ModelConfig]:
        """The public model behind ``name`` (a model name or alias) that serves ``kind`` (any if None)."""
        try:
            public, model = self._names[name]
        except KeyError:
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.",
                                param="model") from None
        if kind is not None and model.kind != kind:
            what = "an embeddings model" if model.kind == "embedding" else "a chat model"
            raise InvalidRequest(f"The model '{name}' is {what} and cannot serve this endpoint.",
                                 param="model", code="model_not_supported")
        return public, model

    def plan(self, request: ChatRequest) -> RoutePlan:
        """The route plan for ``request`` without executing it."""
        public, model = self.lookup(request.model)
        return self._route(public, model, _features(public, request), None).plan

    def _route(self, public: str, model: ModelConfig, features: RequestFeatures,
               ctx: RequestContext | None) -> Route:
        policy = self._policies[public]
        res = policy.resilience
        plan = self._select(features, model)
        if not plan.candidates and not policy.fallbacks and all(r != weighted.UNAVAILABLE for _, r in plan.excluded):
            why = "; ".join(f"{d}: {r}" for d, r in plan.excluded)
            raise InvalidRequest(f"No deployment of '{public}' can serve this request ({why}).",
                                 param="model", code="model_not_supported")

        def plan_for(name: str) -> RoutePlan:
            target, target_model = self._names[name]
            return self._select(RequestFeatures(target, features.needs_tools, features.needs_vision,
                                                features.needs_json), target_model)

        budget = res.deadline if ctx is None or ctx.timeout is None else ctx.timeout
        deadline = asyncio.get_running_loop().time() + min(budget, res.max_deadline) if ctx is not None else 0.0
        return Route(plan, policy, plan_for, deadline)

    def _select(self, features: RequestFeatures, model: ModelConfig) -> RoutePlan:
        deps = model.deployments
        draws = [self._rng.random() for _ in deps] if len(deps) > 1 else [1.0]
        return weighted.select(features, deps, draws, self.breakers.unavailable())

    def _forwarding_for(self, deployment: DeploymentConfig, headers: Mapping[str, str]) -> dict[str, str]:
        return self._forwarding[deployment.provider].pick(headers)

    # -- requests ----------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, ctx: RequestContext | None = None) -> ChatResponse:
        """Answer a chat request (``request.stream`` is ignored; use :meth:`stream` to stream)."""
        ctx = ctx or RequestContext.create(endpoint="chat")
        rec = ctx.record
        try:
            public, model = self.lookup(request.model)
            rec.public_model = public
            route = self._route(public, model, _features(public, request), ctx)
            done = await self._executor.chat(route, request, ctx)
            rec.unsatisfactory = done.unsatisfactory
            self._settle(rec, done.deployment, done.value.usage, done.attempt)
            rec.ttft_ms = rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
            return done.value
        except SwitchboardError as exc:
            self._fail(rec, exc)
            raise
        except asyncio.CancelledError:  # the caller went away; the upstream call was cancelled with it
            _gone(rec)
            raise
        finally:
            self._submit(ctx)

    async def stream(self, request: ChatRequest, ctx: RequestContext | None = None) -> ChatStream:
        """Start streaming a chat request.

        Returns once the upstream has produced its first content, so that any failure before that
        point raises here (and may have failed over to another deployment) rather than mid-stream.
        The caller must iterate or ``aclose()`` the returned stream.
        """
        ctx = ctx or RequestContext.create(endpoint="chat")
        rec = ctx.record
        rec.stream = True
        try:
            public, model = self.lookup(request.model)
            rec.public_model = public
            route = self._route(public, model, _features(public, request), ctx)
            started = await self._executor.stream(route, request, ctx)
            rec.unsatisfactory = started.unsatisfactory
        except SwitchboardError as exc:
            self._fail(rec, exc)
            self._submit(ctx)
            raise
        except asyncio.CancelledError:  # the caller went away before the first token
            _gone(rec)
            self._submit(ctx)
            raise
        rec.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        self._settle(rec, started.deployment, None, started.attempt)
        return ChatStream(self, ctx, started.deployment, started.value[0], started.value[1], started.attempt)

    async def embed(self, request: EmbeddingRequest, ctx: RequestContext | None = None) -> EmbeddingResponse:
        """Create embeddings."""
        ctx = ctx or RequestContext.create(endpoint="embeddings")
        rec = ctx.record
        try:
            public, model = self.lookup(request.model, "embedding")
            rec.public_model = public
            route = self._route(public, model, RequestFeatures(public), ctx)
            done = await self._executor.embed(route, request, ctx)
            self._settle(rec, done.deployment, done.value.usage, done.attempt)
            rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
            return done.value
        except SwitchboardError as exc:
            self._fail(rec, exc)
            raise
        except asyncio.CancelledError:
            _gone(rec)
            raise
        finally:
            self._submit(ctx)

    # -- record keeping ----------------------------------------------------------------------

    @staticmethod
    def _settle(rec: RequestRecord, dep: DeploymentConfig, usage: Usage | None, winner: Attempt) -> None:
        rec.deployment = dep.id
        rec.provider = dep.provider
        rec.upstream_model = dep.model
        if usage is not None:
            _apply_usage(rec, usage, dep, winner)

    @staticmethod
    def _fail(rec: RequestRecord, exc: SwitchboardError) -> None:
        rec.status = exc.status
        rec.error_type = type(exc).__name__
        rec.error_message = exc.message[:500]

    def _submit(self, ctx: RequestContext) -> None:
        rec = ctx.record
        if not rec.latency_ms:
            rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
        if self._records is not None:
            self._records.submit(rec)


def _apply_usage(rec: RequestRecord, usage: Usage, dep: DeploymentConfig, winner: Attempt | None) -> None:
    rec.input_tokens = usage.input_tokens
    rec.output_tokens = usage.output_tokens
    rec.cached_tokens = usage.cached_tokens
    rec.reasoning_tokens = usage.reasoning_tokens
    cost = cost_usd(usage, dep.price)
    if winner is not None:
        winner.cost_usd = cost
    # Every answer that was paid for counts: rejected ones, and hedges cancelled after the winner
    # (billed for the prompt they read, estimated from the winner's input tokens).
    for a in rec.attempts:
        if a is winner:
            continue
        if a.cost_usd is None and a.reason == "hedge_lost" and a.input_price is not None:
            a.cost_usd = usage.input_tokens * a.input_price / 1_000_000
        if a.cost_usd:
            cost += a.cost_usd
    rec.cost_usd = cost


def _gone(rec: RequestRecord) -> None:
    rec.status = 499
    rec.error_type = "ClientDisconnected"


def _features(public: str, request: ChatRequest) -> RequestFeatures:
    return RequestFeatures(
        public_model=public,
        needs_tools=bool(request.tools) and (request.tool_choice is None or request.tool_choice.mode != "none"),
        needs_vision=any(isinstance(p, ImagePart) for m in request.messages for p in m.content),
        needs_json=request.response_format is not None and request.response_format.type != "text",
    )


def _policy(name: str, model: ModelConfig, config: Config) -> ModelPolicy:
    res = config.resilience_for(name)
    specs = list(res.validators)
    if model.refusal_fallback is not None and "refusal" not in specs:
        specs.append("refusal")  # a refusal fallback needs refusals noticed
    budget = HedgeBudget(res.hedge.budget) if res.hedge.after is not None and res.hedge.budget > 0 else None
    return ModelPolicy(name, res, tuple(load_validator(s) for s in specs), model.fallbacks,
                       model.context_fallback, model.refusal_fallback, budget)


def _probe_targets(config: Config, providers: Mapping[str, Provider]) -> dict[str, ProbeTarget]:
    targets: dict[str, ProbeTarget] = {}
    for name, model in config.models.items():
        interval = config.resilience_for(name).breaker.probe_interval
        if interval is None:
            continue
        for dep in model.deployments:
            targets.setdefault(dep.id, ProbeTarget(providers[dep.provider], dep, interval, model.kind))
    return targets


def _breaker_settings(config: Config, model: str | None) -> BreakerSettings:
    b = config.resilience.breaker if model is None else config.resilience_for(model).breaker
    return BreakerSettings(window=b.window, min_requests=b.min_requests, failure_rate=b.failure_rate,
                           cooldown=b.cooldown, max_cooldown=b.max_cooldown, half_open_probes=b.half_open_probes,
                           enabled=b.enabled, consecutive_failures=b.consecutive_failures)


class ChatStream:
    """A started upstream stream. Iterate it for canonical events (or :meth:`batches` for the events of
    each network read together); it records itself when it ends.

    Ending early (``aclose()``, e.g. because the client went away) closes the upstream call and
    records status 499. A failure after content was sent is re-raised and recorded as partial.
    """

    def __init__(self, gateway: Gateway, ctx: RequestContext, deployment: DeploymentConfig,
                 buffered: list[StreamEvent], rest: AsyncIterator[list[StreamEvent]],
                 attempt: Attempt | None = None) -> None:
        self._gateway = gateway
        self.ctx = ctx
        self.deployment = deployment
        self._attempt = attempt
        self._buffered = buffered
        self._rest = rest
        self._batches = self._run()
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self.usage: Usage | None = None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._events is None:
            self._events = self._flatten()
        return self._events

    def batches(self) -> AsyncIterator[list[StreamEvent]]:
        """The events in batches, one per upstream network read (what arrived together goes out together)."""
        return self._batches

    async def aclose(self) -> None:
        """Stop the stream and release the upstream connection."""
        if self._events is not None:
            await self._events.aclose()
        await self._batches.aclose()

    async def _flatten(self) -> AsyncGenerator[StreamEvent, None]:
        async for batch in self._batches:
            for ev in batch:
                yield ev

    async def _run(self) -> AsyncGenerator[list[StreamEvent], None]:
        rec = self.ctx.record
        finished = False
        try:
            first, self._buffered = self._buffered, []
            self._note(first)
            yield first
            async for batch in self._rest:
                self._note(batch)
                yield batch
            finished = True
        except SwitchboardError as exc:
            rec.partial = True
            self._gateway._fail(rec, exc)
            if self._attempt is not None:
                self._attempt.error = f"after content: {type(exc).__name__}: {exc.message[:200]}"
            raise
        finally:
            breaker = self._gateway.breakers.get(self.deployment.id)
            if finished:
                breaker.record_success()
            elif rec.error_type is None:
                breaker.release()  # the client left: no verdict on the deployment
            else:
                breaker.record_failure()
            if not finished and rec.error_type is None:
                rec.status = 499
                rec.partial = True
                rec.error_type = "ClientDisconnected"
            if self.usage is not None:
                _apply_usage(rec, self.usage, self.deployment, self._attempt)
            # The record is complete before the upstream connection closes.
            self._gateway._submit(self.ctx)
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()

    def _note(self, batch: list[StreamEvent]) -> None:
        for ev in batch:
            if type(ev) is StreamUsage:
                self.usage = ev.usage
