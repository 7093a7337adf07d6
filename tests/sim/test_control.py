"""The control endpoint ``/_sim/models/{name}`` and ``SimServer.update_model``: settings change while serving."""

from __future__ import annotations

import httpx2
import openai
import pytest

from switchboard.sim import FleetError, SimServer

USER: list[dict[str, str]] = [{"role": "user", "content": "hello"}]


async def test_get_returns_the_settings(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.get("/_sim/models/fast")  # an alias names the model too
    assert r.status_code == 200
    settings = r.json()
    assert settings["name"] == "sim-gpt-small"
    assert settings["failure_rate"] == 0.0
    assert settings["failure_modes"] == ["500"]
    assert settings["aliases"] == ["fast"]


async def test_post_changes_what_the_next_request_sees(sim: SimServer, oai: openai.AsyncOpenAI) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.post("/_sim/models/sim-gpt-small", json={"failure_rate": 1, "failure_modes": ["429"]})
        assert r.status_code == 200
        assert (r.json()["failure_rate"], r.json()["failure_modes"]) == (1.0, ["429"])
        with pytest.raises(openai.RateLimitError):
            await oai.chat.completions.create(model="sim-gpt-small", messages=USER)
        r = await http.post("/_sim/models/sim-gpt-small", json={"failure_rate": 0, "output_tokens": 3})
        assert r.status_code == 200
        assert (await http.get("/_sim/models/sim-gpt-small")).json() == r.json()
    ok = await oai.chat.completions.create(model="sim-gpt-small", messages=USER)
    assert ok.usage is not None and ok.usage.completion_tokens == 3
    assert sim.stats.failures_injected == 1


async def test_unknown_model_is_404(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        got = await http.get("/_sim/models/nope")
        posted = await http.post("/_sim/models/nope", json={"failure_rate": 1})
    assert got.status_code == posted.status_code == 404
    assert "'nope'" in got.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"failure_rate": 1.5}', "failure_rate: must be a number between 0 and 1"),
        (b'{"failure_modes": ["boom"]}', "failure_modes: unknown mode 'boom'"),
        (b'{"colour": "red"}', "unknown field(s) colour"),
        (b'{"name": "x"}', "name: cannot be changed while serving"),
        (b"[1]", "must be a JSON object"),
        (b"{oops", "not valid JSON"),
    ],
)
async def test_bad_field_or_value_is_400_and_changes_nothing(sim: SimServer, body: bytes, message: str) -> None:
    before = sim.fleet
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.post("/_sim/models/sim-claude", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert sim.fleet is before


async def test_other_methods_are_405(sim: SimServer) -> None:
    async with httpx2.AsyncClient(base_url=sim.base_url) as http:
        r = await http.delete("/_sim/models/sim-claude")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"


async def test_update_model_in_python(sim: SimServer) -> None:
    model = sim.update_model("claude", ttft_ms=12, failure_modes=["529", "reset"], failure_rate=0.25)
    assert model is sim.fleet.get("sim-claude")
    assert (model.ttft_ms, model.failure_modes, model.failure_rate) == (12.0, ("529", "reset"), 0.25)
    with pytest.raises(FleetError, match="tokens_per_second"):
        sim.update_model("claude", tokens_per_second=-1)
    with pytest.raises(KeyError):
        sim.update_model("nope", ttft_ms=1)
