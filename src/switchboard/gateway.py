"""The gateway core: resolve the public model, plan, execute against providers, record.

The HTTP app is a thin layer over this; the same object serves library users in-process.

Usage::

    async with Gateway(load_config("switchboard.yaml", env=os.environ)) as gw:
        resp = await gw.chat(ChatRequest(model="fast", messages=[Message("user", [TextPart("Hi")])]))
        print(resp.choices[0].message.text())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType

from switchboard.config.model import Config, DeploymentConfig, ModelConfig, ProviderConfig
from switchboard.errors import InvalidRequest, ModelNotFound, NotFound, SwitchboardError
from switchboard.execution.breaker import BreakerBoard, BreakerSettings, BreakerState, ChangeHook
from switchboard.execution.executor import Executor, ModelPolicy, Route
from switchboard.execution.hedging import HedgeBudget
from switchboard.execution.live import LiveStats
from switchboard.execution.probes import HealthProber, ProbeTarget
from switchboard.execution.validators import load_validator
from switchboard.policy.governor import Governor, Screened, unavailable
from switchboard.policy.guardrails import StreamRestorer, Vault, restore_response
from switchboard.policy.keys import VirtualKey
from switchboard.policy.limits import Admission, LimiterUnavailable
from switchboard.providers.base import Provider, create_provider
from switchboard.providers.http import HttpClient
from switchboard.routing.bandit import BanditStateError, Feedback, Signal
from switchboard.routing.eligibility import UNAVAILABLE, BalanceView, capability_gaps
from switchboard.routing.features import PROMPT_CHARS, features_of, prompt_text, replay_input
from switchboard.routing.plan import RequestFeatures, RouteDecision, RoutePlan
from switchboard.routing.router import Router
from switchboard.routing.stages import FeedbackBandit, build_router, warm
from switchboard.routing.strategies import BALANCERS
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    LastBatch,
    StreamEvent,
    StreamFinish,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from switchboard.schemas.ids import new_id
from switchboard.storage.records import RecordSink
from switchboard.storage.state import SQLiteStateStore
from switchboard.telemetry.record import Attempt, RequestRecord, cost_usd
from switchboard.telemetry.tracing import TraceContext, Tracer

__all__ = ["ChatStream", "Gateway", "RequestContext", "new_request_id"]

log = logging.getLogger("switchboard")

# Client headers that carry credentials or hop-by-hop meaning are never passed upstream.
_NEVER_FORWARD = frozenset({
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "host", "content-length",
    "content-type", "connection", "transfer-encoding", "anthropic-version", "proxy-authorization",
})


#: How many recent routed requests feedback can find without reading the records.
_RECENT_DECISIONS = 50_000


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
    key: VirtualKey | None = None  # the virtual key that made the request, when the API requires keys
    admitted: bool = False  # its tokens and dollars were reserved: settle them when it ends
    admission: Admission | None = None  # the limits' answer to its key (the x-ratelimit-* headers show it)
    vault: Vault | None = None  # values a guardrail redacted, to put back into the answer
    trace: TraceContext | None = None  # its trace, when tracing is on
    trace_prompt: str | None = None  # its prompt text for the trace, when tracing captures prompts
    #: Hand the finished record on at the event loop's next turn instead of at once: the HTTP app sets it, so
    #: that the answer is written before the record's listeners, sink and trace run.
    record_later: bool = False

    @classmethod
    def create(cls, *, endpoint: str, dialect: str = "library", request_id: str | None = None,
               client_headers: Mapping[str, str] | None = None, caller: str | None = None,
               timeout: float | None = None, record_later: bool = False) -> RequestContext:
        rid = request_id or new_request_id()
        rec = RequestRecord(request_id=rid, started_at=time.time(), endpoint=endpoint, dialect=dialect,
                            caller=caller)
        return cls(rid, rec, client_headers or {}, timeout=timeout, record_later=record_later)


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
                if k not in _NEVER_FORWARD and not k.startswith("x-switchboard-")
                and (k in self.exact or (self.prefixes and k.startswith(self.prefixes)))}


class Gateway:
    """Routes canonical requests to upstream deployments and records what happened."""

    def __init__(self, config: Config, *, records: RecordSink | None = None, http: HttpClient | None = None,
                 rng: random.Random | None = None, governor: Governor | None = None) -> None:
        self.config = config
        self.governor = governor if governor is not None else Governor.build(config)
        #: Exports finished requests as OpenTelemetry spans (``tracing.enabled``), from its own thread.
        self.tracer = Tracer.build(config.tracing, providers=config.providers)
        self._trace_prompts = config.tracing.capture_prompts
        self._keep_prompts = config.records.capture_prompts
        self._keep_completions = config.records.capture_completions
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
        self._rng = rng or random.Random()
        self.routers: dict[str, Router] = {}
        for name, rc in config.routers.items():
            router = build_router(name, rc, config, self, self._rng)
            self.routers[name] = router
            for alias in rc.aliases:
                self.routers[alias] = router
        self._turns: dict[str, int] = {}
        # Chat requests between their start and their answer (a stream's: its first content).
        self._busy = 0
        self._live_models = {name for name, m in config.models.items()
                             if m.balance in ("least_inflight", "latency")
                             or any(d.rpm is not None or d.tpm is not None for d in m.deployments)}
        # Models with one deployment, balanced by weight and with no limits to watch: their plan is that deployment
        # whenever it can serve the request, the same candidate every time (see _select), as weighting ranks it.
        weighted = BALANCERS["weighted"]
        self._sole = {name: weighted(RequestFeatures(name), m.deployments, BalanceView([1.0])).candidates[0]
                      for name, m in config.models.items()
                      if len(m.deployments) == 1 and m.balance == "weighted" and name not in self._live_models}
        self._records = records
        self._policies = {name: _policy(name, model, config) for name, model in config.models.items()}
        breaker_settings: dict[str, BreakerSettings] = {}
        for name, model in config.models.items():
            for dep in model.deployments:
                breaker_settings.setdefault(dep.id, _breaker_settings(config, name))
        default_breaker = _breaker_settings(config, None)
        self.breaker_listeners: list[ChangeHook] = []
        #: Called with every finished request's record (metrics), before it goes to the record sink.
        self.record_listeners: list[Callable[[RequestRecord], None]] = []
        self.breakers = BreakerBoard(lambda dep_id: breaker_settings.get(dep_id, default_breaker),
                                     on_change=self._breaker_changed)
        self._prober = HealthProber(self.breakers, _probe_targets(config, self._providers))
        self.stats = LiveStats()
        self._executor = Executor(self._providers, self._forwarding_for, breakers=self.breakers,
                                  stats=self.stats, rng=self._rng)
        self._upkeep: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._state: SQLiteStateStore | None = None
        # The models whose prices bound a reservation, per chain of a model and its fallbacks (few chains).
        self._reservable: dict[tuple[str | None, ...], list[ModelConfig]] = {}
        # Which router decision each recent request came from, for feedback on it (bounded).
        self._decisions: OrderedDict[str, tuple[str, str | None, str]] = OrderedDict()

    async def __aenter__(self) -> Gateway:
        self.start()
        return self

    def start(self) -> None:
        """Start background work (active health probes; routers' warm-up and the saving of what they
        learned); needs a running loop."""
        self._prober.start()
        if self.config.routers and self._upkeep is None:
            self._ready = asyncio.Event()
            self._upkeep = asyncio.get_running_loop().create_task(self._routing_upkeep(self._ready))

    @property
    def ready(self) -> bool:
        """Whether the routers have restored what they learned and loaded their models (or gave up trying)."""
        return self._ready is None or self._ready.is_set() or (self._upkeep is not None and self._upkeep.done())

    async def wait_ready(self) -> None:
        """Wait until the routers have restored what they learned and loaded their models (returns at
        once when there is nothing to wait for)."""
        if self._ready is not None and self._upkeep is not None and not self._upkeep.done():
            ready = asyncio.ensure_future(self._ready.wait())
            await asyncio.wait([ready, self._upkeep], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()

    def _bandits(self) -> dict[str, FeedbackBandit]:
        return {name: r.bandit for name, r in self.routers.items()
                if name in self.config.routers and isinstance(r.bandit, FeedbackBandit)}

    async def _routing_upkeep(self, ready: asyncio.Event) -> None:
        """Restore the bandits' state, load the routers' models, then save the bandits periodically."""
        bandits = self._bandits()
        if bandits:
            self._state = await asyncio.to_thread(SQLiteStateStore, self.config.state.path)
            for name, bandit in bandits.items():
                saved = await asyncio.to_thread(self._state.load, bandit.state_key(name))
                if saved is not None:
                    try:
                        bandit.restore(saved)
                    except BanditStateError as exc:
                        log.warning("router %s: saved feedback state not restored (%s); starting afresh", name, exc)
        for name, router in self.routers.items():
            if name in self.config.routers:
                try:
                    await warm(router)
                except Exception:
                    log.exception("router %s: could not load its models ahead of traffic", name)
        ready.set()
        while bandits:
            await asyncio.sleep(self.config.state.save_interval)
            await self._save_state()

    async def _save_state(self) -> None:
        if self._state is None:
            return
        for name, bandit in self._bandits().items():
            await asyncio.to_thread(self._state.save, bandit.state_key(name), bandit.bandit.to_state())

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
        """Stop background work and save what routers learned; close upstream connections (when the
        gateway owns its HTTP client)."""
        await self._prober.aclose()
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
            self._upkeep = None
            await self._save_state()
            if self._state is not None:
                await asyncio.to_thread(self._state.close)
                self._state = None
        await self.governor.aclose()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)
        if self._own_http:
            await self._http.aclose()

    # -- model catalogue ---------------------------------------------------------------------

    def model_names(self) -> list[tuple[str, str]]:
        """``(name, target)`` for every public model, router and alias; ``target`` is the model or router
        an alias names."""
        out: list[tuple[str, str]] = []
        for name, model in self.config.models.items():
            out.append((name, name))
            out.extend((alias, name) for alias in model.aliases)
        for name, rc in self.config.routers.items():
            out.append((name, name))
            out.extend((alias, name) for alias in rc.aliases)
        return out

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a public model, a router or an alias of one."""
        return name in self._names or name in self.routers

    def lookup(self, name: str, kind: str | None = "chat") -> tuple[str, ModelConfig]:
        """The public model behind ``name`` (a model name or alias) that serves ``kind`` (any if None)."""
        if name in self.routers and kind not in (None, "chat"):
            raise InvalidRequest(f"'{name}' is a router of chat models and cannot serve this endpoint.",
                                 param="model", code="model_not_supported")
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

    async def plan(self, request: ChatRequest, ctx: RequestContext | None = None) -> RoutePlan:
        """The route plan for ``request`` without executing it: for a router, its decision (in
        ``plan.decision``) and the chosen model's deployments. Nothing is sent upstream."""
        ctx = ctx or RequestContext.create(endpoint="chat")
        public, model, features, decision = await self._resolve(request, ctx, remember=False)
        route = self._route(public, model, features, None, decision)
        route.plan.decision = decision
        return route.plan

    async def _resolve(self, request: ChatRequest, ctx: RequestContext, *, remember: bool = True,
                       ) -> tuple[str, ModelConfig, RequestFeatures, RouteDecision | None]:
        """The model that serves ``request``: the one it names, or its router's choice (``remember``:
        keep the decision for feedback on this request)."""
        router = self.routers.get(request.model)
        if router is None:
            public, model = self.lookup(request.model)
            return public, model, features_of(request, public, for_rules=False), None
        features = features_of(request, router.name, caller=ctx.record.caller, headers=ctx.client_headers)
        if ctx.key is not None:  # the team is the key's, whatever the request's metadata says
            team = ctx.key.team
            meta = {k: v for k, v in features.metadata.items() if k != "team"}
            features = replace(features, team=team, metadata=meta if team is None else {**meta, "team": team})
        live = {d.id: s.snapshot() for m in router.config.models for d in self.config.models[m].deployments
                if (s := self.stats.peek(d.id)) is not None}
        decision = await router.decide(features, request.messages, live, self.breakers.unavailable())
        public, model = self._names[decision.model]
        ctx.record.router = router.name
        ctx.record.route = route = decision.to_dict()
        route["input"] = replay_input(features, request, self.config.records.capture_prompts)
        if remember:
            self._decisions[ctx.request_id] = (router.name, decision.context, decision.model)
            if len(self._decisions) > _RECENT_DECISIONS:
                self._decisions.popitem(last=False)
        return public, model, features.for_model(public), decision

    async def feedback(self, request_id: str, feedback: Feedback) -> dict[str, object]:
        """Learn from feedback on the answer to ``request_id`` (a request its router served).

        Raises :class:`NotFound` when the request is unknown or was not routed by a router.
        """
        found = self._decisions.get(request_id)
        if found is None:
            found = await self._decision_from_records(request_id)
        if found is None:
            raise NotFound(f"No routed request with id '{request_id}' is known (feedback applies to requests "
                           "sent to a router).", param="request_id")
        router_name, context, model = found
        router = self.routers.get(router_name)
        bandit = router.bandit if router is not None else None
        reward: float | None = None
        if isinstance(bandit, FeedbackBandit) and context is not None:
            reward = bandit.observe(context, model, feedback)
        return {"request_id": request_id, "router": router_name, "model": model, "reward": reward,
                "learned": reward is not None}

    async def _decision_from_records(self, request_id: str) -> tuple[str, str | None, str] | None:
        query = getattr(self._records, "query", None)
        if query is None:
            return None
        from switchboard.storage.records import RecordQuery

        found = await asyncio.to_thread(query, RecordQuery(request_id=request_id, limit=1))
        for rec in found:
            if rec.router is not None and rec.route is not None:
                return rec.router, rec.route.get("context"), str(rec.route.get("model"))
        return None

    def _learn_from_outcome(self, rec: RequestRecord) -> None:
        """Automatic signals for the bandit, about the quality of the chosen model's answers only: an
        answer a validator rejected, or a refusal that sent the request elsewhere, counts against it.
        Outages, rate limits and timeouts say nothing about quality and teach it nothing."""
        if rec.route is None:
            return
        router = self.routers.get(rec.router or "")
        bandit = router.bandit if router is not None else None
        context = rec.route.get("context")
        if not isinstance(bandit, FeedbackBandit) or not isinstance(context, str):
            return
        chosen = str(rec.route.get("model"))
        mine = [a for a in rec.attempts if a.model in (None, chosen)]
        if any(a.outcome == "unsatisfactory" for a in mine):
            bandit.observe(context, chosen, Signal.VALIDATOR_FAILED)
        elif any(a.reason == "refusal" for a in mine):
            bandit.observe(context, chosen, Signal.FALLBACK_AWAY)

    def _route(self, public: str, model: ModelConfig, features: RequestFeatures,
               ctx: RequestContext | None, decision: RouteDecision | None = None) -> Route:
        policy = self._policies[public]
        if decision is not None and len(decision.ranking) > 1:
            extra = tuple(m for m in decision.ranking[1:] if m not in policy.fallbacks)
            policy = replace(policy, fallbacks=policy.fallbacks + extra)
        res = policy.resilience
        plan = self._select(features, model)
        if not plan.candidates and not policy.fallbacks and all(r != UNAVAILABLE for _, r in plan.excluded):
            why = "; ".join(f"{d}: {r}" for d, r in plan.excluded)
            raise InvalidRequest(f"No deployment of '{public}' can serve this request ({why}).",
                                 param="model", code="model_not_supported")

        def plan_for(name: str) -> RoutePlan:
            target, target_model = self._names[name]
            return self._select(features.for_model(target), target_model)

        budget = res.deadline if ctx is None or ctx.timeout is None else ctx.timeout
        deadline = asyncio.get_running_loop().time() + min(budget, res.max_deadline) if ctx is not None else 0.0
        return Route(plan, policy, plan_for, deadline)

    def _select(self, features: RequestFeatures, model: ModelConfig) -> RoutePlan:
        public = features.public_model
        sole = self._sole.get(public)
        if sole is not None and self.breakers.available(sole.deployment.id) \
                and not capability_gaps(features, sole.deployment):
            return RoutePlan(public, "weighted", [sole])  # what weighting one eligible deployment gives
        deps = model.deployments
        draws = [self._rng.random() for _ in deps] if len(deps) > 1 else [1.0]
        turn = self._turns.get(public, 0)
        if model.balance == "round_robin":
            self._turns[public] = turn + 1
        stats = {}
        if public in self._live_models:
            stats = {d.id: s.snapshot() for d in deps if (s := self.stats.peek(d.id)) is not None}
        view = BalanceView(draws, self.breakers.unavailable(), stats, turn)
        return BALANCERS[model.balance](features, deps, view)

    def _forwarding_for(self, deployment: DeploymentConfig, headers: Mapping[str, str]) -> dict[str, str]:
        return self._forwarding[deployment.provider].pick(headers)

    # -- requests ----------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, ctx: RequestContext | None = None) -> ChatResponse:
        """Answer a chat request (``request.stream`` is ignored; use :meth:`stream` to stream)."""
        ctx = ctx or RequestContext.create(endpoint="chat")
        rec = ctx.record
        self._busy += 1
        try:
            request, route = await self._prepare(request, ctx)
            done = await self._executor.chat(route, request, ctx)
            rec.unsatisfactory = done.unsatisfactory
            if self._keep_completions and done.value.choices:
                rec.completion = _tail("".join(p.text for p in done.value.choices[0].message.content
                                               if isinstance(p, TextPart)))
            self._settle(rec, done.deployment, done.value.usage, done.attempt)
            rec.ttft_ms = rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
            await self._next_stage()  # after the answer is settled: a client gone meanwhile still pays for it
            if ctx.vault is not None:
                return restore_response(done.value, ctx.vault)
            return done.value
        except SwitchboardError as exc:
            self._fail(rec, exc)
            raise
        except asyncio.CancelledError:  # the caller went away; the upstream call was cancelled with it
            _gone(rec)
            raise
        finally:
            self._busy -= 1
            self._finish(ctx)

    async def _next_stage(self) -> None:
        """Let the event loop run whatever else is ready before this request goes on to its next stage.

        Under load a worker then takes its requests through each stage together — every ready request's parsing,
        then their routing and upstream calls; every answer's parsing, then the responses — so a stage's code and
        data stay in the CPU's caches from one request to the next. Run straight through, each request evicts
        them for the next. A saturated worker serves a quarter to a third more non-streaming requests a second
        (``docs/benchmarks.md``, "Stage boundaries"). A request alone in the gateway goes straight on: there is
        nothing to batch it with, and a turn of the loop on a CPU that was idle costs more than on a busy one."""
        if self._busy > 1:
            await asyncio.sleep(0)

    async def _prepare(self, request: ChatRequest, ctx: RequestContext) -> tuple[ChatRequest, Route]:
        """What a chat request goes through before its upstream calls: its trace begins, the guardrails screen
        it, its text is kept where asked, it is routed, and its key's limits reserve for it."""
        await self._next_stage()
        if self.tracer is not None:
            self._begin_trace(ctx)
        if self.governor.active:
            self.governor.check_model(ctx.key, request.model)
            screened = self.governor.screen_now(request, ctx.key)
            if screened is None:  # scanned on a worker thread
                screened = await self.governor.screen(request, ctx.key)
            request = self._screened(screened, ctx)
        trace_prompt = self._trace_prompts and ctx.trace is not None and ctx.trace.sampled
        if trace_prompt or self._keep_prompts:
            text = prompt_text(request.messages)
            if trace_prompt:
                ctx.trace_prompt = text
            if self._keep_prompts:
                ctx.record.prompt = text
        public, model, features, decision = await self._resolve(request, ctx)
        ctx.record.public_model = public
        route = self._route(public, model, features, ctx, decision)
        if ctx.key is not None:
            try:
                admission = await self._admission(ctx, request, features.prompt_tokens, route)
            except LimiterUnavailable as exc:
                raise unavailable(exc) from None
            ctx.admission = admission
            self.governor.conclude(admission)
            ctx.admitted = True
        return request, route

    async def stream(self, request: ChatRequest, ctx: RequestContext | None = None) -> ChatStream:
        """Start streaming a chat request.

        Returns once the upstream has produced its first content, so that any failure before that
        point raises here (and may have failed over to another deployment) rather than mid-stream.
        The caller must iterate or ``aclose()`` the returned stream.
        """
        ctx = ctx or RequestContext.create(endpoint="chat")
        rec = ctx.record
        rec.stream = True
        self._busy += 1
        try:
            request, route = await self._prepare(request, ctx)
            started = await self._executor.stream(route, request, ctx)
            rec.unsatisfactory = started.unsatisfactory
        except SwitchboardError as exc:
            self._fail(rec, exc)
            self._finish(ctx)
            raise
        except asyncio.CancelledError:  # the caller went away before the first token
            _gone(rec)
            self._finish(ctx)
            raise
        finally:
            self._busy -= 1
        rec.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        self._settle(rec, started.deployment, None, started.attempt)
        return ChatStream(self, ctx, started.deployment, started.value[0], started.value[1], started.attempt)

    async def embed(self, request: EmbeddingRequest, ctx: RequestContext | None = None) -> EmbeddingResponse:
        """Create embeddings."""
        ctx = ctx or RequestContext.create(endpoint="embeddings")
        rec = ctx.record
        try:
            if self.tracer is not None:
                self._begin_trace(ctx)
            if ctx.key is not None:
                self.governor.check_model(ctx.key, request.model)
            public, model = self.lookup(request.model, "embedding")
            rec.public_model = public
            route = self._route(public, model, RequestFeatures(public), ctx)
            if ctx.key is not None:
                try:
                    admission = await self._admission(ctx, None, _embedding_tokens(request), route)
                except LimiterUnavailable as exc:
                    raise unavailable(exc) from None
                ctx.admission = admission
                self.governor.conclude(admission)
                ctx.admitted = True
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
            self._finish(ctx)

    # -- governance --------------------------------------------------------------------------

    @staticmethod
    def _screened(screened: Screened, ctx: RequestContext) -> ChatRequest:
        """The request the guardrails let through (after the model allowlist and the size caps), with what they
        found kept in its context."""
        if screened.flags:
            ctx.record.metadata["guardrails"] = ",".join(sorted(set(screened.flags)))
        ctx.vault = screened.vault
        return screened.request

    def _admission(self, ctx: RequestContext, request: ChatRequest | None, prompt_tokens: int,
                   route: Route) -> Awaitable[Admission]:
        """Ask the limiter to admit the request against its key's limits: its answer, once awaited (the caller
        concludes it and marks the request admitted)."""
        assert ctx.key is not None
        policy = route.policy
        names = (route.plan.public_model, *policy.fallbacks, policy.context_fallback, policy.refusal_fallback)
        models = self._reservable.get(names)
        if models is None:
            models = self._reservable[names] = [self.config.models[n] for n in dict.fromkeys(names)
                                                if n is not None and n in self.config.models]
        return self.governor.admission(ctx.key, ctx.request_id, request, prompt_tokens, models)

    # -- record keeping ----------------------------------------------------------------------

    def _begin_trace(self, ctx: RequestContext) -> None:
        """Join the client's trace or start one (the prompt is kept after the guardrails, when captured)."""
        assert self.tracer is not None
        if ctx.trace is None:
            ctx.trace = self.tracer.begin(ctx.client_headers)

    def _settle(self, rec: RequestRecord, dep: DeploymentConfig, usage: Usage | None, winner: Attempt) -> None:
        rec.deployment = dep.id
        rec.provider = dep.provider
        rec.upstream_model = dep.model
        if usage is not None:
            _apply_usage(rec, usage, dep, winner)
            self.stats.for_deployment(dep.id).observe_tokens(usage.input_tokens + usage.output_tokens)

    @staticmethod
    def _fail(rec: RequestRecord, exc: SwitchboardError) -> None:
        rec.status = exc.status
        rec.error_type = type(exc).__name__
        rec.error_message = exc.message[:500]

    def _finish(self, ctx: RequestContext) -> None:
        """Hand the finished request's record on: now, or at the loop's next turn if its context asks."""
        if ctx.record_later:
            asyncio.get_running_loop().call_soon(self._submit, ctx)
        else:
            self._submit(ctx)

    def _submit(self, ctx: RequestContext) -> None:
        rec = ctx.record
        if not rec.latency_ms:
            rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
        if rec.router is not None and rec.status < 400:
            self._learn_from_outcome(rec)
        if ctx.admitted:
            self.governor.settle(rec, True)
        for listener in self.record_listeners:
            listener(rec)
        if self._records is not None:
            self._records.submit(rec)
        if ctx.trace is not None and self.tracer is not None:
            self.tracer.finish(rec, ctx.trace, ctx.trace_prompt)


def _tail(text: str) -> str:
    """What a record keeps of a text: its last PROMPT_CHARS characters."""
    return text[-PROMPT_CHARS:]


def _embedding_tokens(request: EmbeddingRequest) -> int:
    """An estimate of an embeddings request's input tokens (characters / 4, or the token ids given)."""
    return sum(len(x) // 4 + 1 if isinstance(x, str) else len(x) for x in request.inputs)


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
    each network read together); it records itself when it ends. ``complete`` turns true with the last
    batch, before the stream settles its record: an answer can be finished then, while iterating goes on
    to the end.

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
        self._begun = False  # whether iterating has begun (from then on the generator's end settles the record)
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self.usage: Usage | None = None
        self.complete = False  # the batch just delivered was the upstream's last
        # One restorer per choice's text (index -1) and per tool call's arguments.
        self._restorers: dict[tuple[int, int], StreamRestorer] | None = {} if ctx.vault is not None else None
        self._text: list[str] | None = [] if gateway._keep_completions else None  # the first choice's, to record

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
        if not self._begun:  # closed before its first event: a generator never started runs no clean-up
            self._begun = True
            await self._end(finished=False)
        await self._batches.aclose()

    async def _flatten(self) -> AsyncGenerator[StreamEvent, None]:
        async for batch in self._batches:
            for ev in batch:
                yield ev

    async def _run(self) -> AsyncGenerator[list[StreamEvent], None]:
        rec = self.ctx.record
        self._begun = True
        finished = False
        try:
            first, self._buffered = self._buffered, []
            self._note(first)
            self.complete = type(first) is LastBatch
            yield first if self._restorers is None else self._restore(first)
            async for batch in self._rest:
                self._note(batch)
                self.complete = type(batch) is LastBatch
                yield batch if self._restorers is None else self._restore(batch)
            finished = True
        except SwitchboardError as exc:
            rec.partial = True
            self._gateway._fail(rec, exc)
            if self._attempt is not None:
                self._attempt.error = f"after content: {type(exc).__name__}: {exc.message[:200]}"
            raise
        finally:
            await self._end(finished)

    async def _end(self, finished: bool) -> None:
        """Settle the stream once it ends: the breaker's verdict, the usage and cost, the record; then close the
        upstream call."""
        rec = self.ctx.record
        try:
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
                self._gateway.stats.for_deployment(self.deployment.id).observe_tokens(
                    self.usage.input_tokens + self.usage.output_tokens)
            if self._text is not None:
                rec.completion = _tail("".join(self._text))
            # The record is complete before the upstream connection closes.
            self._gateway._finish(self.ctx)
        finally:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()

    def _restore(self, batch: list[StreamEvent]) -> list[StreamEvent]:
        """Put redacted values back into the text and the tool-call arguments, a placeholder split across
        chunks included (what might be the start of one is held back until the next chunk, or until the
        choice moves on to another block)."""
        restorers = self._restorers
        vault = self.ctx.vault
        assert restorers is not None and vault is not None
        out: list[StreamEvent] = []

        def flush_other(choice: int, keep: int | None) -> None:
            for slot in sorted(k for k in restorers if k[0] == choice and k[1] != keep):
                rest = restorers.pop(slot).flush()
                if rest:
                    out.append(TextDelta(rest, choice) if slot[1] < 0 else ToolCallDelta(slot[1], rest, choice))

        for ev in batch:
            if isinstance(ev, TextDelta):
                flush_other(ev.choice, -1)
                restorer = restorers.get((ev.choice, -1))
                if restorer is None:
                    restorer = restorers[(ev.choice, -1)] = StreamRestorer(vault)
                text = restorer.feed(ev.text)
                if text:
                    out.append(TextDelta(text, ev.choice))
                continue
            if isinstance(ev, ToolCallDelta):
                flush_other(ev.choice, ev.index)
                restorer = restorers.get((ev.choice, ev.index))
                if restorer is None:
                    restorer = restorers[(ev.choice, ev.index)] = StreamRestorer(vault, json_escape=True)
                args = restorer.feed(ev.arguments)
                if args:
                    out.append(ToolCallDelta(ev.index, args, ev.choice))
                continue
            if isinstance(ev, ToolCallStart | StreamFinish):
                flush_other(ev.choice, None)
            out.append(ev)
        return out

    def _note(self, batch: list[StreamEvent]) -> None:
        text = self._text
        for ev in batch:
            if type(ev) is StreamUsage:
                self.usage = ev.usage
            elif text is not None and type(ev) is TextDelta and ev.choice == 0:
                text.append(ev.text)
