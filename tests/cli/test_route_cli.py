"""``switchboard route explain`` prints the routing decision without calling any upstream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.cli.main import main


def test_explains_the_demo_router(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no switchboard.yaml here: the simulated fleet's configuration
    assert main(["route", "explain", "--model", "auto", "Write a python function to sort a list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "router auto → model sim-claude"
    assert "rule 2 (code and maths) matched on last_user → sim-claude" in out
    assert "deployments of sim-claude (weighted):" in out


def test_json_and_request_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                "tools": [{"type": "function", "function": {"name": "f"}}]}))
    assert main(["route", "explain", "--request", str(body), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["router"] == "auto" and plan["model"] == plan["decision"]["ranking"][0] == "sim-gpt-small"
    assert plan["deployments"]["candidates"][0]["deployment"] == "sim-openai/sim-gpt-small"


def test_a_plain_model_and_a_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""
providers: {p: {type: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  m:
    balance: cost
    deployments: [{provider: p, model: x, price: {input: 2}}, {provider: p, model: y, price: {input: 1}}]
""")
    assert main(["route", "explain", "--config", str(cfg), "--model", "m", "hello"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == ["model m", "deployments of m (cost):", "  1. p/y — expected $0.000002"]


@pytest.mark.parametrize(("argv", "message"), [
    (["route", "explain", "hello"], "give --model and the message text, or --request FILE"),
    (["route", "explain", "--model", "nope", "hello"], "The model 'nope' does not exist"),
    (["route", "explain", "--model", "auto", "--header", "broken", "hi"], "expected NAME:VALUE"),
    (["route", "explain", "--config", "/nonexistent.yaml", "--model", "m", "hi"], "cannot read"),
])
def test_bad_input_is_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
