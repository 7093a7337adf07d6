from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping

import pytest

from switchboard.routing.bandit import (
    STATE_VERSION,
    Bandit,
    BanditConfig,
    BanditStateError,
    Feedback,
    Signal,
    reward_of,
)

MODELS = ["a", "b"]
# P(good answer): b is better on c0, a on c1.
WORLD = {"c0": {"a": 0.4, "b": 0.8}, "c1": {"a": 0.8, "b": 0.4}}
MINUTE = 60.0


def run(
    bandit: Bandit,
    rounds: int,
    rng: random.Random,
    world: Mapping[str, Mapping[str, float]] = WORLD,
    *,
    start: float = 0.0,
    prior: Mapping[str, Mapping[str, float]] | None = None,
) -> list[tuple[str, str, bool]]:
    """Simulate ``rounds`` requests, one a minute, alternating between the contexts of ``world``;
    return (context, model, explored) per round."""
    log = []
    contexts = sorted(world)
    for i in range(rounds):
        ctx = contexts[i % len(contexts)]
        now = start + i * MINUTE
        choice = bandit.choose(ctx, MODELS, prior=None if prior is None else prior[ctx], now=now, draws=rng)
        reward = 1.0 if rng.random() < world[ctx][choice.model] else 0.0
        bandit.update(ctx, choice.model, reward, now)
        log.append((ctx, choice.model, choice.explored))
    return log


def share(log: list[tuple[str, str, bool]], ctx: str, model: str) -> float:
    picks = [m for c, m, _ in log if c == ctx]
    return picks.count(model) / len(picks)


def test_learns_the_better_model_per_cluster() -> None:
    bandit = Bandit(BanditConfig(half_life=None))
    log = run(bandit, 2000, random.Random(1))
    late = log[1000:]
    assert share(late, "c0", "b") > 0.9
    assert share(late, "c1", "a") > 0.9


def test_a_cold_bandit_follows_its_prior() -> None:
    bandit = Bandit()
    choice = bandit.choose("c0", MODELS, prior={"a": 0.3, "b": 0.9}, now=0.0, draws=[0.5, 0.5])
    assert choice.greedy == "b" and choice.model == "b"
    assert choice.means["b"] > choice.means["a"]
    # Without a prior every candidate is Beta(1, 1) and ties go to the first.
    assert bandit.choose("c0", MODELS, now=0.0, draws=[0.5, 0.5]).model == "a"


def test_recovers_from_a_misleading_prior() -> None:
    bandit = Bandit(BanditConfig(half_life=None, prior_strength=10))
    wrong = {"c0": {"a": 0.9, "b": 0.2}, "c1": {"a": 0.2, "b": 0.9}}  # exactly backwards
    log = run(bandit, 2000, random.Random(2), prior=wrong)
    assert share(log[:40], "c0", "a") > 0.9  # starts where the prior points
    late = log[1000:]
    assert share(late, "c0", "b") > 0.85
    assert share(late, "c1", "a") > 0.85


def test_a_strong_prior_holds_longer_than_a_weak_one() -> None:
    wrong = {"c0": {"a": 0.9, "b": 0.2}, "c1": {"a": 0.2, "b": 0.9}}
    weak = run(Bandit(BanditConfig(half_life=None, prior_strength=2)), 1000, random.Random(3), prior=wrong)
    strong = run(Bandit(BanditConfig(half_life=None, prior_strength=200)), 1000, random.Random(3), prior=wrong)
    assert share(weak, "c0", "b") > share(strong, "c0", "b") + 0.2


@pytest.mark.parametrize(("budget", "burst"), [(0.05, 10.0), (0.01, 1.0), (0.2, 5.0)])
def test_explorations_never_exceed_the_budget(budget: float, burst: float) -> None:
    bandit = Bandit(BanditConfig(half_life=3600, exploration_budget=budget, exploration_burst=burst))
    rng = random.Random(4)
    log = run(bandit, 3000, rng)
    explored = 0
    for n, (_, _, was) in enumerate(log, start=1):
        explored += was
        assert explored <= burst + budget * n
    assert explored == bandit.explorations > 0
    assert bandit.decisions == 3000


def test_a_budget_of_one_in_twenty_allows_exactly_that() -> None:
    bandit = Bandit(BanditConfig(exploration_budget=0.05, exploration_burst=1.0))
    bandit._tokens = 0.0
    prior = {"a": 0.9, "b": 0.1}
    explored = [bandit.choose("c0", MODELS, prior=prior, now=0.0, draws=[0.001, 0.999]).explored for _ in range(100)]
    assert [i for i, e in enumerate(explored) if e] == [19, 39, 59, 79, 99]


def test_with_no_budget_it_never_explores() -> None:
    bandit = Bandit(BanditConfig(exploration_budget=0.0, exploration_burst=1.0))
    bandit._tokens = 0.0  # a bucket already spent
    log = run(bandit, 500, random.Random(5))
    assert not any(explored for _, _, explored in log)


def test_choice_explains_itself() -> None:
    bandit = Bandit(BanditConfig(exploration_burst=1.0, exploration_budget=0.0))
    prior = {"a": 0.9, "b": 0.1}
    # a uniform draw near 1 for b and near 0 for a: the sample prefers b, the mean prefers a
    first = bandit.choose("c0", MODELS, prior=prior, now=0.0, draws=[0.001, 0.999])
    assert first.explored and first.model == "b" and first.greedy == "a"
    assert first.reason.startswith("explore: b")
    assert first.ranking == ("b", "a")
    second = bandit.choose("c0", MODELS, prior=prior, now=0.0, draws=[0.001, 0.999])
    assert not second.explored and second.model == "a"
    assert "budget spent" in second.reason
    agree = bandit.choose("c0", MODELS, prior=prior, now=0.0, draws=[0.5, 0.5])
    assert agree.model == "a" and agree.reason.startswith("sample agrees")
    assert bandit.choose("c0", ["b"], now=0.0, draws=[0.3]).reason == "only candidate"


def test_cost_weight_trades_quality_for_price() -> None:
    prior = {"small": 0.7, "large": 0.8}
    costs = {"small": 0.1, "large": 1.0}
    quality_only = Bandit(BanditConfig(cost_weight=0.0))
    assert quality_only.choose("c", ["small", "large"], costs, prior, now=0, draws=[0.5, 0.5]).greedy == "large"
    thrifty = Bandit(BanditConfig(cost_weight=0.2))
    choice = thrifty.choose("c", ["small", "large"], costs, prior, now=0, draws=[0.5, 0.5])
    assert choice.greedy == "small"
    assert choice.means["large"] == pytest.approx(thrifty.posterior("c", "large", 0, 0.8)[0] / 11 - 0.2)
    with pytest.raises(ValueError, match="no cost for"):
        thrifty.choose("c", ["small", "large"], {"small": 0.1}, prior, now=0, draws=[0.5, 0.5])


def test_respects_the_candidate_list() -> None:
    bandit = Bandit()
    for t in range(50):
        bandit.update("c0", "gone", 1.0, float(t))
    rng = random.Random(6)
    picks = {bandit.choose("c0", ["a", "b"], now=100.0, draws=rng).model for _ in range(100)}
    assert picks <= {"a", "b"}
    with pytest.raises(ValueError, match="at least one"):
        bandit.choose("c0", [], now=0.0, draws=rng)
    with pytest.raises(ValueError, match="draws for"):
        bandit.choose("c0", ["a", "b"], now=0.0, draws=[0.5])


def test_evidence_halves_every_half_life() -> None:
    bandit = Bandit(BanditConfig(half_life=100.0))
    bandit.update("c0", "a", 1.0, now=0.0, weight=8)
    assert bandit.posterior("c0", "a", now=0.0) == (9.0, 1.0)
    assert bandit.posterior("c0", "a", now=100.0) == pytest.approx((5.0, 1.0))
    assert bandit.posterior("c0", "a", now=300.0) == pytest.approx((2.0, 1.0))
    assert bandit.posterior("c0", "a", now=-50.0) == (9.0, 1.0)  # a clock behind the cell: no growth
    bandit.update("c0", "a", 0.0, now=100.0)
    assert bandit.posterior("c0", "a", now=100.0) == pytest.approx((5.0, 2.0))


def rounds_to_follow(half_life: float | None) -> int:
    """Train on WORLD, then make b bad on c0; return how many c0 rounds until the greedy choice
    there is a again (capped at 3000)."""
    bandit = Bandit(BanditConfig(half_life=half_life))
    rng = random.Random(7)
    run(bandit, 2000, rng)
    flipped = {"c0": {"a": 0.4, "b": 0.05}}
    start = 2000 * MINUTE
    for i in range(3000):
        now = start + i * MINUTE
        choice = bandit.choose("c0", MODELS, now=now, draws=rng)
        if choice.greedy == "a":
            return i
        reward = 1.0 if rng.random() < flipped["c0"][choice.model] else 0.0
        bandit.update("c0", choice.model, reward, now)
    return 3000


def test_decay_follows_a_drifting_world() -> None:
    with_decay = rounds_to_follow(half_life=3600.0)  # an hour: ~60 rounds
    without = rounds_to_follow(half_life=None)
    assert with_decay < 150
    assert without > 5 * with_decay


def test_idle_evidence_fades_back_to_the_prior() -> None:
    bandit = Bandit(BanditConfig(half_life=3600.0))
    for t in range(100):
        bandit.update("c0", "a", 0.0, float(t))
    prior = {"a": 0.9, "b": 0.5}
    assert bandit.choose("c0", MODELS, prior=prior, now=100.0, draws=[0.5, 0.5]).greedy == "b"
    assert bandit.choose("c0", MODELS, prior=prior, now=100.0 + 30 * 3600, draws=[0.5, 0.5]).greedy == "a"


def test_contexts_are_capped_least_recently_updated_first() -> None:
    bandit = Bandit(BanditConfig(max_contexts=3, max_models_per_context=2))
    for i, ctx in enumerate(["x", "y", "z"]):
        bandit.update(ctx, "a", 1.0, float(i))
    bandit.update("x", "a", 1.0, 3.0)  # x is fresh again; y is now the stalest
    bandit.choose("y", MODELS, now=4.0, draws=[0.5, 0.5])  # reading does not refresh
    bandit.update("w", "a", 1.0, 5.0)
    assert bandit.contexts() == ["z", "x", "w"]
    for i, model in enumerate(["m1", "m2", "m3"]):
        bandit.update("w", model, 1.0, 6.0 + i)
    assert bandit.to_state()["contexts"][-1][0] == "w"
    assert [cell[0] for cell in bandit.to_state()["contexts"][-1][1]] == ["m2", "m3"]


def test_hostile_context_churn_stays_bounded() -> None:
    bandit = Bandit(BanditConfig(max_contexts=100))
    for i in range(10_000):
        bandit.update(f"ctx-{i}", f"model-{i % 7}", 1.0, float(i))
    assert len(bandit.contexts()) == 100
    assert bandit.contexts()[-1] == "ctx-9999"


def test_state_round_trips_through_json_with_identical_decisions() -> None:
    bandit = Bandit(BanditConfig(half_life=3600.0))
    run(bandit, 500, random.Random(8))
    state = json.loads(json.dumps(bandit.to_state(), allow_nan=False))
    assert state["version"] == STATE_VERSION
    restored = Bandit.from_state(state, bandit.config)
    assert restored.to_state() == bandit.to_state()
    start = 500 * MINUTE
    assert run(bandit, 300, random.Random(9), start=start) == run(restored, 300, random.Random(9), start=start)


def test_uniform_draws_replay_exactly() -> None:
    bandit = Bandit()
    run(bandit, 200, random.Random(10))
    twin = Bandit.from_state(bandit.to_state())
    draws = random.Random(11)
    for i in range(200):
        us = [draws.random(), draws.random()]
        ctx = "c0" if i % 2 else "c1"
        assert bandit.choose(ctx, MODELS, now=1e5, draws=us) == twin.choose(ctx, MODELS, now=1e5, draws=us)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"format": "something.else", "version": 1}, "not a bandit state"),
        ({"format": "switchboard.bandit", "version": 99}, "version 99 is not supported"),
        ({"format": "switchboard.bandit", "version": 1}, "malformed"),
        (
            {"format": "switchboard.bandit", "version": 1, "tokens": 1, "decisions": 0, "explorations": 0,
             "contexts": [["c0", [["a", -1.0, 0.0, 0.0]]]]},
            "malformed",
        ),
        (
            {"format": "switchboard.bandit", "version": 1, "tokens": 1, "decisions": 0, "explorations": 0,
             "contexts": [["c0", [["a", 1.0]]]]},
            "malformed",
        ),
    ],
)
def test_unusable_state_is_refused_clearly(state: dict[str, object], message: str) -> None:
    with pytest.raises(BanditStateError, match=message):
        Bandit.from_state(state)


def test_restoring_under_a_smaller_cap_evicts_the_stalest() -> None:
    bandit = Bandit()
    for i in range(10):
        bandit.update(f"c{i}", "a", 1.0, float(i))
    small = Bandit.from_state(bandit.to_state(), BanditConfig(max_contexts=4, exploration_burst=2.0))
    assert small.contexts() == ["c6", "c7", "c8", "c9"]
    assert small.to_state()["tokens"] == 2.0


def test_reward_mapping() -> None:
    assert reward_of(Feedback.scored(0.7)) == 0.7
    assert reward_of(Feedback.thumbs(up=True)) == 1.0
    assert reward_of(Feedback.thumbs(up=False)) == 0.0
    assert reward_of(Signal.VALIDATOR_FAILED) == 0.0
    assert reward_of(Signal.UNSATISFACTORY) == 0.0
    assert reward_of(Signal.FALLBACK_AWAY) == 0.0
    assert reward_of(Signal.ANSWERED) is None  # silence is not praise
    with pytest.raises(ValueError, match="needs a score"):
        reward_of(Signal.SCORE)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Feedback.scored(1.5)
    with pytest.raises(ValueError, match=r"only Signal\.SCORE"):
        Feedback(Signal.THUMBS_UP, score=1.0)


def test_observe_applies_rewards_and_ignores_silence() -> None:
    bandit = Bandit(BanditConfig(half_life=None))
    assert bandit.observe("c0", "a", Signal.ANSWERED, now=0.0) is None
    assert bandit.contexts() == []
    bandit.observe("c0", "a", Feedback.thumbs(up=True, weight=2.0), now=0.0)
    bandit.observe("c0", "a", Signal.FALLBACK_AWAY, now=1.0)
    bandit.observe("c0", "a", Feedback.scored(0.5), now=2.0)
    assert bandit.posterior("c0", "a", now=3.0) == (1.0 + 2.5, 1.0 + 1.5)


def test_bad_updates_are_refused() -> None:
    bandit = Bandit()
    with pytest.raises(ValueError, match="reward"):
        bandit.update("c0", "a", 1.5, 0.0)
    with pytest.raises(ValueError, match="weight"):
        bandit.update("c0", "a", 1.0, 0.0, weight=-1)
    with pytest.raises(ValueError, match="now"):
        bandit.update("c0", "a", 1.0, float("nan"))


def test_sampled_scores_follow_the_posterior() -> None:
    # The inverse-CDF path and a sampler agree in distribution: compare means over many draws.
    bandit = Bandit()
    for t in range(30):
        bandit.update("c0", "a", 1.0 if t % 3 else 0.0, 0.0)
    rng = random.Random(12)
    via_ppf = [bandit.choose("c0", ["a"], now=0.0, draws=[rng.random()]).scores["a"] for _ in range(2000)]
    via_rng = [bandit.choose("c0", ["a"], now=0.0, draws=rng).scores["a"] for _ in range(2000)]
    a, b = bandit.posterior("c0", "a", 0.0)
    assert sum(via_ppf) / 2000 == pytest.approx(a / (a + b), abs=0.01)
    assert sum(via_rng) / 2000 == pytest.approx(a / (a + b), abs=0.01)
    assert Counter(round(x, 1) for x in via_ppf).most_common(1)[0][0] == pytest.approx(0.7, abs=0.1)
