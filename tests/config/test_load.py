from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchboard.config.load import ConfigError, config_from_environment, load_config, parse_config
from switchboard.config.model import DeploymentConfig

GOOD: dict[str, Any] = {
    "providers": {
        "openai": {"type": "openai", "base_url": "https://api.openai.com/v1/", "api_key": "env:OPENAI_API_KEY"},
        "local": {"type": "openai", "base_url": "http://127.0.0.1:11434/v1"},
    },
    "models": {
        "gpt-4o-mini": {
            "aliases": ["fast"],
            "deployments": [
                {"provider": "openai", "model": "gpt-4o-mini", "weight": 3,
                 "price": {"input": 0.15, "output": 0.6, "cached_input": 0.075}, "context_window": 128000},
                {"provider": "local", "model": "llama3", "capabilities": {"tools": False, "json": False}},
            ],
        },
    },
}


def problems(data: Any, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, env=env if env is not None else {"OPENAI_API_KEY": "sk-x"})
    return e.value.problems


def test_good_config_is_frozen_and_resolves_secrets() -> None:
    cfg = parse_config(GOOD, env={"OPENAI_API_KEY": "sk-secret-value"})
    prov = cfg.providers["openai"]
    assert prov.base_url == "https://api.openai.com/v1"
    assert prov.api_key is not None and prov.api_key.get_secret_value() == "sk-secret-value"
    assert "sk-secret-value" not in repr(cfg) and "sk-secret-value" not in str(prov)
    deps = cfg.models["gpt-4o-mini"].deployments
    assert deps[0].id == "openai/gpt-4o-mini" and deps[1].capabilities.json_mode is False
    with pytest.raises(ValueError, match="frozen"):
        cfg.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["models"]["gpt-4o-mini"]["deployments"][0]["price"].update(input=-1),
         "models.gpt-4o-mini.deployments[0].price.input"),
        (lambda d: d["models"]["gpt-4o-mini"]["deployments"][1].update(provider="nope"),
         "models.gpt-4o-mini.deployments[1].provider"),
        (lambda d: d["providers"]["local"].update(base_url="ftp://x"), "providers.local.base_url"),
        (lambda d: d["providers"]["local"].update(type="cohere"), "providers.local.type"),
        (lambda d: d["models"]["gpt-4o-mini"]["deployments"][0].update(wieght=2),
         "models.gpt-4o-mini.deployments[0].wieght"),
        (lambda d: d["models"]["gpt-4o-mini"].update(deployments=[]), "models.gpt-4o-mini.deployments"),
        (lambda d: d["models"]["gpt-4o-mini"].update(aliases=["gpt-4o-mini"]), "models.gpt-4o-mini.aliases[0]"),
    ],
)
def test_bad_field_is_named_exactly(mutate: Any, path: str) -> None:
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    assert path in [p for p, _ in problems(data)]


def test_missing_env_secret_is_named() -> None:
    probs = problems(GOOD, env={})
    assert probs == [("providers.openai.api_key", "environment variable OPENAI_API_KEY is not set")]


def test_yaml_errors_name_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("providers:\n  a: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert e.value.problems[0][0].startswith("line ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


def test_environment_config() -> None:
    assert config_from_environment({}) is None
    cfg = config_from_environment({"ANTHROPIC_API_KEY": "k", "SWITCHBOARD_OPENAI_COMPATIBLE_URL": "http://127.0.0.1:8000/v1",
                                   "SWITCHBOARD_OPENAI_COMPATIBLE_MODELS": "llama3, qwen"})
    assert cfg is not None
    assert set(cfg.providers) == {"anthropic", "local"}
    assert {"claude-haiku-4-5", "llama3", "qwen"} <= set(cfg.models)


def test_a_deployments_id_follows_its_copies() -> None:
    dep = DeploymentConfig(provider="openai", model="gpt-4o")
    assert dep.id == "openai/gpt-4o" and dep.id is dep.id  # made once
    assert dep.model_copy(update={"model": "gpt-4o-mini"}).id == "openai/gpt-4o-mini"
    assert dep.model_copy(update={"name": "primary"}).id == "primary"
    assert dep == DeploymentConfig(provider="openai", model="gpt-4o")  # the cached id is not a field
