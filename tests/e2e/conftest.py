"""Fixtures that start the simulated fleet and a real gateway (its HTTP server on an ephemeral port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.config.model import Config
from switchboard.sim.fleet import DEFAULT_FLEET, Fleet, gateway_config_for_fleet
from tests.e2e.servers import GatewayThread, SimThread


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return DEFAULT_FLEET


@pytest.fixture(scope="session")
def sim(fleet: Fleet) -> Iterator[SimThread]:
    s = SimThread(fleet)
    yield s
    s.close()


@pytest.fixture(scope="session")
def gateway_config(sim: SimThread, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Config:
    raw = gateway_config_for_fleet(fleet, sim.base_url)
    db = tmp_path_factory.mktemp("records") / "records.db"
    raw["records"] = {"enabled": True, "path": str(db), "flush_interval": 0.05}
    # One public model over two providers: failover across deployments and wire formats.
    raw["models"]["duo"] = {"deployments": [
        {"provider": "sim-openai", "model": "sim-gpt-small", "weight": 1000},
        {"provider": "sim-anthropic", "model": "sim-claude", "weight": 0.001},
    ]}
    # Room for prompts that overflow a 1M-token context window.
    raw["server"] = {"max_body_bytes": 32 * 1024 * 1024}
    # These tests provoke failures one request at a time and check how each is reported, so no
    # retries and no breaker memory between tests; tests/e2e/test_chaos.py covers those.
    raw["resilience"] = {"retries": {"attempts": 1}, "breaker": {"enabled": False}}
    return parse_config(raw, env={})


@pytest.fixture(scope="session")
def gateway(gateway_config: Config) -> Iterator[GatewayThread]:
    g = GatewayThread(create_app(gateway_config))
    yield g
    g.close()


@pytest.fixture(scope="session")
def records_path(gateway_config: Config) -> Path:
    return Path(gateway_config.records.path)


@pytest.fixture
def oai(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-test", max_retries=0, timeout=30)
    yield client
    client.close()


@pytest.fixture
def ant(gateway: GatewayThread) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-test", max_retries=0, timeout=30)
    yield client
    client.close()


def model_for(fleet: Fleet, fmt: str) -> str:
    """The first chat model of the fleet that the gateway reaches over wire format ``fmt``."""
    for m in fleet.models:
        if m.format == fmt and m.kind == "chat":
            return m.name
    raise LookupError(f"no {fmt} chat model in the fleet")
