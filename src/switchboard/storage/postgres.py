"""Request records in PostgreSQL: a batched background writer that rides out outages, and a reader.

The same logical schema and migration names as :mod:`switchboard.storage.sqlite`, in a configurable
schema. The request path calls :meth:`PostgresRecordWriter.submit`, which appends to a bounded
in-memory buffer and returns: no lock, no I/O. One daemon thread owns the write connection (psycopg,
synchronous: a thread needs no event loop of its own). When the database cannot be reached or a
write fails, the records stay queued and the thread retries with backoff, reconnecting as needed;
once the buffer is full, new records are dropped and counted. A batch the database rejects for its
content is written record by record, so that one bad record is dropped alone.

Writers take a per-schema advisory lock around each batch, so record positions (a ``BIGSERIAL``)
become visible in order and :meth:`PostgresRecordReader.query_after` misses nothing even with
several gateways writing. A batch is a single statement: a gate function (migration
``0007_write_gate``) takes the lock and checks the erasure ledger before the rows are made.

Usage::

    writer = PostgresRecordWriter("postgresql://db.internal/switchboard", schema="records")
    writer.start()                     # at startup, off the event loop: connects and migrates
    writer.submit(record)              # on the event loop, per request: False when dropped
    writer.close()                     # at shutdown: writes what is queued, stops the thread

    with open_postgres_reader("postgresql://db.internal/switchboard", schema="records") as reader:
        reader.query(RecordQuery(only_errors=True, limit=20))
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

from switchboard._closing import ClosesOnExit
from switchboard.storage.records import (
    ERASABLE,
    ErasureLedger,
    FlushTickets,
    RecordQuery,
    RecordStoreError,
    SinkStats,
    subject_digest,
    where_clauses,
)
from switchboard.storage.sqlite import COLUMNS, Migration
from switchboard.telemetry.record import Attempt, RequestRecord
from switchboard.telemetry.redaction import redact, redact_metadata, redact_route

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import TupleRow
    from psycopg.types.json import set_json_loads
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the Postgres record store needs psycopg: pip install 'switchboard[postgres]'") from exc

__all__ = [
    "MIGRATIONS",
    "PostgresRecordReader",
    "PostgresRecordWriter",
    "apply_migrations",
    "open_postgres_reader",
]

Connection = psycopg.Connection[TupleRow]
Row = tuple[object, ...]
T = TypeVar("T")

# ``{schema}`` is replaced by the quoted schema name. Same names and logical schema as SQLite's;
# ``position`` stands in for SQLite's rowid (write order, for ``query_after``).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_create_requests",
        (
            """
            CREATE TABLE {schema}.requests (
                position         BIGSERIAL NOT NULL,
                request_id       TEXT PRIMARY KEY,
                started_at       DOUBLE PRECISION NOT NULL,
                endpoint         TEXT NOT NULL,
                dialect          TEXT NOT NULL,
                caller           TEXT,
                public_model     TEXT,
                deployment       TEXT,
                provider         TEXT,
                upstream_model   TEXT,
                stream           BOOLEAN NOT NULL,
                status           INTEGER NOT NULL,
                error_type       TEXT,
                error_message    TEXT,
                attempts         JSONB NOT NULL,
                latency_ms       DOUBLE PRECISION NOT NULL,
                ttft_ms          DOUBLE PRECISION,
                input_tokens     BIGINT NOT NULL,
                output_tokens    BIGINT NOT NULL,
                cached_tokens    BIGINT NOT NULL,
                reasoning_tokens BIGINT NOT NULL,
                cost_usd         DOUBLE PRECISION NOT NULL,
                partial          BOOLEAN NOT NULL,
                metadata         JSONB NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX requests_position ON {schema}.requests (position)",
            "CREATE INDEX requests_started_at ON {schema}.requests (started_at)",
            "CREATE INDEX requests_public_model ON {schema}.requests (public_model, started_at)",
            "CREATE INDEX requests_deployment ON {schema}.requests (deployment, started_at)",
            "CREATE INDEX requests_status ON {schema}.requests (status, started_at)",
            "CREATE INDEX requests_caller ON {schema}.requests (caller, started_at)",
        ),
    ),
    Migration(
        "0002_unsatisfactory",
        ("ALTER TABLE {schema}.requests ADD COLUMN unsatisfactory TEXT",),
    ),
    Migration(
        "0003_routing",
        (
            "ALTER TABLE {schema}.requests ADD COLUMN router TEXT",
            "ALTER TABLE {schema}.requests ADD COLUMN route JSONB",
            "CREATE INDEX requests_router ON {schema}.requests (router, started_at)",
        ),
    ),
    Migration(
        "0004_governance",
        (
            "ALTER TABLE {schema}.requests ADD COLUMN key_id TEXT",
            "ALTER TABLE {schema}.requests ADD COLUMN team TEXT",
            "CREATE INDEX requests_key_id ON {schema}.requests (key_id, started_at)",
            """
            CREATE TABLE IF NOT EXISTS {schema}.erasures (
                id     BIGSERIAL PRIMARY KEY,
                field  TEXT NOT NULL,
                digest TEXT NOT NULL,
                at     DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    Migration(
        "0005_text",
        (
            "ALTER TABLE {schema}.requests ADD COLUMN prompt TEXT",
            "ALTER TABLE {schema}.requests ADD COLUMN completion TEXT",
        ),
    ),
    Migration(
        "0006_sparse_indexes",
        (
            # Indexes on columns that are usually empty (or, for status, usually 200) keep only the rows
            # that have a value: the writer then maintains them only for those rows.
            "DROP INDEX {schema}.requests_status",
            "DROP INDEX {schema}.requests_caller",
            "DROP INDEX {schema}.requests_router",
            "DROP INDEX {schema}.requests_key_id",
            # A status filter other than 200 also says "status <> 200" (records.where_clauses), so it
            # can use this one.
            "CREATE INDEX requests_status ON {schema}.requests (status, started_at) WHERE status <> 200",
            "CREATE INDEX requests_errors ON {schema}.requests (started_at) WHERE status >= 400 OR partial",
            "CREATE INDEX requests_caller ON {schema}.requests (caller, started_at) WHERE caller IS NOT NULL",
            "CREATE INDEX requests_router ON {schema}.requests (router, started_at) WHERE router IS NOT NULL",
            "CREATE INDEX requests_key_id ON {schema}.requests (key_id, started_at) WHERE key_id IS NOT NULL",
        ),
    ),
    Migration(
        "0007_write_gate",
        (
            # A writer's batch is one INSERT whose rows pass this gate first: it takes the writers' lock
            # (held to the end of the statement's transaction) and then, in a snapshot of its own taken after
            # the lock (a VOLATILE function's query gets one), says whether the erasure ledger still ends at
            # the entry the writer knows. When it does not, the INSERT writes nothing and the writer reads
            # the new entries first (PostgresRecordWriter._transaction).
            """
            CREATE OR REPLACE FUNCTION {schema}.records_write_gate(lock_key BIGINT, known BIGINT) RETURNS BOOLEAN
            LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock(lock_key);
                RETURN NOT EXISTS (SELECT 1 FROM {schema}.erasures WHERE id > known);
            END
            $$
            """,
        ),
    ),
)

_JSON_COLUMNS = frozenset({"attempts", "metadata", "route"})
_ATTEMPT_FIELDS = frozenset(f.name for f in fields(Attempt))
_SELECT = f"SELECT position, {', '.join(COLUMNS)} FROM {{schema}}.requests"
_DELETE_CHUNK = 5_000  # rows per retention statement, so writers are never held up for long


class _Unavailable(Exception):
    """The database cannot be reached or migrated: retry later, the records are not at fault."""


def _refuses_the_records(exc: BaseException) -> bool:
    """Whether ``exc`` is about the rows sent (a value out of range, a constraint, a type psycopg
    cannot adapt), which no retry can mend, rather than about the database (away, restarting, a
    schema or privilege problem an operator can fix), which a retry may."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    return isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None  # raised client-side


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``purpose`` in ``schema``."""
    digest = hashlib.blake2b(f"switchboard:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sql(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def apply_migrations(
    conn: Connection, schema: str = "public", migrations: Sequence[Migration] = MIGRATIONS
) -> list[str]:
    """Apply the ``migrations`` not yet recorded in ``schema``, in order, in one transaction; return
    their names. Creates the schema when it is missing.

    Safe to run from several processes at once: the transaction first takes an advisory lock.
    ``conn`` must be in autocommit mode.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("migrate", schema),))
        # Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            conn.execute(_sql("CREATE SCHEMA {schema}", schema))
        conn.execute(
            _sql(
                "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations"
                " (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)",
                schema,
            )
        )
        done = {name for (name,) in conn.execute(_sql("SELECT name FROM {schema}.schema_migrations", schema))}
        applied: list[str] = []
        for migration in migrations:
            if migration.name in done:
                continue
            for statement in migration.statements:
                conn.execute(_sql(statement, schema))
            conn.execute(
                _sql("INSERT INTO {schema}.schema_migrations (name, applied_at) VALUES (%s, %s)", schema),
                (migration.name, time.time()),
            )
            applied.append(migration.name)
    return applied


def _connect(dsn: str, connect_timeout: int) -> Connection:
    conn = psycopg.connect(
        dsn, autocommit=True, connect_timeout=connect_timeout, application_name="switchboard-records"
    )
    set_json_loads(orjson.loads, context=conn)
    return conn


# -- rows -----------------------------------------------------------------------------------------
# Postgres refuses NUL in text and in JSONB strings; an upstream error message may well hold one.


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _without_nul(v) for k, v in value.items()}
    return value


def _json_text(text: str) -> str:
    """JSON text without NUL in its strings."""
    return orjson.dumps(_without_nul(orjson.loads(text))).decode() if "\\u0000" in text else text


def _to_row(r: RequestRecord) -> Row:
    # Field by field, in COLUMNS order (a test pins the two together): JSON columns as JSON text, captured
    # text and metadata values redacted. NUL may still be in it: _clean takes it out, where a row is sent.
    return (
        r.request_id, r.started_at, r.endpoint, r.dialect, r.caller, r.public_model, r.deployment, r.provider,
        r.upstream_model, r.stream, r.status, r.error_type, r.error_message, orjson.dumps(r.attempts).decode(),
        r.latency_ms, r.ttft_ms, r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens, r.cost_usd,
        r.partial, r.unsatisfactory, orjson.dumps(redact_metadata(r.metadata)).decode() if r.metadata else "{}",
        r.router, None if r.route is None else orjson.dumps(redact_route(r.route)).decode(), r.key_id, r.team,
        None if r.prompt is None else redact(r.prompt), None if r.completion is None else redact(r.completion),
    )


def _clean(row: Row) -> Row:
    """``row`` without NUL (Postgres refuses it in text and in JSONB strings; an upstream error message may
    well hold one): each becomes U+FFFD."""
    return tuple(
        v if type(v) is not str else _json_text(v) if c in _JSON_COLUMNS else _text(v)
        for c, v in zip(COLUMNS, row, strict=True)
    )


def _batch_json(rows: list[Row]) -> str | None:
    """Rows as one JSON array of arrays, expanded by the server (``_insert_batch``); a request id that occurs
    twice keeps its last row, as one statement may not update a row twice. ``None`` when a value has no
    JSON form (psycopg's own adaptation then decides, row by row).

    One ``orjson.dumps`` of the tuples as they are: no per-row work in Python, which is what the gateway's
    CPU would otherwise spend on each record. NUL, escaped in JSON as ``\\u0000``, is looked for once."""
    latest = list({row[0]: row for row in rows}.values())
    try:
        data = orjson.dumps(latest)
        if b"\\u0000" in data:
            data = orjson.dumps([_clean(row) for row in latest])
    except (TypeError, orjson.JSONEncodeError):
        return None
    return data.decode()


#: Each column's type, for the batch insert's casts (a test pins it to the migrated table).
_TYPES: dict[str, str] = {
    **dict.fromkeys(("started_at", "latency_ms", "ttft_ms", "cost_usd"), "double precision"),
    **dict.fromkeys(("stream", "partial"), "boolean"),
    "status": "integer",
    **dict.fromkeys(("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"), "bigint"),
    **dict.fromkeys(_JSON_COLUMNS, "jsonb"),
}


def _from_row(row: Sequence[Any]) -> RequestRecord:
    """Rebuild a record from ``COLUMNS`` values (without the leading position)."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["attempts"] = [Attempt(**{k: v for k, v in a.items() if k in _ATTEMPT_FIELDS}) for a in values["attempts"]]
    return RequestRecord(**values)


def _where(q: RecordQuery) -> tuple[list[str], list[object]]:
    return where_clauses(q, "%s")


class PostgresRecordReader(ClosesOnExit):
    """Queries and retention over the records in one schema, on its own connection (safe across threads).

    The connection opens on first use and again after it breaks; every database error comes out as
    :class:`RecordStoreError`. With ``readonly`` every transaction is read-only (what ``switchboard
    logs`` wants). Every call blocks on the database: from async code, run it in a thread.
    """

    def __init__(self, dsn: str, *, schema: str = "public", readonly: bool = False, connect_timeout: int = 5) -> None:
        self.schema = schema
        self._dsn = dsn
        self._readonly = readonly
        self._connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._closed = False

    def query(self, q: RecordQuery) -> list[RequestRecord]:
        """Records that match ``q``, newest first, at most ``q.limit`` of them."""
        return self._call(lambda conn: self._newest(conn, q))

    def query_and_position(self, q: RecordQuery) -> tuple[list[RequestRecord], int]:
        """Like :meth:`query`, plus the position to pass to :meth:`query_after` to see only what
        is written later (both read from one snapshot, so nothing falls between them)."""

        def run(conn: Connection) -> tuple[list[RequestRecord], int]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return self._newest(conn, q), self._max_position(conn)

        return self._call(run)

    def query_after(self, position: int, q: RecordQuery) -> tuple[list[RequestRecord], int]:
        """Records matching ``q`` written after ``position``, oldest first, and the new position.

        Positions follow write order (a request that started long ago but finished just now is
        new here; a replaced record is new again), which is what ``switchboard logs --follow`` needs.
        """
        clauses, params = _where(q)
        sql_text = f"{_SELECT} WHERE {' AND '.join(['position > %s', 'position <= %s', *clauses])}"
        sql_text += " ORDER BY position"
        if q.limit is not None:
            sql_text += f" LIMIT {int(q.limit)}"

        def run(conn: Connection) -> tuple[list[tuple[Any, ...]], int]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                end = self._max_position(conn)
                return conn.execute(_sql(sql_text, self.schema), [position, end, *params]).fetchall(), end

        rows, end = self._call(run)
        if q.limit is not None and len(rows) == q.limit and rows:
            end = int(rows[-1][0])  # more may follow: resume after the last one returned
        # Retention may have deleted the newest rows; positions only grow, so never go back.
        return [_from_row(row[1:]) for row in rows], max(end, position)

    def delete_older_than(self, ts: float) -> int:
        """Delete records that started before ``ts`` (unix seconds); return how many went.

        Deletes in chunks, skipping rows a writer holds, so writers are never held up for long.
        """
        statement = _sql(
            "DELETE FROM {schema}.requests WHERE request_id IN (SELECT request_id FROM {schema}.requests"
            " WHERE started_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
            self.schema,
        )

        def run(conn: Connection) -> int:
            deleted = 0
            while True:
                chunk = _DELETE_CHUNK
                count = conn.execute(statement, (ts, chunk)).rowcount
                deleted += count
                if count < chunk:
                    return deleted

        return self._call(run)

    def erase(self, field: str, value: str, at: float | None = None) -> int:
        """Delete the records of one subject (``field`` is ``caller`` or ``key_id``) that started before
        ``at`` (default: now), and enter the erasure in the ledger in the same transaction — under the
        writers' lock, so every writer drops such records still queued. Returns how many stored records went."""
        if field not in ERASABLE:
            raise ValueError(f"records are erased by {' or '.join(ERASABLE)}, not {field!r}")
        when = time.time() if at is None else at
        insert = _sql("INSERT INTO {schema}.erasures (field, digest, at) VALUES (%s, %s, %s)", self.schema)
        delete = _sql(f"DELETE FROM {{schema}}.requests WHERE {field} = %s AND started_at <= %s", self.schema)
        lock = _lock_key("write", self.schema)

        def run(conn: Connection) -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                conn.execute(insert, (field, subject_digest(value), when))
                return conn.execute(delete, (value, when)).rowcount

        return self._call(run)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _call(self, fn: Callable[[Connection], T]) -> T:
        with self._lock:
            if self._closed:
                raise RecordStoreError("the records reader is closed")
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _connect(self._dsn, self._connect_timeout)
                    if self._readonly:
                        self._conn.execute("SET default_transaction_read_only = on")
                return fn(self._conn)
            except psycopg.Error as exc:
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._conn.close()
                    self._conn = None  # reconnect on the next call
                raise RecordStoreError(f"records database ({self.schema}): {type(exc).__name__}: {exc}") from exc

    def _newest(self, conn: Connection, q: RecordQuery) -> list[RequestRecord]:
        clauses, params = _where(q)
        sql_text = _SELECT
        if clauses:
            sql_text += " WHERE " + " AND ".join(clauses)
        # COLLATE "C": ties break by bytes, as in SQLite, whatever the database's collation.
        sql_text += ' ORDER BY started_at DESC, request_id COLLATE "C" DESC'
        if q.limit is not None:
            sql_text += f" LIMIT {int(q.limit)}"
        return [_from_row(row[1:]) for row in conn.execute(_sql(sql_text, self.schema), params)]

    def _max_position(self, conn: Connection) -> int:
        row = conn.execute(_sql("SELECT coalesce(max(position), 0) FROM {schema}.requests", self.schema)).fetchone()
        return int(row[0]) if row is not None else 0


def open_postgres_reader(dsn: str, *, schema: str = "public", connect_timeout: int = 5) -> PostgresRecordReader:
    """Connect read-only to the records in ``schema`` (no writer thread), e.g. for ``switchboard logs``.

    Raises :class:`RecordStoreError` when the database cannot be reached or ``schema`` holds no
    Switchboard records.
    """
    reader = PostgresRecordReader(dsn, schema=schema, readonly=True, connect_timeout=connect_timeout)
    try:
        found = reader._call(
            lambda conn: conn.execute(
                "SELECT count(*) FROM pg_tables"
                " WHERE schemaname = %s AND tablename IN ('requests', 'schema_migrations')",
                (schema,),
            ).fetchone()
        )
    except RecordStoreError:
        reader.close()
        raise
    if found is None or found[0] != 2:
        reader.close()
        raise RecordStoreError(f"schema {schema!r} holds no Switchboard records (no requests table)")
    return reader


class PostgresRecordWriter:
    """A :class:`~switchboard.storage.records.RecordSink` that batches records into PostgreSQL.

    ``submit`` costs a deque append and never waits; when ``queue_size`` records are waiting
    (including a batch that failed and awaits its retry) it drops and counts. Records must not be
    mutated after submit. A failed write is retried after ``backoff_initial`` seconds, doubling up
    to ``backoff_max`` (with jitter), until the database takes it; :meth:`flush` retries at once.
    ``before_write`` is called on the writer thread before every batch with its size (tests use it
    to stall the writer).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        connect_timeout: int = 5,
        backoff_initial: float = 0.1,
        backoff_max: float = 30.0,
        before_write: Callable[[int], None] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if flush_interval <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("flush_interval and backoff_initial must be > 0, backoff_max >= backoff_initial")
        self.schema = schema
        self._dsn = dsn
        self._maxsize = queue_size
        self._batch_size = batch_size
        self._interval = flush_interval
        self._connect_timeout = connect_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._before_write = before_write

        placeholders = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "request_id")
        # A reused request id replaces the row (and moves it to the end, as SQLite's REPLACE does)
        # rather than failing the whole batch it travels in.
        self._insert = _sql(
            f"INSERT INTO {{schema}}.requests ({', '.join(COLUMNS)}) VALUES ({placeholders})"
            f" ON CONFLICT (request_id) DO UPDATE SET {updates}, position = DEFAULT",
            schema,
        )
        # A batch travels as one JSON array of rows expanded by the server: one parameter instead of one
        # per column per row, which is where the client spent most of its time.
        fields = ", ".join(f"(r->>{i})::{_TYPES.get(c, 'text')}" for i, c in enumerate(COLUMNS))
        rows = f"SELECT {fields} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(r, n)"
        into = f"INSERT INTO {{schema}}.requests ({', '.join(COLUMNS)})"
        upsert = f" ON CONFLICT (request_id) DO UPDATE SET {updates}, position = DEFAULT"
        self._insert_batch = _sql(f"{into} {rows} ORDER BY n{upsert}", schema)
        # The same as one statement with no transaction around it: the gate (migration 0007) takes the
        # writers' lock before any row is made and lets them through only if no erasure came after the ledger
        # entry this writer knows. One statement is one round trip and one short hold of the GIL's worth of
        # client work, where a transaction of five statements made the writer thread and the event loop
        # hand the GIL to each other some fifty times a batch.
        self._insert_gated = _sql(
            f"{into} {rows} WHERE (SELECT {{schema}}.records_write_gate(%s, %s)) ORDER BY n{upsert}", schema)
        self._write_key = _lock_key("write", schema)
        self._read_ledger = _sql("SELECT id, field, digest, at FROM {schema}.erasures WHERE id > %s", schema)
        self._ledger = ErasureLedger(COLUMNS)

        self._buf: deque[RequestRecord] = deque()
        self._held: list[Row] = []  # taken from the buffer, not yet written: retried until it is
        self._held_count = 0  # len(_held), raised before taking, so submit() never overfills
        self._conn: Connection | None = None  # the writer thread's, once started
        self._migrated = False
        self._closed = False  # submit() refuses from here on
        self._stopping = False  # the writer thread drains and exits
        self._tickets = FlushTickets()  # flush() and close() wake the thread, never submit()
        self._thread: threading.Thread | None = None
        self._reader: PostgresRecordReader | None = None

        # Each counter has a single writing thread: _rejected the submitting thread (the event
        # loop), the others the writer thread (or start()/close() while it is not running).
        self._rejected = 0
        self._dropped = 0
        self._written = 0
        self._batches = 0
        self._write_errors = 0
        self._last_error: str | None = None

    # -- the hot path -------------------------------------------------------------------------

    def submit(self, record: RequestRecord) -> bool:
        """Queue ``record`` for writing; ``False`` (and counted as dropped) when full or closed."""
        buf = self._buf
        if self._closed or len(buf) + self._held_count >= self._maxsize:
            self._rejected += 1
            return False
        buf.append(record)
        if len(buf) == self._batch_size:
            self._tickets.wake.set()
        return True

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, migrate and start the writer thread.

        An unreachable database does not fail the start: the error is counted and the thread keeps
        trying. Raises :class:`RecordStoreError` when the database refuses the schema itself (no
        privilege, a broken migration), which retrying cannot mend.
        """
        if self._thread is not None or self._closed:
            raise RuntimeError("PostgresRecordWriter.start() may be called once, before close()")
        try:
            self._conn = self._open()
        except psycopg.OperationalError as exc:
            self._fail(exc)
        except psycopg.Error as exc:
            raise RecordStoreError(f"cannot migrate records schema {self.schema!r}: {exc}") from exc
        self._reader = PostgresRecordReader(self._dsn, schema=self.schema, connect_timeout=self._connect_timeout)
        self._thread = threading.Thread(target=self._run, name="switchboard-records-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything submitted before this call, retrying a failed write at once; block until
        done or ``timeout``.

        Returns ``True`` when nothing submitted before the call is still waiting (records the
        database rejected are dropped and counted); ``False`` on timeout, when the write failed
        (the records stay queued for the next retry), or when the writer is not running.
        Blocks: never call it on the event loop.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        return self._tickets.request(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting records, write what is queued (waiting at most ``timeout``), stop the thread.

        Records still queued when the thread ends (or if it was never started) count as dropped.
        """
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._tickets.wake.set()
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._dropped += len(self._buf)
            self._buf.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> SinkStats:
        return SinkStats(
            queued=len(self._buf) + self._held_count,
            written=self._written,
            dropped=self._rejected + self._dropped,
            write_errors=self._write_errors,
            batches=self._batches,
            last_error=self._last_error,
        )

    # -- reading and retention (separate connection) --------------------------------------------

    def query(self, q: RecordQuery) -> list[RequestRecord]:
        """See :meth:`PostgresRecordReader.query`. Blocks: run it in a thread from async code."""
        return self._started_reader().query(q)

    def delete_older_than(self, ts: float) -> int:
        """See :meth:`PostgresRecordReader.delete_older_than`. Blocks: run it in a thread."""
        return self._started_reader().delete_older_than(ts)

    def erase(self, field: str, value: str, at: float | None = None) -> int:
        """See :meth:`PostgresRecordReader.erase`. Blocks: run it in a thread."""
        return self._started_reader().erase(field, value, at)

    def _started_reader(self) -> PostgresRecordReader:
        if self._reader is None:
            raise RuntimeError("PostgresRecordWriter is not running: call start() first")
        return self._reader

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            backoff = self._backoff[0]
            retry_at: float | None = None  # set while failing: when to try again unasked
            next_flush = time.monotonic() + self._interval
            while not self._stopping:
                self._tickets.wake.wait(max(0.0, (next_flush if retry_at is None else retry_at) - time.monotonic()))
                self._tickets.wake.clear()
                if self._stopping:
                    break
                ticket = self._tickets.take()
                asked = self._tickets.asked(ticket)
                now = time.monotonic()
                if retry_at is not None and now < retry_at and not asked:
                    continue  # backing off: a full batch does not cut the wait short, a flush does
                drain = asked or retry_at is not None or now >= next_flush
                complete = self._write_round(drain=drain)
                if drain:
                    next_flush = time.monotonic() + self._interval
                if complete:
                    retry_at, backoff = None, self._backoff[0]
                else:
                    retry_at = time.monotonic() + backoff * random.uniform(0.5, 1.0)
                    backoff = min(backoff * 2, self._backoff[1])
                if asked:
                    self._tickets.done(ticket, complete)
            # Shutting down: one more try for everything (a second one on a fresh connection).
            if not self._write_round(drain=True):
                self._write_round(drain=True)
            self._dropped += self._held_count + len(self._buf)
            self._held, self._held_count = [], 0
            self._buf.clear()
        finally:
            self._disconnect()
            self._tickets.finish()

    def _write_round(self, *, drain: bool) -> bool:
        """Write what is held, then full batches, or with ``drain`` everything; stop at the first
        failure. Returns whether the round got through without one."""
        if self._held and not self._write_held():
            return False
        while self._buf and (drain or len(self._buf) >= self._batch_size):
            self._take(self._batch_size)
            if self._held and not self._write_held():
                return False
        return True

    def _take(self, n: int) -> None:
        n = min(n, len(self._buf))
        self._held_count = n  # counted before the records leave the buffer
        rows: list[Row] = []
        for _ in range(n):
            record = self._buf.popleft()
            try:
                rows.append(_to_row(record))
            except Exception as exc:  # a record that cannot be serialised is dropped alone
                self._fail(exc)
                self._dropped += 1
        self._held, self._held_count = rows, len(rows)

    def _write_held(self) -> bool:
        """Write the held rows. ``False`` when they must wait for a retry (the database is away)."""
        rows = self._held
        try:
            written = self._commit(rows)
        except Exception as exc:  # the thread must outlive anything a write can raise
            self._fail(exc)
            # Unreachable, restarting, a lock, a dropped table, a bad hook: retry it all later.
            return self._write_one_by_one() if _refuses_the_records(exc) else False
        self._written += written
        self._batches += 1
        self._held, self._held_count = [], 0
        return True

    def _write_one_by_one(self) -> bool:
        """The database refused a batch for its content: write each record alone, drop the refused."""
        while self._held:
            row = self._held[0]
            try:
                written = self._commit([row])
            except Exception as exc:
                self._fail(exc)
                if not _refuses_the_records(exc):
                    return False
                self._dropped += 1
            else:
                self._written += written
                self._batches += 1
            self._held = self._held[1:]
            self._held_count = len(self._held)
        return True

    def _commit(self, rows: list[Row]) -> int:
        """Write ``rows`` in one transaction; returns how many were written (erased subjects' are not)."""
        if self._before_write is not None:
            self._before_write(len(rows))
        reused = self._conn is not None
        try:
            return self._transaction(rows)
        except psycopg.OperationalError:
            if not reused or self._conn is not None:
                raise
            # The connection had gone stale while idle (the server restarted): one retry at once.
            return self._transaction(rows)

    def _transaction(self, rows: list[Row]) -> int:
        if self._conn is None:
            try:
                self._conn = self._open()
            except psycopg.Error as exc:
                raise _Unavailable(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        conn = self._conn
        try:
            if len(rows) > 1:
                rows = self._ledger.keep(rows)
                payload = _batch_json(rows) if rows else None
                if payload is not None and conn.execute(
                        self._insert_gated, (payload, self._write_key, self._ledger.last_id)).rowcount > 0:
                    return len(rows)
                # Nothing written: an erasure came after the ledger entry this writer knows. The
                # transaction below reads the ledger under the lock, then writes.
            with conn.transaction():
                # One writer per schema at a time: positions then become visible in order.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
                ledger = self._ledger
                ledger.learn(conn.execute(self._read_ledger, (ledger.last_id,)).fetchall())
                rows = ledger.keep(rows)
                with conn.cursor() as cursor:
                    payload = _batch_json(rows) if len(rows) > 1 else None
                    if payload is None:
                        if rows:
                            cursor.executemany(self._insert, [_clean(row) for row in rows])
                    else:
                        cursor.execute(self._insert_batch, (payload,))
        except psycopg.Error:
            if conn.broken or conn.closed:
                self._disconnect()
            raise
        return len(rows)

    def _open(self) -> Connection:
        conn = _connect(self._dsn, self._connect_timeout)
        try:
            if not self._migrated:
                apply_migrations(conn, self.schema)
                self._migrated = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fail(self, exc: Exception) -> None:
        self._write_errors += 1
        self._last_error = str(exc) if isinstance(exc, _Unavailable) else f"{type(exc).__name__}: {str(exc).strip()}"
