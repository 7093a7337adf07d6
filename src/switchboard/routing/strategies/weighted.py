"""Weighted random load balancing across the deployments of one model.

Pure: the random draws come in as an argument, so a plan is reproducible and explainable.

Usage::

    plan = select(features, deployments, draws=[rng.random() for _ in deployments])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.eligibility import UNAVAILABLE, BalanceView, capability_gaps, eligible_deployments
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["UNAVAILABLE", "balance", "capability_gaps", "select"]


def select(
    features: RequestFeatures, deployments: Sequence[DeploymentConfig], draws: Sequence[float],
    unavailable: Mapping[str, float] | None = None,
) -> RoutePlan:
    """Order capable, available deployments by weighted sampling without replacement.

    Each deployment gets the key ``draw ** (1 / weight)`` (Efraimidis–Spirakis): sorting by it
    descending is a weighted random permutation, so the first candidate is chosen with probability
    proportional to its weight and the rest form the fallback order. ``unavailable`` (deployment id →
    when it may take traffic again) is the health snapshot: those deployments are set aside.
    """
    if len(draws) != len(deployments):
        raise ValueError("one draw per deployment")
    return balance(features, deployments, BalanceView(draws=draws, unavailable=unavailable or {}))


def balance(features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView) -> RoutePlan:
    """:func:`select` on a :class:`BalanceView`, the signature every balancing strategy shares."""
    eligible, excluded = eligible_deployments(features, deployments, view)
    scored = [Candidate(dep, view.draws[i] ** (1.0 / dep.weight), f"weight {dep.weight:g}") for i, dep in eligible]
    scored.sort(key=lambda c: c.score, reverse=True)
    return RoutePlan(features.public_model, "weighted", scored, excluded)
