"""The analytics report computes what records with known values say: volume, errors, fallbacks,
percentiles, tokens, cost and savings against a reference model; and the ``report`` command prints it."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from switchboard.cli.main import main
from switchboard.config.model import ModelConfig, RecordsConfig
from switchboard.storage.sqlite import SQLiteRecordWriter
from switchboard.telemetry.analytics import analyze, percentile, render_csv, render_table
from switchboard.telemetry.record import Attempt, RequestRecord

REFERENCE = ModelConfig.model_validate({"deployments": [
    {"provider": "p", "model": "big", "price": {"input": 10, "output": 30}},
    {"provider": "q", "model": "big", "price": {"input": 12, "output": 30}}]})


def rec(i: int, model: str, *, status: int = 200, latency: float = 100, ttft: float | None = 50,
        tokens: tuple[int, int] = (1000, 100), cost: float = 0.001, attempts: int = 1, tags: str = "",
        router: str | None = None, started: float = 1_000.0) -> RequestRecord:
    tries = [Attempt("d0", "p", "error", 5.0, reason="timeout")] * (attempts - 1) + [Attempt("d1", "p", "ok", 9.0)]
    return RequestRecord(request_id=f"r{i}", started_at=started + i, endpoint="chat", dialect="openai",
                         public_model=model, deployment=f"{model}-dep", status=status, latency_ms=latency,
                         ttft_ms=ttft, input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost,
                         attempts=tries, metadata={"tags": tags} if tags else {}, router=router)


RECORDS = [
    *(rec(i, "small", latency=float(10 * (i + 1)), cost=0.0002, tags="a,b") for i in range(10)),  # 10..100 ms
    rec(10, "small", status=502, latency=5000, ttft=None, tokens=(0, 0), cost=0.0),
    rec(11, "large", latency=400, cost=0.02, attempts=2, tags="a", router="auto"),
    rec(12, "large", latency=600, cost=0.02, router="auto"),
]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50.0, 95.0, 99.0)
    assert percentile([], 0.5) is None and percentile([7.0], 0.99) == 7.0


def test_groups_by_model_with_known_figures() -> None:
    report = analyze(RECORDS, by="public_model", reference=REFERENCE, reference_name="big")
    small, large = report.groups
    assert (small.key, small.requests, small.errors, small.rescued) == ("small", 11, 1, 0)
    assert small.error_rate == pytest.approx(1 / 11)
    assert (small.latency_p50_ms, small.latency_p95_ms, small.latency_p99_ms) == (50, 100, 100)  # errors excluded
    assert small.input_tokens == 10_000 and small.output_tokens == 1_000
    assert small.cost_usd == pytest.approx(0.002)
    # The reference prices each successful request's tokens at its cheapest deployment: 1000·10 + 100·30 per M.
    assert small.reference_cost_usd == pytest.approx(10 * 0.013)
    assert small.savings_usd == pytest.approx(0.13 - 0.002)
    assert (large.requests, large.rescued, large.fallback_rate) == (2, 1, 0.5)
    assert large.savings_usd == pytest.approx(0.026 - 0.04)  # dearer than the reference
    assert report.total.requests == 13 and report.total.cost_usd == pytest.approx(0.042)


def test_other_groupings() -> None:
    tags = {g.key: g.requests for g in analyze(RECORDS, by="tag").groups}
    assert tags == {"a": 11, "b": 10, "(untagged)": 2}
    assert {g.key: g.requests for g in analyze(RECORDS, by="router").groups} == {"(none)": 11, "auto": 2}
    assert {g.key: g.requests for g in analyze(RECORDS, by="status").groups} == {"2xx": 12, "5xx": 1}
    with pytest.raises(ValueError, match="cannot group by"):
        analyze(RECORDS, by="colour")


def test_renderings() -> None:
    report = analyze(RECORDS, reference=REFERENCE, reference_name="big")
    table = render_table(report)
    assert table.splitlines()[0].split()[:3] == ["PUBLIC_MODEL", "REQS", "ERR%"]
    assert "against big for every request: $0.1560; saved 73.1%" in table
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["key"] for r in rows] == ["small", "large", "total"] and rows[0]["requests"] == "11"


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    now = time.time()
    with SQLiteRecordWriter(RecordsConfig(path=str(db))) as writer:
        for r in RECORDS:
            r.started_at = now - 60
            writer.submit(r)
        assert writer.flush(10)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("providers: {p: {type: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
                   "models: {big: {deployments: [{provider: p, model: big, price: {input: 10, output: 30}}]}}\n")
    assert main(["report", "--db", str(db), "--since", "1h", "--reference", "big", "--config", str(cfg),
                 "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["total"]["requests"] == 13 and body["total"]["savings_usd"] == pytest.approx(0.156 - 0.042)
    assert main(["report", "--db", str(db), "--by", "colour"]) == 2
    assert "cannot group by 'colour'" in capsys.readouterr().err
    assert main(["report", "--db", str(db), "--reference", "nope", "--config", str(cfg)]) == 2
