"""``switchboard logs`` on a database with known records."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from switchboard.cli import logs
from switchboard.config.model import RecordsConfig
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import SQLiteRecordWriter, open_records_reader
from switchboard.telemetry.record import Attempt, RequestRecord
from tests.storage.sample_records import make_record

NOW = time.time()

OK = make_record(
    1,
    request_id="req_ok",
    started_at=NOW - 600,
    public_model="fast",
    deployment="sim/small",
    attempts=[Attempt("sim/small", "sim-openai", "ok", 340.25)],
    latency_ms=353.75,
    ttft_ms=120.5,
    input_tokens=1200,
    output_tokens=345,
    cost_usd=0.000123,
)
FALLBACK = make_record(
    2,
    request_id="req_fallback",
    started_at=NOW - 300,
    public_model="smart",
    deployment="sim/large",
    caller="team-b",
)
FAILED = make_record(
    3,
    request_id="req_failed",
    started_at=NOW - 60,
    public_model="fast",
    deployment=None,
    status=503,
    error_type="NoHealthyDeployment",
    error_message="every deployment of 'fast' is unhealthy",
    attempts=[],
    ttft_ms=None,
    input_tokens=0,
    output_tokens=0,
    cost_usd=0.0,
)
OLD = make_record(0, request_id="req_old", started_at=NOW - 3 * 86400)
RECORDS = [OLD, OK, FALLBACK, FAILED]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "switchboard.db"
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer:
        for record in RECORDS:
            writer.submit(record)
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="switchboard")
    logs.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["logs", *argv])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    args = parse(*argv)
    code = args.run(args)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_table_shows_the_newest_records_oldest_first(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "--db", str(db), "--limit", "3")
    assert code == 0
    header = "TIME  REQUEST ID  MODEL → DEPLOYMENT  STATUS  LAT ms  TTFT ms  TOKENS IN/OUT  COST $"
    assert lines[0].split() == header.split()
    rows = [line for line in lines[1:] if not line.startswith("    ")]
    assert [row.split()[2] for row in rows] == ["req_ok", "req_fallback", "req_failed"]
    assert rows[0].split() == [
        *time.strftime("%m-%d %H:%M:%S", time.localtime(OK.started_at)).split(),
        *["req_ok", "fast", "→", "sim/small", "200", "354", "120", "1200/345", "0.000123"],
    ]
    assert all(len(line) <= 120 for line in lines)


def test_table_explains_failures_and_fallbacks(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines, _ = run(capsys, "--db", str(db))
    failed = next(i for i, line in enumerate(lines) if "req_failed" in line)
    assert lines[failed].split()[3:7] == ["fast", "→", "-", "503"]
    assert lines[failed + 1] == "    ↳ NoHealthyDeployment: every deployment of 'fast' is unhealthy"
    fallback = next(i for i, line in enumerate(lines) if "req_fallback" in line)
    steps = "sim/tiny RateLimited: slow down 12ms → sim/small ok 340ms"
    assert lines[fallback + 1] == f"    ↳ attempts: {steps}"


def test_attempt_reasons_hedges_and_fallback_models_are_shown() -> None:
    from switchboard.cli.logs import format_record
    from switchboard.telemetry.record import Attempt

    rec = make_record(0, public_model="chain", deployment="b", unsatisfactory=None, attempts=[
        Attempt("a", "p", "error", 501.0, reason="timeout", model="chain"),
        Attempt("b", "p", "ok", 80.0, model="backup", hedge=True),
    ])
    assert format_record(rec)[1] == "    ↳ attempts: a error(timeout) 501ms → b ok hedge via backup 80ms"
    rec.unsatisfactory = "length"
    assert format_record(rec)[-1] == "    ↳ every answer failed validation; delivered anyway: length"
    rec.router, rec.route = "auto", {"model": "chain", "steps": [{"stage": "rules", "outcome": "rule 1 (x) matched"}]}
    assert format_record(rec)[-1] == "    ↳ router auto: rule 1 (x) matched"


def test_long_values_are_clipped_to_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.db"
    long = make_record(
        0,
        request_id="req_01J9ZX4K7Q8M2N3P4R5S6T7V8W",
        public_model="a-model-with-a-very-long-public-name",
        deployment="some-provider/some-very-long-upstream-model-name-2025-01-01",
        partial=True,
        error_message="x" * 500,
    )
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer:
        writer.submit(long)
    _, lines, _ = run(capsys, "--db", str(path))
    assert all(len(line) <= 120 for line in lines)
    row = lines[1]
    assert row.split()[2:6] == ["req_01J9ZX…P4R5S6T7V8W", "a-model-wi…", "→", "some-…-01-01"]
    assert "200*" in row
    assert lines[2].startswith("    ↳ stream cut after content — ")


def test_filters_reach_the_query(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # "2m ago" is counted from when the records were made, however long the suite took to get here.
    monkeypatch.setattr(logs, "time", SimpleNamespace(time=lambda: NOW, sleep=time.sleep, localtime=time.localtime,
                                                      strftime=time.strftime))

    def ids(*argv: str) -> list[str]:
        _, lines, _ = run(capsys, "--db", str(db), "--json", *argv)
        return [orjson.loads(line)["request_id"] for line in lines]

    assert ids() == ["req_old", "req_ok", "req_fallback", "req_failed"]
    assert ids("--since", "1h") == ["req_ok", "req_fallback", "req_failed"]
    assert ids("--since", "2d", "--until", "2m") == ["req_ok", "req_fallback"]
    assert ids("--model", "smart") == ["req_fallback"]
    assert ids("--deployment", "sim/small") == ["req_old", "req_ok"]
    assert ids("--status", "503") == ["req_failed"]
    assert ids("--errors") == ["req_failed"]
    assert ids("--caller", "team-b") == ["req_fallback"]
    assert ids("--request-id", "req_ok") == ["req_ok"]
    assert ids("--limit", "2") == ["req_fallback", "req_failed"]
    assert ids("--limit", "0") == ["req_old", "req_ok", "req_fallback", "req_failed"]


def test_json_lines_hold_whole_records(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "--db", str(db), "--json", "--request-id", "req_fallback")
    assert code == 0
    assert len(lines) == 1
    data = orjson.loads(lines[0])
    data["attempts"] = [Attempt(**a) for a in data["attempts"]]
    assert RequestRecord(**data) == FALLBACK


def test_no_match_is_said_on_stderr(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "--db", str(db), "--model", "nope")
    assert (code, lines) == (0, [logs.format_header()])
    assert "no matching records" in err


def test_a_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.db"
    code, lines, err = run(capsys, "--db", str(missing))
    assert (code, lines) == (1, [])
    assert f"no records database at {missing}" in err
    assert "--db" in err
    assert not missing.exists()


def test_a_file_that_is_not_a_records_database_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "config.yaml"
    other.write_text("server: {}\n" * 50)
    code, _, err = run(capsys, "--db", str(other))
    assert code == 1
    assert "not a Switchboard records database" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 1_000_000.0 - 30),
        ("15m", 1_000_000.0 - 900),
        ("2h", 1_000_000.0 - 7200),
        ("1d", 1_000_000.0 - 86400),
        ("1w", 1_000_000.0 - 604800),
        ("1h30m", 1_000_000.0 - 5400),
        ("1.5h", 1_000_000.0 - 5400),
        ("2025-01-31T09:00:00Z", datetime(2025, 1, 31, 9, tzinfo=UTC).timestamp()),
        ("2025-01-31T09:00:00+02:00", datetime(2025, 1, 31, 7, tzinfo=UTC).timestamp()),
        ("2025-01-31 09:00", datetime(2025, 1, 31, 9).timestamp()),
        ("2025-01-31", datetime(2025, 1, 31).timestamp()),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert logs.parse_time(text, now=1_000_000.0) == expected


@pytest.mark.parametrize("text", ["", "15", "15x", "yesterday", "m15", "2025-13-01"])
def test_parse_time_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        logs.parse_time(text, now=1_000_000.0)


def test_a_bad_since_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--since", "yesterday")
    assert exc.value.code == 2
    assert "expected a duration like 15m" in capsys.readouterr().err


def test_follow_yields_records_as_they_are_written(db: Path) -> None:
    later = [make_record(10, request_id="req_new", started_at=NOW - 3600, status=500), make_record(11)]
    waits: list[float] = []
    with SQLiteRecordWriter(RecordsConfig(path=str(db))) as writer, open_records_reader(db) as reader:

        def wait(seconds: float) -> None:  # instead of sleeping: a request finishes meanwhile
            waits.append(seconds)
            if later:
                writer.submit(later.pop(0))
                assert writer.flush()

        _, position = reader.query_and_position(RecordQuery())
        stream = logs.follow(reader, RecordQuery(only_errors=True), position, interval=0.25, wait=wait)
        batch = next(stream)
        assert [r.request_id for r in batch] == ["req_new"]
        assert waits == [0.25]
        stream.close()
