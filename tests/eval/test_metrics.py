"""The routing metrics on small cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from switchboard.eval.metrics import aiq, apgr, cost_to_reach, cpt, hull_value, pair_curve, upper_hull


def test_hull_drops_dominated_and_concave_violating_points() -> None:
    # (2, 0.5) is dominated by (1, 0.6); (3, 0.65) lies under the chord (1, 0.6)–(4, 0.9).
    points = [(1.0, 0.6), (2.0, 0.5), (3.0, 0.65), (4.0, 0.9), (5.0, 0.85)]
    assert upper_hull(points) == [(1.0, 0.6), (4.0, 0.9)]


def test_hull_value_interpolates_and_extends_flat() -> None:
    hull = [(1.0, 0.6), (4.0, 0.9)]
    assert hull_value(hull, 2.5) == pytest.approx(0.75)
    assert hull_value(hull, 10.0) == 0.9
    assert math.isnan(hull_value(hull, 0.5))


def test_aiq_is_the_mean_height_of_the_hull() -> None:
    # From c=1 to 4 the hull rises 0.6 → 0.9 (mean 0.75 over 3), then is flat at 0.9 to c=5:
    # (0.75·3 + 0.9·1) / 4 = 0.7875.
    assert aiq([(1.0, 0.6), (4.0, 0.9)], 1.0, 5.0) == pytest.approx(0.7875)


def test_aiq_needs_the_hull_to_reach_c_min() -> None:
    with pytest.raises(ValueError, match="cheapest"):
        aiq([(2.0, 0.6)], 1.0, 5.0)


def test_cost_to_reach_interpolates_on_the_hull() -> None:
    hull = [(1.0, 0.6), (4.0, 0.9)]
    assert cost_to_reach(hull, 0.8) == pytest.approx(1.0 + 3.0 * (0.2 / 0.3))
    assert cost_to_reach(hull, 0.5) == 1.0
    assert cost_to_reach(hull, 0.95) is None


def test_apgr_of_a_perfect_router() -> None:
    # 10 prompts: strong right on all, weak right on the last 5. A perfect score ranks the 5 gains first.
    strong = np.ones(10)
    weak = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    curve = pair_curve(strong - weak, strong, weak)
    assert curve[0] == (0.0, 0.5) and curve[5] == (0.5, 1.0) and curve[-1] == (1.0, 1.0)
    # Quality rises linearly 0.5 → 1 over [0, 0.5], then stays at 1: AUC = 0.375 + 0.5 = 0.875;
    # APGR = (0.875 − 0.5) / (1 − 0.5) = 0.75; PGR reaches 50 % at 25 % strong calls, 80 % at 40 %.
    assert apgr(curve, 1.0, 0.5) == pytest.approx(0.75)
    assert cpt(curve, 1.0, 0.5, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 1.0, 0.5, 0.8) == pytest.approx(0.40)


def test_apgr_of_a_router_that_ranks_in_reverse_is_the_mirror() -> None:
    strong = np.ones(10)
    weak = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    curve = pair_curve(weak - strong, strong, weak)
    # Quality flat at 0.5 to 50 % strong calls, then linear to 1: AUC = 0.25 + 0.375 = 0.625 → APGR 0.25.
    assert apgr(curve, 1.0, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 1.0, 0.5, 0.5) == pytest.approx(0.75)


def test_apgr_of_a_random_router_is_about_one_half() -> None:
    rng = np.random.default_rng(1)
    strong = (rng.random(20000) < 0.8).astype(float)
    weak = (rng.random(20000) < 0.6).astype(float)
    curve = pair_curve(rng.random(20000), strong, weak)
    assert apgr(curve, strong.mean(), weak.mean()) == pytest.approx(0.5, abs=0.03)


def test_cpt_is_none_when_never_reached() -> None:
    assert cpt([(0.0, 0.5), (1.0, 0.6)], 1.0, 0.5, 0.5) is None
