"""The multi-objective score of candidate models: quality minus weighted cost and latency.

Cost and latency are divided by their largest value among the candidates, so each weight says how much
quality (0–1) the most expensive (or slowest) candidate's cost is worth. Pure: the facts come in.

Usage::

    ranked = rank([ModelFacts("big", 0.9, 0.005, 2.1), ModelFacts("small", 0.7, 0.0002, 0.6)],
                  ObjectiveConfig(quality=1, cost=0.3))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.config.routers import ObjectiveConfig

__all__ = ["ModelFacts", "Ranked", "rank"]

#: The quality assumed for a model nothing is known about.
UNKNOWN_QUALITY = 0.5


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What is known of one candidate model for this request: predicted (or configured) quality in
    [0, 1], expected cost in dollars, expected latency in seconds (``None``: not known)."""

    name: str
    quality: float | None
    cost: float
    latency: float | None


@dataclass(frozen=True, slots=True)
class Ranked:
    """A model's place: its total score and the parts it is made of."""

    name: str
    score: float
    parts: dict[str, float]


def rank(models: Sequence[ModelFacts], weights: ObjectiveConfig) -> list[Ranked]:
    """Candidates best first. Ties keep the given order (the router's configured preference).

    A model with unknown latency is charged the mean of the known ones.
    """
    max_cost = max((m.cost for m in models), default=0.0)
    known = [m.latency for m in models if m.latency is not None]
    mean_latency = sum(known) / len(known) if known else 0.0
    max_latency = max(known, default=0.0)
    out: list[tuple[float, int, Ranked]] = []
    for order, m in enumerate(models):
        quality = UNKNOWN_QUALITY if m.quality is None else m.quality
        cost = m.cost / max_cost if max_cost > 0 else 0.0
        latency = (mean_latency if m.latency is None else m.latency) / max_latency if max_latency > 0 else 0.0
        parts = {"quality": quality, "cost": cost, "latency": latency}
        score = weights.quality * quality - weights.cost * cost - weights.latency * latency
        out.append((-score, order, Ranked(m.name, score, parts)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in out]
