"""The Postgres record store: the SQLite store's behaviour, plus riding out database outages.

Needs a PostgreSQL server: ``SWITCHBOARD_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Without one these tests skip, and fail under
``CI=true``. Every test works in a schema of its own (``sb_test_<session>_<n>``), dropped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.storage.records import RecordQuery, RecordReader, RecordSink, RecordStoreError
from switchboard.storage.sqlite import COLUMNS, Migration
from switchboard.telemetry.record import Attempt, RequestRecord
from tests.storage.sample_records import make_record

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from switchboard.storage import postgres as pg_store
    from switchboard.storage.postgres import (
        MIGRATIONS,
        PostgresRecordReader,
        PostgresRecordWriter,
        apply_migrations,
        open_postgres_reader,
    )
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("psycopg is not installed: pip install 'switchboard[postgres]'", allow_module_level=True)

DSN_ENV = "SWITCHBOARD_TEST_POSTGRES_DSN"
SESSION_PREFIX = f"sb_test_{secrets.token_hex(4)}"
ALL = RecordQuery(limit=None)
T0 = 1_700_000_000.125  # started_at of make_record(0); record i starts at T0 + i
_schema_numbers = itertools.count()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to the test database, or a skip (a failure under CI=true) when there is none."""
    dsn = os.environ.get(DSN_ENV, "postgresql://postgres@127.0.0.1:5432/test")
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {dsn} (set {DSN_ENV}): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with conn:
        yield conn
        # Whatever a failed teardown left behind in this session.
        leftovers = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (SESSION_PREFIX,)
        ).fetchall()
        for (name,) in leftovers:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def dsn(admin: psycopg.Connection[tuple[object, ...]]) -> str:
    return os.environ.get(DSN_ENV, "postgresql://postgres@127.0.0.1:5432/test")


def _new_schema(admin: psycopg.Connection[tuple[object, ...]], *, create: bool) -> str:
    name = f"{SESSION_PREFIX}_{next(_schema_numbers)}"
    if create:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


def _drop_schema(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def schema(admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A fresh, empty schema for one test."""
    name = _new_schema(admin, create=True)
    yield name
    _drop_schema(admin, name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


WriterFactory = Callable[..., PostgresRecordWriter]


@pytest.fixture
def make_writer(dsn: str, schema: str) -> WriterFactory:
    def build(**overrides: object) -> PostgresRecordWriter:
        values: dict[str, object] = {"dsn": dsn, "schema": schema, "flush_interval": 3600.0}
        values.update(overrides)
        return PostgresRecordWriter(**values)  # type: ignore[arg-type]

    return build


def ids(records: list[RequestRecord]) -> list[int]:
    return [int(r.request_id.removeprefix("req_")) for r in records]


def stored(dsn: str, schema: str) -> list[RequestRecord]:
    with open_postgres_reader(dsn, schema=schema) as reader:
        return reader.query(ALL)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes: for what the writer does unasked."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.005)
    return True


# -- the schema ---------------------------------------------------------------------------------


def migration_names(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[str]:
    query = sql.SQL("SELECT name FROM {}.schema_migrations ORDER BY name").format(sql.Identifier(schema))
    return [str(name) for (name,) in conn.execute(query)]


def test_same_migration_names_as_sqlite() -> None:
    from switchboard.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

    assert [m.name for m in MIGRATIONS] == [m.name for m in SQLITE_MIGRATIONS]


def test_the_table_has_one_column_per_record_field(
    conn: psycopg.Connection[tuple[object, ...]], schema: str
) -> None:
    apply_migrations(conn, schema)
    columns = {
        str(name): str(kind)
        for name, kind in conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'requests'",
            (schema,),
        )
    }
    assert set(columns) == {*COLUMNS, "position"}
    assert tuple(f.name for f in dataclasses.fields(RequestRecord)) == COLUMNS
    assert {columns[c] for c in ("attempts", "metadata", "route")} == {"jsonb"}
    assert (columns["started_at"], columns["stream"], columns["position"]) == ("double precision", "boolean", "bigint")
    # The batch insert casts each column to its type.
    assert {c: pg_store._TYPES.get(c, "text") for c in COLUMNS} == {c: columns[c] for c in COLUMNS}
    indexes = {name for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
    assert {
        "requests_position",
        "requests_started_at",
        "requests_public_model",
        "requests_deployment",
        "requests_status",
        "requests_caller",
        "requests_router",
        "requests_errors",
        "requests_key_id",
    } <= indexes


def test_migrations_create_the_schema_and_are_recorded_and_idempotent(
    conn: psycopg.Connection[tuple[object, ...]], admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    schema = _new_schema(admin, create=False)
    try:
        names = [m.name for m in MIGRATIONS]
        assert apply_migrations(conn, schema) == names
        assert apply_migrations(conn, schema) == []
        assert migration_names(conn, schema) == names
    finally:
        _drop_schema(admin, schema)


@pytest.mark.parametrize(("query", "index"), [
    (RecordQuery(status=429), "requests_status"),
    (RecordQuery(only_errors=True), "requests_errors"),
    (RecordQuery(caller="u1"), "requests_caller"),
    (RecordQuery(router="auto"), "requests_router"),
])
def test_filters_on_usually_empty_columns_use_their_partial_indexes(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, query: RecordQuery, index: str
) -> None:
    from switchboard.storage.records import where_clauses

    apply_migrations(conn, schema)
    clauses, params = where_clauses(query, "%s")
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")  # an empty table would be scanned otherwise
        plan = " ".join(str(r[0]) for r in conn.execute(
            f'EXPLAIN SELECT * FROM "{schema}".requests WHERE {" AND ".join(clauses)} '
            "ORDER BY started_at DESC LIMIT 50", params))
        erase = " ".join(str(r[0]) for r in conn.execute(
            f'EXPLAIN DELETE FROM "{schema}".requests WHERE key_id = %s AND started_at <= %s', ("k", 1.0)))
    assert f" {index} " in plan, plan
    assert " requests_key_id " in erase, erase


def test_only_new_migrations_run(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    apply_migrations(conn, schema)
    later = Migration("9999_add_region", ("ALTER TABLE {schema}.requests ADD COLUMN region TEXT",))
    assert apply_migrations(conn, schema, (*MIGRATIONS, later)) == ["9999_add_region"]
    assert apply_migrations(conn, schema, (*MIGRATIONS, later)) == []
    assert migration_names(conn, schema)[-1] == "9999_add_region"


def test_a_failing_migration_leaves_nothing_behind(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    broken = Migration("0004_broken", ("CREATE TABLE {schema}.extra (x int)", "THIS IS NOT SQL"))
    with pytest.raises(psycopg.errors.SyntaxError):
        apply_migrations(conn, schema, (*MIGRATIONS, broken))
    tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
    assert tables == set()  # one transaction: the good migrations are rolled back too


def test_concurrent_migrations_apply_once(dsn: str, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    schema = _new_schema(admin, create=False)  # racing on creating the schema too
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as connection:
                barrier.wait(timeout=10)
                results.append(apply_migrations(connection, schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert sorted(results, key=len) == [[], [], [], [m.name for m in MIGRATIONS]]
    finally:
        _drop_schema(admin, schema)


def test_starting_twice_migrates_once(make_writer: WriterFactory, dsn: str, schema: str) -> None:
    for _ in range(2):
        with make_writer():
            pass
    with psycopg.connect(dsn) as connection:
        assert migration_names(connection, schema) == [m.name for m in MIGRATIONS]


# -- the writer ---------------------------------------------------------------------------------


def full_record(i: int, **overrides: object) -> RequestRecord:
    values: dict[str, object] = {
        "attempts": [
            Attempt(
                "sim/tiny",
                "sim-openai",
                "unsatisfactory",
                12.5,
                error="empty answer",
                http_status=200,
                reason="empty",
                model="fast",
                retry=1,
                hedge=True,
                cost_usd=0.00001,
                input_price=0.15,
            ),
            Attempt("sim/small", "sim-openai", "ok", 340.25),
        ],
        "unsatisfactory": "empty",
        "router": "auto",
        "route": {"stages": [{"name": "rules", "scores": {"fast": 0.25, "smart": 0.75}}], "chosen": "fast"},
    }
    values.update(overrides)
    return make_record(i, **values)


def test_is_a_record_sink(make_writer: WriterFactory) -> None:
    sink: RecordSink = make_writer()
    assert sink.stats.written == 0


def test_round_trip_keeps_every_field(make_writer: WriterFactory, dsn: str, schema: str) -> None:
    records = [
        full_record(0),
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
        make_record(2, partial=True, error_type="UpstreamConnectionError", cost_usd=0.0, latency_ms=1e-300),
    ]
    with make_writer() as writer:
        assert all(writer.submit(r) for r in records)
        assert writer.flush()
        assert writer.query(ALL) == records[::-1]
    assert stored(dsn, schema) == records[::-1]
    assert (writer.stats.written, writer.stats.dropped, writer.stats.batches) == (3, 0, 1)


def test_writes_in_batches(make_writer: WriterFactory) -> None:
    sizes: list[int] = []
    with make_writer(batch_size=10, before_write=sizes.append) as writer:
        for i in range(105):
            writer.submit(make_record(i))
        assert writer.flush()
        stats = writer.stats
    assert (stats.written, stats.batches) == (105, 11)
    assert sizes == [10] * 10 + [5]


def test_flushes_on_the_interval_without_being_asked(make_writer: WriterFactory) -> None:
    written = threading.Event()
    sizes: list[int] = []

    def observe(n: int) -> None:
        sizes.append(n)
        written.set()

    with make_writer(flush_interval=0.01, before_write=observe) as writer:
        for i in range(3):
            writer.submit(make_record(i))
        assert written.wait(timeout=30)
    assert sizes[0] == 3


def test_drops_and_counts_when_the_writer_is_stalled(make_writer: WriterFactory, dsn: str, schema: str) -> None:
    entered, release = threading.Event(), threading.Event()

    def stall(n: int) -> None:
        entered.set()
        assert release.wait(timeout=30)

    writer = make_writer(queue_size=2, batch_size=1, before_write=stall)
    writer.start()
    try:
        assert writer.submit(make_record(0))
        assert entered.wait(timeout=30)  # the writer holds record 0 and waits on us
        # Record 0, taken but not written, still counts against the bound.
        accepted = [writer.submit(make_record(i)) for i in range(1, 6)]
        assert accepted == [True, False, False, False, False]
        assert (writer.stats.dropped, writer.stats.queued) == (4, 2)
    finally:
        release.set()
        writer.close()
    assert ids(stored(dsn, schema)) == [1, 0]
    assert (writer.stats.written, writer.stats.dropped) == (2, 4)


def test_a_reused_request_id_replaces_the_row(make_writer: WriterFactory) -> None:
    with make_writer() as writer:
        writer.submit(make_record(0, status=500))
        writer.submit(make_record(0, status=200))
        writer.submit(make_record(1))
        assert writer.flush()
        assert [(r.request_id, r.status) for r in writer.query(ALL)] == [("req_0001", 200), ("req_0000", 200)]


def test_a_record_that_cannot_be_serialised_is_dropped_alone(make_writer: WriterFactory) -> None:
    bad = make_record(1, metadata={"oops": object()})
    with make_writer() as writer:
        for record in (make_record(0), bad, make_record(2)):
            writer.submit(record)
        assert writer.flush()
        stats = writer.stats
        assert ids(writer.query(ALL)) == [2, 0]
    assert (stats.written, stats.dropped, stats.write_errors) == (2, 1, 1)


def test_records_the_database_refuses_are_dropped_alone(make_writer: WriterFactory) -> None:
    unadaptable = make_record(1, caller=object())  # psycopg refuses it before sending
    too_big = make_record(3, input_tokens=2**70)  # the server refuses it: beyond BIGINT
    with make_writer() as writer:
        for record in (make_record(0), unadaptable, make_record(2), too_big, make_record(4)):
            writer.submit(record)
        assert writer.flush()
        stats = writer.stats
        assert ids(writer.query(ALL)) == [4, 2, 0]
    assert (stats.written, stats.dropped, stats.queued) == (3, 2, 0)
    assert stats.last_error is not None
    assert "out of range" in stats.last_error


def test_a_table_dropped_under_the_writer_keeps_the_records_queued(
    make_writer: WriterFactory, conn: psycopg.Connection[tuple[object, ...]], schema: str
) -> None:
    with make_writer() as writer:
        conn.execute(sql.SQL("DROP TABLE {}.requests").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DELETE FROM {}.schema_migrations").format(sql.Identifier(schema)))
        writer.submit(make_record(0))
        assert not writer.flush()  # not the records' fault: they wait for the operator
        assert (writer.stats.queued, writer.stats.dropped) == (1, 0)
        assert "UndefinedTable" in str(writer.stats.last_error)
        apply_migrations(conn, schema)
        assert writer.flush()
        assert ids(writer.query(ALL)) == [0]


@pytest.mark.parametrize("others", [0, 3], ids=["alone", "in-a-batch"])
def test_nul_characters_are_replaced_rather_than_refused(make_writer: WriterFactory, others: int) -> None:
    record = full_record(
        0,
        error_message="bad\x00byte",
        metadata={"k\x00": "v\x00"},
        attempts=[Attempt("sim/small", "sim-openai", "error", 1.0, error="nul\x00here")],
    )
    with make_writer() as writer:
        writer.submit(record)
        for i in range(others):
            writer.submit(full_record(i + 1, prompt="clean"))
        assert writer.flush()
        *rest, back = writer.query(ALL)
    assert [r.prompt for r in rest] == ["clean"] * others
    assert back.error_message == "bad\ufffdbyte"
    assert back.metadata == {"k\ufffd": "v\ufffd"}
    assert back.attempts[0].error == "nul\ufffdhere"
    assert writer.stats.dropped == 0


def test_close_writes_what_is_queued_and_records_survive_a_restart(
    make_writer: WriterFactory, dsn: str, schema: str
) -> None:
    first = make_writer()
    first.start()
    for i in range(5):
        first.submit(make_record(i))
    first.close()
    assert first.stats.written == 5

    with make_writer() as second:
        assert len(second.query(ALL)) == 5
        second.submit(make_record(5))
    assert ids(stored(dsn, schema)) == [5, 4, 3, 2, 1, 0]


def test_submit_after_close_is_refused_and_counted(make_writer: WriterFactory) -> None:
    writer = make_writer()
    writer.start()
    writer.close()
    assert writer.submit(make_record(0)) is False
    assert writer.stats.dropped == 1
    writer.close()  # idempotent


def test_records_submitted_before_start_are_bounded_and_written(
    make_writer: WriterFactory, dsn: str, schema: str
) -> None:
    writer = make_writer(queue_size=3)
    assert [writer.submit(make_record(i)) for i in range(4)] == [True, True, True, False]
    writer.start()
    writer.close()
    assert (writer.stats.written, writer.stats.dropped) == (3, 1)
    assert len(stored(dsn, schema)) == 3


def test_closing_a_writer_that_never_started_counts_its_queue_as_dropped(make_writer: WriterFactory) -> None:
    writer = make_writer()
    writer.submit(make_record(0))
    writer.close()
    assert (writer.stats.queued, writer.stats.dropped) == (0, 1)


def test_lifecycle_misuse_is_refused(make_writer: WriterFactory) -> None:
    writer = make_writer()
    with pytest.raises(RuntimeError, match="start"):
        writer.query(ALL)
    assert writer.flush() is False
    writer.start()
    try:
        with pytest.raises(RuntimeError):
            writer.start()
    finally:
        writer.close()
    with pytest.raises(ValueError, match="queue_size"):
        make_writer(queue_size=0)


def test_a_schema_the_user_may_not_create_fails_the_start(make_writer: WriterFactory) -> None:
    with pytest.raises(RecordStoreError, match="cannot migrate"):
        make_writer(schema="pg_catalog").start()  # exists, but its tables cannot be created


async def test_submit_does_not_block_the_event_loop(make_writer: WriterFactory) -> None:
    writer = make_writer(batch_size=8)
    await asyncio.to_thread(writer.start)  # blocking by design: the app runs it off the loop too
    try:
        # The suite-wide blockbuster guard (tests/conftest.py) fails any blocking call made here.
        assert all(writer.submit(make_record(i)) for i in range(200))
    finally:
        await asyncio.to_thread(writer.close)
    assert writer.stats.written == 200


def test_two_writers_on_one_schema_and_a_follower_misses_nothing(make_writer: WriterFactory, dsn: str) -> None:
    writers = [make_writer(batch_size=7, flush_interval=0.001) for _ in range(2)]
    errors: list[BaseException] = []

    def produce(writer: PostgresRecordWriter, first: int) -> None:
        try:
            for i in range(first, first + 300):
                writer.submit(make_record(i))
            assert writer.flush(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    for writer in writers:
        writer.start()
    reader = PostgresRecordReader(dsn, schema=writers[0].schema)
    seen: list[int] = []
    try:
        _, position = reader.query_and_position(ALL)
        threads = [threading.Thread(target=produce, args=(w, n * 1000)) for n, w in enumerate(writers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        batch: list[RequestRecord] = []
        while (batch or any(t.is_alive() for t in threads)) and time.monotonic() < deadline:
            batch, position = reader.query_after(position, RecordQuery(limit=50))
            seen += ids(batch)
        for thread in threads:
            thread.join(timeout=30)
        seen += ids(reader.query_after(position, ALL)[0])
    finally:
        for writer in writers:
            writer.close()
        reader.close()
    assert errors == []
    assert sorted(seen) == [*range(300), *range(1000, 1300)]  # each exactly once
    assert sum(w.stats.written for w in writers) == 600


# -- reading ------------------------------------------------------------------------------------

DATA = [
    make_record(0, public_model="fast", deployment="sim/small", caller="team-a", status=200),
    make_record(1, public_model="fast", deployment="sim/tiny", caller="team-b", status=429, router="auto"),
    make_record(2, public_model="smart", deployment="sim/large", caller="team-a", status=200, partial=True),
    make_record(3, public_model="smart", deployment=None, caller=None, status=503, router="cheap"),
    make_record(4, public_model="fast", deployment="sim/small", caller="team-b", status=200, router="auto"),
    make_record(5, public_model="embed", deployment="sim/embed", caller="team-a", status=400),
    make_record(6, public_model="fast", deployment="sim/small", caller="team-a", status=200),
]


@pytest.fixture(scope="module")
def populated(dsn: str, admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[PostgresRecordReader]:
    schema = _new_schema(admin, create=False)
    try:
        with PostgresRecordWriter(dsn, schema=schema) as writer:
            for record in DATA:
                writer.submit(record)
        with open_postgres_reader(dsn, schema=schema) as reader:
            yield reader
    finally:
        _drop_schema(admin, schema)


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
        (RecordQuery(only_errors=True), [5, 3, 2, 1]),
        (RecordQuery(caller="team-b"), [4, 1]),
        (RecordQuery(request_id="req_0003"), [3]),
        (RecordQuery(request_id="req_9999"), []),
        (RecordQuery(router="auto"), [4, 1]),
        (RecordQuery(public_model="fast", caller="team-a", since=T0 + 1), [6]),
        (RecordQuery(public_model="fast", only_errors=True), [1]),
    ],
)
def test_query_filters(populated: PostgresRecordReader, q: RecordQuery, expected: list[int]) -> None:
    assert ids(populated.query(q)) == expected


def test_query_returns_whole_records(populated: PostgresRecordReader) -> None:
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
    router=st.none() | st.sampled_from(["auto", "cheap"]),
    limit=st.none() | st.integers(0, 8),
)
def test_sql_agrees_with_record_query_matches(
    populated: PostgresRecordReader,
    since: float | None,
    until: float | None,
    public_model: str | None,
    deployment: str | None,
    status: int | None,
    only_errors: bool,
    caller: str | None,
    router: str | None,
    limit: int | None,
) -> None:
    q = RecordQuery(since, until, public_model, deployment, status, only_errors, caller, None, router, limit)
    expected = [r for r in sorted(DATA, key=lambda r: r.started_at, reverse=True) if q.matches(r)]
    assert populated.query(q) == expected[:limit]


def test_reader_is_a_record_reader(populated: PostgresRecordReader) -> None:
    reader: RecordReader = populated
    assert reader.query(RecordQuery(limit=1))


def test_the_cli_reader_cannot_write(populated: PostgresRecordReader) -> None:
    with pytest.raises(RecordStoreError, match="read-only"):
        populated.delete_older_than(T0 + 100)
    assert len(populated.query(ALL)) == len(DATA)


def test_retention_deletes_only_older_records(make_writer: WriterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "_DELETE_CHUNK", 2)  # several retention statements
    with make_writer() as writer:
        for record in DATA:
            writer.submit(record)
        assert writer.flush()
        assert writer.delete_older_than(T0 + 5) == 5
        assert ids(writer.query(ALL)) == [6, 5]
        assert writer.delete_older_than(T0 + 5) == 0


def test_query_after_follows_write_order(make_writer: WriterFactory, dsn: str, schema: str) -> None:
    with make_writer() as writer, open_postgres_reader(dsn, schema=schema) as reader:
        writer.submit(make_record(10))
        assert writer.flush()
        first, position = reader.query_and_position(ALL)
        assert ids(first) == [10]
        assert reader.query_after(position, ALL) == ([], position)

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
        assert reader.query_after(end, ALL) == ([], end)

        # A replaced record is new again; retention never moves the position back.
        writer.submit(make_record(10, status=200))
        assert writer.flush()
        replaced, end = reader.query_after(end, ALL)
        assert ids(replaced) == [10]
        assert writer.delete_older_than(T0 + 100) == 4
        assert reader.query_after(end, ALL) == ([], end)


def test_a_batch_waiting_for_an_erasure_drops_what_it_erased(make_writer: WriterFactory, dsn: str, schema: str,
                                                              conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """A batch is one statement whose gate takes the writers' lock and only then reads the erasure ledger, in a
    snapshot of its own: an erasure that commits while the batch waits for the lock still drops its subject's
    records from that batch (a check in the statement's own snapshot, taken before the wait, would miss it)."""
    now = time.time()
    with make_writer() as writer, make_writer() as eraser:
        writer.submit(make_record(1, caller="alice", started_at=now - 2))
        assert writer.flush()
        writer.submit(make_record(2, caller="alice", started_at=now - 1))
        writer.submit(make_record(3, caller="carol", started_at=now - 1))

        def waiting(query: str) -> bool:
            return conn.execute(query).fetchone() is not None

        erased: list[int] = []
        flushed: list[bool] = []
        with psycopg.connect(dsn) as blocker:
            # The erasure takes the writers' lock, enters the ledger entry, then waits on this row lock.
            blocker.execute(sql.SQL("SELECT 1 FROM {}.requests WHERE request_id = 'req_0001' FOR UPDATE")
                            .format(sql.Identifier(schema)))
            erasing = threading.Thread(target=lambda: erased.append(eraser.erase("caller", "alice", at=now)))
            erasing.start()
            assert wait_until(lambda: waiting("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                              " AND starts_with(query, 'DELETE')"))
            # The writer's batch now waits for the writers' lock, which the erasure holds.
            flushing = threading.Thread(target=lambda: flushed.append(writer.flush(timeout=30)))
            flushing.start()
            assert wait_until(lambda: waiting("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
            blocker.rollback()
        erasing.join(timeout=30)
        flushing.join(timeout=30)
        assert erased == [1] and flushed == [True]
        assert ids(writer.query(ALL)) == [3]


def test_opening_a_schema_without_records_is_refused(dsn: str, schema: str) -> None:
    with pytest.raises(RecordStoreError, match="no requests table"):
        open_postgres_reader(dsn, schema=schema)


def test_opening_an_unreachable_database_says_so() -> None:
    port = _free_port()
    with pytest.raises(RecordStoreError, match="OperationalError"):
        open_postgres_reader(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=2)


# -- outages ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards a local port to the database. ``stop()`` cuts every connection and refuses new ones
    (nothing listens); ``start()`` listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
            threads, self._threads = self._threads, []
        for sock in [s for s in (listener,) if s is not None] + sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in accept() / recv()
        for thread in threads:
            thread.join(timeout=10)
        for sock in [s for s in (listener,) if s is not None] + sockets:
            sock.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(dsn: str) -> Iterator[TcpProxy]:
    params = conninfo_to_dict(dsn)
    target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    tcp = TcpProxy(target)
    tcp.start()
    yield tcp
    tcp.stop()


def via(proxy: TcpProxy, dsn: str) -> str:
    return make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))


def test_records_queued_during_an_outage_are_written_when_it_ends(
    make_writer: WriterFactory, proxy: TcpProxy, dsn: str, schema: str
) -> None:
    # batch_size > queue_size: submit never wakes the writer, so what is accepted is exact.
    writer = make_writer(dsn=via(proxy, dsn), queue_size=20, batch_size=50, backoff_initial=0.01, backoff_max=0.05)
    with writer:
        assert all(writer.submit(make_record(i)) for i in range(5))
        assert writer.flush()

        proxy.stop()
        accepted = [writer.submit(make_record(i)) for i in range(5, 35)]
        assert accepted == [True] * 20 + [False] * 10
        assert not writer.flush()  # the write fails: the records stay queued
        assert not writer.flush()  # and again, still nothing lost
        stats = writer.stats
        assert (stats.queued, stats.written, stats.dropped) == (20, 5, 10)
        assert stats.write_errors >= 2
        assert stats.last_error is not None
        with pytest.raises(RecordStoreError):
            writer.query(ALL)

        proxy.start()
        assert writer.flush(timeout=10)
        stats = writer.stats
        assert (stats.queued, stats.written, stats.dropped) == (0, 25, 10)
        assert ids(writer.query(ALL)) == list(range(24, -1, -1))  # the reader reconnects too
    assert ids(stored(dsn, schema)) == list(range(24, -1, -1))


def test_the_writer_retries_by_itself_with_backoff(
    make_writer: WriterFactory, proxy: TcpProxy, dsn: str, schema: str
) -> None:
    writer = make_writer(dsn=via(proxy, dsn), flush_interval=0.01, backoff_initial=0.005, backoff_max=0.02)
    with writer:
        proxy.stop()
        for i in range(10):
            writer.submit(make_record(i))
        assert wait_until(lambda: writer.stats.write_errors >= 3)  # failing, and trying again unasked
        assert writer.stats.queued == 10
        proxy.start()
        assert wait_until(lambda: writer.stats.written == 10)
        assert writer.stats.queued == 0
    assert len(stored(dsn, schema)) == 10


def test_a_database_restart_between_writes_costs_nothing(
    make_writer: WriterFactory, proxy: TcpProxy, dsn: str
) -> None:
    with make_writer(dsn=via(proxy, dsn)) as writer:
        writer.submit(make_record(0))
        assert writer.flush()
        proxy.stop()  # the writer's idle connection dies with it
        proxy.start()
        writer.submit(make_record(1))
        assert writer.flush()  # a stale connection is replaced at once, not after a backoff
        assert (writer.stats.written, writer.stats.write_errors) == (2, 0)


def test_starting_while_the_database_is_down(make_writer: WriterFactory, proxy: TcpProxy, dsn: str) -> None:
    proxy.stop()
    writer = make_writer(dsn=via(proxy, dsn), backoff_initial=0.01, backoff_max=0.05)
    with writer:  # does not fail: the gateway serves, the records wait
        assert writer.stats.last_error is not None
        assert writer.submit(make_record(0))
        assert not writer.flush()
        proxy.start()
        assert writer.flush(timeout=10)  # connects, migrates, writes
        assert ids(writer.query(ALL)) == [0]


def test_close_during_an_outage_counts_what_it_could_not_write(
    make_writer: WriterFactory, proxy: TcpProxy, dsn: str
) -> None:
    writer = make_writer(dsn=via(proxy, dsn))
    writer.start()
    proxy.stop()
    for i in range(3):
        writer.submit(make_record(i))
    writer.close(timeout=10)
    assert (writer.stats.queued, writer.stats.written, writer.stats.dropped) == (0, 0, 3)


# -- the gateway on PostgreSQL --------------------------------------------------------------------


def test_the_gateway_records_to_postgres(dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    import openai

    from switchboard.app import create_app
    from switchboard.config.load import parse_config
    from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet
    from tests.e2e.servers import GatewayThread, SimThread

    sim = SimThread(DEFAULT_FLEET)
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["routers"] = demo_router(DEFAULT_FLEET)
    raw["records"] = {"backend": "postgres", "dsn": "env:TEST_RECORDS_DSN", "schema": schema,
                      "flush_interval": 0.05, "capture_prompts": True, "capture_completions": True}
    gateway = GatewayThread(create_app(parse_config(raw, env={"TEST_RECORDS_DSN": dsn})))
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        raw_resp = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Write python code; mail me at bob@example.com"}])
        rid = raw_resp.headers["x-request-id"]
        client.close()
        writer = gateway.app.records
        assert isinstance(writer, PostgresRecordWriter) and gateway.wait_recorded(rid) and writer.flush(10)
    finally:
        gateway.close()
        sim.close()
    with PostgresRecordReader(dsn, schema=schema) as reader:
        (rec,) = reader.query(RecordQuery(request_id=rid))
    assert rec.router == "auto" and rec.public_model == "sim-claude" and rec.status == 200
    assert rec.route is not None and rec.route["input"]["prompt"].endswith("mail me at [REDACTED:email]")
    assert rec.prompt is not None and rec.prompt.endswith("mail me at [REDACTED:email]")
    assert rec.completion and rec.completion == raw_resp.parse().choices[0].message.content
    # The command-line tools read the same store.
    from switchboard.cli.main import main

    assert main(["logs", "--db", dsn, "--schema", schema, "--json", "--router", "auto"]) == 0
    assert rid in capsys.readouterr().out
    assert main(["report", "--db", dsn, "--schema", schema, "--by", "router", "--json"]) == 0
    assert '"key": "auto"' in capsys.readouterr().out


def test_a_postgres_store_needs_a_dsn() -> None:
    from switchboard.config.load import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config({"records": {"backend": "postgres"}}, env={})
    assert caught.value.problems == [("records", "Value error, backend postgres needs a dsn "
                                                 "(e.g. env:SWITCHBOARD_RECORDS_DSN)")]
    with pytest.raises(ConfigError) as caught:
        parse_config({"records": {"backend": "postgres", "dsn": "env:NOPE"}}, env={})
    assert ("records.dsn", "environment variable NOPE is not set") in caught.value.problems


def test_a_database_outage_during_traffic_fails_no_request_and_loses_no_record(
    dsn: str, schema: str, proxy: TcpProxy,
) -> None:
    import openai

    from switchboard.app import create_app
    from switchboard.config.load import parse_config
    from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet
    from tests.e2e.servers import GatewayThread, SimThread

    sim = SimThread(DEFAULT_FLEET)
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"backend": "postgres", "dsn": via(proxy, dsn), "schema": schema, "flush_interval": 0.05}
    gateway = GatewayThread(create_app(parse_config(raw, env={})))
    ids: list[str] = []
    try:
        writer = gateway.app.records
        assert isinstance(writer, PostgresRecordWriter)
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)

        def traffic(n: int) -> None:
            for _ in range(n):
                raw_resp = client.chat.completions.with_raw_response.create(
                    model="fast", messages=[{"role": "user", "content": "hi"}])
                assert raw_resp.http_response.status_code == 200
                ids.append(raw_resp.headers["x-request-id"])

        traffic(5)
        assert writer.flush(10)
        proxy.stop()  # the database is gone: requests go on, records wait in the queue
        traffic(20)
        assert all(gateway.wait_recorded(rid) for rid in ids)
        assert writer.stats.queued >= 20 and writer.stats.dropped == 0
        proxy.start()  # back: the queue drains
        assert writer.flush(30)
        client.close()
    finally:
        gateway.close()
        sim.close()
    with PostgresRecordReader(dsn, schema=schema) as reader:
        stored = {r.request_id for r in reader.query(RecordQuery(limit=None))}
    assert stored == set(ids)


def test_analytics_over_postgres_match_the_records(make_writer: WriterFactory, dsn: str, schema: str) -> None:
    from switchboard.telemetry.analytics import analyze
    from tests.telemetry.test_analytics import RECORDS, REFERENCE

    writer = make_writer()
    writer.start()
    for rec in RECORDS:
        writer.submit(dataclasses.replace(rec))
    assert writer.flush(10)
    writer.close()
    with PostgresRecordReader(dsn, schema=schema) as reader:
        stored = reader.query(RecordQuery(limit=None))
    # Same order on both sides, so that the floating-point sums are the same to the last bit.
    direct = analyze(sorted(RECORDS, key=lambda r: r.request_id), reference=REFERENCE, reference_name="big")
    via_store = analyze(sorted(stored, key=lambda r: r.request_id), reference=REFERENCE, reference_name="big")
    assert [g.as_dict() for g in via_store.groups] == [g.as_dict() for g in direct.groups]
    assert via_store.total.as_dict() == direct.total.as_dict()
