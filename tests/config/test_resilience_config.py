"""The resilience section: defaults, per-model overrides merged over the top level, and cross-checks."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.config.load import ConfigError, parse_config


def base(**models: Any) -> dict[str, Any]:
    return {
        "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"a": {"deployments": [{"provider": "p", "model": "a"}]},
                   "b": {"deployments": [{"provider": "p", "model": "b"}]},
                   "e": {"kind": "embedding", "deployments": [{"provider": "p", "model": "e"}]}, **models},
    }


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env={})
    return dict(caught.value.problems)


def test_a_model_override_changes_only_what_it_names() -> None:
    data = base(c={"deployments": [{"provider": "p", "model": "c"}],
                   "resilience": {"hedge": {"after": 2}, "retries": {"attempts": 3}}})
    data["resilience"] = {"deadline": 40, "retries": {"backoff": 0.5}, "validators": ["non_empty"]}
    cfg = parse_config(data, env={})
    c = cfg.resilience_for("c")
    assert (c.deadline, c.retries.attempts, c.retries.backoff, c.hedge.after, c.validators) == (
        40, 3, 0.5, 2, ("non_empty",))
    a = cfg.resilience_for("a")
    assert (a.deadline, a.retries.attempts, a.hedge.after) == (40, 2, None)


def test_defaults_without_a_resilience_section() -> None:
    res = parse_config(base(), env={}).resilience_for("a")
    assert res.retries.attempts == 2 and res.breaker.enabled and res.hedge.after is None and res.validators == ()


def test_fallback_targets_are_checked() -> None:
    data = base()
    data["models"]["a"].update(fallbacks=["nope", "a", "e"], context_fallback="b", refusal_fallback="zzz")
    found = problems(data)
    assert found["models.a.fallbacks[0]"] == "unknown model 'nope'"
    assert found["models.a.fallbacks[1]"] == "a model cannot fall back to itself"
    assert "embedding model" in found["models.a.fallbacks[2]"]
    assert found["models.a.refusal_fallback"] == "unknown model 'zzz'"
    assert "models.a.context_fallback" not in found


def test_bad_values_are_reported_at_their_path() -> None:
    data = base(c={"deployments": [{"provider": "p", "model": "c"}], "resilience": {"hedge": {"after": -1}}})
    data["resilience"] = {"breaker": {"failure_rate": 2}}
    found = problems(data)
    assert "resilience.breaker.failure_rate" in found
    assert "models.c.resilience.hedge.after" in found


def test_validators_that_cannot_be_loaded_are_reported() -> None:
    data = base(c={"deployments": [{"provider": "p", "model": "c"}],
                   "resilience": {"validators": ["no_such_validator"]}})
    data["resilience"] = {"validators": ["json", "not.a.module:fn"]}
    found = problems(data)
    assert "resilience.validators[1]" in found and "resilience.validators[0]" not in found
    assert "models.c.resilience.validators[0]" in found
