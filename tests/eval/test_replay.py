"""Replay: requests served through a router are recorded with what routing read, then routed again with
a candidate policy — same choices where the policy agrees, the differences, and what they cost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard import ChatRequest, Gateway, Message, RequestContext, TextPart
from switchboard.config.load import parse_config
from switchboard.config.model import Config
from switchboard.eval.replay import replay
from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import SQLiteRecordWriter
from switchboard.telemetry.record import RequestRecord
from tests.e2e.servers import SimThread

PROMPTS = ["hello", "Write a python function that adds two numbers", "what's the weather like", "thanks!",
           "Prove that the square root of two is irrational"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread(DEFAULT_FLEET)
    yield s
    s.close()


def config(sim: SimThread, tmp: Path, *, capture: bool, **router: Any) -> Config:
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"path": str(tmp / "records.db"), "flush_interval": 0.05, "capture_prompts": capture}
    raw["routers"] = demo_router(DEFAULT_FLEET)
    raw["routers"]["auto"].update(router)
    return parse_config(raw, env={})


async def served(cfg: Config) -> list[RequestRecord]:
    writer = SQLiteRecordWriter(cfg.records)
    await asyncio.to_thread(writer.start)
    try:
        async with Gateway(cfg, records=writer) as gw:
            for text in PROMPTS:
                await gw.chat(ChatRequest("auto", [Message("user", [TextPart(text)])], max_tokens=5),
                              RequestContext.create(endpoint="chat"))
        assert await asyncio.to_thread(writer.flush, 10)
        return list(reversed(await asyncio.to_thread(writer.query, RecordQuery(router="auto", limit=None))))
    finally:
        await asyncio.to_thread(writer.close)


async def test_the_same_policy_makes_the_same_choices(sim: SimThread, tmp_path: Path) -> None:
    cfg = config(sim, tmp_path, capture=True)
    records = await served(cfg)
    assert len(records) == len(PROMPTS) and all(r.route and "prompt" in r.route["input"] for r in records)
    report = await replay(records, Gateway(cfg, rng=random.Random(0)), "auto")
    s = report.summary()
    assert s["requests"] == 5 and s["same_choice"] == 1.0 and s["changes"] == {}
    assert s["replayed_cost_usd"] == pytest.approx(s["served_cost_usd"])


async def test_a_cheaper_policy_shows_what_changes_and_what_it_saves(sim: SimThread, tmp_path: Path) -> None:
    records = await served(config(sim, tmp_path, capture=False))
    candidate = config(sim, tmp_path, capture=False, rules=[], objective={"quality": 0, "cost": 1})
    report = await replay(records, Gateway(candidate, rng=random.Random(0)), "auto")
    s = report.summary()
    assert s["replayed"] == {"sim-gpt-small": 5}
    assert s["changes"] == {"sim-claude → sim-gpt-small": 2}  # the two code and maths prompts
    assert s["replayed_cost_usd"] < s["served_cost_usd"] and s["cost_change"] < 0
    text = report.render_text()
    assert "same choice: 60.0%" in text and "sim-claude → sim-gpt-small: 2" in text


async def test_text_reading_policies_need_captured_prompts(sim: SimThread, tmp_path: Path) -> None:
    bandit = {"bandit": {"cluster_bits": 2}}
    without = await served(config(sim, tmp_path / "a", capture=False))
    assert all(r.route and "prompt" not in r.route["input"] for r in without)
    report = await replay(without, Gateway(config(sim, tmp_path, capture=False, **bandit)), "auto")
    assert report.rows == [] and report.skipped == {"records without a captured prompt": 5}
    captured = await served(config(sim, tmp_path / "b", capture=True))
    assert captured[1].route is not None and captured[1].route["input"]["prompt"] == PROMPTS[1]
    report = await replay(captured, Gateway(config(sim, tmp_path, capture=False, **bandit)), "auto")
    assert len(report.rows) == 5 and not report.skipped


def test_the_command(sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from switchboard.cli.main import main

    cfg = config(sim, tmp_path, capture=False)
    asyncio.run(served(cfg))
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["routers"] = {"cheapest": {**demo_router(DEFAULT_FLEET)["auto"], "rules": [],
                                   "objective": {"quality": 0, "cost": 1}}}
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(raw))
    argv = ["router", "replay", "--config", str(candidate), "--router", "auto", "--as", "cheapest",
            "--db", cfg.records.path, "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 5 and summary["replayed"] == {"sim-gpt-small": 5}
    assert main([*argv[:6], "--db", cfg.records.path]) == 2  # no router 'auto' there
    assert "has no router named 'auto'" in capsys.readouterr().err
