"""The request path's governance: who is calling, may they, and what content may pass.

One :class:`Governor` per gateway, built from the configuration. The HTTP layer authenticates the caller
(:meth:`Governor.authenticate`); the gateway screens the request with the guardrails before routing
(:meth:`Governor.screen`), admits it against the key's limits and budgets once the route is known
(:meth:`Governor.admit`: tokens and dollars reserved, or a refusal), and settles the reservation with what
the request really cost when its record is complete (:meth:`Governor.settle`).

Usage::

    governor = Governor.build(config)
    key = await governor.authenticate(headers)             # None when keys are off
    screened = await governor.screen(request, key)         # redacted, rerouted or refused
    await governor.admit(key, request_id, request, prompt_tokens, models, headers)  # raises RateLimited / …
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from switchboard.config.model import Config, ModelConfig
from switchboard.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NoHealthyDeployment,
    PermissionDenied,
    RateLimited,
    SwitchboardError,
)
from switchboard.policy.guardrails import GuardOutcome, Guardrail, Vault, apply_guardrails, build_guardrail
from switchboard.policy.keys import KeyAuthenticator, KeyStore, KeyStoreError, SQLiteKeyStore, VirtualKey
from switchboard.policy.limits import (
    Admission,
    Ask,
    Limiter,
    LimiterUnavailable,
    LimiterUnsupported,
    Limits,
    MemoryLimiter,
    Quota,
    Scope,
    ShownQuota,
)
from switchboard.schemas.canonical import ChatRequest, Message

if TYPE_CHECKING:
    from switchboard.telemetry.record import RequestRecord

__all__ = ["BudgetExceeded", "Governor", "GuardrailBlocked", "ModelNotAllowed", "Screened"]

log = logging.getLogger("switchboard.policy")

Headers = list[tuple[bytes, bytes]]

#: Keys whose limit scopes are kept built (the cache is emptied when it is full).
_SCOPES_CACHED = 10_000

#: Text longer than this is scanned by the guardrails on a worker thread, not on the event loop.
_SCAN_INLINE_CHARS = 16_000


class BudgetExceeded(PermissionDenied):
    """The key's budget for this period is spent: retrying will not help until it resets."""

    default_code = "budget_exceeded"


class ModelNotAllowed(PermissionDenied):
    """The key may not use the model it asked for."""

    default_code = "model_not_allowed"


class GuardrailBlocked(InvalidRequest):
    """A guardrail refused the request's content."""

    default_code = "guardrail_blocked"


@dataclass(slots=True)
class Screened:
    """A request after the guardrails: what to send, what they found, and how to restore redacted values."""

    request: ChatRequest
    flags: Sequence[str] = ()
    vault: Vault | None = None


class Governor:
    """Authentication, guardrails and admission for one gateway. Stateless between requests except for the
    key cache; counters live in the limiter (memory, or Redis shared by every process)."""

    def __init__(self, config: Config, *, keys: KeyStore | None = None, limiter: Limiter | None = None,
                 guardrails: Mapping[str, Guardrail] | None = None) -> None:
        self.config = config
        self.keys = keys
        auth = config.auth
        self.authenticator: KeyAuthenticator | None = None
        if auth.virtual_keys:
            assert keys is not None and auth.secret is not None  # the config requires the secret
            self.authenticator = KeyAuthenticator(keys, auth.secret.get_secret_value().encode(), auth.cache_ttl)
        self.limiter = limiter
        # The limiter's ways of admitting and settling without a coroutine, when it has them.
        self._admit_soon: Callable[[Ask], Awaitable[Admission]] | None = getattr(limiter, "admit_soon", None)
        self._settle_nowait: Callable[[str, str, int, float], None] | None = getattr(limiter, "settle_nowait", None)
        if guardrails is None:
            guardrails = {name: build_guardrail(name, g) for name, g in config.guardrails.items()}
        self.guardrails = dict(guardrails)
        self._default_guards = tuple(g for name, g in self.guardrails.items() if config.guardrails[name].default)
        self._model_guards: dict[str, tuple[Guardrail, ...]] = {}
        for name, model in config.models.items():
            guards = tuple(self.guardrails[g] for g in model.guardrails)
            for public in (name, *model.aliases):
                self._model_guards[public] = guards
        for name, router in config.routers.items():
            guards = tuple(self.guardrails[g] for g in router.guardrails)
            for public in (name, *router.aliases):
                self._model_guards[public] = guards
        self._settling: set[asyncio.Task[None]] = set()
        self._default_output = config.limits.default_output_tokens
        self._model_prices: dict[int, tuple[Sequence[ModelConfig], tuple[tuple[float, float, int | None], ...]]] = {}
        self._scopes: dict[str, tuple[VirtualKey, tuple[Scope, ...]]] = {}
        # The guardrails of a requested model with a key's own guardrails (the configuration does not change
        # under a governor).
        self._guards: dict[tuple[str, tuple[str, ...]], tuple[Guardrail, ...]] = {}
        self.active = auth.virtual_keys or bool(self.guardrails)

    @classmethod
    def build(cls, config: Config) -> Governor:
        """The governor ``config`` asks for: key store and limiter of its ``limits.backend``, its guardrails."""
        keys: KeyStore | None = None
        limiter: Limiter | None = None
        if config.auth.virtual_keys:
            if config.limits.backend == "redis":
                from switchboard.policy.keys_redis import RedisKeyStore
                from switchboard.policy.limits_redis import RedisLimiter

                url = config.limits.redis_url.get_secret_value()
                keys = RedisKeyStore(url, prefix=config.limits.prefix)
                limiter = RedisLimiter(url, prefix=config.limits.prefix)
            else:
                keys = SQLiteKeyStore(config.auth.path)
                limiter = MemoryLimiter()
        return cls(config, keys=keys, limiter=limiter)

    async def check_limiter(self) -> None:
        """At start-up: say at once when the limits store is away (requests then get 503 until it is back) or
        cannot serve (raises :class:`LimiterUnsupported` for a Redis too old)."""
        if self.limiter is None:
            return
        try:
            await self.limiter.ping()
        except LimiterUnsupported:
            raise
        except LimiterUnavailable as exc:
            log.warning("limits store unavailable at start-up (requests get 503 until it answers): %s", exc)

    async def aclose(self) -> None:
        for task in list(self._settling):
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        if self.limiter is not None:
            await self.limiter.aclose()
        if self.keys is not None:
            await self.keys.aclose()

    # -- who is calling ------------------------------------------------------------------------

    def known_key(self, headers: Mapping[str, str]) -> VirtualKey | None:
        """The virtual key the request carries, when it can be checked at once (the usual case: a key seen
        lately); ``None`` when keys are off or the check needs :meth:`authenticate`. Raises
        :class:`AuthenticationFailed` as that does."""
        if self.authenticator is None:
            return None
        presented = credential(headers)
        if presented is None:
            raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key> (or x-api-key).")
        return self.authenticator.known(presented, time.time())

    async def authenticate(self, headers: Mapping[str, str]) -> VirtualKey | None:
        """The virtual key the request carries (``Authorization: Bearer``, ``x-api-key`` or ``api-key``);
        ``None`` when the API does not require keys. Raises :class:`AuthenticationFailed`."""
        if self.authenticator is None:
            return None
        presented = credential(headers)
        if presented is None:
            raise AuthenticationFailed("Missing API key: send Authorization: Bearer <key> (or x-api-key).")
        try:
            return await self.authenticator.authenticate(presented, time.time())
        except KeyStoreError as exc:  # the key store is away: refuse, retryably, rather than guess
            log.error("key store unavailable: %s", exc)
            raise NoHealthyDeployment("API keys cannot be checked right now; try again shortly.",
                                      retry_after=1.0) from None

    @staticmethod
    def check_model(key: VirtualKey | None, name: str) -> None:
        """Refuse a model (or router) name outside the key's allowlist."""
        if key is not None and not key.allows_model(name):
            raise ModelNotAllowed(f"This API key may not use the model '{name}'.", param="model")

    # -- what may pass ---------------------------------------------------------------------------

    def guards_for(self, key: VirtualKey | None, model: str) -> tuple[Guardrail, ...]:
        """The guardrails of a request: the defaults, the key's, the requested model's or router's."""
        guards = self._default_guards
        own = self._model_guards.get(model)
        if own:
            guards = guards + tuple(g for g in own if g not in guards)
        if key is not None and key.guardrails:
            guards = guards + tuple(g for n in key.guardrails if (g := self.guardrails.get(n)) is not None
                                    and g not in guards)
        return guards

    async def screen(self, request: ChatRequest, key: VirtualKey | None) -> Screened:
        """Apply the request's guardrails: block (raises :class:`GuardrailBlocked`), reroute, redact, flag;
        and the size caps: ``limits.max_messages``, and ``max_tokens`` clamped to the key's and the global
        cap. A long text is scanned on a worker thread."""
        request, guards = self._capped(request, key)
        if guards and _text_size(request.messages) > _SCAN_INLINE_CHARS:
            return self._verdict(await asyncio.to_thread(apply_guardrails, request, guards), key)
        return self._inline(request, guards, key)

    def screen_now(self, request: ChatRequest, key: VirtualKey | None) -> Screened | None:
        """:meth:`screen` without a coroutine; ``None`` when the text is long enough to be scanned on a worker
        thread: then await :meth:`screen`."""
        request, guards = self._capped(request, key)
        if guards and _text_size(request.messages) > _SCAN_INLINE_CHARS:
            return None
        return self._inline(request, guards, key)

    def _inline(self, request: ChatRequest, guards: tuple[Guardrail, ...], key: VirtualKey | None) -> Screened:
        return self._verdict(apply_guardrails(request, guards), key) if guards else Screened(request)

    def _capped(self, request: ChatRequest, key: VirtualKey | None) -> tuple[ChatRequest, tuple[Guardrail, ...]]:
        """The request within the size caps (or refused), and its guardrails."""
        limits = self.config.limits
        if len(request.messages) > limits.max_messages:
            raise InvalidRequest(f"The request has {len(request.messages)} messages; the limit is "
                                 f"{limits.max_messages}.", param="messages", code="too_many_messages")
        cap = limits.max_tokens
        if key is not None and key.max_tokens is not None and (cap is None or key.max_tokens < cap):
            cap = key.max_tokens
        if cap is not None and (request.max_tokens is None or request.max_tokens > cap):
            request = replace(request, max_tokens=cap)
        which = (request.model, key.guardrails if key is not None else ())
        guards = self._guards.get(which)
        if guards is None:
            guards = self.guards_for(key, request.model)
            if len(self._guards) >= _SCOPES_CACHED:
                self._guards.clear()
            self._guards[which] = guards
        return request, guards

    def _verdict(self, outcome: GuardOutcome, key: VirtualKey | None) -> Screened:
        if outcome.blocked_by is not None:
            raise GuardrailBlocked(f"The request was blocked by the guardrail '{outcome.blocked_by}': "
                                   f"{outcome.block_reason}.", param="messages")
        request = outcome.request
        if outcome.route_to is not None and outcome.route_to != request.model:
            self.check_model(key, outcome.route_to)
            request = replace(request, model=outcome.route_to)
        vault = outcome.vault if outcome.vault else None
        return Screened(request, list(outcome.flags), vault)

    # -- may they: limits and budgets -----------------------------------------------------------

    def scopes(self, key: VirtualKey) -> tuple[Scope, ...]:
        """The limit scopes of a key. A key without limits still has one: its spend is counted, and a
        revocation is seen by every process at its next admission. Built once per version of the key."""
        cached = self._scopes.get(key.id)
        if cached is not None and cached[0] is key:
            return cached[1]
        limits = Limits(rpm=key.rpm, tpm=key.tpm, max_concurrency=key.max_concurrency,
                        budget_day=key.budget_day, budget_month=key.budget_month, budget_total=key.budget_total)
        scopes = (Scope(f"key:{key.id}", limits),)
        if len(self._scopes) >= _SCOPES_CACHED:
            self._scopes.clear()
        self._scopes[key.id] = (key, scopes)
        return scopes

    def estimate(self, request: ChatRequest | None, prompt_tokens: int, models: Sequence[ModelConfig]) -> tuple[int,
                                                                                                              float]:
        """Tokens and dollars to reserve: the prompt plus the most output the request may produce, at the
        dearest price among the models that may serve it (the chosen one and its fallbacks)."""
        output = 0
        if request is not None:
            output = request.max_tokens or self._default_output
            if request.n > 1:
                output *= request.n
        cost = 0.0
        for price_in, price_out, most in self._prices(models):
            dollars = (prompt_tokens * price_in + (output if most is None or output < most else most) * price_out)
            if dollars > cost:
                cost = dollars
        return prompt_tokens + output, cost / 1_000_000

    def _prices(self, models: Sequence[ModelConfig]) -> tuple[tuple[float, float, int | None], ...]:
        """The input and output prices and the output cap of every deployment of ``models`` (kept per sequence:
        the gateway passes the same one for a route each time)."""
        cached = self._model_prices.get(id(models))
        if cached is None or cached[0] is not models:
            if len(self._model_prices) >= _SCOPES_CACHED:
                self._model_prices.clear()
            cached = self._model_prices[id(models)] = (models, tuple(
                (dep.price.input, dep.price.output, dep.max_output_tokens) for m in models for dep in m.deployments))
        return cached[1]

    async def admit(self, key: VirtualKey, request_id: str, request: ChatRequest | None, prompt_tokens: int,
                    models: Sequence[ModelConfig], headers: Headers) -> None:
        """Reserve the request's tokens and dollars against the key's limits; add the ``x-ratelimit-*``
        headers for the response (its error response included) to ``headers``. Raises :class:`RateLimited`
        (retry later), :class:`BudgetExceeded`, :class:`AuthenticationFailed` (revoked) or
        :class:`NoHealthyDeployment` (the limits store is away: fail closed). (:meth:`admission` and
        :meth:`conclude` in two steps, as the request path takes them.)"""
        try:
            admission = await self.admission(key, request_id, request, prompt_tokens, models)
        except LimiterUnavailable as exc:
            raise unavailable(exc) from None
        headers.extend(quota_headers(admission))
        self.conclude(admission)

    def admission(self, key: VirtualKey, request_id: str, request: ChatRequest | None, prompt_tokens: int,
                  models: Sequence[ModelConfig]) -> Awaitable[Admission]:
        """Ask the limiter to admit the request: its answer, once awaited (which raises
        :class:`LimiterUnavailable` when the store is away: see :func:`unavailable`); then :meth:`conclude`."""
        if self.limiter is None:
            done: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
            done.set_result(Admission(True))
            return done
        tokens, cost = self.estimate(request, prompt_tokens, models)
        ask = Ask(request_id, self.scopes(key), tokens, cost, self.config.limits.reservation_ttl)
        admit_soon = self._admit_soon
        return self.limiter.admit(ask) if admit_soon is None else admit_soon(ask)

    @staticmethod
    def conclude(admission: Admission) -> None:
        """Raise the client's error for a refused admission (its response shows the admission's
        :func:`quota_headers` too)."""
        if not admission.admitted:
            raise refusal_error(admission)

    def settle(self, rec: RequestRecord, admitted: bool) -> None:
        """Settle the reservation of a finished request with what it really used (without waiting for it)."""
        if not admitted or self.limiter is None or rec.key_id is None:
            return
        subject, tokens = f"key:{rec.key_id}", rec.input_tokens + rec.output_tokens
        settle_nowait = self._settle_nowait
        if settle_nowait is not None:
            settle_nowait(rec.request_id, subject, tokens, rec.cost_usd)
            return
        task = asyncio.get_running_loop().create_task(self._settle(rec.request_id, subject, tokens, rec.cost_usd))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, request_id: str, subject: str, tokens: int, cost: float) -> None:
        assert self.limiter is not None
        try:
            await self.limiter.settle(request_id, [subject], tokens, cost)
        except LimiterUnavailable as exc:  # the reservation expires by itself; the spend is lost
            log.error("could not settle %s for %s: %s", request_id, subject, exc)


def credential(headers: Mapping[str, str]) -> str | None:
    """The API key a client sent, in any of the dialects' headers."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    return None


_QUOTA_NAMES = {name: (f"x-ratelimit-limit-{name}".encode(), f"x-ratelimit-remaining-{name}".encode(),
                       f"x-ratelimit-reset-{name}".encode()) for name in ("requests", "tokens")}


def quota_headers(admission: Admission) -> Headers:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` from an admission's quota."""
    quota = admission.quota
    out: Headers = []
    if type(quota) is ShownQuota:  # the usual case with Redis: the values as the store rendered them
        lim = quota.limits
        if quota.requests is not None and lim.rpm is not None:
            of = _QUOTA_NAMES["requests"]
            out += ((of[0], b"%d" % lim.rpm), (of[1], quota.requests[0]), (of[2], quota.requests[1]))
        if quota.tokens is not None and lim.tpm is not None:
            of = _QUOTA_NAMES["tokens"]
            out += ((of[0], b"%d" % lim.tpm), (of[1], quota.tokens[0]), (of[2], quota.tokens[1]))
        return out
    if type(quota) is Quota:  # the usual case in memory: written from the buckets' levels
        lim = quota.limits
        if quota.requests_level is not None and lim.rpm is not None:
            out += _bucket_headers(_QUOTA_NAMES["requests"], lim.rpm, quota.requests_level)
        if quota.tokens_level is not None and lim.tpm is not None:
            out += _bucket_headers(_QUOTA_NAMES["tokens"], lim.tpm, quota.tokens_level)
        return out
    for name, state in quota.items():
        names = _QUOTA_NAMES.get(name)
        if names is None:
            names = (f"x-ratelimit-limit-{name}".encode(), f"x-ratelimit-remaining-{name}".encode(),
                     f"x-ratelimit-reset-{name}".encode())
        out += ((names[0], b"%d" % state.limit), (names[1], b"%d" % max(0, math.floor(state.remaining))),
                (names[2], b"%.3fs" % max(0.0, state.reset)))
    return out


#: The lines of a key's limits (its Limits object, kept while it is cached: ids are not reused meanwhile).
_LIMIT_LINES: dict[int, tuple[Limits, bytes, bytes]] = {}


def quota_lines(admission: Admission) -> bytes:
    """:func:`quota_headers` as header lines (``b"name: value\\r\\n"`` each), for a server that takes them so."""
    quota = admission.quota
    if type(quota) is ShownQuota:  # the usual case with Redis: joined as the store rendered them
        lim, rq, tk = quota.limits, quota.requests, quota.tokens
        if rq is not None and tk is not None and lim.rpm is not None and lim.tpm is not None:
            cached = _LIMIT_LINES.get(id(lim))
            if cached is None or cached[0] is not lim:
                if len(_LIMIT_LINES) >= _SCOPES_CACHED:
                    _LIMIT_LINES.clear()
                cached = _LIMIT_LINES[id(lim)] = (
                    lim, b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: " % lim.rpm,
                    b"\r\nx-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: " % lim.tpm)
            return b"".join((cached[1], rq[0], b"\r\nx-ratelimit-reset-requests: ", rq[1], cached[2], tk[0],
                             b"\r\nx-ratelimit-reset-tokens: ", tk[1], b"\r\n"))
    parts: list[bytes] = []
    for name, value in quota_headers(admission):
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)


def _bucket_headers(names: tuple[bytes, bytes, bytes], limit: int, level: float) -> Headers:
    """The three headers of a bucket ``limit`` deep, refilled in a minute, that holds ``level`` (as
    :meth:`LimitState.of_bucket` describes it)."""
    return [(names[0], b"%d" % limit), (names[1], b"%d" % level if level >= 1 else b"0"),
            (names[2], b"%.3fs" % ((limit - level) * 60.0 / limit) if level < limit else b"0.000s")]


def unavailable(exc: LimiterUnavailable) -> NoHealthyDeployment:
    """The client-facing error (and the log line) when the limits store is away: refused, retryably."""
    log.error("limits store unavailable: %s", exc)
    return NoHealthyDeployment("Limits cannot be checked right now; try again shortly.", retry_after=1.0)


def refusal_error(admission: Admission) -> SwitchboardError:
    """The client-facing error for a refused admission."""
    refusal = admission.refusal
    assert refusal is not None
    if refusal.limit == "revoked":
        return AuthenticationFailed("This API key has been revoked.")
    if refusal.limit.startswith("budget"):
        period = refusal.limit.removeprefix("budget_")
        return BudgetExceeded(f"This API key's {period} budget is spent.", code="budget_exceeded")
    what = {"rpm": "requests per minute", "tpm": "tokens per minute",
            "concurrency": "concurrent requests"}.get(refusal.limit, refusal.limit)
    return RateLimited(f"Rate limit reached for this API key: {what}.", retry_after=refusal.retry_after or 1.0)


def _text_size(messages: Sequence[Message]) -> int:
    size = 0
    for m in messages:
        for part in m.content:
            size += len(getattr(part, "text", "") or "")
        for call in m.tool_calls:
            size += len(call.arguments)
    return size
