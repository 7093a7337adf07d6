"""Live statistics per deployment: latency, throughput, load and outcomes as the executor sees them.

The executor writes (``begin``/``end``, ``observe_*``); routing and hedging read. Everything is
cheap enough for the request path: a ring buffer of recent times to first token whose sorted copy
is rebuilt at most every :data:`RESORT_EVERY` observations, and exponentially decayed means.

Usage::

    stats = LiveStats().for_deployment("openai/gpt-4o")
    stats.begin()
    stats.observe_ttft(0.42)
    stats.end()
    stats.ttft_quantile(0.95)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RESORT_EVERY", "DeploymentStats", "LiveStats", "MinuteWindow", "StatsSnapshot"]

RESORT_EVERY = 16
"""Quantiles may lag by up to this many observations minus one; sorting on each read would not."""


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A copy of one deployment's statistics; ``None`` where there is too little data.

    Usage: ``LiveStats().snapshot()["openai/gpt-4o"].ttft_p95``
    """

    ttft_p50: float | None
    ttft_p95: float | None
    ttft_ewma: float | None
    tps_ewma: float | None
    in_flight: int
    successes: int
    failures: int
    requests_last_minute: int = 0
    tokens_last_minute: int = 0


class MinuteWindow:
    """Counts over the last 60 seconds in one-second buckets: requests and tokens sent to a deployment,
    to keep it under its provider's RPM and TPM limits.

    Usage: ``w = MinuteWindow(); w.add(now, requests=1, tokens=900); w.totals(now)``
    """

    __slots__ = ("_requests", "_seconds", "_tokens")

    def __init__(self) -> None:
        self._seconds = [-1] * 60
        self._requests = [0] * 60
        self._tokens = [0] * 60

    def add(self, now: float, *, requests: int = 0, tokens: int = 0) -> None:
        """Count ``requests`` and ``tokens`` at time ``now`` (seconds, monotonic)."""
        second = int(now)
        slot = second % 60
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._requests[slot] = 0
            self._tokens[slot] = 0
        self._requests[slot] += requests
        self._tokens[slot] += tokens

    def totals(self, now: float) -> tuple[int, int]:
        """``(requests, tokens)`` counted in the 60 seconds up to ``now``."""
        oldest = int(now) - 59
        requests = tokens = 0
        for slot, second in enumerate(self._seconds):
            if second >= oldest:
                requests += self._requests[slot]
                tokens += self._tokens[slot]
        return requests, tokens


class DeploymentStats:
    """What has been observed of one deployment.

    Usage: ``stats = DeploymentStats(); stats.observe_ttft(0.3); stats.ttft_ewma``
    """

    __slots__ = ("_alpha", "_clock", "_count", "_min_samples", "_next", "_ring", "_since_sort", "_sorted",
                 "failures", "in_flight", "minute", "successes", "tps_ewma", "ttft_ewma")

    def __init__(self, *, samples: int = 256, min_samples: int = 20, alpha: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if samples < 1:
            raise ValueError("samples must be at least 1")
        if not 1 <= min_samples <= samples:
            raise ValueError("min_samples must be between 1 and samples")
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._min_samples = min_samples
        self._ring = [0.0] * samples
        self._next = 0
        self._count = 0
        self._sorted: list[float] | None = None
        self._since_sort = 0
        self.ttft_ewma: float | None = None
        """Exponentially decayed mean time to first token, in seconds."""
        self.tps_ewma: float | None = None
        """Exponentially decayed mean output tokens per second after the first token."""
        self.in_flight = 0
        """Calls begun and not yet ended."""
        self.successes = 0
        self.failures = 0
        self._clock = clock
        self.minute = MinuteWindow()
        """Requests begun and tokens used in the last minute."""

    def observe_ttft(self, seconds: float) -> None:
        """Record a time to first token (or to the whole answer, when not streaming)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            return  # a NaN would poison both the sort and the mean
        self._ring[self._next] = seconds
        self._next = (self._next + 1) % len(self._ring)
        self._count = min(self._count + 1, len(self._ring))
        self._since_sort += 1
        self.ttft_ewma = self._decay(self.ttft_ewma, seconds)

    def ttft_quantile(self, q: float = 0.95) -> float | None:
        """The ``q`` quantile (linearly interpolated) of the recent times to first token, or ``None``
        below ``min_samples`` observations."""
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        if self._count < self._min_samples:
            return None
        if self._sorted is None or self._since_sort >= RESORT_EVERY:
            self._sorted = sorted(self._ring[:self._count])
            self._since_sort = 0
        ordered = self._sorted
        position = q * (len(ordered) - 1)
        below = math.floor(position)
        above = min(below + 1, len(ordered) - 1)
        return ordered[below] + (ordered[above] - ordered[below]) * (position - below)

    def observe_output(self, tokens: int, seconds: float) -> None:
        """Record ``tokens`` produced in ``seconds`` after the first token; empty spans are ignored."""
        if tokens <= 0 or not (math.isfinite(seconds) and seconds > 0):
            return
        self.tps_ewma = self._decay(self.tps_ewma, tokens / seconds)

    def begin(self) -> None:
        """A call to this deployment started."""
        self.in_flight += 1
        self.minute.add(self._clock(), requests=1)

    def observe_tokens(self, tokens: int) -> None:
        """Count tokens (prompt and answer) a call used, against the deployment's per-minute limit."""
        if tokens > 0:
            self.minute.add(self._clock(), tokens=tokens)

    def end(self) -> None:
        """A call to this deployment ended, however it ended. Never counts below zero."""
        self.in_flight = max(0, self.in_flight - 1)

    def observe_outcome(self, ok: bool) -> None:
        """Count a finished call as a success or a failure."""
        if ok:
            self.successes += 1
        else:
            self.failures += 1

    def snapshot(self) -> StatsSnapshot:
        """A frozen copy. Usage: ``stats.snapshot().ttft_p50``"""
        requests, tokens = self.minute.totals(self._clock())
        return StatsSnapshot(ttft_p50=self.ttft_quantile(0.5), ttft_p95=self.ttft_quantile(0.95),
                             ttft_ewma=self.ttft_ewma, tps_ewma=self.tps_ewma, in_flight=self.in_flight,
                             successes=self.successes, failures=self.failures,
                             requests_last_minute=requests, tokens_last_minute=tokens)

    def _decay(self, mean: float | None, value: float) -> float:
        return value if mean is None else mean + self._alpha * (value - mean)


class LiveStats:
    """Statistics for every deployment, by id, created on first use.

    Usage: ``LiveStats(samples=256, min_samples=20).for_deployment("openai/gpt-4o").begin()``
    """

    def __init__(self, *, samples: int = 256, min_samples: int = 20, alpha: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        DeploymentStats(samples=samples, min_samples=min_samples, alpha=alpha)  # fail early on bad settings
        self._clock = clock
        self._samples = samples
        self._min_samples = min_samples
        self._alpha = alpha
        self._deployments: dict[str, DeploymentStats] = {}

    def for_deployment(self, deployment_id: str) -> DeploymentStats:
        """The deployment's statistics, empty on first use."""
        stats = self._deployments.get(deployment_id)
        if stats is None:
            stats = DeploymentStats(samples=self._samples, min_samples=self._min_samples, alpha=self._alpha,
                                    clock=self._clock)
            self._deployments[deployment_id] = stats
        return stats

    def peek(self, deployment_id: str) -> DeploymentStats | None:
        """The deployment's statistics, or ``None`` when nothing was observed yet (creates nothing)."""
        return self._deployments.get(deployment_id)

    def snapshot(self) -> dict[str, StatsSnapshot]:
        """A frozen copy of every deployment's statistics, by id."""
        return {deployment_id: stats.snapshot() for deployment_id, stats in self._deployments.items()}
