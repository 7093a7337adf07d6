"""Lowest cost: the deployment whose price for this request (prompt tokens plus the expected answer) is
lowest first.

Usage::

    plan = balance(features, deployments, BalanceView(expected_output_tokens=256))
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.eligibility import BalanceView, eligible_deployments
from switchboard.routing.plan import Candidate, RequestFeatures, RoutePlan

__all__ = ["balance", "expected_cost"]


def expected_cost(dep: DeploymentConfig, prompt_tokens: int, output_tokens: int) -> float:
    """Dollars for ``prompt_tokens`` in and ``output_tokens`` out at the deployment's price."""
    return (prompt_tokens * dep.price.input + output_tokens * dep.price.output) / 1_000_000


def balance(features: RequestFeatures, deployments: Sequence[DeploymentConfig], view: BalanceView) -> RoutePlan:
    """Order by expected cost, ascending; ties (equal prices) broken by the weighted random draws."""
    eligible, excluded = eligible_deployments(features, deployments, view)
    scored: list[tuple[float, float, Candidate]] = []
    for i, dep in eligible:
        cost = expected_cost(dep, features.prompt_tokens, view.expected_output_tokens)
        tie = view.draws[i] ** (1.0 / dep.weight) if i < len(view.draws) else 0.0
        scored.append((cost, -tie, Candidate(dep, -cost, f"expected ${cost:.6f}")))
    scored.sort(key=lambda s: (s[0], s[1]))
    return RoutePlan(features.public_model, "cost", [c for _, _, c in scored], excluded)
