from __future__ import annotations

import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.execution.live import RESORT_EVERY, DeploymentStats, LiveStats, StatsSnapshot

times = st.floats(min_value=0, max_value=600, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(times, min_size=2, max_size=256), st.integers(min_value=1, max_value=99))
def test_quantiles_match_a_sorted_reference(values: list[float], percent: int) -> None:
    stats = DeploymentStats(min_samples=2)
    for v in values:
        stats.observe_ttft(v)
    reference = statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
    assert stats.ttft_quantile(percent / 100) == pytest.approx(reference, abs=1e-9)
    assert stats.ttft_quantile(0.5) == pytest.approx(statistics.median(values), abs=1e-9)
    assert stats.ttft_quantile(0.0) == min(values)
    assert stats.ttft_quantile(1.0) == max(values)


def test_no_quantile_below_min_samples() -> None:
    stats = DeploymentStats(min_samples=20)
    for _ in range(19):
        stats.observe_ttft(1.0)
    assert stats.ttft_quantile() is None
    stats.observe_ttft(1.0)
    assert stats.ttft_quantile() == 1.0


def test_ring_buffer_keeps_only_the_latest_samples() -> None:
    stats = DeploymentStats(samples=8, min_samples=8)
    for v in range(8):
        stats.observe_ttft(float(v))
    assert (stats.ttft_quantile(0.0), stats.ttft_quantile(1.0)) == (0.0, 7.0)
    for v in range(100, 100 + RESORT_EVERY):
        stats.observe_ttft(float(v))
    assert (stats.ttft_quantile(0.0), stats.ttft_quantile(1.0)) == (108.0, 115.0)


def test_quantile_is_cached_and_catches_up_within_sixteen_observations() -> None:
    stats = DeploymentStats(min_samples=20)
    for _ in range(20):
        stats.observe_ttft(1.0)
    assert stats.ttft_quantile(0.95) == 1.0
    for _ in range(RESORT_EVERY - 1):
        stats.observe_ttft(100.0)
    assert stats.ttft_quantile(0.95) == 1.0  # cached: sorting on every read is too costly
    stats.observe_ttft(100.0)
    assert stats.ttft_quantile(0.95) == 100.0  # 20 ones and 16 hundreds


def test_ttft_ewma_decays_towards_new_observations() -> None:
    stats = DeploymentStats(alpha=0.5)
    assert stats.ttft_ewma is None
    stats.observe_ttft(1.0)
    assert stats.ttft_ewma == 1.0
    stats.observe_ttft(3.0)
    assert stats.ttft_ewma == 2.0
    stats.observe_ttft(6.0)
    assert stats.ttft_ewma == 4.0


def test_invalid_ttft_is_ignored() -> None:
    stats = DeploymentStats(min_samples=1)
    for bad in (float("nan"), float("inf"), -1.0):
        stats.observe_ttft(bad)
    assert stats.ttft_ewma is None
    assert stats.ttft_quantile() is None


def test_tps_ewma_ignores_empty_spans() -> None:
    stats = DeploymentStats(alpha=0.1)
    stats.observe_output(0, 1.0)
    stats.observe_output(10, 0.0)
    stats.observe_output(10, -1.0)
    assert stats.tps_ewma is None
    stats.observe_output(100, 2.0)
    assert stats.tps_ewma == 50.0
    stats.observe_output(150, 1.0)
    assert stats.tps_ewma == pytest.approx(60.0)


def test_in_flight_and_outcomes_are_counted() -> None:
    stats = DeploymentStats()
    stats.begin()
    stats.begin()
    stats.end()
    assert stats.in_flight == 1
    stats.end()
    stats.end()  # unbalanced: stays at zero rather than going negative
    assert stats.in_flight == 0
    stats.observe_outcome(True)
    stats.observe_outcome(False)
    stats.observe_outcome(True)
    assert (stats.successes, stats.failures) == (2, 1)


def test_live_stats_creates_per_deployment_and_snapshots() -> None:
    live = LiveStats(min_samples=2, alpha=0.5)
    assert live.snapshot() == {}
    a = live.for_deployment("a")
    assert live.for_deployment("a") is a
    a.observe_ttft(1.0)
    a.observe_ttft(3.0)
    a.observe_output(20, 2.0)
    a.begin()
    a.observe_outcome(False)
    live.for_deployment("b")
    snap = live.snapshot()
    assert snap["a"] == StatsSnapshot(ttft_p50=2.0, ttft_p95=pytest.approx(2.9), ttft_ewma=2.0, tps_ewma=10.0,
                                      in_flight=1, successes=0, failures=1, requests_last_minute=1)
    assert snap["b"] == StatsSnapshot(None, None, None, None, 0, 0, 0)
    a.end()
    assert snap["a"].in_flight == 1  # a copy, not a view


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"samples": 0}, "samples"), ({"min_samples": 0}, "min_samples"),
    ({"samples": 10, "min_samples": 11}, "min_samples"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
])
def test_settings_reject_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveStats(**kwargs)


def test_quantile_rejects_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="q must be"):
        DeploymentStats().ttft_quantile(1.5)
