"""The SQLite record writer: nothing lost in normal operation, bounded and counted when overloaded."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from switchboard.config.model import RecordsConfig
from switchboard.storage.records import RecordQuery, RecordSink
from switchboard.storage.sqlite import SQLiteRecordWriter, open_records_reader
from switchboard.telemetry.record import RequestRecord
from tests.storage.sample_records import make_record

ConfigFactory = Callable[..., RecordsConfig]
ALL = RecordQuery(limit=None)


def stored(path: Path) -> list[RequestRecord]:
    with open_records_reader(path) as reader:
        return reader.query(ALL)


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection, as a second process could."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_is_a_record_sink(records_config: ConfigFactory) -> None:
    sink: RecordSink = SQLiteRecordWriter(records_config())
    assert sink.stats.written == 0


def test_round_trip_keeps_every_field(records_config: ConfigFactory, db_path: Path) -> None:
    records = [
        make_record(0),
        make_record(
            1,
            status=502,
            error_type="UpstreamTimeout",
            error_message="sim/small did not answer in 30s",
            stream=False,
            ttft_ms=None,
            deployment=None,
            caller=None,
            attempts=[],
            metadata={},
        ),
        make_record(2, partial=True, error_type="UpstreamConnectionError", cost_usd=0.0),
    ]
    with SQLiteRecordWriter(records_config()) as writer:
        assert all(writer.submit(r) for r in records)
        assert writer.flush()
        assert writer.query(ALL) == records[::-1]
    assert stored(db_path) == records[::-1]
    assert writer.stats.written == 3
    assert writer.stats.dropped == 0


def test_writes_in_batches(records_config: ConfigFactory) -> None:
    sizes: list[int] = []
    with SQLiteRecordWriter(records_config(batch_size=10), before_write=sizes.append) as writer:
        for i in range(105):
            writer.submit(make_record(i))
        assert writer.flush()
        stats = writer.stats
    assert stats.written == 105
    assert stats.batches == 11
    assert sizes == [10] * 10 + [5]


def test_flushes_on_the_interval_without_being_asked(records_config: ConfigFactory) -> None:
    written = threading.Event()
    sizes: list[int] = []

    def observe(n: int) -> None:
        sizes.append(n)
        written.set()

    with SQLiteRecordWriter(records_config(flush_interval=0.01), before_write=observe) as writer:
        for i in range(3):
            writer.submit(make_record(i))
        assert written.wait(timeout=30)
    assert sizes[0] == 3


def test_drops_and_counts_when_the_writer_is_stalled(records_config: ConfigFactory, db_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def stall(n: int) -> None:
        entered.set()
        assert release.wait(timeout=30)

    writer = SQLiteRecordWriter(records_config(queue_size=2, batch_size=1), before_write=stall)
    writer.start()
    try:
        assert writer.submit(make_record(0))
        assert entered.wait(timeout=30)  # the writer holds record 0 and waits on us
        accepted = [writer.submit(make_record(i)) for i in range(1, 6)]
        assert accepted == [True, True, False, False, False]
        assert writer.stats.dropped == 3
        assert writer.stats.queued == 2
    finally:
        release.set()
        writer.close()
    assert [r.request_id for r in stored(db_path)] == ["req_0002", "req_0001", "req_0000"]
    assert writer.stats.written == 3
    assert writer.stats.dropped == 3


def test_a_failed_batch_is_retried_at_the_next_flush(records_config: ConfigFactory, db_path: Path) -> None:
    with SQLiteRecordWriter(records_config(), busy_timeout=0) as writer:
        with write_lock(db_path):
            for i in range(3):
                writer.submit(make_record(i))
            assert not writer.flush()
            stats = writer.stats
            assert (stats.write_errors, stats.queued, stats.written, stats.dropped) == (1, 3, 0, 0)
            assert stats.last_error is not None
            assert "locked" in stats.last_error
        assert writer.flush()
        stats = writer.stats
    assert (stats.write_errors, stats.queued, stats.written, stats.dropped) == (1, 0, 3, 0)
    assert len(stored(db_path)) == 3


def test_a_batch_that_fails_twice_is_dropped_and_the_writer_goes_on(
    records_config: ConfigFactory, db_path: Path
) -> None:
    with SQLiteRecordWriter(records_config(), busy_timeout=0) as writer:
        with write_lock(db_path):
            for i in range(3):
                writer.submit(make_record(i))
            assert not writer.flush()
            writer.submit(make_record(3))
            assert not writer.flush()  # the retry fails: those 3 are dropped, record 3 waits
            stats = writer.stats
            assert (stats.write_errors, stats.dropped, stats.queued) == (2, 3, 1)
        assert writer.flush()
        assert writer.stats.written == 1
    assert [r.request_id for r in stored(db_path)] == ["req_0003"]


def test_an_exception_in_the_write_does_not_kill_the_thread(records_config: ConfigFactory) -> None:
    failures = [RuntimeError("disk on fire")]

    def flaky(n: int) -> None:
        if failures:
            raise failures.pop()

    with SQLiteRecordWriter(records_config(), before_write=flaky) as writer:
        writer.submit(make_record(0))
        assert not writer.flush()
        assert writer.stats.last_error == "RuntimeError: disk on fire"
        assert writer.flush()
        assert writer.stats.written == 1


def test_a_record_that_cannot_be_serialised_is_dropped_alone(records_config: ConfigFactory) -> None:
    bad = make_record(1, metadata={"oops": object()})
    with SQLiteRecordWriter(records_config()) as writer:
        for record in (make_record(0), bad, make_record(2)):
            writer.submit(record)
        writer.flush()
        stats = writer.stats
        assert [r.request_id for r in writer.query(ALL)] == ["req_0002", "req_0000"]
    assert (stats.written, stats.dropped, stats.write_errors) == (2, 1, 1)


def test_a_reused_request_id_replaces_the_row_instead_of_failing_the_batch(
    records_config: ConfigFactory,
) -> None:
    with SQLiteRecordWriter(records_config()) as writer:
        writer.submit(make_record(0, status=500))
        writer.submit(make_record(0, status=200))
        writer.submit(make_record(1))
        assert writer.flush()
        assert [(r.request_id, r.status) for r in writer.query(ALL)] == [("req_0001", 200), ("req_0000", 200)]


def test_close_writes_what_is_queued_and_records_survive_a_restart(
    records_config: ConfigFactory, db_path: Path
) -> None:
    first = SQLiteRecordWriter(records_config())
    first.start()
    for i in range(5):
        first.submit(make_record(i))
    first.close()
    assert first.stats.written == 5

    with SQLiteRecordWriter(records_config()) as second:
        assert len(second.query(ALL)) == 5
        second.submit(make_record(5))
    assert [r.request_id for r in stored(db_path)] == [f"req_{i:04d}" for i in range(5, -1, -1)]


def test_submit_after_close_is_refused_and_counted(records_config: ConfigFactory) -> None:
    writer = SQLiteRecordWriter(records_config())
    writer.start()
    writer.close()
    assert writer.submit(make_record(0)) is False
    assert writer.stats.dropped == 1
    writer.close()  # idempotent


def test_records_submitted_before_start_are_bounded_and_written(
    records_config: ConfigFactory, db_path: Path
) -> None:
    writer = SQLiteRecordWriter(records_config(queue_size=3))
    assert [writer.submit(make_record(i)) for i in range(4)] == [True, True, True, False]
    writer.start()
    writer.close()
    assert (writer.stats.written, writer.stats.dropped) == (3, 1)
    assert len(stored(db_path)) == 3


def test_closing_a_writer_that_never_started_counts_its_queue_as_dropped(
    records_config: ConfigFactory,
) -> None:
    writer = SQLiteRecordWriter(records_config())
    writer.submit(make_record(0))
    writer.close()
    assert writer.stats == writer.stats.__class__(
        queued=0, written=0, dropped=1, write_errors=0, batches=0, last_error=None
    )


def test_lifecycle_misuse_is_refused(records_config: ConfigFactory) -> None:
    writer = SQLiteRecordWriter(records_config())
    with pytest.raises(RuntimeError, match="start"):
        writer.query(ALL)
    assert writer.flush() is False
    writer.start()
    try:
        with pytest.raises(RuntimeError):
            writer.start()
    finally:
        writer.close()


def test_start_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "records.db"
    with SQLiteRecordWriter(RecordsConfig(path=str(path))) as writer:
        writer.submit(make_record(0))
    assert len(stored(path)) == 1


async def test_submit_does_not_block_the_event_loop(records_config: ConfigFactory) -> None:
    writer = SQLiteRecordWriter(records_config(batch_size=8))
    await asyncio.to_thread(writer.start)  # blocking by design: the app runs it off the loop too
    try:
        # The suite-wide blockbuster guard (tests/conftest.py) fails any blocking call made here.
        assert all(writer.submit(make_record(i)) for i in range(200))
    finally:
        await asyncio.to_thread(writer.close)
    assert writer.stats.written == 200


def test_switching_to_wal_waits_for_another_process_and_gives_up_after_its_timeout(tmp_path: Path) -> None:
    from switchboard.storage.sqlite import enable_wal

    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # as a worker starting at the same moment would hold it
    other = sqlite3.connect(path, isolation_level=None, timeout=0.01)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            enable_wal(other, timeout=0.05)
        holder.execute("COMMIT")
        assert enable_wal(other, timeout=0.05) == "wal"
    finally:
        other.close()
        holder.close()


@pytest.mark.parametrize("flags", [(True, True), (False, False)])
def test_rows_bind_only_types_the_sqlite3_module_takes_without_an_adapter(flags: tuple[bool, bool]) -> None:
    # Any other type (None and bool included) costs the module a failed adapter lookup per value; the
    # booleans read back as booleans all the same.
    from switchboard.storage.sqlite import COLUMNS, _full, _to_row

    stream, partial = flags
    record = make_record(3, stream=stream, partial=partial, error_type="timeout", metadata={"team": "a"})
    mask, values = _to_row(record)
    assert {type(v) for v in values} <= {int, float, str}
    assert len(values) == mask.bit_count()
    full = _full((mask, values))
    assert full[COLUMNS.index("stream")] == int(stream) and full[COLUMNS.index("partial")] == int(partial)


def test_a_rows_mask_names_exactly_the_columns_it_has_values_for() -> None:
    from switchboard.storage.sqlite import COLUMNS, _full, _to_row

    bare = RequestRecord(request_id="r", started_at=1.0, endpoint="chat", dialect="openai")
    filled = {"caller": "u", "public_model": "m", "deployment": "d", "provider": "p", "upstream_model": "um",
              "error_type": "E", "error_message": "boom", "ttft_ms": 2.5, "unsatisfactory": "refusal",
              "router": "auto", "route": {"chosen": "m"}, "key_id": "k", "team": "t", "prompt": "hi",
              "completion": "yo"}
    empty = {c for c, v in zip(COLUMNS, _full(_to_row(bare)), strict=True) if v is None}
    assert empty == set(filled)  # every nullable column, and no other, is left out of a bare record
    for column, value in filled.items():  # each on its own lands in its own column
        got = _full(_to_row(dataclasses.replace(bare, **{column: value})))
        assert {c for c, v in zip(COLUMNS, got, strict=True) if v is None} == set(filled) - {column}
        assert got[COLUMNS.index(column)] == (value if column != "route" else '{"chosen":"m"}')
