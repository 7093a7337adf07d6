from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.execution.hedging import HedgeBudget, hedge_delay
from switchboard.execution.live import DeploymentStats


def test_budget_starts_empty_and_pays_one_hedge_per_ten_requests() -> None:
    budget = HedgeBudget(0.1)
    assert not budget.try_spend()
    for _ in range(9):
        budget.earn()
    assert not budget.try_spend()
    budget.earn()  # ten times 0.1 falls a hair short of 1.0 in floats; still a whole token
    assert budget.try_spend()
    assert not budget.try_spend()


def test_budget_saves_up_to_the_burst() -> None:
    budget = HedgeBudget(0.5, burst=3.0)
    for _ in range(100):
        budget.earn()
    assert budget.tokens == 3.0
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_zero_ratio_never_hedges() -> None:
    budget = HedgeBudget(0.0)
    for _ in range(1000):
        budget.earn()
    assert not budget.try_spend()


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1), st.lists(st.booleans(), max_size=300))
def test_hedges_never_exceed_ratio_times_requests(ratio: float, events: list[bool]) -> None:
    budget = HedgeBudget(ratio, burst=5.0)
    requests = hedges = 0
    for is_request in events:
        if is_request:
            budget.earn()
            requests += 1
        elif budget.try_spend():
            hedges += 1
    assert hedges <= ratio * requests + 1e-6


@pytest.mark.parametrize(("ratio", "burst"), [(-0.1, 10.0), (float("nan"), 10.0), (0.1, 0.5)])
def test_budget_rejects_nonsense(ratio: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"ratio|burst"):
        HedgeBudget(ratio, burst)


def _stats_with(values: list[float]) -> DeploymentStats:
    stats = DeploymentStats(min_samples=20)
    for v in values:
        stats.observe_ttft(v)
    return stats


def test_no_setting_means_no_hedge() -> None:
    assert hedge_delay(None, _stats_with([1.0] * 50), fallback=2.0) is None


def test_fixed_delay_is_used_as_configured() -> None:
    assert hedge_delay(1.5, _stats_with([])) == 1.5
    assert hedge_delay(0.01, _stats_with([]), floor=0.05) == 0.01  # the floor is for observed values only


def test_p95_uses_the_observed_latency() -> None:
    stats = _stats_with([float(i) for i in range(1, 101)])
    assert hedge_delay("p95", stats, fallback=99.0) == pytest.approx(95.05)


def test_p95_never_goes_below_the_floor() -> None:
    assert hedge_delay("p95", _stats_with([0.001] * 30), floor=0.05) == 0.05


def test_p95_falls_back_while_samples_are_few() -> None:
    few = _stats_with([1.0] * 19)
    assert hedge_delay("p95", few, fallback=2.0) == 2.0
    assert hedge_delay("p95", few) is None
