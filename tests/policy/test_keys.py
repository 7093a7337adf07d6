"""Virtual keys: their format, the stores (one contract for SQLite and Redis) and the authenticator.

The Redis tests use ``redis://127.0.0.1:6379/15``, each under a prefix of its own that is deleted after
it. Without a reachable Redis they skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis import DriverInfo
from redis.exceptions import RedisError

from switchboard.errors import AuthenticationFailed, NotFound
from switchboard.policy.keys import (
    KEY_PREFIX,
    AuditEntry,
    KeyAuthenticator,
    KeyStore,
    KeyStoreError,
    SQLiteKeyStore,
    VirtualKey,
    generate_key,
    key_digest,
    mint_key,
    parse_key,
    pseudonym,
    rotate_key,
)
from switchboard.policy.keys_redis import RedisKeyStore

SECRET = b"test-server-secret-0123456789"
NOW = 1_700_000_000.0
REDIS_URL = "redis://127.0.0.1:6379/15"


def make_key(now: float = NOW, **fields: object) -> tuple[VirtualKey, str]:
    return mint_key(SECRET, fields, now=now, created_by="admin")


def secret_part(plaintext: str) -> str:
    return plaintext[len(KEY_PREFIX) + 13 :]


# -- backends ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A raw client on the test database and a fresh prefix, whose keys are deleted afterwards."""
    client = aioredis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0, driver_info=DriverInfo(lib_version=redis.__version__)
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        reason = f"Redis is not reachable at {REDIS_URL} ({exc}); start one to run the Redis key store tests"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    prefix = f"sbtest:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        leftovers = [k async for k in client.scan_iter(match=prefix + "*")]
        if leftovers:
            await client.delete(*leftovers)
        await client.aclose()


async def redis_bytes(client: aioredis.Redis, prefix: str) -> bytes:
    """Every byte stored under ``prefix``: names and values of strings, sets and sorted sets."""
    out: list[object] = []
    async for name in client.scan_iter(match=prefix + "*"):
        out.append(name)
        kind = await client.type(name)
        if kind == b"string":
            out.append(await client.get(name))
        elif kind == b"set":
            out.extend(await client.smembers(name))
        elif kind == b"zset":
            out.extend(await client.zrange(name, 0, -1))
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} at {name!r}")
    assert all(isinstance(part, bytes) for part in out)
    return b"".join(part for part in out if isinstance(part, bytes))


def files_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


@dataclass
class Backend:
    store: KeyStore
    stored_bytes: Callable[[], Awaitable[bytes]]  # everything the store has persisted


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        directory = tmp_path / "keys"
        sqlite_store = SQLiteKeyStore(directory / "keys.db")
        yield Backend(sqlite_store, lambda: asyncio.to_thread(files_bytes, directory))
        await sqlite_store.aclose()
        return
    async with redis_namespace() as (client, prefix):
        redis_store = RedisKeyStore(REDIS_URL, prefix=prefix)
        yield Backend(redis_store, lambda: redis_bytes(client, prefix))
        await redis_store.aclose()


@pytest.fixture
def store(backend: Backend) -> KeyStore:
    return backend.store


# -- the key format -------------------------------------------------------------------------------------


def test_a_generated_key_has_the_documented_shape() -> None:
    key_id, plaintext = generate_key()
    assert plaintext.startswith(f"sk-sb-{key_id}_")
    assert len(key_id) == 12
    assert set(key_id) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert len(secret_part(plaintext)) == 43
    assert parse_key(plaintext) == key_id


def test_generated_ids_and_secrets_differ() -> None:
    pairs = [generate_key() for _ in range(200)]
    assert len({key_id for key_id, _ in pairs}) == 200
    assert len({secret_part(p) for _, p in pairs}) == 200


def test_a_new_secret_for_an_existing_id() -> None:
    key_id, first = generate_key()
    same_id, second = generate_key(key_id)
    assert same_id == key_id and parse_key(second) == key_id and first != second
    with pytest.raises(ValueError, match="key id"):
        generate_key("NOT-AN-ID")


_, SAMPLE = generate_key("abcdefgh2345")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-sb-",
        SAMPLE + "x",
        SAMPLE[:-1],
        " " + SAMPLE,
        SAMPLE + "\n",
        SAMPLE.replace("sk-sb-", "sk-SB-"),
        SAMPLE.replace("sk-sb-", "sk-xx-"),
        SAMPLE.replace("abcdefgh2345", "ABCDEFGH2345"),
        SAMPLE.replace("abcdefgh2345", "abcdefgh2340"),  # 0 is not base32
        SAMPLE.replace("abcdefgh2345_", "abcdefgh2345-"),
        SAMPLE[:-1] + "=",
        SAMPLE[:-1] + "é",
        "sk-proj-" + "a" * 54,
        "Bearer " + SAMPLE,
        "sk-sb-" + "a" * 10_000,
    ],
)
def test_parse_key_refuses_anything_but_our_exact_shape(text: str) -> None:
    assert parse_key(text) is None


def test_the_digest_depends_on_the_server_secret_and_the_whole_key() -> None:
    _, plaintext = generate_key()
    digest = key_digest(SECRET, plaintext)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == key_digest(SECRET, plaintext)
    assert digest != key_digest(SECRET + b"!", plaintext)
    assert digest != key_digest(SECRET, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))


# -- the VirtualKey type ---------------------------------------------------------------------------------


def test_a_minted_key_keeps_only_the_digest_and_a_hint() -> None:
    vk, plaintext = make_key(name="ci", team="search", rpm=60)
    assert vk.id == parse_key(plaintext)
    assert vk.digest == key_digest(SECRET, plaintext)
    assert vk.hint == plaintext[-4:]
    assert (vk.name, vk.team, vk.rpm, vk.created_at, vk.updated_at, vk.created_by) == ("ci", "search", 60, NOW, NOW,
                                                                                       "admin")
    view = vk.public()
    assert "digest" not in view
    text = json.dumps(view) + repr(vk)
    assert plaintext not in text and secret_part(plaintext) not in text and vk.digest not in text


def test_allows_model_with_and_without_an_allowlist() -> None:
    everything, _ = make_key()
    some, _ = make_key(models=("gpt-4o", "fast"))
    assert everything.allows_model("anything")
    assert some.allows_model("fast") and not some.allows_model("gpt-4o-mini")


def test_usable_says_why_not() -> None:
    vk, _ = make_key(expires_at=NOW + 10)
    assert vk.usable(NOW) is None
    assert vk.usable(NOW + 10) == "expired"
    assert vk.revoked(NOW + 1).usable(NOW + 2) == "revoked"
    assert vk.revoked(NOW + 1).usable(NOW + 20) == "revoked"
    assert vk.revoked(NOW + 1).revoked(NOW + 5).revoked_at == NOW + 1


def test_documents_round_trip_and_are_checked() -> None:
    vk, _ = make_key(name="n", team="t", user="u", role="team_admin", models=("a",), rpm=1, tpm=2, max_concurrency=3,
                     max_tokens=4, budget_day=1.5, budget_month=2, budget_total=3.25, guardrails=("pii",),
                     metadata={"k": "v"}, tags=("x",), expires_at=NOW + 5)
    doc = json.loads(json.dumps(vk.to_document()))
    assert VirtualKey.from_document(doc) == vk
    assert VirtualKey.from_document({**doc, "added_later": 1}) == vk
    for field, bad in [("rpm", "10"), ("rpm", True), ("role", "root"), ("models", "a"), ("metadata", {"k": 1}),
                       ("budget_day", "1"), ("digest", None)]:
        with pytest.raises(ValueError, match=field):
            VirtualKey.from_document({**doc, field: bad})


def test_with_changes_applies_clean_values_and_nothing_else() -> None:
    vk, _ = make_key(rpm=5)
    changed = vk.with_changes({"rpm": None, "models": ("a", "b"), "name": "x"}, now=NOW + 1)
    assert (changed.rpm, changed.models, changed.name, changed.updated_at, changed.id) == (None, ("a", "b"), "x",
                                                                                          NOW + 1, vk.id)
    for field in ("id", "digest", "hint", "created_at", "created_by", "spend"):
        with pytest.raises(ValueError, match=field):
            vk.with_changes({field: "x"}, now=NOW)


def test_rotation_keeps_the_id_and_everything_but_the_secret() -> None:
    vk, old = make_key(team="t", rpm=9)
    rotated, new = rotate_key(vk, SECRET, now=NOW + 1)
    assert parse_key(new) == vk.id and new != old
    assert rotated.digest == key_digest(SECRET, new) and rotated.hint == new[-4:]
    assert dataclasses.replace(rotated, digest=vk.digest, hint=vk.hint, updated_at=vk.updated_at) == vk


# -- the store contract (SQLite and Redis) ------------------------------------------------------------------


async def test_a_created_key_reads_back_whole(store: KeyStore) -> None:
    vk, _ = make_key(name="n", team="t", user="u@example.com", models=("a",), rpm=1, budget_day=0.5,
                     guardrails=("pii",), metadata={"owner": "Zoë"}, tags=("x", "y"), expires_at=NOW + 5)
    await store.create(vk)
    assert await store.get(vk.id) == vk
    assert await store.get(generate_key()[0]) is None


@pytest.mark.parametrize("name", ["all", "audit", "team:t", "user:u", "", "AAAAAAAAAAAA", "a" * 13, "*"])
async def test_names_that_are_not_key_ids_find_nothing(store: KeyStore, name: str) -> None:
    vk, _ = make_key(team="t", user="u")
    await store.create(vk)
    await store.audit(AuditEntry(NOW, "admin", "key.create", vk.id))
    assert await store.get(name) is None
    assert await store.delete(name) is False
    assert await store.keys_of(None, name) == []
    with pytest.raises(ValueError, match="not a key id"):
        await store.create(dataclasses.replace(vk, id=name))
    with pytest.raises(NotFound):
        await store.replace(dataclasses.replace(vk, id=name))
    assert await store.list() == [vk]


async def test_creating_an_existing_id_fails(store: KeyStore) -> None:
    vk, _ = make_key()
    await store.create(vk)
    with pytest.raises(KeyStoreError, match="already exists"):
        await store.create(dataclasses.replace(vk, name="other"))
    assert await store.get(vk.id) == vk


async def test_list_filters_by_team_and_user_oldest_first(store: KeyStore) -> None:
    a, _ = make_key(NOW + 1, team="t1", user="u1")
    b, _ = make_key(NOW + 2, team="t1", user="u2")
    c, _ = make_key(NOW + 3, team="t2", user="u1")
    d, _ = make_key(NOW + 4)
    for vk in (d, b, c, a):
        await store.create(vk)
    assert await store.list() == [a, b, c, d]
    assert await store.list(team="t1") == [a, b]
    assert await store.list(user="u1") == [a, c]
    assert await store.list(team="t1", user="u1") == [a]
    assert await store.list(team="nobody") == []


async def test_replace_overwrites_and_moves_the_indexes(store: KeyStore) -> None:
    vk, _ = make_key(team="t1", user="u1")
    await store.create(vk)
    moved = vk.with_changes({"team": "t2", "user": None, "rpm": 7}, now=NOW + 1)
    await store.replace(moved)
    assert await store.get(vk.id) == moved
    assert await store.list(team="t1") == []
    assert await store.list(team="t2") == [moved]
    assert await store.list(user="u1") == []
    missing, _ = make_key()
    with pytest.raises(NotFound):
        await store.replace(missing)
    assert await store.get(missing.id) is None


async def test_delete_removes_the_key_from_everywhere(store: KeyStore) -> None:
    vk, _ = make_key(team="t", user="u")
    keep, _ = make_key(team="t", user="u")
    await store.create(vk)
    await store.create(keep)
    assert await store.delete(vk.id) is True
    assert await store.delete(vk.id) is False
    assert await store.get(vk.id) is None
    assert await store.list() == [keep]
    assert await store.list(team="t", user="u") == [keep]


async def test_keys_of_a_user_and_a_key_id(store: KeyStore) -> None:
    a, _ = make_key(user="u1")
    b, _ = make_key(user="u1")
    c, _ = make_key(user="u2")
    for vk in (a, b, c):
        await store.create(vk)
    assert await store.keys_of("u1", None) == sorted([a.id, b.id])
    assert await store.keys_of("u1", c.id) == sorted([a.id, b.id, c.id])
    assert await store.keys_of("u1", a.id) == sorted([a.id, b.id])
    assert await store.keys_of(None, c.id) == [c.id]
    assert await store.keys_of(None, generate_key()[0]) == []
    assert await store.keys_of("nobody", None) == []
    assert await store.keys_of(None, None) == []


async def test_the_audit_log_newest_first_with_limit_and_since(store: KeyStore) -> None:
    entries = [AuditEntry(NOW + i, "admin", "key.update", f"k{i}", ("rpm", "name"), "ok", f"req-{i}") for i in range(5)]
    for entry in entries:
        await store.audit(entry)
    await store.audit(entries[4])  # the same entry twice is two entries
    assert await store.audit_log() == [entries[4], entries[4], entries[3], entries[2], entries[1], entries[0]]
    assert await store.audit_log(limit=2) == [entries[4], entries[4]]
    assert await store.audit_log(since=NOW + 3) == [entries[4], entries[4], entries[3]]
    assert await store.audit_log(limit=0) == []
    assert await store.audit_log(since=NOW + 99) == []


async def test_erase_user_deletes_their_keys_and_pseudonymises_the_audit(store: KeyStore) -> None:
    mine1, _ = make_key(team="t", user="alice@example.com", metadata={"phone": "+44 20 7946 0000"})
    mine2, _ = make_key(user="alice@example.com")
    theirs, _ = make_key(team="t", user="bob")
    for vk in (mine1, mine2, theirs):
        await store.create(vk)
    await store.audit(AuditEntry(NOW, "admin", "key.create", mine1.id, ("user",)))
    await store.audit(AuditEntry(NOW + 1, "admin", "user.export", "alice@example.com", ()))
    await store.audit(AuditEntry(NOW + 2, "admin", "user.export", "bob", ()))
    await store.audit(AuditEntry(NOW + 3, "admin", "user.export", "user:alice@example.com", ()))

    assert await store.erase_user("alice@example.com") == 2
    assert await store.list() == [theirs]
    assert await store.list(team="t") == [theirs]
    assert await store.keys_of("alice@example.com", None) == []
    log = await store.audit_log()
    alias = pseudonym("alice@example.com")
    assert [e.target for e in log] == [f"user:{alias}", "bob", alias, mine1.id]
    assert "alice" not in repr(log)
    assert log[2] == AuditEntry(NOW + 1, "admin", "user.export", pseudonym("alice@example.com"), ())
    assert pseudonym("alice@example.com").startswith("erased:")
    assert await store.erase_user("alice@example.com") == 0


async def test_the_store_never_holds_a_plaintext_key(backend: Backend) -> None:
    store = backend.store
    minted = [make_key(team="t", user="u", metadata={"m": "v"}) for _ in range(3)]
    for vk, _ in minted:
        await store.create(vk)
    rotated, new_plaintext = rotate_key(minted[0][0], SECRET, now=NOW + 1)
    await store.replace(rotated)
    await store.audit(AuditEntry(NOW + 1, "admin", "key.rotate", rotated.id, ()))
    stored = await backend.stored_bytes()
    assert rotated.digest.encode() in stored  # the scan sees the stored documents
    for plaintext in [p for _, p in minted] + [new_plaintext]:
        assert plaintext.encode() not in stored
        assert secret_part(plaintext).encode() not in stored


# -- Redis specifics ---------------------------------------------------------------------------------------


async def test_the_redis_layout_is_as_documented() -> None:
    async with redis_namespace() as (client, prefix):
        store = RedisKeyStore(REDIS_URL, prefix=prefix, audit_cap=3)
        try:
            vk, _ = make_key(team="t", user="u")
            await store.create(vk)
            for i in range(5):
                await store.audit(AuditEntry(NOW + i, "admin", "key.update", vk.id, (), "ok", f"r{i}"))
            names = sorted([n.decode() async for n in client.scan_iter(match=prefix + "*")])
            assert names == sorted(f"{prefix}vk:{s}" for s in (vk.id, "all", "team:t", "user:u", "audit"))
            assert json.loads(await client.get(f"{prefix}vk:{vk.id}") or b"")["digest"] == vk.digest
            assert [e.request_id for e in await store.audit_log()] == ["r4", "r3", "r2"]  # capped
            await store.delete(vk.id)
            names = sorted([n.decode() async for n in client.scan_iter(match=prefix + "*")])
            assert names == [f"{prefix}vk:audit"]
        finally:
            await store.aclose()


# -- SQLite specifics ------------------------------------------------------------------------------------


async def test_two_sqlite_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    first, second = SQLiteKeyStore(tmp_path / "keys.db"), SQLiteKeyStore(tmp_path / "keys.db")
    try:
        vk, _ = make_key(team="t")
        await first.create(vk)
        assert await second.get(vk.id) == vk
        revoked = vk.revoked(NOW + 1)
        await second.replace(revoked)
        assert await first.get(vk.id) == revoked
        await second.audit(AuditEntry(NOW, "admin", "key.revoke", vk.id))
        assert [e.action for e in await first.audit_log()] == ["key.revoke"]
        assert await first.delete(vk.id)
        assert await second.list() == []
    finally:
        await first.aclose()
        await second.aclose()


def test_creating_a_sqlite_store_touches_nothing_until_used(tmp_path: Path) -> None:
    SQLiteKeyStore(tmp_path / "later" / "keys.db")
    assert not (tmp_path / "later").exists()


async def test_a_closed_sqlite_store_says_so(tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    await store.aclose()
    with pytest.raises(KeyStoreError, match="closed"):
        await store.get(generate_key()[0])


async def test_a_damaged_stored_key_is_reported_not_returned(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    vk, _ = make_key()
    await store.create(vk)

    def damage() -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE virtual_keys SET doc = ? WHERE id = ?", ('{"id": "x", "rpm": "many"}', vk.id))
        conn.close()

    await asyncio.to_thread(damage)
    with pytest.raises(KeyStoreError, match="unreadable"):
        await store.get(vk.id)
    await store.aclose()


# -- the authenticator ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(SQLiteKeyStore):
    """A SQLite store that counts lookups, and holds them while ``gate`` is set and not yet open."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gets = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_next = False

    async def get(self, key_id: str) -> VirtualKey | None:
        self.gets += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise KeyStoreError("the store is down")
        return await super().get(key_id)


@pytest.fixture
async def counting(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(tmp_path / "keys.db")
    yield store
    await store.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(counting: CountingStore, clock: FakeClock) -> KeyAuthenticator:
    return KeyAuthenticator(counting, SECRET, cache_ttl=2.0, clock=clock)


async def test_a_valid_key_authenticates(counting: CountingStore, auth: KeyAuthenticator) -> None:
    vk, plaintext = make_key(team="t")
    await counting.create(vk)
    assert await auth.authenticate(plaintext, NOW) == vk


@pytest.mark.parametrize("text", ["", "hunter2", "sk-sb-short", "Bearer x", SAMPLE + " "])
async def test_a_malformed_key_fails_without_a_lookup(
    counting: CountingStore, auth: KeyAuthenticator, text: str
) -> None:
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        await auth.authenticate(text, NOW)
    assert counting.gets == 0


async def test_an_unknown_id_and_a_wrong_secret_fail_alike(counting: CountingStore, auth: KeyAuthenticator) -> None:
    vk, _ = make_key()
    await counting.create(vk)
    _, wrong_secret = generate_key(vk.id)
    _, unknown_id = generate_key()
    failures = []
    for attempt in (wrong_secret, unknown_id):
        with pytest.raises(AuthenticationFailed) as caught:
            await auth.authenticate(attempt, NOW)
        failures.append(caught.value)
        shown = f"{caught.value!s} {caught.value!r} {caught.value.args}"
        assert attempt not in shown and secret_part(attempt) not in shown
    assert [(type(e), e.message, e.code, e.param, e.status) for e in failures] == [
        (AuthenticationFailed, "Invalid API key.", "invalid_api_key", None, 401)
    ] * 2


async def test_a_key_under_another_server_secret_fails(counting: CountingStore) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    other = KeyAuthenticator(counting, b"another-secret-of-16+bytes", cache_ttl=0)
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        await other.authenticate(plaintext, NOW)


async def test_revoked_and_expired_keys_fail_with_their_reason(
    counting: CountingStore, auth: KeyAuthenticator
) -> None:
    revoked, revoked_text = make_key()
    expiring, expiring_text = make_key(expires_at=NOW + 60)
    await counting.create(revoked.revoked(NOW))
    await counting.create(expiring)
    with pytest.raises(AuthenticationFailed, match=r"^This API key has been revoked\.$"):
        await auth.authenticate(revoked_text, NOW + 1)
    assert await auth.authenticate(expiring_text, NOW + 59) == expiring
    with pytest.raises(AuthenticationFailed, match=r"^This API key has expired\.$"):
        await auth.authenticate(expiring_text, NOW + 60)
    # Without the secret, a revoked key is just an invalid key.
    _, guess = generate_key(revoked.id)
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        await auth.authenticate(guess, NOW + 1)


async def test_a_revocation_is_seen_after_invalidate(counting: CountingStore, auth: KeyAuthenticator) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    await auth.authenticate(plaintext, NOW)
    await counting.replace(vk.revoked(NOW))
    assert await auth.authenticate(plaintext, NOW) == vk  # trusted from the cache
    assert counting.gets == 1
    auth.invalidate(vk.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.authenticate(plaintext, NOW)


async def test_a_revocation_is_seen_after_the_cache_ttl(
    counting: CountingStore, auth: KeyAuthenticator, clock: FakeClock
) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    await auth.authenticate(plaintext, NOW)
    await counting.replace(vk.revoked(NOW))  # by another process: nobody calls invalidate here
    clock.now += 1.99
    assert await auth.authenticate(plaintext, NOW) == vk
    clock.now += 0.01
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.authenticate(plaintext, NOW)
    assert counting.gets == 2


async def test_an_unknown_id_is_cached_for_the_ttl_too(
    counting: CountingStore, auth: KeyAuthenticator, clock: FakeClock
) -> None:
    vk, plaintext = make_key()
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(plaintext, NOW)
    await counting.create(vk)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(plaintext, NOW)
    assert counting.gets == 1
    clock.now += 2
    assert await auth.authenticate(plaintext, NOW) == vk


async def test_rotation_retires_the_old_secret(counting: CountingStore, auth: KeyAuthenticator) -> None:
    vk, old = make_key()
    await counting.create(vk)
    await auth.authenticate(old, NOW)
    rotated, new = rotate_key(vk, SECRET, now=NOW)
    await counting.replace(rotated)
    auth.invalidate(vk.id)
    assert await auth.authenticate(new, NOW) == rotated
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        await auth.authenticate(old, NOW)


async def test_a_key_that_passed_lately_is_known_at_once(
    counting: CountingStore, auth: KeyAuthenticator, clock: FakeClock
) -> None:
    """``known`` answers without the store or the HMAC only for a key that passed them and whose id is cached;
    anything else (never seen, wrong secret, invalidated, past the cache's ttl, rotated) goes to authenticate."""
    vk, plaintext = make_key(expires_at=NOW + 60)
    await counting.create(vk)
    assert auth.known(plaintext, NOW) is None
    assert await auth.authenticate(plaintext, NOW) == vk
    assert auth.known(plaintext, NOW) == vk and counting.gets == 1
    _, wrong_secret = generate_key(vk.id)
    assert auth.known(wrong_secret, NOW) is None
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        auth.known(plaintext[:-1], NOW)
    with pytest.raises(AuthenticationFailed, match=r"^This API key has expired\.$"):
        auth.known(plaintext, NOW + 60)
    clock.now += 2  # past the cache's ttl: the store is read again
    assert auth.known(plaintext, NOW) is None
    assert await auth.authenticate(plaintext, NOW) == vk and counting.gets == 2
    rotated, new = rotate_key(vk, SECRET, now=NOW)
    await counting.replace(rotated)
    auth.invalidate(vk.id)
    assert auth.known(plaintext, NOW) is None
    assert await auth.authenticate(new, NOW) == rotated
    assert auth.known(new, NOW) == rotated
    assert auth.known(plaintext, NOW) is None  # passed against the old digest
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key\.$"):
        await auth.authenticate(plaintext, NOW)
    await counting.replace(rotated.revoked(NOW))
    auth.invalidate(vk.id)
    assert auth.known(new, NOW) is None
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.authenticate(new, NOW)


async def test_without_a_ttl_every_check_reads_the_store(counting: CountingStore) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    auth = KeyAuthenticator(counting, SECRET, cache_ttl=0)
    for _ in range(3):
        await auth.authenticate(plaintext, NOW)
    assert counting.gets == 3


async def test_the_cache_keeps_the_most_recently_used_entries(counting: CountingStore, clock: FakeClock) -> None:
    auth = KeyAuthenticator(counting, SECRET, cache_ttl=60, clock=clock, max_entries=2)
    keys = [make_key() for _ in range(3)]
    for vk, _ in keys:
        await counting.create(vk)
    for _, plaintext in keys:
        await auth.authenticate(plaintext, NOW)
    assert counting.gets == 3
    await auth.authenticate(keys[2][1], NOW)
    await auth.authenticate(keys[1][1], NOW)
    assert counting.gets == 3
    await auth.authenticate(keys[0][1], NOW)  # evicted as the least recently used
    assert counting.gets == 4


async def test_concurrent_checks_of_a_cold_id_share_one_lookup(
    counting: CountingStore, auth: KeyAuthenticator
) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    counting.gate = asyncio.Event()
    checks = [asyncio.create_task(auth.authenticate(plaintext, NOW)) for _ in range(10)]
    await counting.entered.wait()
    counting.gate.set()
    assert await asyncio.gather(*checks) == [vk] * 10
    assert counting.gets == 1


async def test_a_caller_giving_up_does_not_fail_the_others(counting: CountingStore, auth: KeyAuthenticator) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    counting.gate = asyncio.Event()
    first = asyncio.create_task(auth.authenticate(plaintext, NOW))
    second = asyncio.create_task(auth.authenticate(plaintext, NOW))
    await counting.entered.wait()
    first.cancel()
    counting.gate.set()
    assert await second == vk
    with pytest.raises(asyncio.CancelledError):
        await first
    assert counting.gets == 1


async def test_a_lookup_in_flight_during_invalidate_is_not_cached(
    counting: CountingStore, auth: KeyAuthenticator
) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    counting.gate = asyncio.Event()
    check = asyncio.create_task(auth.authenticate(plaintext, NOW))
    await counting.entered.wait()
    auth.invalidate(vk.id)  # a write happened while the lookup ran
    counting.gate.set()
    assert await check == vk
    await auth.authenticate(plaintext, NOW)
    assert counting.gets == 2


async def test_a_failing_store_fails_the_check_and_is_not_cached(
    counting: CountingStore, auth: KeyAuthenticator
) -> None:
    vk, plaintext = make_key()
    await counting.create(vk)
    counting.fail_next = True
    with pytest.raises(KeyStoreError, match="down"):
        await auth.authenticate(plaintext, NOW)
    assert await auth.authenticate(plaintext, NOW) == vk


def test_the_server_secret_must_be_long_enough(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        KeyAuthenticator(SQLiteKeyStore(tmp_path / "k.db"), b"short", cache_ttl=1)
