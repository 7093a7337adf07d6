"""Turning predicted qualities and expected costs into one model choice — the pure core the gateway's
learned-routing strategy calls, and the calibration that turns an aggregate goal into a per-request knob.

Knobs (what a user configures):

- :class:`WillingnessToPay` ``λ``: argmax_j λ·P̂_j − cost_j (RouterBench's router; λ in quality per dollar).
- :class:`QualityTarget`: the cheapest model whose predicted quality reaches the target.
- :class:`MaxCost`: the best predicted model whose expected cost per request is within the cap.
- :class:`StrongShare`: two models; the strong one when P̂(strong) − P̂(weak) ≥ ``threshold``.
  :func:`calibrate_strong_share` picks the threshold that sends a given share of traffic to it.

Usage::

    model, scores, reason = choose(qm.predict(prompt), qm.mean_costs, QualityTarget(0.8))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "Knob",
    "MaxCost",
    "QualityTarget",
    "StrongShare",
    "WillingnessToPay",
    "calibrate_budget",
    "calibrate_quality",
    "calibrate_strong_share",
    "choose",
    "choose_index",
]


@dataclass(frozen=True, slots=True)
class WillingnessToPay:
    """Pick argmax_j ``lam``·P̂_j − cost_j: ``lam`` dollars is what one unit of quality is worth."""

    lam: float


@dataclass(frozen=True, slots=True)
class QualityTarget:
    """Pick the cheapest model whose predicted quality is ≥ ``target``; if none is, the best predicted."""

    target: float


@dataclass(frozen=True, slots=True)
class MaxCost:
    """Pick the best predicted model whose expected cost is ≤ ``dollars``; if none is, the cheapest."""

    dollars: float


@dataclass(frozen=True, slots=True)
class StrongShare:
    """Two-model routing: ``strong`` when P̂(strong) − P̂(weak) ≥ ``threshold``, else ``weak``."""

    strong: str
    weak: str
    threshold: float


Knob = WillingnessToPay | QualityTarget | MaxCost | StrongShare


def choose(
    predictions: Mapping[str, float], costs: Mapping[str, float], knob: Knob
) -> tuple[str, dict[str, float], str]:
    """(chosen model, the score each candidate got, a one-line reason).

    ``predictions`` holds the candidates (model → P̂ of a good answer); ``costs`` their expected dollars per
    request (missing: 0). Ties go to the cheaper model, then to the name first in ``predictions``.
    """
    if not predictions:
        raise ValueError("choose() needs at least one candidate")
    names = list(predictions)
    cost = {m: float(costs.get(m, 0.0)) for m in names}
    by_cost = sorted(names, key=lambda m: (cost[m], names.index(m)))
    if isinstance(knob, WillingnessToPay):
        scores = {m: knob.lam * predictions[m] - cost[m] for m in names}
        best = max(by_cost, key=lambda m: scores[m])
        return best, scores, f"max {knob.lam:g}·P(good) − cost: {best} ({predictions[best]:.2f}, ${cost[best]:.6f})"
    if isinstance(knob, QualityTarget):
        scores = dict(predictions)
        for m in by_cost:
            if predictions[m] >= knob.target:
                return m, scores, f"cheapest with predicted quality ≥ {knob.target:g}: {m} ({predictions[m]:.2f})"
        best = max(by_cost, key=lambda m: predictions[m])
        return best, scores, f"none predicted ≥ {knob.target:g}; best predicted: {best} ({predictions[best]:.2f})"
    if isinstance(knob, MaxCost):
        scores = dict(predictions)
        within = [m for m in by_cost if cost[m] <= knob.dollars]
        if not within:
            return by_cost[0], scores, f"none within ${knob.dollars:g}; cheapest: {by_cost[0]}"
        best = max(within, key=lambda m: predictions[m])
        return best, scores, f"best predicted within ${knob.dollars:g}: {best} ({predictions[best]:.2f})"
    missing = [m for m in (knob.strong, knob.weak) if m not in predictions]
    if missing:
        raise ValueError(f"StrongShare model(s) not among the candidates: {', '.join(missing)}")
    margin = predictions[knob.strong] - predictions[knob.weak]
    pick = knob.strong if margin >= knob.threshold else knob.weak
    relation = "≥" if pick == knob.strong else "<"
    return pick, {knob.strong: margin, knob.weak: -margin}, (
        f"P({knob.strong}) − P({knob.weak}) = {margin:+.3f} {relation} {knob.threshold:+.3f}: {pick}")


def choose_index(predictions: npt.NDArray[np.float64], costs: npt.NDArray[np.float64], lam: float,
                 ) -> npt.NDArray[np.intp]:
    """Vectorised :class:`WillingnessToPay` for evaluation: ``predictions`` (n, m), ``costs`` (m,) or (n, m)."""
    result: npt.NDArray[np.intp] = (lam * predictions - costs).argmax(axis=1)
    return result


def _lambda_grid() -> list[float]:
    return [10 ** (-7 + i * 0.02) for i in range(451)]  # 1e-7 … 1e2, fine enough for calibration


def calibrate_quality(predictions: npt.NDArray[np.float64], scores: npt.NDArray[np.float64],
                      costs: npt.NDArray[np.float64], target: float) -> WillingnessToPay:
    """The cheapest :class:`WillingnessToPay` whose mean realised quality on calibration data (``predictions``,
    true ``scores`` and ``costs``, all (n, m)) reaches ``target``; the most expensive one if none does."""
    mean_cost = costs.mean(axis=0)
    rows = range(len(scores))
    best = _lambda_grid()[-1]
    for lam in _lambda_grid():
        ch = choose_index(predictions, mean_cost, lam)
        if sum(float(scores[i, ch[i]]) for i in rows) / max(1, len(scores)) >= target:
            best = lam
            break
    return WillingnessToPay(best)


def calibrate_budget(predictions: npt.NDArray[np.float64], costs: npt.NDArray[np.float64],
                     dollars_per_request: float) -> WillingnessToPay:
    """The largest :class:`WillingnessToPay` whose mean realised cost on calibration data stays within
    ``dollars_per_request`` (an average budget, unlike :class:`MaxCost`, a per-request cap)."""
    mean_cost = costs.mean(axis=0)
    best = _lambda_grid()[0]
    for lam in _lambda_grid():
        ch = choose_index(predictions, mean_cost, lam)
        spent = sum(float(costs[i, ch[i]]) for i in range(len(costs))) / max(1, len(costs))
        if spent <= dollars_per_request:
            best = lam
    return WillingnessToPay(best)


def calibrate_strong_share(margins: Sequence[float], strong: str, weak: str, share: float) -> StrongShare:
    """The :class:`StrongShare` threshold that sends at most ``share`` (0–1) of the calibration prompts, whose
    P̂(strong) − P̂(weak) are ``margins``, to the strong model."""
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must be between 0 and 1")
    ordered = sorted(margins, reverse=True)
    k = int(share * len(ordered) + 1e-9)
    if k <= 0 or not ordered:
        return StrongShare(strong, weak, float("inf"))
    if k >= len(ordered):
        return StrongShare(strong, weak, float("-inf"))
    # Strictly above the (k+1)-th margin, so ties at the cut do not push the share over.
    above = ordered[k]
    threshold = min((m for m in ordered[:k] if m > above), default=float("inf"))
    return StrongShare(strong, weak, threshold)
