from __future__ import annotations

import random
from collections import Counter

import pytest

from switchboard.config.load import parse_config
from switchboard.config.model import Capabilities, DeploymentConfig
from switchboard.errors import InvalidRequest
from switchboard.gateway import Gateway
from switchboard.routing.eligibility import UNAVAILABLE
from switchboard.routing.features import features_of
from switchboard.routing.plan import RequestFeatures, RoutePlan
from switchboard.routing.strategies.weighted import select
from switchboard.schemas.canonical import ChatRequest, ImagePart, Message, TextPart

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


async def test_a_sole_deployment_is_planned_as_weighting_plans_it() -> None:
    """A model with one deployment takes a short way through the gateway's planning. Its plan is the weighted
    strategy's plan in every case: the deployment serves the request, lacks a capability it needs, or is held
    back by its breaker."""
    provider = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
    cfg = parse_config({"providers": {"p": provider}, "records": {"enabled": False}, "models": {
        "text": {"deployments": [{"provider": "p", "model": "a", "weight": 2}]},
        "eyes": {"deployments": [{"provider": "p", "model": "b", "capabilities": {"vision": True}}]},
    }}, env={})
    said = [Message("user", [TextPart("hi")])]
    shown = [Message("user", [TextPart("what is this?"), ImagePart("https://example.com/cat.png")])]

    def weighted(req: ChatRequest, unavailable: dict[str, float]) -> RoutePlan:
        return select(features_of(req, req.model, for_rules=False), cfg.models[req.model].deployments, [1.0],
                      unavailable)

    async with Gateway(cfg) as gw:
        for req in (ChatRequest("text", said), ChatRequest("eyes", said), ChatRequest("eyes", shown)):
            plan = await gw.plan(req)
            assert plan == weighted(req, {}) and len(plan.candidates) == 1
        with pytest.raises(InvalidRequest, match="lacks vision"):
            await gw.plan(ChatRequest("text", shown))
        gw.breakers.get("p/a").cool_down(30.0)
        plan = await gw.plan(ChatRequest("text", said))
        assert plan == weighted(ChatRequest("text", said), gw.breakers.unavailable())
        assert plan.candidates == [] and plan.excluded == [("p/a", UNAVAILABLE)]
