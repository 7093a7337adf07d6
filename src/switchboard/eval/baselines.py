"""The routers every learned router is compared with, each evaluated on an :class:`OutcomeSet`.

Each function returns a :class:`RouterRun`: the (mean $, mean quality) points of its configurations, and for
the strong/weak pair a per-prompt score (higher → strong) when the router has one.

- always-cheapest / always-strongest: one model for every prompt;
- random: a uniformly random model per prompt (seeded); random pair scores give APGR ≈ 0.5;
- Zero router: the single models (its hull is the baseline);
- per-task best: told the task, picks argmax λ·accuracy − cost per task on the train split;
- oracle: the cheapest model that answers well (score ≥ 0.5), else the cheapest;
- predictive (the learned router): argmax λ·P̂ − cost over a λ sweep.

Usage::

    runs = [zero_router(test), oracle(test), predictive("learned", test, model.predict_many(test.prompts),
            model.costs, strong=s, weak=w)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from switchboard.eval.dataset import OutcomeSet, require_numpy
from switchboard.eval.metrics import Point

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "LAMBDAS",
    "RouterRun",
    "always",
    "oracle",
    "per_task_best",
    "predictive",
    "random_router",
    "zero_router",
]


def _lambdas() -> tuple[float, ...]:
    return tuple(10 ** (-7 + i * 0.025) for i in range(361))  # 1e-7 … 1e2 dollars per unit of quality


#: The willingness-to-pay values swept to trace a predictive router's curve.
LAMBDAS = _lambdas()


@dataclass(frozen=True, eq=False)
class RouterRun:
    """A router's evaluated configurations: ``points`` (mean $, mean quality), and ``pair_scores``, one per
    prompt (higher → the strong model), or None when it has no notion of a strong/weak split."""

    name: str
    points: list[Point]
    pair_scores: npt.NDArray[np.float64] | None = None


def _point(data: OutcomeSet, choice: npt.NDArray[np.intp]) -> Point:
    np_ = require_numpy()
    rows = np_.arange(len(data))
    return float(data.costs[rows, choice].mean()), float(data.scores[rows, choice].mean())


def always(name: str, data: OutcomeSet, model: str) -> RouterRun:
    """Every prompt to ``model``."""
    np_ = require_numpy()
    j = data.models.index(model)
    choice = np_.full(len(data), j)
    return RouterRun(name, [_point(data, choice)])


def zero_router(data: OutcomeSet) -> RouterRun:
    """The single models as the configurations of one router (RouterBench's Zero router)."""
    np_ = require_numpy()
    return RouterRun("zero router", [_point(data, np_.full(len(data), j)) for j in range(len(data.models))])


def random_router(data: OutcomeSet, *, seed: int = 0) -> RouterRun:
    """A uniformly random model per prompt; pair scores are uniform noise."""
    np_ = require_numpy()
    rng = np_.random.default_rng(seed)
    choice = rng.integers(0, len(data.models), size=len(data))
    return RouterRun("random", [_point(data, choice)], rng.random(len(data)))


def oracle(data: OutcomeSet, *, strong: str | None = None, weak: str | None = None) -> RouterRun:
    """The cheapest model that answers well (score ≥ 0.5) on each prompt, else the cheapest; its pair score is
    score(strong) − score(weak)."""
    np_ = require_numpy()
    good = data.scores >= 0.5
    masked = np_.where(good, data.costs, np_.inf)
    choice = np_.where(good.any(axis=1), masked.argmin(axis=1), data.costs.argmin(axis=1))
    pair = None
    if strong is not None and weak is not None:
        pair = data.scores[:, data.models.index(strong)] - data.scores[:, data.models.index(weak)]
    return RouterRun("oracle", [_point(data, choice)], pair)


def predictive(
    name: str,
    data: OutcomeSet,
    predictions: npt.NDArray[np.float64],
    costs: Sequence[float],
    *,
    strong: str | None = None,
    weak: str | None = None,
    lambdas: Sequence[float] = LAMBDAS,
) -> RouterRun:
    """A router that picks argmax_j λ·``predictions``[i, j] − ``costs``[j], swept over ``lambdas``; its pair
    score is P̂(strong) − P̂(weak)."""
    np_ = require_numpy()
    cost = np_.asarray(costs, dtype=float)
    points = [_point(data, (lam * predictions - cost).argmax(axis=1)) for lam in lambdas]
    pair = None
    if strong is not None and weak is not None:
        pair = predictions[:, data.models.index(strong)] - predictions[:, data.models.index(weak)]
    return RouterRun(name, points, pair)


def per_task_best(train: OutcomeSet, test: OutcomeSet, *, strong: str | None = None,
                  weak: str | None = None) -> RouterRun:
    """Told each test prompt's task, use the task's mean score and cost of each model on ``train`` as the
    prediction (tasks unseen in train get the overall means), then sweep λ like :func:`predictive`."""
    np_ = require_numpy()
    train = train.select_models(test.models)
    overall_s, overall_c = np_.nanmean(train.scores, axis=0), np_.nanmean(train.costs, axis=0)
    tasks = np_.asarray(train.tasks)
    pred = np_.empty((len(test), len(test.models)))
    cost = np_.empty_like(pred)
    for i, task in enumerate(test.tasks):
        rows = tasks == task
        pred[i] = np_.nanmean(train.scores[rows], axis=0) if rows.any() else overall_s
        cost[i] = np_.nanmean(train.costs[rows], axis=0) if rows.any() else overall_c
    points = [_point(test, (lam * pred - cost).argmax(axis=1)) for lam in LAMBDAS]
    pair = None
    if strong is not None and weak is not None:
        pair = pred[:, test.models.index(strong)] - pred[:, test.models.index(weak)]
    return RouterRun("per-task best", points, pair)
