"""The multi-objective score trades quality against normalised cost and latency."""

from __future__ import annotations

import pytest

from switchboard.config.routers import ObjectiveConfig
from switchboard.routing.strategies.objective import ModelFacts, rank

BIG = ModelFacts("big", 0.9, 0.010, 3.0)
MID = ModelFacts("mid", 0.8, 0.002, 1.0)
SMALL = ModelFacts("small", 0.6, 0.0005, None)


def names(weights: ObjectiveConfig, models: list[ModelFacts] | None = None) -> list[str]:
    return [r.name for r in rank(models or [SMALL, MID, BIG], weights)]


def test_quality_alone_picks_the_strongest() -> None:
    assert names(ObjectiveConfig()) == ["big", "mid", "small"]


def test_cost_weight_moves_to_cheaper_models() -> None:
    # big 0.9 - 1.0w, mid 0.8 - 0.2w, small 0.6 - 0.05w
    assert names(ObjectiveConfig(cost=0.1))[0] == "big"    # 0.80 vs 0.78 vs 0.595
    assert names(ObjectiveConfig(cost=0.5))[0] == "mid"    # 0.40 vs 0.70 vs 0.575
    assert names(ObjectiveConfig(quality=0, cost=1)) == ["small", "mid", "big"]


def test_latency_weight_and_unknown_latency_counts_as_the_mean() -> None:
    ranked = {r.name: r for r in rank([SMALL, MID, BIG], ObjectiveConfig(quality=0, latency=1))}
    assert ranked["small"].parts["latency"] == pytest.approx(2.0 / 3.0)  # mean 2.0 of max 3.0
    assert [r.name for r in rank([SMALL, MID, BIG], ObjectiveConfig(quality=0, latency=1))] == ["mid", "small", "big"]


def test_unknown_quality_is_neutral_and_ties_keep_the_configured_order() -> None:
    a, b = ModelFacts("a", None, 1.0, None), ModelFacts("b", None, 1.0, None)
    assert names(ObjectiveConfig(), [a, b]) == ["a", "b"]
    assert names(ObjectiveConfig(), [b, a]) == ["b", "a"]
    assert rank([a], ObjectiveConfig())[0].parts["quality"] == 0.5
