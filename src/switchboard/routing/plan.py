"""The route plan: the ordered deployments to try for one request, with the reasons behind the order.

Usage::

    plan = RoutePlan(public_model="fast", candidates=[Candidate(deployment, provider_name, score=0.7)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.config.model import DeploymentConfig
from switchboard.routing.features import RequestFeatures

__all__ = ["Candidate", "RequestFeatures", "RouteDecision", "RoutePlan", "Step"]


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
    decision: RouteDecision | None = None


@dataclass(slots=True)
class Step:
    """One stage of a router's decision: what it did and the numbers behind it."""

    stage: str
    outcome: str
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class RouteDecision:
    """How a router chose the model: the models it started from, each stage's step, the ranking it ended
    with (the chosen model first), and the bandit context the answer's feedback belongs to."""

    router: str
    model: str
    ranking: list[str]
    steps: list[Step] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    context: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, for the request record and the explain endpoint."""
        return {"router": self.router, "model": self.model, "ranking": self.ranking, "context": self.context,
                "steps": [{"stage": s.stage, "outcome": s.outcome, **({"detail": s.detail} if s.detail else {})}
                          for s in self.steps],
                "scores": self.scores}
