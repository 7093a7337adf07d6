"""What a failed attempt means, and how long to wait before trying the same deployment again.

Usage::

    failure = classify(exc)              # Failure(reason="timeout", retry_same=True, fall_back=True, ...)
    wait = retry_delay(1, settings, draw=rng.random(), retry_after=exc.retry_after)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from switchboard.config.model import RetryConfig
from switchboard.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    RateLimited,
    SwitchboardError,
    UnsupportedParameter,
    UpstreamConnectionError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

__all__ = ["Failure", "Health", "classify", "retry_delay"]

#: What a failure says about the deployment: it is unhealthy, it asks to be left alone for a while
#: (429, or 503 with retry-after), or nothing (the request itself was the problem).
Health = Literal["failure", "cool", "none"]


@dataclass(frozen=True, slots=True)
class Failure:
    """How the executor treats one failed attempt.

    ``reason`` is a short word for records and headers; ``retry_same`` says whether the same
    deployment may answer if asked again; ``fall_back`` whether another deployment may.
    """

    reason: str
    retry_same: bool
    fall_back: bool
    health: Health


_TRANSIENT: tuple[tuple[type[SwitchboardError], str], ...] = (
    (UpstreamTimeout, "timeout"),
    (UpstreamConnectionError, "connection"),
    (UpstreamProtocolError, "malformed"),
)


def classify(exc: SwitchboardError) -> Failure:
    """The treatment of an attempt that raised ``exc``.

    Transient upstream failures (timeouts, resets, malformed bodies, 5xx, 529, 429) are retried on
    the same deployment and then fall back. An upstream that rejects the gateway itself (its 401, 403,
    404) or cannot take a parameter falls back without a retry. A context overflow or a content-policy
    refusal goes to the model's configured alternative. Anything else is the caller's own request and
    returns at once.
    """
    if isinstance(exc, RateLimited):
        return Failure("rate_limited", True, True, "cool")
    if isinstance(exc, UpstreamOverloaded):
        return Failure("overloaded", True, True, "cool" if exc.retry_after else "failure")
    for kind, reason in _TRANSIENT:
        if isinstance(exc, kind):
            return Failure(reason, True, True, "failure")
    if isinstance(exc, UpstreamStatusError):
        return Failure(f"http_{exc.upstream_status}", exc.retryable, True, "failure")
    if isinstance(exc, ContextLengthExceeded):
        return Failure("context_length", False, False, "none")
    if isinstance(exc, ContentPolicyViolation):
        return Failure("refusal", False, False, "none")
    if isinstance(exc, UnsupportedParameter):
        return Failure("unsupported_parameter", False, True, "none")
    if exc.retryable:
        return Failure(type(exc).__name__, True, True, "failure")
    return Failure(type(exc).__name__, False, False, "none")


def retry_delay(retry: int, settings: RetryConfig, *, draw: float, retry_after: float | None,
                remaining: float | None) -> float | None:
    """Seconds to wait before retry number ``retry`` (from 1) on the same deployment, or ``None`` when
    the request should move on instead: the upstream asked for a longer pause than ``max_retry_after``,
    or the wait would use up the request's remaining time.

    Exponential backoff with full jitter (``draw`` is uniform in [0, 1)); an upstream ``retry_after``
    replaces it.
    """
    if retry_after is not None:
        if retry_after > settings.max_retry_after:
            return None
        wait = retry_after
    else:
        wait = draw * min(settings.max_backoff, settings.backoff * (2 ** (retry - 1)))
    if remaining is not None and wait >= remaining:
        return None
    return wait
