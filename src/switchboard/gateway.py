"""The gateway core: resolve the public model, plan, execute against providers, record.

The HTTP app is a thin layer over this; the same object serves library users in-process.

Usage::

    async with Gateway(load_config("switchboard.yaml", env=os.environ)) as gw:
        resp = await gw.chat(ChatRequest(model="fast", messages=[Message("user", [TextPart("Hi")])]))
        print(resp.choices[0].message.text())
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from switchboard.config.model import Config, DeploymentConfig, ModelConfig, ProviderConfig
from switchboard.errors import InvalidRequest, ModelNotFound, SwitchboardError
from switchboard.execution.executor import Executor
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
from switchboard.telemetry.record import RequestRecord, cost_usd

__all__ = ["ChatStream", "Gateway", "RequestContext", "new_request_id"]

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

    @classmethod
    def create(cls, *, endpoint: str, dialect: str = "library", request_id: str | None = None,
               client_headers: Mapping[str, str] | None = None, caller: str | None = None) -> RequestContext:
        rid = request_id or new_request_id()
        rec = RequestRecord(request_id=rid, started_at=time.time(), endpoint=endpoint, dialect=dialect,
                            caller=caller)
        return cls(rid, rec, client_headers or {})


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
        self._executor = Executor(self._providers, self._forwarding_for)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close upstream connections (when the gateway owns its HTTP client)."""
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
        return self._plan_chat(public, model, request)

    def _plan_chat(self, public: str, model: ModelConfig, request: ChatRequest) -> RoutePlan:
        features = RequestFeatures(
            public_model=public,
            needs_tools=bool(request.tools) and (request.tool_choice is None or request.tool_choice.mode != "none"),
            needs_vision=any(isinstance(p, ImagePart) for m in request.messages for p in m.content),
            needs_json=request.response_format is not None and request.response_format.type != "text",
        )
        return self._select(features, model)

    def _select(self, features: RequestFeatures, model: ModelConfig) -> RoutePlan:
        deps = model.deployments
        draws = [self._rng.random() for _ in deps] if len(deps) > 1 else [1.0]
        plan = weighted.select(features, deps, draws)
        if not plan.candidates:
            why = "; ".join(f"{d}: {r}" for d, r in plan.excluded)
            raise InvalidRequest(f"No deployment of '{features.public_model}' can serve this request ({why}).",
                                 param="model", code="model_not_supported")
        return plan

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
            plan = self._plan_chat(public, model, request)
            done = await self._executor.chat(plan, request, ctx)
            self._settle(rec, done.deployment, done.value.usage)
            rec.ttft_ms = rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
            return done.value
        except SwitchboardError as exc:
            self._fail(rec, exc)
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
            plan = self._plan_chat(public, model, request)
            started = await self._executor.stream(plan, request, ctx)
        except SwitchboardError as exc:
            self._fail(rec, exc)
            self._submit(ctx)
            raise
        except asyncio.CancelledError:  # the caller went away before the first token
            rec.status = 499
            rec.error_type = "ClientDisconnected"
            self._submit(ctx)
            raise
        rec.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        self._settle(rec, started.deployment, None)
        return ChatStream(self, ctx, started.deployment, started.value[0], started.value[1])

    async def embed(self, request: EmbeddingRequest, ctx: RequestContext | None = None) -> EmbeddingResponse:
        """Create embeddings."""
        ctx = ctx or RequestContext.create(endpoint="embeddings")
        rec = ctx.record
        try:
            public, model = self.lookup(request.model, "embedding")
            rec.public_model = public
            plan = self._select(RequestFeatures(public), model)
            done = await self._executor.embed(plan, request, ctx)
            self._settle(rec, done.deployment, done.value.usage)
            rec.latency_ms = (time.perf_counter() - ctx.started) * 1000
            return done.value
        except SwitchboardError as exc:
            self._fail(rec, exc)
            raise
        finally:
            self._submit(ctx)

    # -- record keeping ----------------------------------------------------------------------

    @staticmethod
    def _settle(rec: RequestRecord, dep: DeploymentConfig, usage: Usage | None) -> None:
        rec.deployment = dep.id
        rec.provider = dep.provider
        rec.upstream_model = dep.model
        if usage is not None:
            _apply_usage(rec, usage, dep)

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


def _apply_usage(rec: RequestRecord, usage: Usage, dep: DeploymentConfig) -> None:
    rec.input_tokens = usage.input_tokens
    rec.output_tokens = usage.output_tokens
    rec.cached_tokens = usage.cached_tokens
    rec.reasoning_tokens = usage.reasoning_tokens
    rec.cost_usd = cost_usd(usage, dep.price)


class ChatStream:
    """A started upstream stream. Iterate it for canonical events (or :meth:`batches` for the events of
    each network read together); it records itself when it ends.

    Ending early (``aclose()``, e.g. because the client went away) closes the upstream call and
    records status 499. A failure after content was sent is re-raised and recorded as partial.
    """

    def __init__(self, gateway: Gateway, ctx: RequestContext, deployment: DeploymentConfig,
                 buffered: list[StreamEvent], rest: AsyncIterator[list[StreamEvent]]) -> None:
        self._gateway = gateway
        self.ctx = ctx
        self.deployment = deployment
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
            raise
        finally:
            if not finished and rec.error_type is None:
                rec.status = 499
                rec.partial = True
                rec.error_type = "ClientDisconnected"
            if self.usage is not None:
                _apply_usage(rec, self.usage, self.deployment)
            # The record is complete before the upstream connection closes.
            self._gateway._submit(self.ctx)
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()

    def _note(self, batch: list[StreamEvent]) -> None:
        for ev in batch:
            if type(ev) is StreamUsage:
                self.usage = ev.usage
