"""The computing stages as the gateway builds them: the learned predictor behind its knobs (the shipped
model), the strong-share knob calibrated on live traffic, the bandit's saved-state key, and semantic routes
whose close calls go to a second encoder."""

from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from switchboard.config.routers import BanditConfig, LearnedConfig, SemanticConfig, SemanticRouteConfig
from switchboard.errors import InvalidRequest
from switchboard.routing.router import SemanticVerdict
from switchboard.routing.stages import SHARE_MIN_SAMPLES, Embed, EmbeddingSemantic, FeedbackBandit, LearnedQuality
from switchboard.schemas.canonical import Message, TextPart

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


def _embedder(angles: dict[str, float], calls: list[list[str]]) -> Embed:
    async def embed(texts: list[str]) -> NDArray[np.float32]:
        calls.append(list(texts))
        return np.array([[math.cos(math.radians(angles[t])), math.sin(math.radians(angles[t]))] for t in texts],
                        dtype=np.float32)

    return embed


def test_close_calls_of_the_fast_encoder_are_decided_by_the_confirming_one() -> None:
    config = SemanticConfig(encoder="minilm-static", confirm_margin=0.05, routes=(
        SemanticRouteConfig(name="billing", model="cheap", examples=("b1", "b2"), threshold=0.5),
        SemanticRouteConfig(name="tech", model="strong", examples=("t1", "t2"), threshold=0.5)))
    examples = {"b1": 0.0, "b2": 5.0, "t1": 90.0, "t2": 95.0}
    fast_calls: list[list[str]] = []
    fine_calls: list[list[str]] = []
    stage = EmbeddingSemantic(config, _embedder({**examples, "clear": 2.0, "torn": 47.5}, fast_calls),
                              _embedder({**examples, "clear": 2.0, "torn": 92.0}, fine_calls))

    def ask(text: str) -> SemanticVerdict:
        return asyncio.run(stage.match([Message("user", [TextPart(text)])]))

    clear = ask("clear")
    assert clear.route == "billing" and "decided by minilm" not in clear.reason
    assert fine_calls == [["b1", "b2", "t1", "t2"]]  # its index only: the clear call never reached it
    torn = ask("torn")  # equally far from both routes for the fast encoder
    assert torn.route == "tech" and torn.targets == ("strong",)
    assert "decided by minilm: minilm-static said billing, within 0.05 of another outcome" in torn.reason
    assert fine_calls[-1] == ["torn"] and fast_calls[-1] == ["torn"]


def test_confirm_margin_needs_the_static_encoder() -> None:
    route = SemanticRouteConfig(name="a", model="m", examples=("x",))
    with pytest.raises(ValidationError, match="confirm_margin applies to encoder: minilm-static"):
        SemanticConfig(encoder="minilm", confirm_margin=0.05, routes=(route,))
    assert SemanticConfig(encoder="minilm-static", routes=(route,)).confirm_margin is None
