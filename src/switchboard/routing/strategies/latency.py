"""Lowest latency: the deployment expected to finish the answer soonest, from decayed live estimates of
its time to first token and its output speed.

A deployment with no observations yet is tried first, so that every deployment gets measured.

Usage::

    plan = balance(features, deployments, BalanceView(stats=live.snapshot(), expected_output_tokens=256))
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.execution.live import StatsSnapshot
from switchboard.routing.eligibility import BalanceView, eligible_deployments
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["balance", "expected_seconds"]


def expected_seconds(snap: StatsSnapshot | None, output_tokens: int) -> float | None:
    """Time to first token plus ``output_tokens`` at the observed speed; ``None`` before any observation."""
    if snap is None or snap.ttft_ewma is None:
        return None
    speed = snap.tps_ewma
    return snap.ttft_ewma + (output_tokens / speed if speed else 0.0)


def balance(features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView) -> RoutePlan:
    """Order by expected seconds, ascending (unmeasured first); ties broken by the random draws."""
    eligible, excluded = eligible_deployments(features, deployments, view)
    scored: list[tuple[float, float, Candidate]] = []
    for i, dep in eligible:
        seconds = expected_seconds(view.stats.get(dep.id), view.expected_output_tokens)
        tie = view.draws[i] if i < len(view.draws) else 0.0
        if seconds is None:
            scored.append((-1.0, -tie, Candidate(dep, 0.0, "not measured yet")))
        else:
            scored.append((seconds, -tie, Candidate(dep, -seconds, f"expected {seconds * 1000:.0f} ms")))
    scored.sort(key=lambda s: (s[0], s[1]))
    return RoutePlan(features.public_model, "latency", [c for _, _, c in scored], excluded)
