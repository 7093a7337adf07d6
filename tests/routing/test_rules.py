"""Rules match on what a request carries, and the first rule that matches wins."""

from __future__ import annotations

import pytest

from switchboard.config.routers import RuleConfig
from switchboard.routing.features import RequestFeatures
from switchboard.routing.strategies.rules import compile_rules, first_match, unmet

BASE = RequestFeatures("auto", requested="auto", prompt_tokens=50, caller="alice", team="search",
                       tags=frozenset({"beta"}), metadata={"tier": "gold", "team": "search"},
                       headers={"x-region": "eu"}, last_user="Please refund my order #123")


def rule(when: dict[str, object], model: str = "x") -> RuleConfig:
    return RuleConfig.model_validate({"when": when, "model": model})


@pytest.mark.parametrize(("when", "holds"), [
    ({"model": "auto"}, True), ({"model": ["other", "auto"]}, True), ({"model": "other"}, False),
    ({"caller": "alice"}, True), ({"caller": ["bob"]}, False),
    ({"team": "search"}, True), ({"team": "ads"}, False),
    ({"tags": ["beta", "x"]}, True), ({"tags": "alpha"}, False),
    ({"metadata": {"tier": "gold"}}, True), ({"metadata": {"tier": "free"}}, False),
    ({"headers": {"X-Region": "eu"}}, True), ({"headers": {"x-region": "us"}}, False),
    ({"headers": {"x-region": "*"}}, True), ({"headers": {"x-missing": "*"}}, False),
    ({"min_prompt_tokens": 50}, True), ({"min_prompt_tokens": 51}, False),
    ({"max_prompt_tokens": 50}, True), ({"max_prompt_tokens": 49}, False),
    ({"tools": False}, True), ({"tools": True}, False),
    ({"images": False}, True), ({"images": True}, False),
    ({"json": False}, True), ({"json": True}, False),
    ({"last_user": r"(?i)\brefund"}, True), ({"last_user": "cancel"}, False),
    ({}, True),
])
def test_each_condition(when: dict[str, object], holds: bool) -> None:
    (compiled,) = compile_rules([rule(when)])
    assert (unmet(BASE, compiled.config.when, compiled.pattern) is None) is holds


def test_all_conditions_must_hold_and_the_failing_one_is_named() -> None:
    (compiled,) = compile_rules([rule({"caller": "alice", "tools": True})])
    assert unmet(BASE, compiled.config.when, compiled.pattern) == "tools"


def test_first_match_wins_and_explains_itself() -> None:
    rules = compile_rules([
        RuleConfig.model_validate({"name": "vision", "when": {"images": True}, "model": "seer"}),
        RuleConfig.model_validate({"name": "refunds", "when": {"last_user": "refund", "team": "search"},
                                   "models": ["a", "b"]}),
        RuleConfig.model_validate({"when": {}, "model": "catch-all"}),
    ])
    hit = first_match(BASE, rules)
    assert hit is not None and hit.index == 1 and hit.rule.config.targets == ("a", "b")
    assert hit.reason == "rule 2 (refunds) matched on last_user, team"
    assert first_match(RequestFeatures("auto", needs_vision=True), rules).index == 0  # type: ignore[union-attr]
    assert first_match(RequestFeatures("auto"), rules[:2]) is None
