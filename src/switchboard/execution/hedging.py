"""Hedging decisions: how many extra requests may be spent, and when an attempt gets a hedge.

Usage::

    budget = HedgeBudget(ratio=0.1)
    budget.earn()  # once per request
    delay = hedge_delay("p95", live.for_deployment(dep_id), fallback=2.0)
    if delay is not None and first_token_missing_after(delay) and budget.try_spend():
        ...  # start the next candidate alongside
"""

from __future__ import annotations

import math
from typing import Literal

from switchboard.execution.live import DeploymentStats

__all__ = ["HedgeBudget", "hedge_delay"]

# Repeated float additions of a ratio such as 0.1 fall just short of a whole token.
_EPSILON = 1e-9


class HedgeBudget:
    """At most ``ratio`` extra requests per request on average, with a burst allowance: a token
    bucket where every request earns ``ratio`` tokens (up to ``burst``) and every hedge spends one.

    The bucket starts empty, so hedges never exceed ``ratio`` times the requests seen, even at
    start-up. Not thread-safe: one event loop owns it.

    Usage: ``budget = HedgeBudget(0.1); budget.earn(); budget.try_spend()``
    """

    __slots__ = ("_burst", "_ratio", "_tokens")

    def __init__(self, ratio: float, burst: float = 10.0) -> None:
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError("ratio must be a non-negative number")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError("burst must be at least 1, or no hedge could ever be paid for")
        self._ratio = ratio
        self._burst = burst
        self._tokens = 0.0

    @property
    def tokens(self) -> float:
        """Hedges currently paid for (fractional)."""
        return self._tokens

    def earn(self) -> None:
        """A request arrived: add ``ratio`` tokens, up to ``burst``."""
        self._tokens = min(self._burst, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Take one token for a hedge if there is one; ``False`` means do not hedge."""
        if self._tokens < 1 - _EPSILON:
            return False
        self._tokens = max(0.0, self._tokens - 1)
        return True


def hedge_delay(setting: float | Literal["p95"] | None, stats: DeploymentStats, *, floor: float = 0.05,
                fallback: float | None = None) -> float | None:
    """Seconds without a first token after which an attempt on this deployment gets a hedge.

    A number is used as configured; ``"p95"`` is the deployment's observed p95 time to first token
    (at least ``floor``), or ``fallback`` while there are too few samples; ``None`` means no hedging.

    Usage: ``hedge_delay("p95", stats, fallback=2.0)  # → 0.8 once stats hold enough samples``
    """
    if setting is None:
        return None
    if setting == "p95":
        p95 = stats.ttft_quantile(0.95)
        return fallback if p95 is None else max(p95, floor)
    return float(setting)
