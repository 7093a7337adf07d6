"""Named JSON state blobs that outlive a restart: the bandit's evidence, and whatever else learns online.

:class:`StateStore` is the whole protocol — ``load`` a JSON object by name, ``save`` one under a name,
last write wins. :class:`MemoryStateStore` keeps blobs for the life of the process;
:class:`SQLiteStateStore` keeps them in one table of a SQLite file (the records database will do),
safe to open from several processes. A Redis backend will implement the same two methods.

Values are JSON objects (``dict``) under the stdlib :mod:`json` rules: saving NaN, infinity or a type
JSON lacks (``set``, ``bytes`` …) raises :class:`TypeError` or :class:`ValueError` in every backend
alike, and non-string keys come back as strings.
Calls are synchronous and the SQLite one blocks: from async code, run them in a worker thread.

Usage::

    store = SQLiteStateStore("switchboard.db")
    store.save("bandit/simhash1-b4-s0-m2048", bandit.to_state())
    state = store.load("bandit/simhash1-b4-s0-m2048")          # None when never saved
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from switchboard._closing import ClosesOnExit
from switchboard.storage.sqlite import enable_wal

__all__ = ["MemoryStateStore", "SQLiteStateStore", "StateStore", "StateStoreError"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL)"
_UPSERT = (
    "INSERT INTO state (key, value, updated) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated"
)


class StateStoreError(Exception):
    """A state store that cannot be opened, or a stored blob that is not a JSON object."""


class StateStore(Protocol):
    """Named JSON objects, last write wins.

    Usage::

        store.save("bandit", {"version": 1});  store.load("bandit")  # → {"version": 1}
    """

    def load(self, key: str) -> dict[str, Any] | None:
        """The object last saved under ``key``, or ``None`` when there is none."""
        ...

    def save(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key``, replacing what was there, atomically."""
        ...


def _encode(key: str, value: dict[str, Any]) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a state key must be a non-empty string, got {key!r}")
    if not isinstance(value, dict):
        raise TypeError(f"a state value must be a dict, got {type(value).__name__}")
    # The stdlib encoder, because it refuses NaN and infinity (orjson would write null).
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _decode(key: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StateStoreError(f"state {key!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StateStoreError(f"state {key!r} is not a JSON object")
    return value


class MemoryStateStore:
    """A :class:`StateStore` in this process's memory, for tests and single-process runs without a
    database. Stores the JSON text, so a saved object is a snapshot and loads as a fresh copy.

    Usage::

        store = MemoryStateStore()
    """

    def __init__(self) -> None:
        self._blobs: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._blobs.get(key)
        return None if text is None else _decode(key, text)

    def save(self, key: str, value: dict[str, Any]) -> None:
        text = _encode(key, value)
        with self._lock:
            self._blobs[key] = text


class SQLiteStateStore(ClosesOnExit):
    """A :class:`StateStore` in the ``state`` table of a SQLite file (created with its directory).

    WAL mode, so readers never wait on the writer; each save is one atomic upsert, and several
    processes may share the file (a write waits up to ``busy_timeout`` seconds for another's lock).
    Safe to share between threads. Every call blocks: run it in a worker thread from async code.

    Usage::

        with SQLiteStateStore("var/switchboard.db") as store:
            store.save("bandit", state)
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # Autocommit: each statement is its own transaction. check_same_thread=False because
            # worker threads take turns on the connection, under the lock.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            mode = enable_wal(self._conn, busy_timeout)
            if mode.lower() != "wal":
                raise StateStoreError(f"cannot use WAL journal mode for {self.path} (got {mode})")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StateStoreError(f"cannot use {self.path} as a state store: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def load(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decode(key, row[0])

    def save(self, key: str, value: dict[str, Any]) -> None:
        text = _encode(key, value)
        with self._lock:
            self._conn.execute(_UPSERT, (key, text, time.time()))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
