"""Storage protocols for request records: a sink the request path feeds, a reader for looking back.

A sink takes finished :class:`RequestRecord` objects on the hot path and persists them later, in
batches; it never makes the caller wait and counts what it had to drop. A reader answers
:class:`RecordQuery` filters, newest first, and applies retention. Backends (SQLite now, Postgres
later) implement both over the same logical schema.

Usage::

    sink.submit(record)                                  # on the event loop: never waits
    reader.query(RecordQuery(public_model="fast", only_errors=True, limit=20))
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from switchboard.telemetry.record import RequestRecord

__all__ = [
    "ERASABLE",
    "ErasureLedger",
    "FlushTickets",
    "FollowableReader",
    "RecordQuery",
    "RecordReader",
    "RecordSink",
    "RecordStoreError",
    "SinkStats",
    "open_reader",
    "subject_digest",
    "where_clauses",
]

#: The record fields a subject can be erased by: the end user, and the virtual key.
ERASABLE = ("caller", "key_id")


class RecordStoreError(Exception):
    """A record store that cannot be opened or read (not a records database, unreadable file …)."""


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Filters over stored records; every filter that is set must hold. Results come newest first.

    ``since`` is inclusive and ``until`` exclusive (unix seconds, compared with ``started_at``).
    ``only_errors`` keeps what the client saw as a failure: an HTTP status of 400 or more, or a
    stream cut after content had been sent (``partial``). ``limit=None`` returns everything.

    Usage::

        RecordQuery(since=time.time() - 3600, deployment="openai/gpt-4o-mini", limit=50)
    """

    since: float | None = None
    until: float | None = None
    public_model: str | None = None
    deployment: str | None = None
    status: int | None = None
    only_errors: bool = False
    caller: str | None = None
    request_id: str | None = None
    router: str | None = None
    limit: int | None = 100

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit}")

    def matches(self, record: RequestRecord) -> bool:
        """Whether ``record`` passes every filter (``limit`` aside): the reference for every backend."""
        return (
            (self.since is None or record.started_at >= self.since)
            and (self.until is None or record.started_at < self.until)
            and (self.public_model is None or record.public_model == self.public_model)
            and (self.deployment is None or record.deployment == self.deployment)
            and (self.status is None or record.status == self.status)
            and (not self.only_errors or record.status >= 400 or record.partial)
            and (self.caller is None or record.caller == self.caller)
            and (self.request_id is None or record.request_id == self.request_id)
            and (self.router is None or record.router == self.router)
        )


@dataclass(frozen=True, slots=True)
class SinkStats:
    """A snapshot of a sink's counters.

    ``queued`` is what was accepted and not yet written or dropped; ``dropped`` counts records
    refused by a full queue, submitted after close, or given up after a failed retry; ``batches``
    counts committed write transactions.
    """

    queued: int
    written: int
    dropped: int
    write_errors: int
    batches: int
    last_error: str | None


class RecordSink(Protocol):
    """Where the request path hands its finished records.

    ``submit`` runs on the event loop for every request: it must not block or do I/O, and returns
    ``False`` when the record was dropped. ``start`` and ``close`` may block (call them at startup and
    shutdown, off the loop); ``close`` flushes what is queued, waiting at most ``timeout`` seconds.
    """

    def start(self) -> None: ...

    def submit(self, record: RequestRecord) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...

    @property
    def stats(self) -> SinkStats: ...


class RecordReader(Protocol):
    """Read access to stored records, plus retention. Calls block: run them in a thread, not on the loop."""

    def query(self, q: RecordQuery) -> list[RequestRecord]: ...

    def delete_older_than(self, ts: float) -> int: ...

    def close(self) -> None: ...


class FollowableReader(RecordReader, Protocol):
    """A reader that can also continue from where it left off (``switchboard logs --follow``), and be used
    as a context manager."""

    def query_and_position(self, q: RecordQuery) -> tuple[list[RequestRecord], int]: ...

    def query_after(self, position: int, q: RecordQuery) -> tuple[list[RequestRecord], int]: ...

    def __enter__(self) -> FollowableReader: ...

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...


def open_reader(location: str, *, schema: str = "public") -> FollowableReader:
    """A reader of the records at ``location``: a ``postgresql://`` URL (records in ``schema``) or the
    path of a SQLite file. Raises :class:`RecordStoreError` when there is no record store there."""
    if location.startswith(("postgresql://", "postgres://")):
        from switchboard.storage.postgres import open_postgres_reader

        return open_postgres_reader(location, schema=schema)
    from switchboard.storage.sqlite import open_records_reader

    return open_records_reader(location)


def where_clauses(q: RecordQuery, placeholder: str) -> tuple[list[str], list[object]]:
    """The SQL conditions (joined with AND by the caller) and parameters of ``q``'s filters, with the
    driver's ``placeholder`` (``?`` for SQLite, ``%s`` for psycopg); ``limit`` aside."""
    clauses: list[str] = []
    params: list[object] = []
    if q.since is not None:
        clauses.append(f"started_at >= {placeholder}")
        params.append(q.since)
    if q.until is not None:
        clauses.append(f"started_at < {placeholder}")
        params.append(q.until)
    for column, value in (
        ("public_model", q.public_model),
        ("deployment", q.deployment),
        ("status", q.status),
        ("caller", q.caller),
        ("request_id", q.request_id),
        ("router", q.router),
    ):
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    if q.status is not None and q.status != 200:
        clauses.append("status <> 200")  # implied, and lets the partial index on status serve the query
    if q.only_errors:
        clauses.append("(status >= 400 OR partial)")
    return clauses, params


class FlushTickets:
    """The handshake between ``flush()`` callers and a record writer's thread.

    A caller takes a ticket and wakes the thread; the thread reads the newest ticket after clearing
    its wake-up, writes, and reports the ticket done with whether everything got written; ``finish()``
    releases every waiter when the thread ends.

    Usage::

        ok = tickets.request(timeout)             # caller side: blocks until done, finished or timeout
        ticket = tickets.take()                   # thread side, after wake.clear()
        if tickets.asked(ticket): tickets.done(ticket, complete)
    """

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._complete = True  # whether the last flush round wrote everything
        self._finished = False

    def request(self, timeout: float) -> bool:
        """Ask for a flush and wait for it: ``True`` when it wrote everything in time."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
        self.wake.set()
        with self._cond:
            done = self._cond.wait_for(lambda: self._done >= ticket or self._finished, timeout)
            return done and not self._finished and self._complete

    def take(self) -> int:
        """The newest ticket (read after clearing ``wake``: a later request wakes the thread again)."""
        return self._requested

    def asked(self, ticket: int) -> bool:
        """Whether ``ticket`` is a flush not yet reported done."""
        return ticket > self._done

    def done(self, ticket: int, complete: bool) -> None:
        """Report every flush up to ``ticket`` done."""
        with self._cond:
            self._done = ticket
            self._complete = complete
            self._cond.notify_all()

    def finish(self) -> None:
        """The writer thread has ended: no flush will be done any more."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()



def subject_digest(value: str) -> str:
    """How an erased subject is named in the erasure ledger: never the identifier itself."""
    return hashlib.sha256(value.encode()).hexdigest()


class ErasureLedger:
    """A writer's copy of the erasure ledger (the ``erasures`` table), read inside each write transaction.

    An erasure deletes the subject's stored records and enters its digest here, in one transaction that
    writers serialise with; every writer (of every process) then drops the records of that subject that
    started before the erasure and were still queued. Entries older than ``horizon`` seconds are
    forgotten: no request lives that long, so nothing queued can predate them.
    """

    def __init__(self, columns: Sequence[str], horizon: float = 6 * 3600.0) -> None:
        self.last_id = 0
        self._index = {field: columns.index(field) for field in ERASABLE}
        self._started = columns.index("started_at")
        self._erased: dict[tuple[str, str], float] = {}
        self._horizon = horizon
        self.dropped = 0

    def learn(self, entries: Sequence[tuple[int, str, str, float]]) -> None:
        """Take new ledger rows ``(id, field, digest, at)``."""
        now = time.time()
        for entry_id, field, digest, at in entries:
            self.last_id = max(self.last_id, int(entry_id))
            if field in self._index and at > now - self._horizon:
                self._erased[(field, digest)] = max(at, self._erased.get((field, digest), 0.0))
        if self._erased:
            self._erased = {k: at for k, at in self._erased.items() if at > now - self._horizon}

    @property
    def erasing(self) -> bool:
        """Whether any recent erasure may still drop a queued record (else :meth:`keep` keeps everything)."""
        return bool(self._erased)

    def keep(self, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """``rows`` without those of an erased subject that started before its erasure."""
        if not self._erased:
            return rows
        kept = []
        for row in rows:
            started = row[self._started]
            erased = False
            for field, i in self._index.items():
                value = row[i]
                if isinstance(value, str):
                    at = self._erased.get((field, subject_digest(value)))
                    if at is not None and isinstance(started, float | int) and started <= at:
                        erased = True
                        break
            if erased:
                self.dropped += 1
            else:
                kept.append(row)
        return kept
