"""Erasure of one subject's records: stored rows go, and so do rows still queued in any writer.

Two writers on one store stand for two gateway processes: the erasure is made through one of them while
the other holds queued records of the same subject, and none of those records reach the store. Runs on
SQLite always and on PostgreSQL when the test database is there (see test_postgres.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.config.model import RecordsConfig
from switchboard.storage.records import RecordQuery, subject_digest
from switchboard.storage.sqlite import SQLiteRecordWriter
from tests.storage.sample_records import make_record
from tests.storage.test_postgres import admin, dsn, schema  # noqa: F401  (fixtures for the postgres case)

ALL = RecordQuery(limit=None)
Factory = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgres"])
def make_writer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    if request.param == "sqlite":
        path = tmp_path / "records.db"

        def sqlite(before_write: Callable[[int], None] | None = None) -> SQLiteRecordWriter:
            cfg = RecordsConfig.model_validate({"path": str(path), "flush_interval": 3600.0})
            return SQLiteRecordWriter(cfg, before_write=before_write)

        yield sqlite
        return
    from switchboard.storage.postgres import PostgresRecordWriter

    url, name = request.getfixturevalue("dsn"), request.getfixturevalue("schema")

    def postgres(before_write: Callable[[int], None] | None = None) -> PostgresRecordWriter:
        return PostgresRecordWriter(url, schema=name, flush_interval=3600.0, before_write=before_write)

    yield postgres


def now_record(i: int, **overrides: object) -> Any:
    return make_record(i, started_at=time.time() - 1.0, **overrides)


def test_erasing_a_user_deletes_stored_records_and_keeps_everyone_elses(make_writer: Factory) -> None:
    with make_writer() as writer:
        for i in range(6):
            writer.submit(now_record(i, caller="alice" if i % 2 else "bob", key_id=f"k{i % 3}"))
        assert writer.flush()
        assert writer.erase("caller", "alice") == 3
        left = writer.query(ALL)
        assert sorted(r.caller for r in left) == ["bob", "bob", "bob"]
        assert writer.erase("key_id", "k0") == 1
        assert sorted(r.key_id for r in writer.query(ALL)) == ["k1", "k2"]


def test_records_queued_in_another_writer_never_reach_the_store(make_writer: Factory) -> None:
    entered, release = threading.Event(), threading.Event()

    def stall(n: int) -> None:
        entered.set()
        assert release.wait(timeout=30)

    with make_writer() as eraser, make_writer(before_write=stall) as other:
        other.submit(now_record(1, caller="alice"))
        other.submit(now_record(2, caller="carol"))
        flushed: list[bool] = []
        t = threading.Thread(target=lambda: flushed.append(other.flush()))
        t.start()
        assert entered.wait(timeout=30)  # the other writer has taken its batch and waits on us
        assert eraser.erase("caller", "alice") == 0
        release.set()
        t.join(timeout=30)
        assert flushed == [True]
        assert [r.caller for r in eraser.query(ALL)] == ["carol"]
        # A request that starts after the erasure is new data and is kept.
        other.submit(make_record(3, caller="alice", started_at=time.time() + 1))
        assert other.flush()
        assert sorted(r.request_id for r in eraser.query(ALL)) == ["req_0002", "req_0003"]


def test_the_ledger_names_subjects_only_by_digest(make_writer: Factory) -> None:
    with make_writer() as writer:
        writer.erase("caller", "alice@example.com")
        with pytest.raises(ValueError, match="erased by"):
            writer.erase("deployment", "x")
    assert subject_digest("alice@example.com") != "alice@example.com"
