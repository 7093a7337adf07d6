"""The routers section: what a valid router looks like, and every mistake named by its path."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.config.load import ConfigError, parse_config


def base(**routers: Any) -> dict[str, Any]:
    return {
        "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"a": {"deployments": [{"provider": "p", "model": "a", "rpm": 60, "tpm": 10_000}],
                         "aliases": ["alpha"], "balance": "latency"},
                   "b": {"deployments": [{"provider": "p", "model": "b"}]},
                   "e": {"kind": "embedding", "deployments": [{"provider": "p", "model": "e"}]}},
        "routers": routers,
    }


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env={})
    return dict(caught.value.problems)


def test_a_full_router_loads() -> None:
    cfg = parse_config(base(auto={
        "aliases": ["router"], "models": ["a", "b"],
        "rules": [{"name": "tools", "when": {"tools": True, "caller": "alice", "last_user": "(?i)sql"}, "model": "a"}],
        "semantic": {"encoder": "e", "routes": [{"name": "code", "examples": ["write code"], "models": ["a", "b"]}],
                     "default": "b"},
        "learned": {"quality_target": 0.8, "names": {"a": "gpt-4-1106-preview"}},
        "quality": {"a": 0.9}, "objective": {"cost": 0.5}, "bandit": {"exploration": 0.1}}), env={})
    auto = cfg.routers["auto"]
    assert auto.rules[0].when.caller == ("alice",) and auto.rules[0].targets == ("a",)
    assert auto.semantic is not None and auto.semantic.routes[0].targets == ("a", "b")
    assert auto.bandit is not None and auto.bandit.half_life == 7 * 86400
    assert cfg.models["a"].balance == "latency" and cfg.models["a"].deployments[0].rpm == 60


def test_references_are_checked() -> None:
    found = problems(base(auto={
        "models": ["a", "alpha", "e", "zz"],
        "rules": [{"when": {}, "model": "b"}],
        "semantic": {"encoder": "a", "routes": [{"name": "x", "examples": ["x"], "model": "b"}], "default": "b"},
        "quality": {"b": 0.5}, "learned": {"names": {"b": "x"}}}))
    assert found == {
        "routers.auto.models[1]": "unknown model 'alpha' (routers list model names, not aliases)",
        "routers.auto.models[2]": "'e' is an embedding model; routers route chat",
        "routers.auto.models[3]": "unknown model 'zz' (routers list model names, not aliases)",
        "routers.auto.rules[0].model": "'b' is not one of the router's models (a, alpha, e, zz)",
        "routers.auto.semantic.routes[0].model": "'b' is not one of the router's models (a, alpha, e, zz)",
        "routers.auto.semantic.default": "'b' is not one of the router's models (a, alpha, e, zz)",
        "routers.auto.semantic.encoder":
            "'a' is neither 'minilm', 'minilm-static' nor an embeddings model of this configuration",
        "routers.auto.quality.b": "'b' is not one of the router's models (a, alpha, e, zz)",
        "routers.auto.learned.names.b": "'b' is not one of the router's models (a, alpha, e, zz)",
    }


def test_names_must_be_new() -> None:
    found = problems(base(a={"models": ["b"]}, auto={"models": ["b"], "aliases": ["alpha"]}))
    assert found == {"routers.a": "'a' is already used by models.a",
                     "routers.auto.aliases[0]": "'alpha' is already used by models.a.aliases[0]"}


@pytest.mark.parametrize(("router", "path", "text"), [
    ({"models": []}, "routers.r.models", "at least 1"),
    ({"models": ["a"], "rules": [{"when": {}}]}, "routers.r.rules[0]", "exactly one of 'model' or 'models'"),
    ({"models": ["a"], "rules": [{"when": {}, "model": "a", "models": ["a"]}]}, "routers.r.rules[0]",
     "exactly one"),
    ({"models": ["a"], "rules": [{"when": {"last_user": "("}, "model": "a"}]}, "routers.r.rules[0].when.last_user",
     "not a valid regular expression"),
    ({"models": ["a"], "rules": [{"when": {"colour": "red"}, "model": "a"}]}, "routers.r.rules[0].when.colour",
     "Extra inputs"),
    ({"models": ["a"], "learned": {"quality_target": 0.8, "max_cost": 0.01}}, "routers.r.learned",
     "at most one of quality_target, max_cost, strong_share"),
    ({"models": ["a"], "quality": {"a": 1.5}}, "routers.r.quality", "between 0 and 1"),
    ({"models": ["a"], "semantic": {"routes": []}}, "routers.r.semantic.routes", "at least 1"),
    ({"models": ["a"], "bandit": {"exploration": 2}}, "routers.r.bandit.exploration", "less than or equal to 1"),
])
def test_bad_fields_are_named(router: dict[str, Any], path: str, text: str) -> None:
    found = problems(base(r=router))
    assert path in found and text in found[path], found


def test_bad_balance_strategy_is_named() -> None:
    data = base()
    data["models"]["b"]["balance"] = "fastest"
    found = problems(data)
    assert "models.b.balance" in found and "round_robin" in found["models.b.balance"]


def test_missing_packages_are_reported_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a))
    found = problems(base(r={"models": ["a"], "learned": {},
                             "semantic": {"routes": [{"name": "x", "examples": ["x"], "model": "a"}]}}))
    assert found == {"routers.r.semantic.encoder": "the local MiniLM encoder needs numpy: "
                                                   "pip install 'switchboard[routing]'",
                     "routers.r.learned": "the learned router needs numpy: pip install 'switchboard[routing]'"}
