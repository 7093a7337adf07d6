"""A router's stages in order — capabilities, health, rules, semantic routes, score, bandit — with the
computing stages played by small fakes, and explanations that match the decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.config.model import ModelConfig
from switchboard.config.routers import RouterConfig
from switchboard.errors import InvalidRequest
from switchboard.routing.features import RequestFeatures
from switchboard.routing.router import Router, SemanticVerdict, StageChoice
from switchboard.schemas.canonical import Message, TextPart

MESSAGES = [Message("user", [TextPart("hello there")])]


def model(price: float, *, vision: bool = True, tools: bool = True, window: int | None = None) -> ModelConfig:
    return ModelConfig.model_validate({"deployments": [{
        "provider": "p", "model": f"m{price}", "price": {"input": price, "output": price},
        "context_window": window, "capabilities": {"vision": vision, "tools": tools}}]})


MODELS = {"cheap": model(0.1, vision=False), "mid": model(1.0), "strong": model(10.0, tools=False, window=8000)}


def router(**cfg: Any) -> Router:
    stages = {k: cfg.pop(k) for k in ("semantic", "learned", "bandit") if k in cfg}
    cfg.setdefault("models", ["cheap", "mid", "strong"])
    return Router("auto", RouterConfig.model_validate(cfg), MODELS, **stages)


async def decide(r: Router, features: RequestFeatures | None = None, **kw: Any) -> Any:
    return await r.decide(features or RequestFeatures("auto", requested="auto"), MESSAGES, {}, **kw)


class FakeSemantic:
    def __init__(self, verdict: SemanticVerdict) -> None:
        self.verdict = verdict
        self.seen: list[Sequence[Message]] = []

    async def match(self, messages: Sequence[Message]) -> SemanticVerdict:
        self.seen.append(messages)
        return self.verdict


class FakeLearned:
    def __init__(self, predictions: dict[str, float], knob: bool = False) -> None:
        self.predictions = predictions
        self.knob = knob

    @property
    def has_knob(self) -> bool:
        return self.knob

    def predict(self, text: str, models: Sequence[str]) -> dict[str, float]:
        return {m: self.predictions[m] for m in models}

    def choose(self, predictions: Mapping[str, float], costs: Mapping[str, float]) -> StageChoice:
        good = [m for m in predictions if predictions[m] >= 0.7]
        pick = min(good, key=lambda m: costs[m]) if good else max(predictions, key=lambda m: predictions[m])
        return StageChoice(pick, dict(predictions), f"cheapest predicted ≥ 0.7: {pick}")


class FakeBandit:
    def __init__(self, pick: str) -> None:
        self.pick = pick
        self.calls: list[tuple[str, list[str], Mapping[str, float] | None]] = []

    def context(self, text: str, route: str | None) -> str:
        return f"route:{route}" if route else "c01"

    def choose(self, context: str, candidates: Sequence[str], costs: Mapping[str, float],
               prior: Mapping[str, float] | None) -> StageChoice:
        self.calls.append((context, list(candidates), prior))
        return StageChoice(self.pick, {m: 0.5 for m in candidates}, f"sampled {self.pick}", explored=True)


async def test_quality_alone_takes_the_strongest_capable_model() -> None:
    d = await decide(router(quality={"cheap": 0.5, "mid": 0.7, "strong": 0.9}))
    assert (d.model, d.ranking) == ("strong", ["strong", "mid", "cheap"])
    assert d.steps[-1].stage == "objective" and "strong scores best" in d.steps[-1].outcome


async def test_capabilities_and_context_window_filter_first() -> None:
    r = router(quality={"cheap": 0.5, "mid": 0.7, "strong": 0.9})
    d = await decide(r, RequestFeatures("auto", needs_vision=True, needs_tools=True))
    assert d.model == "mid" and d.ranking == ["mid"]
    assert d.steps[0].detail["set_aside"] == {"cheap": "lacks vision", "strong": "lacks tools"}
    d = await decide(r, RequestFeatures("auto", prompt_tokens=9000))
    assert "strong" not in d.ranking and "exceeds its context window" in d.steps[0].outcome
    with pytest.raises(InvalidRequest) as caught:
        await decide(router(models=["cheap"]), RequestFeatures("auto", needs_vision=True))
    assert "cheap: lacks vision" in caught.value.message


async def test_models_with_every_deployment_down_are_set_aside_unless_all_are() -> None:
    r = router(quality={"cheap": 0.5, "mid": 0.7, "strong": 0.9})
    d = await decide(r, unavailable={"p/m10.0": 1.0})
    assert d.model == "mid" and d.steps[0].stage == "health"
    d = await decide(r, unavailable={"p/m10.0": 1.0, "p/m1.0": 1.0, "p/m0.1": 1.0})
    assert d.model == "strong"


async def test_a_rule_decides_or_narrows() -> None:
    rules = [{"name": "gold", "when": {"metadata": {"tier": "gold"}}, "model": "strong"},
             {"name": "team", "when": {"team": "ads"}, "models": ["cheap", "mid"]}]
    r = router(rules=rules, quality={"cheap": 0.5, "mid": 0.7, "strong": 0.9})
    d = await decide(r, RequestFeatures("auto", metadata={"tier": "gold"}))
    assert d.model == "strong" and d.steps[0].outcome == "rule 1 (gold) matched on metadata → strong"
    assert d.ranking[0] == "strong" and set(d.ranking) == {"cheap", "mid", "strong"}
    d = await decide(r, RequestFeatures("auto", team="ads"))
    assert d.model == "mid" and d.ranking == ["mid", "cheap"]  # the objective chose among the two
    # A rule whose target cannot serve the request is ignored, not obeyed.
    d = await decide(r, RequestFeatures("auto", metadata={"tier": "gold"}, needs_tools=True))
    assert d.model == "mid" and "cannot serve this request; ignored" in d.steps[1].outcome


async def test_semantic_route_decides_and_default_applies() -> None:
    verdict = SemanticVerdict("code", ("strong",), {"code": 0.71, "chat": 0.2}, {"code": 0.5, "chat": 0.5},
                              "code scores 0.71 ≥ 0.5")
    fake = FakeSemantic(verdict)
    d = await decide(router(semantic=fake))
    assert d.model == "strong" and d.steps[0].stage == "semantic"
    assert d.steps[0].detail == {"scores": {"code": 0.71, "chat": 0.2}, "thresholds": {"code": 0.5, "chat": 0.5}}
    assert fake.seen == [MESSAGES]
    below = SemanticVerdict(None, (), {"code": 0.1}, {"code": 0.5}, "no route reaches its threshold")
    d = await decide(router(semantic=FakeSemantic(below), quality={"cheap": 0.9}))
    assert d.model == "cheap" and [s.stage for s in d.steps] == ["semantic", "objective"]


async def test_rules_run_before_semantic_routes_and_skip_them() -> None:
    fake = FakeSemantic(SemanticVerdict("x", ("cheap",), {}, {}, "x"))
    d = await decide(router(semantic=fake, rules=[{"when": {}, "model": "mid"}]))
    assert d.model == "mid" and fake.seen == []


async def test_learned_predictions_feed_the_knob_or_the_objective() -> None:
    preds = {"cheap": 0.6, "mid": 0.75, "strong": 0.95}
    d = await decide(router(learned=FakeLearned(preds, knob=True)))
    assert d.model == "mid" and d.steps[-1].stage == "learned"
    assert d.scores["strong"]["quality"] == 0.95
    d = await decide(router(learned=FakeLearned(preds), objective={"quality": 1, "cost": 0.1}))
    assert d.model == "strong" and "learned quality prediction" in d.steps[-1].outcome


async def test_the_bandit_has_the_last_word_with_the_predictions_as_prior() -> None:
    bandit = FakeBandit("cheap")
    preds = {"cheap": 0.6, "mid": 0.75, "strong": 0.95}
    d = await decide(router(learned=FakeLearned(preds), bandit=bandit))
    assert d.model == "cheap" and d.context == "c01" and d.ranking[0] == "cheap"
    assert bandit.calls == [("c01", ["strong", "mid", "cheap"], preds)]
    assert d.steps[-1].detail == {"context": "c01", "explored": True, "greedy": "cheap"}


async def test_without_fallback_the_ranking_is_only_the_choice() -> None:
    d = await decide(router(fallback=False, quality={"mid": 0.9}))
    assert d.ranking == ["mid"]


async def test_explanation_is_the_decision() -> None:
    d = await decide(router(quality={"cheap": 0.5, "mid": 0.7, "strong": 0.9}, objective={"cost": 0.3}))
    out = d.to_dict()
    assert out["model"] == d.model == out["ranking"][0]  # type: ignore[index]
    best = max(d.scores, key=lambda m: d.scores[m]["score"])
    assert best == d.model
    assert out["steps"] == [{"stage": "objective", "outcome": d.steps[0].outcome}]


@settings(max_examples=150, deadline=None)
@given(
    caps=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=3, max_size=3),
    need=st.tuples(st.booleans(), st.booleans()),
    rule_target=st.sampled_from(["m0", "m1", "m2"]),
    rule_fires=st.booleans(),
    quality=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    cost_weight=st.floats(0, 2),
)
async def test_capability_filters_are_never_violated(caps: list[tuple[bool, bool]], need: tuple[bool, bool],
                                                     rule_target: str, rule_fires: bool, quality: list[float],
                                                     cost_weight: float) -> None:
    models = {f"m{i}": model(float(i + 1), tools=t, vision=v) for i, (t, v) in enumerate(caps)}
    cfg = RouterConfig.model_validate({
        "models": list(models), "quality": {f"m{i}": q for i, q in enumerate(quality)},
        "objective": {"cost": cost_weight},
        "rules": [{"when": {"caller": "x"}, "model": rule_target}]})
    r = Router("auto", cfg, models)
    features = RequestFeatures("auto", needs_tools=need[0], needs_vision=need[1],
                               caller="x" if rule_fires else None)
    capable = [f"m{i}" for i, (t, v) in enumerate(caps) if (t or not need[0]) and (v or not need[1])]
    if not capable:
        with pytest.raises(InvalidRequest):
            await r.decide(features, MESSAGES, {})
        return
    d = await r.decide(features, MESSAGES, {})
    assert d.model in capable and set(d.ranking) <= set(capable)
    if rule_fires and rule_target in capable:
        assert d.model == rule_target
