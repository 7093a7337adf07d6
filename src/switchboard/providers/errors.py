"""Mapping upstream HTTP error answers onto the Switchboard error tree, shared by every provider family.

Usage::

    raise upstream_error(resp.status, message, code=code, headers=resp.headers, provider="openai")
"""

from __future__ import annotations

from collections.abc import Mapping

from switchboard.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    SwitchboardError,
    UpstreamOverloaded,
    UpstreamStatusError,
    UpstreamTimeout,
)

__all__ = ["looks_like_context_overflow", "parse_retry_after", "upstream_error"]

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input token count",
)


def looks_like_context_overflow(message: str, code: str | None = None) -> bool:
    """Whether an upstream 400/413 says the prompt does not fit the context window."""
    text = f"{code or ''} {message}".lower()
    return any(m in text for m in _CONTEXT_MARKERS)


_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "responsible_ai_policy_violation"})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds form only)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    sec = headers.get("retry-after")
    if sec:
        try:
            return max(0.0, float(sec))
        except ValueError:
            return None
    return None


def upstream_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: str = "upstream",
) -> SwitchboardError:
    """The Switchboard error for an upstream error status.

    400/413/422 are the caller's request (``InvalidRequest``, ``ContextLengthExceeded`` or
    ``ContentPolicyViolation``); 429 is
    ``RateLimited`` with its ``retry_after``; 408 and 504 are timeouts; 529 (and 503) overloads;
    401/403/404 are the gateway's configuration, not the caller's fault, so they become a
    non-retryable ``UpstreamStatusError`` (502); other 5xx are retryable ``UpstreamStatusError``.
    """
    hdrs = headers or {}
    msg = message or f"{provider} returned HTTP {status}"
    if status in (400, 413, 422):
        if looks_like_context_overflow(msg, code):
            return ContextLengthExceeded(msg, param=param or "messages")
        if code is not None and code.lower() in _POLICY_CODES:
            return ContentPolicyViolation(msg, param=param)
        return InvalidRequest(msg, param=param, code=code)
    if status == 429:
        return RateLimited(msg, retry_after=parse_retry_after(hdrs))
    if status in (408, 504):
        return UpstreamTimeout(f"{provider} timed out: {msg}")
    if status in (503, 529):
        return UpstreamOverloaded(f"{provider} is overloaded: {msg}", retry_after=parse_retry_after(hdrs))
    if status in (401, 403):
        return UpstreamStatusError(f"{provider} rejected the gateway's credentials (HTTP {status}): {msg}",
                                   upstream_status=status, retryable=False)
    if status == 404:
        return UpstreamStatusError(f"{provider} does not know this model or endpoint (HTTP 404): {msg}",
                                   upstream_status=status, retryable=False)
    return UpstreamStatusError(f"{provider} failed with HTTP {status}: {msg}", upstream_status=status,
                               retryable=status >= 500 or status == 409)
