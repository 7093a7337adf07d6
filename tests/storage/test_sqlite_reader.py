"""Queries, follow positions and retention over a records database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.config.model import RecordsConfig
from switchboard.storage import sqlite as sqlite_store
from switchboard.storage.records import RecordQuery, RecordReader, RecordStoreError
from switchboard.storage.sqlite import SQLiteRecordReader, SQLiteRecordWriter, open_records_reader
from switchboard.telemetry.record import RequestRecord
from tests.storage.sample_records import make_record

T0 = 1_700_000_000.125  # started_at of make_record(0); record i starts at T0 + i

DATA = [
    make_record(0, public_model="fast", deployment="sim/small", caller="team-a", status=200),
    make_record(
        1, public_model="fast", deployment="sim/tiny", caller="team-b", status=429, error_type="RateLimited"
    ),
    make_record(2, public_model="smart", deployment="sim/large", caller="team-a", status=200, partial=True),
    make_record(
        3, public_model="smart", deployment=None, caller=None, status=503, error_type="NoHealthyDeployment"
    ),
    make_record(4, public_model="fast", deployment="sim/small", caller="team-b", status=200),
    make_record(5, public_model="embed", deployment="sim/embed", caller="team-a", status=400),
    make_record(6, public_model="fast", deployment="sim/small", caller="team-a", status=200),
]


def ids(records: list[RequestRecord]) -> list[int]:
    return [int(r.request_id.removeprefix("req_")) for r in records]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteRecordReader]:
    path = tmp_path_factory.mktemp("reader") / "records.db"
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer:
        for record in DATA:
            writer.submit(record)
    with open_records_reader(path) as reader:
        yield reader


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (RecordQuery(), [6, 5, 4, 3, 2, 1, 0]),
        (RecordQuery(limit=3), [6, 5, 4]),
        (RecordQuery(limit=0), []),
        (RecordQuery(since=T0 + 4), [6, 5, 4]),
        (RecordQuery(until=T0 + 2), [1, 0]),
        (RecordQuery(since=T0 + 2, until=T0 + 4), [3, 2]),
        (RecordQuery(public_model="smart"), [3, 2]),
        (RecordQuery(deployment="sim/small"), [6, 4, 0]),
        (RecordQuery(status=200), [6, 4, 2, 0]),
        (RecordQuery(status=429), [1]),
        (RecordQuery(only_errors=True), [5, 3, 2, 1]),
        (RecordQuery(caller="team-b"), [4, 1]),
        (RecordQuery(request_id="req_0003"), [3]),
        (RecordQuery(request_id="req_9999"), []),
        (RecordQuery(public_model="fast", caller="team-a", since=T0 + 1), [6]),
        (RecordQuery(public_model="fast", only_errors=True), [1]),
    ],
)
def test_query_filters(populated: SQLiteRecordReader, q: RecordQuery, expected: list[int]) -> None:
    assert ids(populated.query(q)) == expected


def test_query_returns_whole_records(populated: SQLiteRecordReader) -> None:
    assert populated.query(RecordQuery(request_id="req_0002")) == [DATA[2]]


@settings(max_examples=150, deadline=None)
@given(
    since=st.none() | st.floats(T0 - 1, T0 + 8),
    until=st.none() | st.floats(T0 - 1, T0 + 8),
    public_model=st.none() | st.sampled_from(["fast", "smart", "embed", "other"]),
    deployment=st.none() | st.sampled_from(["sim/small", "sim/tiny", "sim/embed"]),
    status=st.none() | st.sampled_from([200, 400, 429, 503]),
    only_errors=st.booleans(),
    caller=st.none() | st.sampled_from(["team-a", "team-b"]),
    limit=st.none() | st.integers(0, 8),
)
def test_sql_agrees_with_record_query_matches(
    populated: SQLiteRecordReader,
    since: float | None,
    until: float | None,
    public_model: str | None,
    deployment: str | None,
    status: int | None,
    only_errors: bool,
    caller: str | None,
    limit: int | None,
) -> None:
    q = RecordQuery(since, until, public_model, deployment, status, only_errors, caller, None, limit)
    expected = [r for r in sorted(DATA, key=lambda r: r.started_at, reverse=True) if q.matches(r)]
    assert populated.query(q) == expected[:limit]


def test_reader_is_a_record_reader(populated: SQLiteRecordReader) -> None:
    reader: RecordReader = populated
    assert reader.query(RecordQuery(limit=1))


def test_the_cli_reader_cannot_write(populated: SQLiteRecordReader) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        populated.delete_older_than(T0 + 100)


def test_retention_deletes_only_older_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "_DELETE_CHUNK", 2)  # several retention transactions
    with SQLiteRecordWriter(RecordsConfig(path=str(tmp_path / "r.db"))) as writer:
        for record in DATA:
            writer.submit(record)
        assert writer.flush()
        assert writer.delete_older_than(T0 + 5) == 5
        assert ids(writer.query(RecordQuery())) == [6, 5]
        assert writer.delete_older_than(T0 + 5) == 0


def test_query_after_follows_write_order(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer, open_records_reader(path) as reader:
        writer.submit(make_record(10))
        assert writer.flush()
        first, position = reader.query_and_position(RecordQuery())
        assert ids(first) == [10]
        assert reader.query_after(position, RecordQuery()) == ([], position)

        # A long request that started before the last one but finished after it is still new.
        writer.submit(make_record(3))
        writer.submit(make_record(11, status=500))
        writer.submit(make_record(12))
        assert writer.flush()
        errors, _ = reader.query_after(position, RecordQuery(only_errors=True))
        assert ids(errors) == [11]
        page, middle = reader.query_after(position, RecordQuery(limit=2))
        assert ids(page) == [3, 11]
        rest, end = reader.query_after(middle, RecordQuery(limit=2))
        assert ids(rest) == [12]
        assert reader.query_after(end, RecordQuery()) == ([], end)


def test_opening_a_missing_database_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no records database"):
        open_records_reader(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_opening_something_else_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not sqlite " * 100)
    with pytest.raises(RecordStoreError, match="not a Switchboard records database"):
        open_records_reader(text)

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RecordStoreError, match="no requests table"):
        open_records_reader(other)


def test_record_query_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        RecordQuery(limit=-1)
