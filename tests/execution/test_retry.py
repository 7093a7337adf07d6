"""What a failed attempt means, and the wait before the same deployment is tried again."""

from __future__ import annotations

import pytest

from switchboard.config.model import RetryConfig
from switchboard.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    SwitchboardError,
    UnsupportedParameter,
    UpstreamConnectionError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from switchboard.execution.retry import classify, retry_delay


@pytest.mark.parametrize(("exc", "expected"), [
    (UpstreamTimeout("t"), ("timeout", True, True, "failure")),
    (UpstreamConnectionError("c"), ("connection", True, True, "failure")),
    (UpstreamProtocolError("m"), ("malformed", True, True, "failure")),
    (UpstreamStatusError("x", upstream_status=500), ("http_500", True, True, "failure")),
    (UpstreamStatusError("x", upstream_status=401, retryable=False), ("http_401", False, True, "failure")),
    (UpstreamOverloaded("o"), ("overloaded", True, True, "failure")),
    (UpstreamOverloaded("o", retry_after=3), ("overloaded", True, True, "cool")),
    (RateLimited("r", retry_after=1), ("rate_limited", True, True, "cool")),
    (ContextLengthExceeded("c"), ("context_length", False, False, "none")),
    (ContentPolicyViolation("p"), ("refusal", False, False, "none")),
    (UnsupportedParameter("u"), ("unsupported_parameter", False, True, "none")),
    (InvalidRequest("bad"), ("InvalidRequest", False, False, "none")),
])
def test_classify(exc: SwitchboardError, expected: tuple[str, bool, bool, str]) -> None:
    f = classify(exc)
    assert (f.reason, f.retry_same, f.fall_back, f.health) == expected


SETTINGS = RetryConfig(attempts=3, backoff=0.1, max_backoff=0.3, max_retry_after=5)


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    assert retry_delay(1, SETTINGS, draw=0.5, retry_after=None, remaining=None) == pytest.approx(0.05)
    assert retry_delay(2, SETTINGS, draw=0.5, retry_after=None, remaining=None) == pytest.approx(0.1)
    assert retry_delay(5, SETTINGS, draw=0.999, retry_after=None, remaining=None) == pytest.approx(0.2997)
    assert retry_delay(1, SETTINGS, draw=0.0, retry_after=None, remaining=None) == 0.0


def test_retry_after_replaces_backoff_up_to_its_limit() -> None:
    assert retry_delay(1, SETTINGS, draw=0.5, retry_after=2.0, remaining=None) == 2.0
    assert retry_delay(1, SETTINGS, draw=0.5, retry_after=6.0, remaining=None) is None


def test_never_waits_past_the_deadline() -> None:
    assert retry_delay(1, SETTINGS, draw=0.5, retry_after=2.0, remaining=1.0) is None
    assert retry_delay(2, SETTINGS, draw=0.5, retry_after=None, remaining=0.05) is None
    assert retry_delay(2, SETTINGS, draw=0.5, retry_after=None, remaining=0.5) == pytest.approx(0.1)
