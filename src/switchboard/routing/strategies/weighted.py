"""Weighted random load balancing across the deployments of one model.

Pure: the random draws come in as an argument, so a plan is reproducible and explainable.

Usage::

    plan = select(features, deployments, draws=[rng.random() for _ in deployments])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["UNAVAILABLE", "capability_gaps", "select"]

#: The exclusion reason of a deployment whose breaker is open or that is cooling down.
UNAVAILABLE = "unavailable (circuit open or cooling down)"


def capability_gaps(features: RequestFeatures, deployment: DeploymentConfig) -> list[str]:
    """The capabilities the request needs that ``deployment`` lacks."""
    caps = deployment.capabilities
    gaps = []
    if features.needs_tools and not caps.tools:
        gaps.append("tools")
    if features.needs_vision and not caps.vision:
        gaps.append("vision")
    if features.needs_json and not caps.json_mode:
        gaps.append("json")
    return gaps


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
    scored: list[Candidate] = []
    excluded: list[tuple[str, str]] = []
    for dep, draw in zip(deployments, draws, strict=True):
        gaps = capability_gaps(features, dep)
        if gaps:
            excluded.append((dep.id, "lacks " + ", ".join(gaps)))
            continue
        if unavailable and dep.id in unavailable:
            excluded.append((dep.id, UNAVAILABLE))
            continue
        key = draw ** (1.0 / dep.weight)
        scored.append(Candidate(dep, key, f"weight {dep.weight:g}"))
    scored.sort(key=lambda c: c.score, reverse=True)
    return RoutePlan(features.public_model, "weighted", scored, excluded)
