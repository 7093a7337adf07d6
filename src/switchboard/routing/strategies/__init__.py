"""Balancing strategies: how one model's requests spread over its deployments. Each module exposes
``balance(features, deployments, view) -> RoutePlan``; :data:`BALANCERS` registers them by the name
``models.<name>.balance`` uses.

Usage::

    plan = BALANCERS["latency"](features, model.deployments, view)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from switchboard.config.model import DeploymentConfig
from switchboard.routing.eligibility import BalanceView
from switchboard.routing.features import RequestFeatures
from switchboard.routing.plan import RoutePlan
from switchboard.routing.strategies import cost, latency, least_inflight, round_robin, weighted

__all__ = ["BALANCERS", "Balancer"]

Balancer = Callable[[RequestFeatures, Sequence[DeploymentConfig], BalanceView], RoutePlan]

BALANCERS: dict[str, Balancer] = {
    "weighted": weighted.balance,
    "round_robin": round_robin.balance,
    "least_inflight": least_inflight.balance,
    "latency": latency.balance,
    "cost": cost.balance,
}
