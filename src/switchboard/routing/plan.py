"""The route plan: the ordered deployments to try for one request, with the reasons behind the order.

Usage::

    plan = RoutePlan(public_model="fast", candidates=[Candidate(deployment, provider_name, score=0.7)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.config.model import DeploymentConfig

__all__ = ["Candidate", "RequestFeatures", "RoutePlan"]


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What routing needs to know about a request, computed once by the gateway."""

    public_model: str
    needs_tools: bool = False
    needs_vision: bool = False
    needs_json: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deployment to try, and the score that placed it."""

    deployment: DeploymentConfig
    score: float = 0.0
    reason: str = ""


@dataclass(slots=True)
class RoutePlan:
    """Ordered candidates (first is tried first) plus deployments set aside and why."""

    public_model: str
    strategy: str
    candidates: list[Candidate]
    excluded: list[tuple[str, str]] = field(default_factory=list)
