"""The computing stages as the gateway builds them: the learned predictor behind its knobs (the shipped
model), the strong-share knob calibrated on live traffic, and the bandit's saved-state key."""

from __future__ import annotations

import random

import pytest

from switchboard.config.routers import BanditConfig, LearnedConfig
from switchboard.errors import InvalidRequest
from switchboard.routing.stages import SHARE_MIN_SAMPLES, FeedbackBandit, LearnedQuality

NAMES = {"big": "gpt-4-1106-preview", "mid": "mistralai/mixtral-8x7b-chat", "small": "mistralai/mistral-7b-chat"}
COSTS = {"big": 0.005, "mid": 0.0003, "small": 0.0001}


def test_the_shipped_model_predicts_for_mapped_names() -> None:
    stage = LearnedQuality(LearnedConfig(names=NAMES, quality_target=0.5))
    preds = stage.predict("Write a python function to check whether a number is prime.", ["big", "mid", "small"])
    assert set(preds) == {"big", "mid", "small"} and all(0 <= p <= 1 for p in preds.values())
    with pytest.raises(InvalidRequest) as caught:
        stage.predict("hi", ["unmapped"])
    assert "learned.names" in caught.value.message


@pytest.mark.parametrize(("knob", "expected"), [
    ({"quality_target": 0.7}, "mid"),      # the cheapest predicted to reach 0.7
    ({"quality_target": 0.99}, "big"),     # none does: the best predicted
    ({"max_cost": 0.001}, "mid"),          # the best predicted within a tenth of a cent
])
def test_knobs(knob: dict[str, float], expected: str) -> None:
    stage = LearnedQuality(LearnedConfig(**knob))  # type: ignore[arg-type]
    pick = stage.choose({"big": 0.9, "mid": 0.75, "small": 0.4}, COSTS)
    assert pick.model == expected and pick.reason


def test_strong_share_is_calibrated_on_recent_traffic_and_never_exceeded() -> None:
    stage = LearnedQuality(LearnedConfig(strong_share=0.2))
    rng = random.Random(3)
    picks = []
    for _ in range(2000):
        big = rng.random()
        picks.append(stage.choose({"big": big, "mid": 0.2 + rng.random() * 0.6, "small": 0.1}, COSTS).model)
    assert "big" not in picks[:SHARE_MIN_SAMPLES - 1]  # too little seen yet to spend the share
    late = picks[1000:]
    assert 0.15 <= late.count("big") / len(late) <= 0.21
    assert set(picks) <= {"big", "mid"}  # below the cut, the best of the others


def test_bandit_state_key_names_the_clustering() -> None:
    a = FeedbackBandit(BanditConfig(cluster_bits=4)).state_key("auto")
    b = FeedbackBandit(BanditConfig(cluster_bits=2)).state_key("auto")
    assert a.startswith("bandit:auto:") and a != b
