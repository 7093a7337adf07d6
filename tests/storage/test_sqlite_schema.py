"""The records schema: one column per record field, created by recorded, idempotent migrations."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.config.model import RecordsConfig
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import COLUMNS, MIGRATIONS, Migration, SQLiteRecordWriter, apply_migrations
from switchboard.telemetry.record import RequestRecord


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    yield connection
    connection.close()


def migration_names(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


def test_columns_follow_the_record_fields() -> None:
    # A new RequestRecord field needs a new migration and a place in COLUMNS.
    assert tuple(f.name for f in dataclasses.fields(RequestRecord)) == COLUMNS


def test_the_table_has_exactly_those_columns(conn: sqlite3.Connection) -> None:
    apply_migrations(conn)
    table = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
    # Later migrations add columns at the end of the table; the insert names every column.
    assert sorted(table) == sorted(COLUMNS) and len(table) == len(COLUMNS)
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(requests)")}
    assert {
        "requests_started_at",
        "requests_public_model",
        "requests_deployment",
        "requests_status",
        "requests_caller",
    } <= indexes


def test_migrations_are_recorded_and_idempotent(conn: sqlite3.Connection) -> None:
    names = [m.name for m in MIGRATIONS]
    assert names == sorted(names)
    assert apply_migrations(conn) == names
    assert apply_migrations(conn) == []
    assert migration_names(conn) == names


def test_only_new_migrations_run(conn: sqlite3.Connection) -> None:
    apply_migrations(conn)
    later = Migration("9999_add_region", ("ALTER TABLE requests ADD COLUMN region TEXT",))
    assert apply_migrations(conn, (*MIGRATIONS, later)) == ["9999_add_region"]
    assert apply_migrations(conn, (*MIGRATIONS, later)) == []
    assert migration_names(conn)[-1] == "9999_add_region"


def test_a_failing_migration_leaves_nothing_behind(conn: sqlite3.Connection) -> None:
    broken = Migration("0002_broken", ("CREATE TABLE extra (x)", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        apply_migrations(conn, (*MIGRATIONS, broken))
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "extra" not in tables
    assert "requests" not in tables  # one transaction: the good migration is rolled back too


def test_starting_twice_migrates_once_and_uses_wal(tmp_path: Path) -> None:
    config = RecordsConfig(path=str(tmp_path / "r.db"))
    for _ in range(2):
        with SQLiteRecordWriter(config):
            pass
    conn = sqlite3.connect(config.path)
    try:
        assert migration_names(conn) == [m.name for m in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("count", [0, 1, 3, 255, 256, 300, 777])
def test_rows_go_in_a_few_multi_row_statements_and_a_reused_id_keeps_the_last(conn: sqlite3.Connection,
                                                                             count: int) -> None:
    from switchboard.storage.sqlite import _insert, _to_row

    apply_migrations(conn)
    records = [RequestRecord(request_id=f"r{i}", started_at=float(i), endpoint="chat", dialect="openai",
                             input_tokens=i) for i in range(count)]
    rows = [_to_row(r) for r in records]
    if count:
        rows.append(_to_row(dataclasses.replace(records[0], input_tokens=-1)))  # the same id again, later
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    _insert(conn, rows)
    conn.set_trace_callback(None)
    # Pieces of 256 rows, then the rest in powers of two (the reused id's first row is not written at all).
    assert len(statements) == count // 256 + bin(count % 256).count("1")
    stored = dict(conn.execute("SELECT request_id, input_tokens FROM requests").fetchall())
    assert stored == {r.request_id: (-1 if r.request_id == "r0" else r.input_tokens) for r in records}


def test_rows_with_different_empty_columns_go_in_by_group_and_read_back_whole(conn: sqlite3.Connection) -> None:
    from switchboard.storage.sqlite import SQLiteRecordReader, _insert, _to_row

    apply_migrations(conn)
    plain = [RequestRecord(request_id=f"p{i}", started_at=float(i), endpoint="chat", dialect="openai")
             for i in range(5)]
    full = [RequestRecord(request_id=f"f{i}", started_at=10.0 + i, endpoint="chat", dialect="openai",
                          caller="u1", error_type="upstream", error_message="boom", status=502, ttft_ms=1.5,
                          router="auto", route={"chosen": "m"}, key_id="k", team="t", prompt="hi",
                          completion="yo", unsatisfactory="refusal", metadata={"a": "b"}) for i in range(3)]
    mixed = [r for pair in zip(plain, full, strict=False) for r in pair] + plain[3:]
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    _insert(conn, [_to_row(r) for r in mixed])
    conn.set_trace_callback(None)
    assert len(statements) == 2 + 2  # the plain rows in pieces of 4 + 1, the full ones of 2 + 1
    assert sum("caller" in s for s in statements) == 2  # empty columns are not even named
    conn.commit()
    reader = SQLiteRecordReader(conn.execute("PRAGMA database_list").fetchone()[2])
    try:
        got = {r.request_id: r for r in reader.query(RecordQuery(limit=None))}
    finally:
        reader.close()
    assert got == {r.request_id: r for r in mixed}


@pytest.mark.parametrize(("query", "index"), [
    (RecordQuery(status=429), "requests_status"),
    (RecordQuery(only_errors=True), "requests_errors"),
    (RecordQuery(caller="u1"), "requests_caller"),
    (RecordQuery(router="auto"), "requests_router"),
    (RecordQuery(public_model="m"), "requests_public_model"),
])
def test_filters_on_usually_empty_columns_use_their_partial_indexes(conn: sqlite3.Connection, query: RecordQuery,
                                                                     index: str) -> None:
    from switchboard.storage.records import where_clauses

    apply_migrations(conn)
    clauses, params = where_clauses(query, "?")
    plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM requests WHERE {' AND '.join(clauses)} "
                        "ORDER BY started_at DESC LIMIT 50", params).fetchall()
    assert any(re.search(rf"USING (COVERING )?INDEX {index}\b", row[-1]) for row in plan), plan
    erase = conn.execute("EXPLAIN QUERY PLAN DELETE FROM requests WHERE key_id = ? AND started_at <= ?",
                         ("k", 1.0)).fetchall()
    assert any(re.search(r"USING INDEX requests_key_id\b", row[-1]) for row in erase), erase

