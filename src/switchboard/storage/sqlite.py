"""Request records in SQLite: a batched background writer and a reader (stdlib ``sqlite3`` only).

The request path calls :meth:`SQLiteRecordWriter.submit`, which appends to a bounded in-memory
buffer and returns: no lock, no I/O. One daemon thread owns the write connection; it commits full
batches as they fill and everything pending at least every ``flush_interval`` seconds. A failed
batch is retried once at the next flush, then dropped and counted. The schema is created by
ordered, named migrations recorded in ``schema_migrations``.

Usage::

    writer = SQLiteRecordWriter(config.records)
    writer.start()                     # at startup, off the event loop: opens and migrates the db
    writer.submit(record)              # on the event loop, per request: False when dropped
    writer.close()                     # at shutdown: writes what is queued, stops the thread

    with open_records_reader("switchboard.db") as reader:
        reader.query(RecordQuery(only_errors=True, limit=20))
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from switchboard._closing import ClosesOnExit
from switchboard.config.model import RecordsConfig
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
from switchboard.telemetry.record import Attempt, RequestRecord
from switchboard.telemetry.redaction import redact, redact_metadata, redact_route

__all__ = [
    "COLUMNS",
    "MIGRATIONS",
    "Migration",
    "SQLiteRecordReader",
    "SQLiteRecordWriter",
    "apply_migrations",
    "enable_wal",
    "open_records_reader",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema, applied once per database and recorded by ``name`` (never edit one
    that has shipped: add the next). The Postgres backend uses the same names and logical schema."""

    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_create_requests",
        (
            """
            CREATE TABLE requests (
                request_id       TEXT PRIMARY KEY,
                started_at       REAL NOT NULL,
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
                attempts         TEXT NOT NULL,   -- JSON list of attempts
                latency_ms       REAL NOT NULL,
                ttft_ms          REAL,
                input_tokens     INTEGER NOT NULL,
                output_tokens    INTEGER NOT NULL,
                cached_tokens    INTEGER NOT NULL,
                reasoning_tokens INTEGER NOT NULL,
                cost_usd         REAL NOT NULL,
                partial          BOOLEAN NOT NULL,
                metadata         TEXT NOT NULL    -- JSON object of strings
            )
            """,
            # Filters are equality + "newest first": each index ends in started_at so the
            # filtered scan comes out already ordered.
            "CREATE INDEX requests_started_at ON requests (started_at)",
            "CREATE INDEX requests_public_model ON requests (public_model, started_at)",
            "CREATE INDEX requests_deployment ON requests (deployment, started_at)",
            "CREATE INDEX requests_status ON requests (status, started_at)",
            "CREATE INDEX requests_caller ON requests (caller, started_at)",
        ),
    ),
    Migration(
        "0002_unsatisfactory",
        ("ALTER TABLE requests ADD COLUMN unsatisfactory TEXT",),
    ),
    Migration(
        "0003_routing",
        (
            "ALTER TABLE requests ADD COLUMN router TEXT",
            "ALTER TABLE requests ADD COLUMN route TEXT",  # JSON: the router's decision
            "CREATE INDEX requests_router ON requests (router, started_at)",
        ),
    ),
    Migration(
        "0004_governance",
        (
            "ALTER TABLE requests ADD COLUMN key_id TEXT",
            "ALTER TABLE requests ADD COLUMN team TEXT",
            "CREATE INDEX requests_key_id ON requests (key_id, started_at)",
            # The erasure ledger: whose records were erased, as digests. Every writer reads it inside its
            # write transaction and drops queued records of an erased subject.
            """
            CREATE TABLE IF NOT EXISTS erasures (
                id     INTEGER PRIMARY KEY AUTOINCREMENT,
                field  TEXT NOT NULL,
                digest TEXT NOT NULL,
                at     REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        "0005_text",
        (
            "ALTER TABLE requests ADD COLUMN prompt TEXT",  # with records.capture_prompts, redacted
            "ALTER TABLE requests ADD COLUMN completion TEXT",  # with records.capture_completions, redacted
        ),
    ),
    Migration(
        "0006_sparse_indexes",
        (
            # Indexes on columns that are usually empty (or, for status, usually 200) keep only the rows
            # that have a value: the writer then maintains them only for those rows.
            "DROP INDEX requests_status",
            "DROP INDEX requests_caller",
            "DROP INDEX requests_router",
            "DROP INDEX requests_key_id",
            # A status filter other than 200 also says "status <> 200" (records.where_clauses), so it
            # can use this one.
            "CREATE INDEX requests_status ON requests (status, started_at) WHERE status <> 200",
            "CREATE INDEX requests_errors ON requests (started_at) WHERE status >= 400 OR partial",
            "CREATE INDEX requests_caller ON requests (caller, started_at) WHERE caller IS NOT NULL",
            "CREATE INDEX requests_router ON requests (router, started_at) WHERE router IS NOT NULL",
            "CREATE INDEX requests_key_id ON requests (key_id, started_at) WHERE key_id IS NOT NULL",
        ),
    ),
    # PostgreSQL's writers write a batch in one statement gated by a function (see postgres.py); SQLite's
    # single writer per file needs no gate. The name is kept so that both stores list the same migrations.
    Migration("0007_write_gate", ()),
)

#: The ``requests`` columns, in :class:`RequestRecord` field order (a test pins the two together).
COLUMNS: tuple[str, ...] = (
    "request_id",
    "started_at",
    "endpoint",
    "dialect",
    "caller",
    "public_model",
    "deployment",
    "provider",
    "upstream_model",
    "stream",
    "status",
    "error_type",
    "error_message",
    "attempts",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "partial",
    "unsatisfactory",
    "metadata",
    "router",
    "route",
    "key_id",
    "team",
    "prompt",
    "completion",
)

_ATTEMPT_FIELDS = frozenset(f.name for f in fields(Attempt))
#: Rows per INSERT statement at most (a power of two, and within SQLite's 32,766 parameters).
_ROWS_PER_INSERT = 256


@functools.lru_cache(maxsize=256)
def _insert_rows(mask: int, n: int) -> str:
    """One INSERT of ``n`` rows that sets the columns whose bits are set in ``mask`` (the others are NULL)."""
    names = [c for i, c in enumerate(COLUMNS) if mask >> i & 1]
    one = f"({', '.join('?' * len(names))})"
    return f"INSERT OR REPLACE INTO requests ({', '.join(names)}) VALUES {', '.join([one] * n)}"


def _insert(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Insert ``rows`` (a reused request id replaces the older row rather than failing the whole batch it
    travels in, and within ``rows`` the last one wins).

    Rows go in by the set of columns they have values for (their mask, see :func:`_to_row`), and those values
    only: most of a record's columns are usually empty (no error, no key, no router …). Each such group goes
    in with a few multi-row statements (pieces of 256, 128, … rows, each prepared once). A statement runs as
    one step, which releases the GIL once: row by row (``executemany``) the writer thread would take the GIL
    back from the request path once per row."""
    groups: dict[int, list[object]] = {}
    for mask, row_values in {row[1][0]: row for row in rows}.values():
        values = groups.get(mask)
        if values is None:
            values = groups[mask] = []
        values += row_values
    for mask, values in groups.items():
        width = mask.bit_count()
        count = len(values) // width
        start = 0
        while start < count:
            n = min(_ROWS_PER_INSERT, 1 << ((count - start).bit_length() - 1))
            conn.execute(_insert_rows(mask, n), values[start * width:(start + n) * width])
            start += n


_SELECT = f"SELECT rowid, {', '.join(COLUMNS)} FROM requests"
_DELETE_CHUNK = 5_000  # rows per retention transaction, so the writer never waits long on it

#: A record ready to insert: (mask of its non-empty columns, their values); see :func:`_to_row`.
Row = tuple[int, list[object]]


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Put the database in WAL mode; returns the journal mode it is in.

    Switching a new database to WAL needs it to itself, and SQLite answers "database is locked" at once
    (without waiting ``busy_timeout``) when another process is opening it at the same moment — as the
    workers of one server do at start-up. So the switch is retried, with a short backoff, for ``timeout``
    seconds. Blocks: call it off the event loop.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return str(mode)
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the ``migrations`` not yet recorded, in order, in one transaction; return their names.

    Safe to run concurrently from several processes (the transaction takes the write lock first).
    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {name for (name,) in conn.execute("SELECT name FROM schema_migrations")}
        applied: list[str] = []
        for migration in migrations:
            if migration.name in done:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (migration.name, time.time()),
            )
            applied.append(migration.name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _connect(path: str | Path, *, readonly: bool, busy_timeout: float) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit. check_same_thread=False because a connection is
    # opened on one thread and used on another, always by one thread at a time.
    if readonly:
        target, uri = Path(path).resolve().as_uri() + "?mode=ro", True
    else:
        target, uri = str(path), False
    return sqlite3.connect(
        target, timeout=busy_timeout, isolation_level=None, check_same_thread=False, uri=uri
    )


#: Bit i of a row's mask stands for ``COLUMNS[i]``; these columns are never NULL.
_ALWAYS = sum(1 << COLUMNS.index(c) for c in (
    "request_id", "started_at", "endpoint", "dialect", "stream", "status", "attempts", "latency_ms", "input_tokens",
    "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "partial", "metadata"))


def _to_row(r: RequestRecord) -> Row:
    """The record as (mask of the columns it has a value for, those values in ``COLUMNS`` order).

    Only values are bound, never ``None``, and only of the types the sqlite3 module binds directly (int, float,
    str): any other type, ``None`` and ``bool`` included, goes through a failed adapter lookup first, which costs
    more than binding a value. Building the values and the mask in one pass, column by column, costs about half
    of making the whole tuple and sorting out its empty columns afterwards."""
    v: list[object] = [r.request_id, r.started_at, r.endpoint, r.dialect]
    m = _ALWAYS
    if r.caller is not None:
        v.append(r.caller)
        m |= 1 << 4
    if r.public_model is not None:
        v.append(r.public_model)
        m |= 1 << 5
    if r.deployment is not None:
        v.append(r.deployment)
        m |= 1 << 6
    if r.provider is not None:
        v.append(r.provider)
        m |= 1 << 7
    if r.upstream_model is not None:
        v.append(r.upstream_model)
        m |= 1 << 8
    v += (1 if r.stream else 0, r.status)
    if r.error_type is not None:
        v.append(r.error_type)
        m |= 1 << 11
    if r.error_message is not None:
        v.append(r.error_message)
        m |= 1 << 12
    v += (orjson.dumps(r.attempts).decode(), r.latency_ms)
    if r.ttft_ms is not None:
        v.append(r.ttft_ms)
        m |= 1 << 15
    v += (r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens, r.cost_usd, 1 if r.partial else 0)
    if r.unsatisfactory is not None:
        v.append(r.unsatisfactory)
        m |= 1 << 22
    v.append(orjson.dumps(redact_metadata(r.metadata)).decode() if r.metadata else "{}")
    if r.router is not None:
        v.append(r.router)
        m |= 1 << 24
    if r.route is not None:
        v.append(orjson.dumps(redact_route(r.route)).decode())
        m |= 1 << 25
    if r.key_id is not None:
        v.append(r.key_id)
        m |= 1 << 26
    if r.team is not None:
        v.append(r.team)
        m |= 1 << 27
    if r.prompt is not None:
        v.append(redact(r.prompt))
        m |= 1 << 28
    if r.completion is not None:
        v.append(redact(r.completion))
        m |= 1 << 29
    return m, v


def _full(row: Row) -> tuple[object, ...]:
    """A row as one value per column of ``COLUMNS``, ``None`` for the empty ones (what the erasure ledger reads)."""
    mask, values = row
    it = iter(values)
    return tuple(next(it) if mask >> i & 1 else None for i in range(len(COLUMNS)))


def _attempt(data: dict[str, Any]) -> Attempt:
    return Attempt(**{k: v for k, v in data.items() if k in _ATTEMPT_FIELDS})


def _from_row(row: Sequence[Any]) -> RequestRecord:
    """Rebuild a record from ``COLUMNS`` values (without the leading rowid)."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["stream"] = bool(values["stream"])
    values["partial"] = bool(values["partial"])
    values["attempts"] = [_attempt(a) for a in orjson.loads(values["attempts"])]
    values["metadata"] = orjson.loads(values["metadata"])
    if values["route"] is not None:
        values["route"] = orjson.loads(values["route"])
    return RequestRecord(**values)


def _where(q: RecordQuery) -> tuple[list[str], list[object]]:
    return where_clauses(q, "?")


class SQLiteRecordReader(ClosesOnExit):
    """Queries and retention over a records database, on its own connection (safe across threads).

    Opened read-only by :func:`open_records_reader`; the writer opens one read-write for retention.
    Every call blocks on the database: from async code, run it in a thread.
    """

    def __init__(self, path: str | Path, *, readonly: bool = True, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._conn = _connect(path, readonly=readonly, busy_timeout=busy_timeout)
        self._lock = threading.Lock()

    def query(self, q: RecordQuery) -> list[RequestRecord]:
        """Records that match ``q``, newest first, at most ``q.limit`` of them."""
        with self._lock:
            return self._select(q)

    def query_and_position(self, q: RecordQuery) -> tuple[list[RequestRecord], int]:
        """Like :meth:`query`, plus the position to pass to :meth:`query_after` to see only what
        is written later (both read from one snapshot, so nothing falls between them)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                records = self._select(q)
                position = self._max_rowid()
            finally:
                self._conn.execute("COMMIT")
        return records, position

    def query_after(self, position: int, q: RecordQuery) -> tuple[list[RequestRecord], int]:
        """Records matching ``q`` written after ``position``, oldest first, and the new position.

        Positions follow write order (a request that started long ago but finished just now is
        new here), which is what ``switchboard logs --follow`` needs.
        """
        clauses, params = _where(q)
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                end = self._max_rowid()
                sql = f"{_SELECT} WHERE {' AND '.join(['rowid > ?', 'rowid <= ?', *clauses])} ORDER BY rowid"
                if q.limit is not None:
                    sql += f" LIMIT {int(q.limit)}"
                rows = self._conn.execute(sql, [position, end, *params]).fetchall()
            finally:
                self._conn.execute("COMMIT")
        if q.limit is not None and len(rows) == q.limit and rows:
            end = int(rows[-1][0])  # more may follow: resume after the last one returned
        return [_from_row(row[1:]) for row in rows], end

    def delete_older_than(self, ts: float) -> int:
        """Delete records that started before ``ts`` (unix seconds); return how many went.

        Deletes in small transactions so a concurrent writer is never held up for long.
        """
        deleted = 0
        with self._lock:
            while True:
                cursor = self._conn.execute(
                    "DELETE FROM requests WHERE rowid IN "
                    "(SELECT rowid FROM requests WHERE started_at < ? LIMIT ?)",
                    (ts, _DELETE_CHUNK),
                )
                deleted += cursor.rowcount
                if cursor.rowcount < _DELETE_CHUNK:
                    return deleted

    def erase(self, field: str, value: str, at: float | None = None) -> int:
        """Delete the records of one subject (``field`` is ``caller`` or ``key_id``) that started before
        ``at`` (default: now), and enter the erasure in the ledger, so that every writer drops such records
        still queued. Returns how many stored records went."""
        if field not in ERASABLE:
            raise ValueError(f"records are erased by {' or '.join(ERASABLE)}, not {field!r}")
        at = time.time() if at is None else at
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT INTO erasures (field, digest, at) VALUES (?, ?, ?)",
                                   (field, subject_digest(value), at))
                cursor = self._conn.execute(f"DELETE FROM requests WHERE {field} = ? AND started_at <= ?",
                                            (value, at))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _select(self, q: RecordQuery) -> list[RequestRecord]:
        clauses, params = _where(q)
        sql = _SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at DESC, request_id DESC"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
        return [_from_row(row[1:]) for row in self._conn.execute(sql, params)]

    def _max_rowid(self) -> int:
        (value,) = self._conn.execute("SELECT coalesce(max(rowid), 0) FROM requests").fetchone()
        return int(value)


def open_records_reader(path: str | Path) -> SQLiteRecordReader:
    """Open an existing records database read-only (no writer thread), e.g. for ``switchboard logs``.

    Raises :class:`FileNotFoundError` when there is no file at ``path`` and
    :class:`RecordStoreError` when the file is not a Switchboard records database.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no records database at {path}")
    try:
        reader = SQLiteRecordReader(path, readonly=True)
    except sqlite3.Error as exc:
        raise RecordStoreError(f"cannot open {path}: {exc}") from exc
    try:
        found = reader._conn.execute(
            "SELECT count(*) FROM sqlite_master"
            " WHERE type = 'table' AND name IN ('requests', 'schema_migrations')"
        ).fetchone()[0]
    except sqlite3.Error as exc:
        reader.close()
        raise RecordStoreError(f"{path} is not a Switchboard records database: {exc}") from exc
    if found != 2:
        reader.close()
        raise RecordStoreError(f"{path} is not a Switchboard records database (no requests table)")
    return reader


class SQLiteRecordWriter:
    """A :class:`~switchboard.storage.records.RecordSink` that batches records into SQLite.

    ``submit`` costs a deque append (well under a microsecond) and never waits; when the buffer
    holds ``queue_size`` records it drops and counts. Records must not be mutated after submit.
    ``before_write`` is called on the writer thread before every batch transaction with the batch
    size (tests use it to stall the writer); ``busy_timeout`` is how long a write waits for a lock
    held by another connection before it counts as failed.
    """

    def __init__(
        self,
        config: RecordsConfig,
        *,
        busy_timeout: float = 5.0,
        before_write: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(config.path)
        self._maxsize = config.queue_size
        self._batch_size = config.batch_size
        self._interval = config.flush_interval
        self._busy_timeout = busy_timeout
        self._before_write = before_write

        self._buf: deque[RequestRecord] = deque()
        self._retry: list[Row] = []  # one batch that failed once; retried at the next flush
        self._closed = False  # submit() refuses from here on
        self._stopping = False  # the writer thread drains and exits
        self._tickets = FlushTickets()  # flush() and close() wake the thread, never submit()
        self._thread: threading.Thread | None = None
        self._reader: SQLiteRecordReader | None = None
        self._ledger = ErasureLedger(COLUMNS)

        # Each counter has a single writing thread: _rejected the submitting thread (the event
        # loop), the others the writer thread (or close() once that thread has ended).
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
        if self._closed or len(buf) >= self._maxsize:
            self._rejected += 1
            return False
        buf.append(record)
        if len(buf) == self._batch_size:
            # A full batch wakes the writer; below that it wakes only every flush_interval, so an
            # idle gateway does not spend CPU (or the GIL) polling.
            self._tickets.wake.set()
        return True

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the database (creating it and its directory), migrate it, start the writer thread."""
        if self._thread is not None or self._closed:
            raise RuntimeError("SQLiteRecordWriter.start() may be called once, before close()")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path, readonly=False, busy_timeout=self._busy_timeout)
        try:
            mode = enable_wal(conn, self._busy_timeout)
            if mode.lower() != "wal":
                raise RecordStoreError(f"cannot use WAL journal mode for {self.path} (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            apply_migrations(conn)
            self._reader = SQLiteRecordReader(self.path, readonly=False, busy_timeout=self._busy_timeout)
        except BaseException:
            conn.close()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="switchboard-records-writer", daemon=True
        )
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything submitted before this call; block until done or ``timeout``.

        Returns ``True`` when all of it was written; ``False`` on timeout, when a write failed (the
        batch awaits its retry, or was dropped after it), or when the writer is not running.
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
            leftover = len(self._buf)
            self._buf.clear()
            self._dropped += leftover
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
            queued=len(self._buf) + len(self._retry),
            written=self._written,
            dropped=self._rejected + self._dropped,
            write_errors=self._write_errors,
            batches=self._batches,
            last_error=self._last_error,
        )

    # -- reading and retention (separate connection) --------------------------------------------

    def query(self, q: RecordQuery) -> list[RequestRecord]:
        """See :meth:`SQLiteRecordReader.query`. Blocks: run it in a thread from async code."""
        return self._started_reader().query(q)

    def delete_older_than(self, ts: float) -> int:
        """See :meth:`SQLiteRecordReader.delete_older_than`. Blocks: run it in a thread."""
        return self._started_reader().delete_older_than(ts)

    def erase(self, field: str, value: str, at: float | None = None) -> int:
        """See :meth:`SQLiteRecordReader.erase`. Blocks: run it in a thread."""
        return self._started_reader().erase(field, value, at)

    def _started_reader(self) -> SQLiteRecordReader:
        if self._reader is None:
            raise RuntimeError("SQLiteRecordWriter is not running: call start() first")
        return self._reader

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            next_flush = time.monotonic() + self._interval
            while not self._stopping:
                self._tickets.wake.wait(max(0.0, next_flush - time.monotonic()))
                self._tickets.wake.clear()
                if self._stopping:
                    break
                ticket = self._tickets.take()
                if self._tickets.asked(ticket) or time.monotonic() >= next_flush:
                    complete = self._write_round(conn, drain=True)
                    next_flush = time.monotonic() + self._interval
                else:
                    complete = self._write_round(conn, drain=False)
                if self._tickets.asked(ticket):
                    self._tickets.done(ticket, complete)
            # Shutting down: everything gets a write and a failed batch its one retry, now.
            self._write_round(conn, drain=True)
            if self._retry or self._buf:
                self._write_round(conn, drain=True)
            self._dropped += len(self._retry) + len(self._buf)
            self._retry = []
            self._buf.clear()
        finally:
            conn.close()
            self._tickets.finish()

    def _write_round(self, conn: sqlite3.Connection, *, drain: bool) -> bool:
        """Write full batches, or with ``drain`` everything; stop at the first failed batch.

        Returns whether the round got through without a failure.
        """
        if self._retry:
            if not drain:
                return False  # a batch failed: leave the database alone until the next flush
            rows, self._retry = self._retry, []
            if not self._write(conn, rows):
                self._dropped += len(rows)
                return False
        while self._buf and (drain or len(self._buf) >= self._batch_size):
            rows = self._take(self._batch_size)
            if rows and not self._write(conn, rows):
                self._retry = rows
                return False
        return True

    def _take(self, n: int) -> list[Row]:
        rows: list[Row] = []
        for _ in range(min(n, len(self._buf))):
            record = self._buf.popleft()
            try:
                rows.append(_to_row(record))
            except Exception as exc:  # a record that cannot be serialised is dropped alone
                self._fail(exc)
                self._dropped += 1
        return rows

    def _write(self, conn: sqlite3.Connection, rows: list[Row]) -> bool:
        try:
            if self._before_write is not None:
                self._before_write(len(rows))
            conn.execute("BEGIN IMMEDIATE")
            try:
                ledger = self._ledger
                ledger.learn(conn.execute("SELECT id, field, digest, at FROM erasures WHERE id > ?",
                                          (ledger.last_id,)).fetchall())
                kept = rows
                if ledger.erasing:
                    full = [_full(row) for row in rows]
                    still = {id(f) for f in ledger.keep(full)}
                    kept = [row for row, f in zip(rows, full, strict=True) if id(f) in still]
                _insert(conn, kept)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # the thread must outlive a full disk, a lock or a bad hook
            self._fail(exc)
            return False
        self._written += len(kept)
        self._batches += 1
        return True

    def _fail(self, exc: Exception) -> None:
        self._write_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
