"""Each balancing strategy orders a model's deployments as it says, and every one of them honours the
capability, health and per-minute-limit filters."""

from __future__ import annotations

import pytest

from switchboard.config.model import Capabilities, DeploymentConfig, Price
from switchboard.execution.live import MinuteWindow, StatsSnapshot
from switchboard.routing.eligibility import AT_LIMIT, UNAVAILABLE, BalanceView
from switchboard.routing.features import RequestFeatures
from switchboard.routing.strategies import BALANCERS

A = DeploymentConfig(provider="p", model="a", price=Price(input=1, output=2))
B = DeploymentConfig(provider="p", model="b", price=Price(input=3, output=1), weight=2)
C = DeploymentConfig(provider="p", model="c", price=Price(input=0.5, output=0.5),
                     capabilities=Capabilities(tools=False))
DEPS = [A, B, C]
F = RequestFeatures("m", prompt_tokens=1000)


def snap(ttft: float | None = None, tps: float | None = None, in_flight: int = 0, requests: int = 0,
         tokens: int = 0) -> StatsSnapshot:
    return StatsSnapshot(None, None, ttft, tps, in_flight, 0, 0, requests, tokens)


def order(strategy: str, view: BalanceView, features: RequestFeatures = F) -> list[str]:
    return [c.deployment.model for c in BALANCERS[strategy](features, DEPS, view).candidates]


def test_round_robin_turns_and_skips_without_shifting() -> None:
    assert [order("round_robin", BalanceView(turn=t))[0] for t in range(6)] == ["a", "b", "c", "a", "b", "c"]
    tools = RequestFeatures("m", needs_tools=True)
    assert [order("round_robin", BalanceView(turn=t), tools) for t in range(3)] == [["a", "b"], ["b", "a"],
                                                                                     ["a", "b"]]


def test_least_inflight_weighs_load_by_weight() -> None:
    stats = {"p/a": snap(in_flight=3), "p/b": snap(in_flight=4), "p/c": snap(in_flight=1)}
    # b: 4/2 = 2 per unit of weight, a: 3, c: 1
    assert order("least_inflight", BalanceView(draws=[0.5] * 3, stats=stats)) == ["c", "b", "a"]


def test_least_inflight_breaks_ties_with_the_draws() -> None:
    assert order("least_inflight", BalanceView(draws=[0.1, 0.9, 0.5]))[0] == "b"
    assert order("least_inflight", BalanceView(draws=[0.9, 0.1, 0.5]))[0] == "a"


def test_latency_prefers_expected_completion_and_measures_newcomers_first() -> None:
    stats = {"p/a": snap(ttft=0.2, tps=100), "p/b": snap(ttft=0.5, tps=1000), "p/c": snap(ttft=0.1, tps=10)}
    # 256 tokens: a 0.2+2.56, b 0.5+0.256, c 0.1+25.6
    assert order("latency", BalanceView(draws=[0.5] * 3, stats=stats)) == ["b", "a", "c"]
    fresh = {"p/a": snap(ttft=0.2, tps=100)}
    assert order("latency", BalanceView(draws=[0.5, 0.9, 0.1], stats=fresh))[:2] == ["b", "c"]
    plan = BALANCERS["latency"](F, DEPS, BalanceView(draws=[0.5] * 3, stats=stats))
    assert plan.candidates[0].reason == "expected 756 ms"


def test_cost_orders_by_this_requests_price() -> None:
    # 1000 in, 256 out: a 1000+512, b 3000+256, c 500+128
    assert order("cost", BalanceView(draws=[0.5] * 3)) == ["c", "a", "b"]
    long_answer = BalanceView(draws=[0.5] * 3, expected_output_tokens=10_000)
    # a 1000+20000, b 3000+10000, c 500+5000
    assert order("cost", long_answer) == ["c", "b", "a"]


@pytest.mark.parametrize("strategy", sorted(BALANCERS))
def test_every_strategy_applies_the_filters(strategy: str) -> None:
    features = RequestFeatures("m", needs_tools=True, prompt_tokens=500)
    limited = [A.model_copy(update={"rpm": 10}), B.model_copy(update={"tpm": 1000}), C]
    stats = {"p/a": snap(requests=10), "p/b": snap(tokens=600)}
    plan = BALANCERS[strategy](features, limited, BalanceView(draws=[0.5] * 3, stats=stats))
    assert plan.candidates == []
    reasons = dict(plan.excluded)
    assert reasons["p/a"].startswith(AT_LIMIT) and "10/10 requests" in reasons["p/a"]
    assert reasons["p/b"].startswith(AT_LIMIT) and "600+500/1000 tokens" in reasons["p/b"]
    assert reasons["p/c"] == "lacks tools"
    down = BALANCERS[strategy](F, DEPS, BalanceView(draws=[0.5] * 3, unavailable={"p/a": 1.0}))
    assert "p/a" not in [c.deployment.id for c in down.candidates] and ("p/a", UNAVAILABLE) in down.excluded


def test_minute_window_forgets_after_sixty_seconds() -> None:
    w = MinuteWindow()
    w.add(100.0, requests=1, tokens=10)
    w.add(130.5, requests=2, tokens=5)
    assert w.totals(130.9) == (3, 15)
    assert w.totals(159.9) == (3, 15)
    assert w.totals(160.0) == (2, 5)  # the second-100 bucket has left the window
    w.add(220.0, requests=1)  # reuses second 100's slot, which must start from zero
    assert w.totals(220.0) == (1, 0)
