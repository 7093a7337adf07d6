"""The records retention job: records older than ``records.retention_days`` are deleted, newer ones kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.storage.records import RecordQuery
from switchboard.storage.sqlite import SQLiteRecordWriter
from tests.storage.sample_records import make_record


def test_the_retention_job_deletes_only_what_is_older_than_the_retention(tmp_path: Path) -> None:
    cfg = parse_config({"records": {"path": str(tmp_path / "r.db"), "retention_days": 7}}, env={})
    app = create_app(cfg)
    writer = app.records
    assert isinstance(writer, SQLiteRecordWriter)
    writer.start()
    try:
        now = time.time()
        for i, age_days in enumerate((30, 8, 6.9, 0)):
            writer.submit(make_record(i, started_at=now - age_days * 86400))
        assert writer.flush()
        assert asyncio.run(app.apply_retention()) == 2
        assert sorted(r.request_id for r in writer.query(RecordQuery(limit=None))) == ["req_0002", "req_0003"]
    finally:
        writer.close()


def test_without_a_retention_nothing_is_deleted(tmp_path: Path) -> None:
    app = create_app(parse_config({"records": {"path": str(tmp_path / "r.db")}}, env={}))
    assert asyncio.run(app.apply_retention()) == 0
