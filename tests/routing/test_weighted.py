from __future__ import annotations

import random
from collections import Counter

from switchboard.config.model import Capabilities, DeploymentConfig
from switchboard.routing.plan import RequestFeatures
from switchboard.routing.strategies.weighted import select

A = DeploymentConfig(provider="p", model="a", weight=3)
B = DeploymentConfig(provider="p", model="b", weight=1, capabilities=Capabilities(tools=False))


def test_weights_shape_the_first_choice() -> None:
    rng = random.Random(7)
    firsts = Counter(select(RequestFeatures("m"), [A, B], [rng.random(), rng.random()]).candidates[0].deployment.model
                     for _ in range(4000))
    share = firsts["a"] / 4000
    assert 0.70 < share < 0.80  # weight 3:1 → 75 %


def test_plan_holds_every_capable_deployment_as_fallback() -> None:
    plan = select(RequestFeatures("m"), [A, B], [0.1, 0.9])
    assert [c.deployment.model for c in plan.candidates] == ["b", "a"]


def test_capability_filter_explains_exclusions() -> None:
    plan = select(RequestFeatures("m", needs_tools=True), [A, B], [0.5, 0.5])
    assert [c.deployment.model for c in plan.candidates] == ["a"]
    assert plan.excluded == [("p/b", "lacks tools")]
