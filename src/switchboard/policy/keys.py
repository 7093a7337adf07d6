"""Virtual keys: the credentials the gateway hands out, where they are kept, and how a request proves one.

A key reads ``sk-sb-<id>_<secret>``. The ``id`` (12 lowercase base32 characters) is public and finds the
key; the ``secret`` (``secrets.token_urlsafe(32)``) proves it. Only an HMAC-SHA256 of the whole key under the
server's secret (:func:`key_digest`) is stored, with its last four characters (``hint``) for display: the
plaintext is shown once, when the key is minted or rotated, and never written anywhere.

:class:`KeyStore` is the storage protocol — :class:`SQLiteKeyStore` here (one process, or several sharing a
file), ``RedisKeyStore`` in :mod:`switchboard.policy.keys_redis` (several hosts). It also keeps the audit
log of admin writes (:class:`AuditEntry`). :class:`KeyAuthenticator` turns a presented key into its
:class:`VirtualKey` through a short cache, and refuses unknown, wrong, revoked and expired keys.

Usage::

    store = SQLiteKeyStore("switchboard-keys.db")
    vk, plaintext = mint_key(secret, {"team": "search", "rpm": 60}, now=time.time(), created_by="admin")
    await store.create(vk)                                  # show `plaintext` to the caller, once
    auth = KeyAuthenticator(store, secret, cache_ttl=2.0)
    vk = await auth.authenticate(plaintext, now=time.time())
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from switchboard.errors import AuthenticationFailed, NotFound
from switchboard.storage.sqlite import enable_wal

__all__ = [
    "BUDGET_FIELDS",
    "KEY_PREFIX",
    "LIMIT_FIELDS",
    "AuditEntry",
    "KeyAuthenticator",
    "KeyStore",
    "KeyStoreError",
    "Role",
    "SQLiteKeyStore",
    "VirtualKey",
    "erased_target",
    "generate_key",
    "is_key_id",
    "key_digest",
    "mint_key",
    "parse_key",
    "pseudonym",
    "rotate_key",
]

KEY_PREFIX = "sk-sb-"
_ID_LENGTH = 12
_SECRET_LENGTH = 43  # secrets.token_urlsafe(32): 32 bytes in unpadded base64url
_KEY_LENGTH = len(KEY_PREFIX) + _ID_LENGTH + 1 + _SECRET_LENGTH
_ID_RE = re.compile(r"[a-z2-7]{12}")
_KEY_RE = re.compile(r"sk-sb-([a-z2-7]{12})_[A-Za-z0-9_-]{43}")

Role = Literal["user", "team_admin"]
_ROLES: tuple[Role, ...] = ("user", "team_admin")

#: Integer limits of a key: requests and tokens per minute, requests in flight, a request's ``max_tokens``.
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency", "max_tokens")
#: Dollar budgets of a key: per UTC day, per UTC month, for its lifetime.
BUDGET_FIELDS = ("budget_day", "budget_month", "budget_total")

_DOC_VERSION = 1
_T = TypeVar("_T")


class KeyStoreError(Exception):
    """A key store that cannot be opened or reached, a stored document that cannot be read, or a key id
    that already exists."""


def generate_key(key_id: str | None = None) -> tuple[str, str]:
    """A fresh ``(key_id, plaintext)``; with ``key_id``, a new secret for that id (rotation).

    Usage::

        key_id, plaintext = generate_key()        # ("k3q…", "sk-sb-k3q…_…")
    """
    if key_id is None:
        key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:_ID_LENGTH]
    elif not _ID_RE.fullmatch(key_id):
        raise ValueError(f"a key id is {_ID_LENGTH} lowercase base32 characters, got {key_id!r}")
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def is_key_id(text: str) -> bool:
    """Whether ``text`` has the shape of a key id (the stores answer "no such key" for anything else)."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def parse_key(text: str) -> str | None:
    """The key id of ``text`` when it has the exact shape of one of our keys, else ``None``.

    Usage::

        parse_key(request_key) or raise_unauthenticated()
    """
    if not isinstance(text, str) or len(text) != _KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(text)
    return match.group(1) if match else None


def key_digest(server_secret: bytes, plaintext: str) -> str:
    """HMAC-SHA256 (hex) of a key under the server's secret: what the store keeps instead of the key.

    Usage::

        hmac.compare_digest(key_digest(secret, presented), vk.digest)
    """
    return hmac.digest(server_secret, plaintext.encode("utf-8"), "sha256").hex()


def pseudonym(user: str) -> str:
    """What an erased user id becomes in the audit log: ``erased:`` and a SHA-256 prefix of the id. (Unsalted,
    so that every store and process agrees: it unlinks the log from the person, it does not hide a guessable id.)

    Usage::

        await store.audit(AuditEntry(at=now, actor="admin", action="erase", target=pseudonym(user)))
    """
    return "erased:" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualKey:
    """One virtual key as stored: who holds it, what it may reach, its limits and its life.

    ``models`` and ``guardrails`` name public models/routers and configured guardrails; an empty ``models``
    allows every model. A ``None`` limit or budget means none. Times are Unix seconds (wall clock).

    Usage::

        vk.usable(time.time())            # None, "revoked" or "expired"
        vk.allows_model("gpt-4o")
        vk.public()                       # for the admin API: everything but the digest
    """

    id: str
    digest: str = field(repr=False)
    hint: str
    created_at: float
    updated_at: float
    created_by: str
    name: str | None = None
    team: str | None = None
    user: str | None = None
    role: Role = "user"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    max_tokens: int | None = None
    budget_day: float | None = None
    budget_month: float | None = None
    budget_total: float | None = None
    guardrails: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()
    expires_at: float | None = None
    revoked_at: float | None = None

    def allows_model(self, name: str) -> bool:
        """Whether the key may call the public model or router ``name``."""
        return not self.models or name in self.models

    def usable(self, now: float) -> str | None:
        """``None`` when the key may be used at ``now``, else why not: ``"revoked"`` or ``"expired"``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def public(self) -> dict[str, object]:
        """A JSON-able view of the key without its digest."""
        view: dict[str, object] = {}
        for f in dataclasses.fields(self):
            if f.name == "digest":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            view[f.name] = value
        return view

    def to_document(self) -> dict[str, object]:
        """The stored form: :meth:`public` with the digest and a format version."""
        return {"v": _DOC_VERSION, **self.public(), "digest": self.digest}

    @classmethod
    def from_document(cls, doc: Mapping[str, object]) -> VirtualKey:
        """Read a stored document back, checking every field's type (``ValueError`` when one is wrong).
        Fields a newer version added are ignored."""
        return _read_document(doc)

    def with_changes(self, changes: Mapping[str, object], *, now: float) -> VirtualKey:
        """A copy with ``changes`` applied (clean values, as :mod:`switchboard.policy.admin` returns them,
        or ``revoked_at``) and ``updated_at`` set to ``now``. ``ValueError`` on anything else.

        Usage::

            vk = vk.with_changes(validate_update(payload, actor, vk, models, guardrails), now=now)
        """
        doc = self.to_document()
        for name, value in changes.items():
            if name not in _CHANGEABLE:
                raise ValueError(f"{name!r} cannot be changed")
            doc[name] = list(value) if isinstance(value, tuple) else value
        doc["updated_at"] = now
        return _read_document(doc)

    def revoked(self, now: float) -> VirtualKey:
        """A copy revoked at ``now`` (revoking twice keeps the first time)."""
        if self.revoked_at is not None:
            return self
        return dataclasses.replace(self, revoked_at=now, updated_at=now)


_READ_ONLY = frozenset({"id", "digest", "hint", "created_at", "updated_at", "created_by"})
_CHANGEABLE = frozenset(f.name for f in dataclasses.fields(VirtualKey)) - _READ_ONLY


def mint_key(
    server_secret: bytes, changes: Mapping[str, object], *, now: float, created_by: str
) -> tuple[VirtualKey, str]:
    """A new key with ``changes`` (clean values from :func:`~switchboard.policy.admin.validate_create`)
    and its plaintext, which must be shown to the caller once and then forgotten.

    Usage::

        vk, plaintext = mint_key(secret, clean, now=time.time(), created_by=actor.label)
        await store.create(vk)
    """
    key_id, plaintext = generate_key()
    base = VirtualKey(
        id=key_id,
        digest=key_digest(server_secret, plaintext),
        hint=plaintext[-4:],
        created_at=now,
        updated_at=now,
        created_by=created_by,
    )
    return base.with_changes(changes, now=now), plaintext


def rotate_key(key: VirtualKey, server_secret: bytes, *, now: float) -> tuple[VirtualKey, str]:
    """The key with a new secret (same id, limits and spend) and the new plaintext; the old one stops
    working once the store has the new digest and the authenticators' caches have let go of the old one.

    Usage::

        vk, plaintext = rotate_key(vk, secret, now=time.time());  await store.replace(vk)
    """
    _, plaintext = generate_key(key.id)
    rotated = dataclasses.replace(
        key, digest=key_digest(server_secret, plaintext), hint=plaintext[-4:], updated_at=now
    )
    return rotated, plaintext


# -- the stored document --------------------------------------------------------------------------------


def _read_document(doc: Mapping[str, object]) -> VirtualKey:
    r = _DocReader(doc)
    role = r.text("role")
    if role not in _ROLES:
        raise ValueError(f"key {r.key_id!r}: role must be one of {_ROLES}, got {role!r}")
    return VirtualKey(
        id=r.key_id,
        digest=r.text("digest"),
        hint=r.text("hint"),
        created_at=r.number("created_at"),
        updated_at=r.number("updated_at"),
        created_by=r.text("created_by"),
        name=r.optional(r.text, "name"),
        team=r.optional(r.text, "team"),
        user=r.optional(r.text, "user"),
        role="team_admin" if role == "team_admin" else "user",
        models=r.texts("models"),
        rpm=r.optional(r.integer, "rpm"),
        tpm=r.optional(r.integer, "tpm"),
        max_concurrency=r.optional(r.integer, "max_concurrency"),
        max_tokens=r.optional(r.integer, "max_tokens"),
        budget_day=r.optional(r.number, "budget_day"),
        budget_month=r.optional(r.number, "budget_month"),
        budget_total=r.optional(r.number, "budget_total"),
        guardrails=r.texts("guardrails"),
        metadata=r.metadata("metadata"),
        tags=r.texts("tags"),
        expires_at=r.optional(r.number, "expires_at"),
        revoked_at=r.optional(r.number, "revoked_at"),
    )


class _DocReader:
    """Typed reads of a key document, each failure naming the key and the field."""

    def __init__(self, doc: Mapping[str, object]) -> None:
        self.doc = doc
        key_id = doc.get("id")
        if not isinstance(key_id, str):
            raise ValueError("a key document needs a string id")
        self.key_id = key_id

    def _fail(self, name: str, what: str) -> ValueError:
        return ValueError(f"key {self.key_id!r}: {name} must be {what}, got {self.doc.get(name)!r}")

    def optional(self, read: Callable[[str], _T], name: str) -> _T | None:
        return None if self.doc.get(name) is None else read(name)

    def text(self, name: str) -> str:
        value = self.doc.get(name)
        if not isinstance(value, str):
            raise self._fail(name, "a string")
        return value

    def integer(self, name: str) -> int:
        value = self.doc.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "an integer")
        return value

    def number(self, name: str) -> float:
        value = self.doc.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(name, "a number")
        return float(value)

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.doc.get(name, [])
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self._fail(name, "a list of strings")
        return tuple(value)

    def metadata(self, name: str) -> dict[str, str]:
        value = self.doc.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._fail(name, "an object of strings")
        return dict(value)


def _check_id(key_id: str) -> None:
    if not is_key_id(key_id):
        raise ValueError(f"not a key id: {key_id!r}")


def _dumps(doc: Mapping[str, object]) -> str:
    return json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _loads_key(text: str | bytes) -> VirtualKey:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("a stored key is not a JSON object")
        return _read_document(doc)
    except ValueError as exc:
        raise KeyStoreError(f"unreadable stored key: {exc}") from exc


# -- audit ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin write, allowed or not: who (``"admin"`` or ``"key:<id>"``), what (``"key.create"``,
    ``"key.update"``, ``"key.rotate"``, ``"key.revoke"``, ``"erase"`` …), on what (a key id or a user id),
    which fields it wrote (names only, never values), and how it ended (``"ok"``, ``"denied"``,
    ``"invalid"``).

    Usage::

        await store.audit(AuditEntry(time.time(), actor.label, "key.update", vk.id, ("rpm",), "ok", rid))
    """

    at: float
    actor: str
    action: str
    target: str
    fields: tuple[str, ...] = ()
    outcome: str = "ok"
    request_id: str = ""

    def public(self) -> dict[str, object]:
        """A JSON-able view."""
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "fields": list(self.fields),
            "outcome": self.outcome,
            "request_id": self.request_id,
        }

    @classmethod
    def from_public(cls, doc: Mapping[str, object]) -> AuditEntry:
        """Read :meth:`public` back (``ValueError`` when a field has the wrong type)."""
        at, fields = doc.get("at"), doc.get("fields")
        texts = [doc.get(name) for name in ("actor", "action", "target", "outcome", "request_id")]
        if (
            isinstance(at, bool)
            or not isinstance(at, int | float)
            or not isinstance(fields, list)
            or not all(isinstance(f, str) for f in fields)
            or not all(isinstance(t, str) for t in texts)
        ):
            raise ValueError(f"not an audit entry: {doc!r}")
        actor, action, target, outcome, request_id = (str(t) for t in texts)
        return cls(float(at), actor, action, target, tuple(fields), outcome, request_id)


# -- the store protocol ---------------------------------------------------------------------------------


class KeyStore(Protocol):
    """Where virtual keys and the audit log live. Every call is a coroutine; writes are atomic.

    Usage::

        await store.create(vk);  await store.get(vk.id);  await store.replace(vk.revoked(now))
    """

    async def create(self, key: VirtualKey) -> None:
        """Store a new key (:class:`KeyStoreError` when its id exists, ``ValueError`` when it is not a key id)."""
        ...

    async def get(self, key_id: str) -> VirtualKey | None:
        """The key with this id, or ``None``."""
        ...

    async def list(self, team: str | None = None, user: str | None = None) -> builtins.list[VirtualKey]:
        """Every key, or those of ``team`` and/or ``user``, oldest first."""
        ...

    async def replace(self, key: VirtualKey) -> None:
        """Overwrite the stored key with this id (:class:`~switchboard.errors.NotFound` when there is none)."""
        ...

    async def delete(self, key_id: str) -> bool:
        """Remove a key; whether there was one."""
        ...

    async def keys_of(self, user: str | None, key_id: str | None) -> builtins.list[str]:
        """Ids of the keys ``user`` holds, and ``key_id`` when it exists (sorted, without repeats)."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Append an entry to the audit log."""
        ...

    async def audit_log(self, limit: int = 100, since: float | None = None) -> builtins.list[AuditEntry]:
        """The newest ``limit`` entries (at most 10,000) at or after ``since``, newest first."""
        ...

    async def erase_user(self, user: str) -> int:
        """Delete the keys ``user`` holds (their metadata is personal data) and pseudonymise the audit entries
        whose target is ``user`` or ``user:<user>`` (see :func:`erased_target`); the number of keys deleted."""
        ...

    async def aclose(self) -> None:
        """Release the connection(s)."""
        ...


_AUDIT_LIMIT_MAX = 10_000


def erased_target(target: str, user: str) -> str | None:
    """What an audit target naming ``user`` becomes once the user is erased; ``None`` when it does not name them.

    Usage::

        erased_target("user:bob", "bob")        # "user:erased:…"
    """
    if target == user:
        return pseudonym(user)
    if target == f"user:{user}":
        return f"user:{pseudonym(user)}"
    return None


def _audit_limit(limit: int) -> int:
    return max(0, min(limit, _AUDIT_LIMIT_MAX))


# -- SQLite -------------------------------------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS virtual_keys ("
    " id TEXT PRIMARY KEY, team TEXT, user TEXT, created_at REAL NOT NULL, doc TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS virtual_keys_team ON virtual_keys (team)",
    "CREATE INDEX IF NOT EXISTS virtual_keys_user ON virtual_keys (user)",
    "CREATE TABLE IF NOT EXISTS key_audit ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
    " target TEXT NOT NULL, fields TEXT NOT NULL, outcome TEXT NOT NULL, request_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS key_audit_at ON key_audit (at)",
    "CREATE INDEX IF NOT EXISTS key_audit_target ON key_audit (target)",
)
_AUDIT_COLUMNS = "at, actor, action, target, fields, outcome, request_id"


class SQLiteKeyStore:
    """A :class:`KeyStore` in a SQLite file (created with its directory on first use): table
    ``virtual_keys`` (one JSON document per key, with indexed ``team`` and ``user`` columns) and table
    ``key_audit``. WAL mode; every statement is its own transaction, so several processes may share the
    file and see each other's writes at once. Calls run in worker threads, one at a time per store.

    Usage::

        store = SQLiteKeyStore("var/switchboard-keys.db")
        ...
        await store.aclose()
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # The connection opens in the first worker thread that needs it: opening blocks, and the constructor
    # runs on the event loop.
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            mode = enable_wal(conn, self._busy_timeout)
            if mode.lower() != "wal":
                raise KeyStoreError(f"cannot use WAL journal mode for {self.path} (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            if self._closed:
                raise KeyStoreError(f"the key store {self.path} is closed")
            try:
                if self._conn is None:
                    self._conn = self._open()
                return work(self._conn)
            except (sqlite3.Error, OSError) as exc:
                raise KeyStoreError(f"key store {self.path}: {exc}") from exc

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.to_thread(self._call, work)

    async def create(self, key: VirtualKey) -> None:
        _check_id(key.id)
        row = (key.id, key.team, key.user, key.created_at, _dumps(key.to_document()))

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO virtual_keys (id, team, user, created_at, doc) VALUES (?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError as exc:
                raise KeyStoreError(f"a key with id {key.id!r} already exists") from exc

        await self._run(insert)

    async def get(self, key_id: str) -> VirtualKey | None:
        def select(conn: sqlite3.Connection) -> str | None:
            found = conn.execute("SELECT doc FROM virtual_keys WHERE id = ?", (key_id,)).fetchone()
            return None if found is None else str(found[0])

        if not is_key_id(key_id):
            return None
        doc = await self._run(select)
        return None if doc is None else _loads_key(doc)

    async def list(self, team: str | None = None, user: str | None = None) -> builtins.list[VirtualKey]:
        where, params = [], []
        if team is not None:
            where.append("team = ?")
            params.append(team)
        if user is not None:
            where.append("user = ?")
            params.append(user)
        sql = "SELECT doc FROM virtual_keys"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"

        def select(conn: sqlite3.Connection) -> builtins.list[str]:
            return [str(doc) for (doc,) in conn.execute(sql, params)]

        return [_loads_key(doc) for doc in await self._run(select)]

    async def replace(self, key: VirtualKey) -> None:
        row = (key.team, key.user, key.created_at, _dumps(key.to_document()), key.id)

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE virtual_keys SET team = ?, user = ?, created_at = ?, doc = ? WHERE id = ?", row
            ).rowcount

        if await self._run(update) == 0:
            raise NotFound(f"No key with id {key.id!r}.", param="id")

    async def delete(self, key_id: str) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM virtual_keys WHERE id = ?", (key_id,)).rowcount > 0

        return is_key_id(key_id) and await self._run(remove)

    async def keys_of(self, user: str | None, key_id: str | None) -> builtins.list[str]:
        def select(conn: sqlite3.Connection) -> builtins.list[str]:
            rows = conn.execute("SELECT id FROM virtual_keys WHERE user = ? OR id = ?", (user, key_id))
            return sorted(str(found) for (found,) in rows)

        if user is None and key_id is None:
            return []
        return await self._run(select)

    async def audit(self, entry: AuditEntry) -> None:
        row = (entry.at, entry.actor, entry.action, entry.target, json.dumps(list(entry.fields)), entry.outcome,
               entry.request_id)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO key_audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        await self._run(insert)

    async def audit_log(self, limit: int = 100, since: float | None = None) -> builtins.list[AuditEntry]:
        params = (float("-inf") if since is None else since, _audit_limit(limit))

        def select(conn: sqlite3.Connection) -> builtins.list[tuple[object, ...]]:
            return conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM key_audit WHERE at >= ? ORDER BY at DESC, seq DESC LIMIT ?", params
            ).fetchall()

        entries = []
        for at, actor, action, target, fields, outcome, request_id in await self._run(select):
            doc = {"at": at, "actor": actor, "action": action, "target": target, "outcome": outcome,
                   "request_id": request_id, "fields": json.loads(str(fields))}
            try:
                entries.append(AuditEntry.from_public(doc))
            except ValueError as exc:
                raise KeyStoreError(f"unreadable audit entry: {exc}") from exc
        return entries

    async def erase_user(self, user: str) -> int:
        def erase(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute("DELETE FROM virtual_keys WHERE user = ?", (user,)).rowcount
                for target in (user, f"user:{user}"):
                    renamed = erased_target(target, user)
                    conn.execute("UPDATE key_audit SET target = ? WHERE target = ?", (renamed, target))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return count

        return await self._run(erase)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)


# -- authentication -------------------------------------------------------------------------------------

_INVALID = "Invalid API key."
_REVOKED = "This API key has been revoked."
_EXPIRED = "This API key has expired."


def _usable(key: VirtualKey, now: float) -> VirtualKey:
    reason = key.usable(now)
    if reason == "revoked":
        raise AuthenticationFailed(_REVOKED)
    if reason is not None:
        raise AuthenticationFailed(_EXPIRED)
    return key


class KeyAuthenticator:
    """Checks a presented key: its shape, its id in the store, its secret (in constant time), then whether
    it is revoked or expired. An unknown id and a wrong secret fail alike, so the error tells nobody which
    ids exist; no message or log carries the presented key.

    Lookups are cached per id for ``cache_ttl`` seconds of ``clock`` (an LRU of ``max_entries``; unknown
    ids are cached too), so a write reaches another process's authenticator within ``cache_ttl``; the
    process that wrote calls :meth:`invalidate`. Concurrent checks of an uncached id share one lookup.
    Once a key's secret has passed the HMAC check, later checks of the same key look up a keyed BLAKE2b of
    it under a random per-process salt (a fraction of the HMAC's cost, and it never leaves the process);
    a rotated digest in the store sends the next check through the HMAC again. :meth:`known` is that check
    without a coroutine, for a key whose id is cached.

    Usage::

        auth = KeyAuthenticator(store, secret, cache_ttl=cfg.auth.cache_ttl)
        vk = auth.known(bearer_token, time.time())                      # the usual case, or None:
        vk = await auth.authenticate(bearer_token, now=time.time())     # or AuthenticationFailed
    """

    def __init__(
        self,
        store: KeyStore,
        server_secret: bytes,
        cache_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = 10_000,
    ) -> None:
        if len(server_secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        self._store = store
        self._secret = server_secret
        # Keyed with a random per-process salt once; each check hashes with a copy.
        self._fast_hash = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=32)
        # The fast hash of each key that passed the HMAC check → its key id and the stored digest it passed
        # against (a rotated digest sends the next check through the HMAC again).
        self._verified: dict[bytes, tuple[str, str]] = {}
        self._ttl = cache_ttl
        self._clock = clock
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, VirtualKey | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[VirtualKey | None]] = {}
        self._tasks: set[asyncio.Task[VirtualKey | None]] = set()
        # Compared against when the id is unknown, so both failures cost the same.
        self._decoy = key_digest(server_secret, "")

    def known(self, plaintext: str, now: float) -> VirtualKey | None:
        """The key ``plaintext`` stands for, when checking it needs neither the store nor the HMAC (a key that
        passed lately, its id cached); ``None`` when it does: then :meth:`authenticate`. Raises
        :class:`AuthenticationFailed` for a key of the wrong shape, revoked or expired."""
        seen = self._verified.get(self._fast(plaintext))  # a salted hash: looking it up tells nothing of the key
        if seen is None:
            return None
        cached = self._cache.get(seen[0])
        if cached is None or self._clock() >= cached[0]:
            return None
        key = cached[1]
        if key is None or key.digest != seen[1]:
            return None
        self._cache.move_to_end(seen[0])
        return _usable(key, now)

    async def authenticate(self, plaintext: str, now: float) -> VirtualKey:
        """The key ``plaintext`` stands for, usable at ``now`` (wall clock), or :class:`AuthenticationFailed`."""
        fast = self._fast(plaintext)
        seen = self._verified.get(fast)
        key_id = seen[0] if seen is not None else parse_key(plaintext)  # a key seen before: no pattern to match
        if key_id is None:
            raise AuthenticationFailed(_INVALID)
        cached = self._cache.get(key_id)
        if cached is not None and self._clock() < cached[0]:
            self._cache.move_to_end(key_id)
            key = cached[1]
        else:
            key = await self._lookup(key_id)
        if key is None or seen is None or seen[1] != key.digest:
            digest = key_digest(self._secret, plaintext)
            if not hmac.compare_digest(digest, self._decoy if key is None else key.digest) or key is None:
                raise AuthenticationFailed(_INVALID)
            if len(self._verified) >= self._max_entries:
                self._verified.clear()
            self._verified[fast] = (key_id, key.digest)
        return _usable(key, now)

    def _fast(self, plaintext: str) -> bytes:
        """The per-process salted hash of a key of the right shape (else :class:`AuthenticationFailed`)."""
        if len(plaintext) != _KEY_LENGTH:
            raise AuthenticationFailed(_INVALID)
        hasher = self._fast_hash.copy()
        hasher.update(plaintext.encode())
        return hasher.digest()

    def invalidate(self, key_id: str) -> None:
        """Forget what is cached for ``key_id`` (and any lookup in flight), so the next check reads the store."""
        self._cache.pop(key_id, None)
        self._inflight.pop(key_id, None)

    async def _lookup(self, key_id: str) -> VirtualKey | None:
        cached = self._cache.get(key_id)
        if cached is not None:
            if self._clock() < cached[0]:
                self._cache.move_to_end(key_id)
                return cached[1]
            del self._cache[key_id]
        task = self._inflight.get(key_id)
        if task is None:
            task = asyncio.create_task(self._fetch(key_id))
            self._inflight[key_id] = task
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        # Shielded: a caller that gives up does not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, key_id: str) -> VirtualKey | None:
        me = asyncio.current_task()
        try:
            key = await self._store.get(key_id)
        finally:
            # An invalidate() while the lookup ran took this task out: its answer may predate the write.
            current = self._inflight.get(key_id) is me
            if current:
                del self._inflight[key_id]
        if current and self._ttl > 0:
            self._cache[key_id] = (self._clock() + self._ttl, key)
            self._cache.move_to_end(key_id)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return key

    def _finished(self, task: asyncio.Task[VirtualKey | None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller had given up
