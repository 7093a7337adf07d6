"""Least in-flight: the deployment with the fewest calls under way (relative to its weight) first.

Usage::

    plan = balance(features, deployments, BalanceView(stats=live.snapshot(), draws=draws))
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.eligibility import BalanceView, eligible_deployments
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["balance"]


def balance(features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView) -> RoutePlan:
    """Order by in-flight calls divided by weight, ascending; ties are broken by the random draws so
    that idle deployments share the traffic."""
    eligible, excluded = eligible_deployments(features, deployments, view)
    scored: list[tuple[float, float, Candidate]] = []
    for i, dep in eligible:
        snap = view.stats.get(dep.id)
        load = snap.in_flight if snap is not None else 0
        tie = view.draws[i] if i < len(view.draws) else 0.0
        scored.append((load / dep.weight, -tie, Candidate(dep, -load / dep.weight, f"{load} in flight")))
    scored.sort(key=lambda s: (s[0], s[1]))
    return RoutePlan(features.public_model, "least_inflight", [c for _, _, c in scored], excluded)
