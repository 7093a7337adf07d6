"""Virtual keys in Redis, shared by every gateway process on every host (the ``redis`` extra).

Layout under ``prefix`` (``sb:`` by default)::

    {prefix}vk:{id}            string      the key's JSON document (with its digest, never its plaintext)
    {prefix}vk:all             set         every key id
    {prefix}vk:team:{team}     set         ids of the team's keys
    {prefix}vk:user:{user}     set         ids of the user's keys
    {prefix}vk:audit           sorted set  audit entries (JSON) scored by time, capped at ``audit_cap``

A key's document and its index entries change together, in one Lua script. The audit log is a sorted set
rather than a stream so that ``since`` is exact and an erased user can be pseudonymised in place.

Usage::

    store = RedisKeyStore("redis://127.0.0.1:6379/0", prefix="sb:")
    await store.create(vk)
    await store.aclose()
"""

from __future__ import annotations

import builtins
import json
import uuid
from typing import cast

from switchboard.errors import NotFound
from switchboard.policy.keys import (
    AuditEntry,
    KeyStoreError,
    VirtualKey,
    _audit_limit,
    _check_id,
    _dumps,
    _loads_key,
    erased_target,
    is_key_id,
)

try:
    import redis
    import redis.asyncio as aioredis
    from redis import DriverInfo
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the Redis key store needs redis: pip install 'switchboard[redis]'") from exc

__all__ = ["RedisKeyStore"]

# KEYS[1] the document, KEYS[2] the set of all ids. ARGV: mode ("create" | "replace"), document, id,
# index prefix ("{prefix}vk:"), team and user (each "" for none, else "=" followed by the value).
_PUT = """
local old = redis.call('GET', KEYS[1])
if (ARGV[1] == 'create' and old) or (ARGV[1] == 'replace' and not old) then return 0 end
if old then
  local doc = cjson.decode(old)
  if type(doc.team) == 'string' then redis.call('SREM', ARGV[4] .. 'team:' .. doc.team, ARGV[3]) end
  if type(doc.user) == 'string' then redis.call('SREM', ARGV[4] .. 'user:' .. doc.user, ARGV[3]) end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then redis.call('SADD', ARGV[4] .. 'team:' .. string.sub(ARGV[5], 2), ARGV[3]) end
if ARGV[6] ~= '' then redis.call('SADD', ARGV[4] .. 'user:' .. string.sub(ARGV[6], 2), ARGV[3]) end
return 1
"""

# KEYS[1] the document, KEYS[2] the set of all ids. ARGV: id, index prefix.
_DELETE = """
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local doc = cjson.decode(old)
if type(doc.team) == 'string' then redis.call('SREM', ARGV[2] .. 'team:' .. doc.team, ARGV[1]) end
if type(doc.user) == 'string' then redis.call('SREM', ARGV[2] .. 'user:' .. doc.user, ARGV[1]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

_MGET_CHUNK = 500


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _indexed(value: str | None) -> str:
    return "" if value is None else "=" + value


class RedisKeyStore:
    """A :class:`~switchboard.policy.keys.KeyStore` in Redis (layout in the module docstring).

    Usage::

        store = RedisKeyStore(cfg.limits.redis_url.get_secret_value(), prefix=cfg.limits.prefix)
    """

    def __init__(self, url: str, prefix: str = "sb:", *, audit_cap: int = 100_000, timeout: float = 2.0) -> None:
        # Creating the client does not connect: the first command does. The explicit driver version spares
        # every new connection a package-metadata lookup (file I/O) on the event loop.
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            driver_info=DriverInfo(lib_version=redis.__version__),
        )
        self._ns = f"{prefix}vk:"
        self._all = f"{self._ns}all"
        self._audit_key = f"{self._ns}audit"
        self._audit_cap = audit_cap
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)

    def _doc_key(self, key_id: str) -> str:
        return f"{self._ns}{key_id}"

    async def _store(self, mode: str, key: VirtualKey) -> bool:
        args = [mode, _dumps(key.to_document()), key.id, self._ns, _indexed(key.team), _indexed(key.user)]
        try:
            done = await self._put(keys=[self._doc_key(key.id), self._all], args=args)
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        return bool(done)

    async def create(self, key: VirtualKey) -> None:
        _check_id(key.id)
        if not await self._store("create", key):
            raise KeyStoreError(f"a key with id {key.id!r} already exists")

    async def get(self, key_id: str) -> VirtualKey | None:
        if not is_key_id(key_id):  # nor may it reach the index keys
            return None
        try:
            doc = await self._redis.get(self._doc_key(key_id))
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        return None if doc is None else _loads_key(_text(doc))

    async def list(self, team: str | None = None, user: str | None = None) -> builtins.list[VirtualKey]:
        try:
            if team is not None and user is not None:
                ids = await self._redis.sinter([f"{self._ns}team:{team}", f"{self._ns}user:{user}"])
            elif team is not None:
                ids = await self._redis.smembers(f"{self._ns}team:{team}")
            elif user is not None:
                ids = await self._redis.smembers(f"{self._ns}user:{user}")
            else:
                ids = await self._redis.smembers(self._all)
            wanted = sorted(_text(i) for i in ids)
            docs: builtins.list[bytes | str | None] = []
            for start in range(0, len(wanted), _MGET_CHUNK):
                chunk = wanted[start : start + _MGET_CHUNK]
                docs.extend(await self._redis.mget([self._doc_key(i) for i in chunk]))
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        keys = [_loads_key(_text(doc)) for doc in docs if doc is not None]  # None: deleted meanwhile
        keys = [k for k in keys if (team is None or k.team == team) and (user is None or k.user == user)]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def replace(self, key: VirtualKey) -> None:
        if not is_key_id(key.id):
            raise NotFound(f"No key with id {key.id!r}.", param="id")
        if not await self._store("replace", key):
            raise NotFound(f"No key with id {key.id!r}.", param="id")

    async def delete(self, key_id: str) -> bool:
        if not is_key_id(key_id):
            return False
        try:
            return bool(await self._delete(keys=[self._doc_key(key_id), self._all], args=[key_id, self._ns]))
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc

    async def keys_of(self, user: str | None, key_id: str | None) -> builtins.list[str]:
        found: set[str] = set()
        try:
            if user is not None:
                found.update(_text(i) for i in await self._redis.smembers(f"{self._ns}user:{user}"))
            if key_id is not None and is_key_id(key_id) and await self._redis.exists(self._doc_key(key_id)):
                found.add(key_id)
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        return sorted(found)

    async def audit(self, entry: AuditEntry) -> None:
        # A unique member per entry: two identical entries must both be kept.
        member = json.dumps({"uid": uuid.uuid4().hex, **entry.public()}, separators=(",", ":"), ensure_ascii=False)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self._audit_key, {member: entry.at})
                pipe.zremrangebyrank(self._audit_key, 0, -(self._audit_cap + 1))
                await pipe.execute()
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc

    async def audit_log(self, limit: int = 100, since: float | None = None) -> builtins.list[AuditEntry]:
        count = _audit_limit(limit)
        if count == 0:
            return []
        low: float | str = "-inf" if since is None else since
        try:
            members = await self._redis.zrange(
                self._audit_key, "+inf", low, desc=True, byscore=True, offset=0, num=count
            )
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        return [self._read_entry(_text(cast("bytes | str", m))) for m in members]

    @staticmethod
    def _read_entry(member: str) -> AuditEntry:
        try:
            doc = json.loads(member)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return AuditEntry.from_public(doc)
        except ValueError as exc:
            raise KeyStoreError(f"unreadable audit entry: {exc}") from exc

    async def erase_user(self, user: str) -> int:
        erased = 0
        try:
            for key_id in sorted(_text(i) for i in await self._redis.smembers(f"{self._ns}user:{user}")):
                erased += int(await self._delete(keys=[self._doc_key(key_id), self._all], args=[key_id, self._ns]))
            renamed: builtins.list[tuple[str, float, str]] = []
            async for raw, score in self._redis.zscan_iter(self._audit_key):
                member = _text(raw)
                try:
                    doc = json.loads(member)
                except ValueError:
                    continue  # not ours to rewrite; audit_log reports it
                target = doc.get("target") if isinstance(doc, dict) else None
                new_target = erased_target(target, user) if isinstance(target, str) else None
                if new_target is not None:
                    doc["target"] = new_target
                    renamed.append((member, float(score), json.dumps(doc, separators=(",", ":"), ensure_ascii=False)))
            if renamed:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for old, score, new in renamed:
                        pipe.zrem(self._audit_key, old)
                        pipe.zadd(self._audit_key, {new: score})
                    await pipe.execute()
        except RedisError as exc:
            raise KeyStoreError(f"Redis key store: {exc}") from exc
        return erased

    async def aclose(self) -> None:
        await self._redis.aclose()
