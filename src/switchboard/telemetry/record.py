"""The request record: one per request, written off the hot path.

Usage::

    rec = RequestRecord(request_id="req_1", started_at=time.time(), endpoint="chat", dialect="openai")
    rec.attempts.append(Attempt(deployment="sim/small", provider="sim-openai", outcome="ok", latency_ms=12.0))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from switchboard.config.model import Price
from switchboard.schemas.canonical import Usage

__all__ = ["Attempt", "RequestRecord", "cost_usd"]


# Not slotted: orjson writes a dataclass from its instance dict directly, at under half the cost of reading each
# field of a slotted one, and the record writers serialise every attempt of every request.
@dataclass
class Attempt:
    """One call to one deployment, or one deployment passed over.

    ``outcome`` is ``ok``, ``error``, ``unsatisfactory`` (an answer the validators rejected),
    ``skipped`` (circuit open) or ``cancelled``; ``reason`` says why in one word (``timeout``,
    ``http_503``, ``rate_limited``, ``empty``, ``refusal``, ``hedge_lost``, ``circuit_open`` …) and
    ``error`` in a sentence. ``model`` is the public model whose deployment this was (it differs from
    the request's on a fallback), ``retry`` counts earlier tries of the same deployment, ``hedge`` marks
    an attempt started in parallel. ``cost_usd`` is what the attempt cost, when it is known.
    ``started_ms`` is when the attempt began, in milliseconds after the request began; ``span_id`` is
    the attempt's trace span (16 hex digits) when tracing is on.
    """

    deployment: str
    provider: str
    outcome: str
    latency_ms: float
    error: str | None = None
    http_status: int | None = None
    reason: str | None = None
    model: str | None = None
    retry: int = 0
    hedge: bool = False
    cost_usd: float | None = None
    input_price: float | None = None
    started_ms: float = 0.0
    span_id: str | None = None


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request: who asked, where it went, how it went, what it cost.

    ``status`` is the HTTP status the client saw; ``partial`` marks a stream that ended with an
    error after content had been sent; ``unsatisfactory`` says why the answer delivered failed
    validation, when every candidate's answer did (the last one is delivered rather than an error).
    ``router`` is the router the client asked for, if any, and ``route`` its decision (the stages,
    scores and ranking) — ``public_model`` is then the model it chose. ``key_id`` and ``team`` name the
    virtual key that made the request and its team, when the API requires keys; ``caller`` is the end user
    (the request's ``user``, or the key's user). ``prompt`` and ``completion`` are the request's text and the
    answer's (the last 16,000 characters of each), kept only when ``records.capture_prompts`` /
    ``records.capture_completions`` are on, and redacted of secrets and personal data before they are stored.
    """

    request_id: str
    started_at: float
    endpoint: str
    dialect: str
    caller: str | None = None
    public_model: str | None = None
    deployment: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    partial: bool = False
    unsatisfactory: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    router: str | None = None
    route: dict[str, Any] | None = None
    key_id: str | None = None
    team: str | None = None
    prompt: str | None = None
    completion: str | None = None


def cost_usd(usage: Usage, price: Price) -> float:
    """Dollars for ``usage`` at ``price`` ($ per million tokens).

    Cached input tokens are billed at ``cached_input`` (or the input price when none is set), cache
    writes at ``cache_write`` (or the input price); reasoning tokens are output tokens.
    """
    cached = min(usage.cached_tokens, usage.input_tokens)
    writes = min(usage.cache_write_tokens, usage.input_tokens - cached)
    fresh = usage.input_tokens - cached - writes
    cached_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write is None else price.cache_write
    total = fresh * price.input + cached * cached_price + writes * write_price + usage.output_tokens * price.output
    return total / 1_000_000
