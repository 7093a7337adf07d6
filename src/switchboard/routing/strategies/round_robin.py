"""Round robin across the deployments of one model: each request starts one further along.

Usage::

    plan = balance(features, deployments, BalanceView(turn=next(counter)))
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.eligibility import BalanceView, eligible_deployments
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["balance"]


def balance(features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView) -> RoutePlan:
    """Eligible deployments in configured order, rotated so that turn ``t`` starts at deployment ``t mod n``
    (counted over all deployments, so a deployment set aside does not shift the others' turns)."""
    eligible, excluded = eligible_deployments(features, deployments, view)
    n = len(deployments)
    start = view.turn % n if n else 0
    ordered = sorted(eligible, key=lambda e: (e[0] - start) % n)
    candidates = [Candidate(dep, float(n - (i - start) % n), f"turn {(i - start) % n + 1} of {n}")
                  for i, dep in ordered]
    return RoutePlan(features.public_model, "round_robin", candidates, excluded)
