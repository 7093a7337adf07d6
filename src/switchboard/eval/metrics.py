"""Routing metrics as ../shared/ROUTING-METRICS.md defines them (docs/routing.md, "Evaluating routers").

- RouterBench (many models, real prices): a router gives points (mean $ per prompt, mean quality); its curve is
  the **non-decreasing upper convex hull** of those points, extended flat to the right; **AIQ** is the mean
  height of that hull over [c_min, c_max].
- RouteLLM (one strong, one weak model): a per-prompt score is thresholded at its 11 deciles; quality is
  integrated over the strong-call fraction (trapezoids); **APGR** = (AUC − r_weak) / (r_strong − r_weak);
  **CPT(x)** is the smallest strong-call fraction whose PGR reaches x (linear interpolation).

Pure functions on plain floats and numpy arrays.

Usage::

    hull = upper_hull([(0.1, 0.5), (1.0, 0.9)])
    print(aiq(hull, 0.1, 1.0), apgr(pair_curve(scores, strong, weak), r_strong, r_weak))
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

from switchboard.eval.dataset import require_numpy

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Point", "aiq", "apgr", "cost_to_reach", "cpt", "hull_value", "pair_curve", "upper_hull"]

_EPS = 1e-9  # relative slack for costs that are equal up to floating-point summation order

#: (mean dollar cost per prompt, mean quality); for pair curves (strong-call fraction, mean quality).
Point = tuple[float, float]


def upper_hull(points: Sequence[Point]) -> list[Point]:
    """The non-decreasing upper convex hull of ``points``, left to right.

    Dominated points (one at most as cheap and at least as good exists) drop out; what remains is the
    concave, increasing frontier a router reaches by mixing two configurations at random.
    """
    ordered = sorted(set(points), key=lambda p: (p[0], -p[1]))
    frontier: list[Point] = []
    for c, q in ordered:
        if frontier and q <= frontier[-1][1]:
            continue  # no better than something at most as cheap
        frontier.append((c, q))
    hull: list[Point] = []
    for p in frontier:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(o: Point, a: Point, b: Point) -> float:
    # > 0: o→a→b turns left, so a lies under the chord o–b and is not on the upper hull.
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def hull_value(hull: Sequence[Point], cost: float) -> float:
    """Quality of ``hull`` (from :func:`upper_hull`) at ``cost``: linear between vertices, flat after the
    last; NaN before the first (no mix of the router's configurations is that cheap)."""
    if not hull or cost < hull[0][0] - _EPS * max(1.0, abs(hull[0][0])):
        return float("nan")
    if cost <= hull[0][0]:
        return hull[0][1]
    for (c0, q0), (c1, q1) in pairwise(hull):
        if cost <= c1:
            return q0 + (q1 - q0) * (cost - c0) / (c1 - c0)
    return hull[-1][1]


def aiq(hull: Sequence[Point], c_min: float, c_max: float) -> float:
    """Average height of ``hull`` over [c_min, c_max] (exact, the hull is piecewise linear).

    The hull must start at or before ``c_min`` (add the cheapest model's point to the router's points).
    """
    if not hull or hull[0][0] > c_min + _EPS * max(1.0, abs(c_min)):
        raise ValueError("the hull must reach c_min: include the cheapest model's point")
    if c_max <= c_min:
        return hull_value(hull, c_min)
    xs = [c_min] + [c for c, _ in hull if c_min < c < c_max] + [c_max]
    area = 0.0
    for a, b in pairwise(xs):
        area += (b - a) * (hull_value(hull, a) + hull_value(hull, b)) / 2
    return area / (c_max - c_min)


def cost_to_reach(hull: Sequence[Point], quality: float) -> float | None:
    """The least cost at which ``hull`` reaches ``quality``, or None if it never does."""
    if not hull or hull[-1][1] < quality - 1e-12:
        return None
    if hull[0][1] >= quality:
        return hull[0][0]
    for (c0, q0), (c1, q1) in pairwise(hull):
        if q1 >= quality - 1e-12:
            return c0 + (c1 - c0) * (quality - q0) / (q1 - q0)
    return None  # pragma: no cover - unreachable, the last vertex reaches quality


def pair_curve(
    router_scores: npt.NDArray[np.float64],
    strong: npt.NDArray[np.float64],
    weak: npt.NDArray[np.float64],
    num_results: int = 10,
) -> list[Point]:
    """(strong-call fraction, mean quality) at strong-call fractions 0, 1/num_results, …, 1: the prompts with
    the highest ``router_scores`` go to the strong model, the rest to the weak one.

    This is RouteLLM's decile thresholding (``pd.qcut`` edges of the scores) with ties broken by row order,
    so that a router with tied scores (the oracle, a per-task router) still gets the 11 fractions.
    """
    np_ = require_numpy()
    scores = np_.asarray(router_scores, dtype=float)
    order = np_.argsort(-scores, kind="stable")
    n = len(scores)
    gain = np_.concatenate(([0.0], np_.cumsum((np_.asarray(strong) - np_.asarray(weak))[order])))
    base = float(np_.asarray(weak).sum())
    points = []
    for k in np_.round(np_.linspace(0, n, num_results + 1)).astype(int):
        points.append((float(k) / n, (base + float(gain[k])) / n))
    return points


def apgr(curve: Sequence[Point], r_strong: float, r_weak: float) -> float:
    """RouteLLM's average performance gap recovered of a :func:`pair_curve` (trapezoid rule over the
    fractions the curve spans, as its released code does)."""
    pts = sorted(curve)
    span = pts[-1][0] - pts[0][0]
    if span <= 0 or r_strong == r_weak:
        return float("nan")
    auc = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairwise(pts))
    return (auc - r_weak * span) / ((r_strong - r_weak) * span)


def cpt(curve: Sequence[Point], r_strong: float, r_weak: float, target: float) -> float | None:
    """Call-performance threshold: the smallest strong-call fraction at which PGR reaches ``target``
    (0.5 for CPT(50 %)), interpolating linearly between curve points; None if it never does."""
    if r_strong == r_weak:
        return None
    pts = sorted(curve)
    pgr = [(x, (q - r_weak) / (r_strong - r_weak)) for x, q in pts]
    if pgr[0][1] >= target:
        return pgr[0][0]
    for (x0, p0), (x1, p1) in pairwise(pgr):
        if p1 >= target:
            return x0 + (x1 - x0) * (target - p0) / (p1 - p0)
    return None
