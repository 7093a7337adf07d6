"""Fleets: the default one, YAML files, and the gateway configuration that reaches them."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.config.load import parse_config
from switchboard.sim import DEFAULT_FLEET, Fleet, FleetError, SimModel, gateway_config_for_fleet, load_fleet


def test_default_fleet_covers_every_format_and_kind() -> None:
    assert {m.format for m in DEFAULT_FLEET} == {"openai", "anthropic", "gemini"}
    assert {m.kind for m in DEFAULT_FLEET} == {"chat", "embedding"}
    assert all(m.name.startswith("sim-") for m in DEFAULT_FLEET)
    fast = DEFAULT_FLEET.get("fast")
    assert fast is not None
    assert fast.name == "sim-gpt-small"
    assert DEFAULT_FLEET.get("nope") is None


def test_gateway_config_validates() -> None:
    raw = gateway_config_for_fleet(DEFAULT_FLEET, "http://127.0.0.1:9000/")
    cfg = parse_config(raw, env={})
    assert cfg.providers["sim-openai"].base_url == "http://127.0.0.1:9000/v1"
    assert cfg.providers["sim-anthropic"].base_url == "http://127.0.0.1:9000"
    assert cfg.providers["sim-gemini"].base_url == "http://127.0.0.1:9000/v1beta"
    assert all(p.forward_headers == ("x-sim-*",) for p in cfg.providers.values())
    assert set(cfg.models) == {m.name for m in DEFAULT_FLEET}
    small = cfg.models["sim-gpt-small"]
    assert small.aliases == ("fast",)
    dep = small.deployments[0]
    assert (dep.provider, dep.model, dep.context_window) == ("sim-openai", "sim-gpt-small", 128_000)
    assert (dep.price.input, dep.price.output, dep.price.cached_input) == (0.15, 0.6, 0.075)
    assert cfg.models["sim-gemini-embed"].kind == "embedding"
    assert cfg.models["sim-gemini-embed"].deployments[0].provider == "sim-gemini"


def test_load_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "models:\n"
        "  - name: tiny\n"
        "    format: anthropic\n"
        "    ttft_ms: 5\n"
        "    tokens_per_second: 100\n"
        "    aliases: [t]\n"
        "    failure_rate: 0.5\n"
        "    failure_modes: [429, reset]\n"
        "  - {name: vec, kind: embedding, embedding_dim: 8}\n"
    )
    fleet = load_fleet(path)
    tiny = fleet.get("t")
    assert tiny == SimModel(
        "tiny",
        "anthropic",
        ttft_ms=5.0,
        tokens_per_second=100.0,
        aliases=("t",),
        failure_rate=0.5,
        failure_modes=("429", "reset"),
    )
    vec = fleet.get("vec")
    assert vec is not None
    assert vec.kind == "embedding"
    assert vec.format == "openai"
    parse_config(gateway_config_for_fleet(fleet, "http://127.0.0.1:1"), env={})


def test_load_fleet_as_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("models:\n  one: {ttft_ms: 1}\n  two:\n")
    assert [m.name for m in load_fleet(path)] == ["one", "two"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [{name: a, ttft_ms: -1}]", "models[0].ttft_ms: must be a number >= 0"),
        ("models: [{name: a, format: cohere}]", "models[0].format: must be one of"),
        ("models: [{name: a, colour: red}]", "models[0]: unknown field(s) colour"),
        ("models: [{ttft_ms: 1}]", "models[0].name: required"),
        ("models: [{name: a, failure_modes: [explode]}]", "unknown mode 'explode'"),
        ("models: [{name: a, failure_rate: 2}]", "failure_rate: must be a number between 0 and 1"),
        ("models: [{name: a, kind: embedding, format: anthropic}]", "anthropic has no embeddings API"),
        ("models: [{name: a}, {name: b, aliases: [a]}]", "'a' is used twice"),
        ("models: []", "no models defined"),
        ("models: 3", "must be a list or a mapping"),
        ("fleet: []", "unknown top-level key(s) fleet"),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_load_fleet_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetError, match=r"fleet\.yaml") as exc:
        load_fleet(path)
    assert message in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(FleetError, match="cannot read"):
        load_fleet("/nonexistent/fleet.yaml")


def test_replace_changes_one_model() -> None:
    fleet = DEFAULT_FLEET.replace("claude", failure_rate=1.0)
    claude = fleet.get("sim-claude")
    assert claude is not None
    assert claude.failure_rate == 1.0
    assert fleet.get("sim-gpt-small") == DEFAULT_FLEET.get("sim-gpt-small")
    assert isinstance(fleet, Fleet)
    assert len(fleet) == len(DEFAULT_FLEET)
    with pytest.raises(KeyError):
        DEFAULT_FLEET.replace("nope", ttft_ms=1.0)


def test_tune_reads_values_as_a_fleet_file_does() -> None:
    fleet = DEFAULT_FLEET.tune("claude", {"failure_rate": 1, "failure_modes": ["529", 500], "ttft_ms": 5})
    claude = fleet.get("sim-claude")
    assert claude is not None
    assert (claude.failure_rate, claude.failure_modes, claude.ttft_ms) == (1.0, ("529", "500"), 5.0)
    assert hash(claude)  # tuples, not lists: scenarios are cached per model
    assert fleet.get("claude") is claude


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"failure_rate": 2}, "failure_rate: must be a number between 0 and 1"),
        ({"failure_modes": ["teapot"]}, "failure_modes: unknown mode 'teapot'"),
        ({"failure_modes": {"a": 1}}, "failure_modes: must be a list"),
        ({"output_tokens": 1.5}, "output_tokens: must be an integer"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"name": "other", "format": "gemini"}, "format, name: cannot be changed while serving"),
    ],
)
def test_tune_refuses_bad_fields_and_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(FleetError) as exc:
        DEFAULT_FLEET.tune("sim-claude", changes)
    assert message in str(exc.value)


def test_tune_unknown_model() -> None:
    with pytest.raises(KeyError):
        DEFAULT_FLEET.tune("nope", {"ttft_ms": 1})
