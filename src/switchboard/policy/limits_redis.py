"""The :class:`~switchboard.policy.limits.Limiter` shared by every gateway process: one Redis, one Lua script
per admission and one per settlement, so each is a single atomic round trip.

The scripts read the time from Redis (``TIME``) unless the caller passes one, so the processes' clocks do
not matter. Each admission first purges its subjects' expired reservations (a crashed request's), then
checks every limit of every scope and only then takes anything: all or nothing. Every key carries a TTL
except a subject's total spend and its revocation: buckets live until they are full again (and at least
as long as their reservations), reservations for their ``ttl``, settled markers for 30 s, day and month spend
for a day after the window ends.

Keys of a subject (``<p>`` the prefix, ``<s>`` the subject; the braces make ``<s>`` a Redis Cluster hash tag)::

    <p>{<s>}:revoked           string   "1" while revoked (no TTL)
    <p>{<s>}:rpm, …:tpm        hash     l (level), t (when), c (capacity) of the token bucket
    <p>{<s>}:res               zset     request id → when its reservation expires
    <p>{<s>}:resd              hash     request id → "cost tokens ttl" it reserved
    <p>{<s>}:held              string   dollars the live reservations hold (deleted when there are none)
    <p>{<s>}:done              zset     request id → when its settled marker expires (settling is idempotent)
    <p>{<s>}:spend:t           string   dollars spent in total (no TTL)
    <p>{<s>}:spend:d:YYYYMMDD  string   dollars spent that UTC day
    <p>{<s>}:spend:m:YYYYMM    string   dollars spent that UTC month

One admission touches the keys of several subjects (a key and its team) in one script. On a single Redis
(or a primary with replicas) that is atomic; Redis Cluster would need all of a request's subjects in one
hash slot, which these key names do not arrange.

Usage::

    limiter = RedisLimiter("redis://127.0.0.1:6379/0", prefix="sb:")
    await limiter.ping()                  # at startup: LimiterUnavailable if Redis is away
    admission = await limiter.admit(ask)  # as with MemoryLimiter
    await limiter.aclose()
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from string import Template
from typing import Any, cast

from switchboard.policy.limits import (
    BUCKET_SLACK,
    CHECK_ORDER,
    CONCURRENCY_RETRY_AFTER,
    MONEY_EPSILON,
    SETTLED_MARKER_TTL,
    SPEND_KEPT_AFTER_WINDOW,
    Admission,
    Ask,
    LimiterUnavailable,
    LimitName,
    Limits,
    Scope,
    SpendReport,
    quota_of,
    refusal_of,
    subjects_of,
)
from switchboard.storage.resp import RedisClient, RedisUnavailable, ReplyError, Script

__all__ = ["RedisLimiter"]

log = logging.getLogger("switchboard.policy")

#: Keys outlive what they hold by this many seconds, so a key never vanishes just before it is read.
_MARGIN = 60.0
#: Expired reservations purged per subject and call (the rest on the next calls; until then they count).
_PURGE_BATCH = 256

_PRELUDE = Template(r"""
local MARGIN, EPS, SLACK, KEPT, LATE = $margin, $eps, $slack, $kept, $late

local function fmt(x) return string.format('%.17g', x) end

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Keep `key` at least `seconds` longer; never shortens its TTL.
local function keep(key, seconds)
  local ms = math.ceil(seconds * 1000)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, string.format('%d', ms)) end
end

-- Days since 1970-01-01 and the civil date (proleptic Gregorian; H. Hinnant's algorithms).
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- The UTC day and month of `now`: names as in budget_windows() and their end times.
local function windows(now)
  local z = math.floor(now / 86400)
  local y, m, d = civil(z)
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return {day = string.format('d:%04d%02d%02d', y, m, d), day_end = (z + 1) * 86400,
          month = string.format('m:%04d%02d', y, m), month_end = days(ny, nm, 1) * 86400}
end

-- Drop the reservations that expired by `now` (their dollars are no longer held) and old settled markers.
local function purge(base, now)
  local res, resd, t = base .. 'res', base .. 'resd', fmt(now)
  local gone = redis.call('ZRANGEBYSCORE', res, '-inf', t, 'LIMIT', 0, $batch)
  if #gone > 0 then
    local cost = 0
    for _, v in ipairs(redis.call('HMGET', resd, unpack(gone))) do
      if v then cost = cost + tonumber(string.match(v, '^(%S+)')) end
    end
    redis.call('ZREM', res, unpack(gone))
    redis.call('HDEL', resd, unpack(gone))
    if cost ~= 0 then redis.call('INCRBYFLOAT', base .. 'held', fmt(-cost)) end
  end
  if redis.call('ZCARD', res) == 0 then redis.call('DEL', base .. 'held', resd) end  -- no float drift
  redis.call('ZREMRANGEBYSCORE', base .. 'done', '-inf', t)
end

-- A token bucket's level now: `cap` deep, refilled in a minute, full when absent.
local function level(key, cap, now)
  local v = redis.call('HMGET', key, 'l', 't')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
end

-- Store a bucket's level; it lives until full again, and at least `hold` seconds (its reservations' ttl).
local function put_level(key, cap, l, now, hold)
  l = math.min(cap, l)
  redis.call('HSET', key, 'l', fmt(l), 't', fmt(now), 'c', fmt(cap))
  keep(key, math.max((cap - l) * 60 / cap, hold) + MARGIN)
end
""").substitute(margin=_MARGIN, eps=MONEY_EPSILON, slack=BUCKET_SLACK, kept=SPEND_KEPT_AFTER_WINDOW,
                late=SETTLED_MARKER_TTL, batch=_PURGE_BATCH)

# KEYS: the key base of each scope ("sb:{key:abc}:"), the first scope first.
# ARGV: now ('' = Redis TIME), request id, tokens, cost, ttl, then per scope six limits (-1 = none):
#       rpm, tpm, max_concurrency, budget_day, budget_month, budget_total.
# Returns {admitted '1'|'0', limit, scope index, retry_after ('' = none), used, reserved, first scope's rpm
# level, its tpm level ('' = not limited)}; see refusal_of() for what used and reserved are.
_ADMIT = _PRELUDE + Template(r"""
local now = clock(ARGV[1])
local rid, tokens, cost, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #KEYS
local L = {}
for i = 1, n do
  L[i] = {}
  for j = 1, 6 do
    local v = tonumber(ARGV[5 + (i - 1) * 6 + j])
    if v >= 0 then L[i][j] = v end
  end
end
for i = 1, n do purge(KEYS[i], now) end

local function answer(admitted, limit, i, retry, used, reserved)
  local r, t = '', ''
  if L[1][1] then r = fmt(level(KEYS[1] .. 'rpm', L[1][1], now)) end
  if L[1][2] then t = fmt(level(KEYS[1] .. 'tpm', L[1][2], now)) end
  return {admitted, limit, tostring(i), retry, fmt(used), fmt(reserved), r, t}
end

if redis.call('ZSCORE', KEYS[1] .. 'res', rid) then return answer('1', '', 0, '', 0, 0) end  -- a retried call

-- Check everything (in CHECK_ORDER, then scope order) before taking anything.
for i = 1, n do
  if redis.call('EXISTS', KEYS[i] .. 'revoked') == 1 then return answer('0', 'revoked', i, '', 0, 0) end
end
local w = windows(now)
local budgets = {{'budget_total', 6, 'spend:t', false}, {'budget_month', 5, 'spend:' .. w.month, w.month_end},
                 {'budget_day', 4, 'spend:' .. w.day, w.day_end}}
for _, b in ipairs(budgets) do
  for i = 1, n do
    local budget = L[i][b[2]]
    if budget then
      local spent = tonumber(redis.call('GET', KEYS[i] .. b[3]) or '0')
      local held = tonumber(redis.call('GET', KEYS[i] .. 'held') or '0')
      local left = budget - spent - held
      if left <= EPS or cost > left + EPS then
        local retry = ''
        if b[4] then retry = fmt(b[4] - now) end
        return answer('0', b[1], i, retry, spent, held)
      end
    end
  end
end
for i = 1, n do
  local most = L[i][3]
  if most then
    local busy = redis.call('ZCARD', KEYS[i] .. 'res')
    if busy >= most then return answer('0', 'concurrency', i, fmt($conc_retry), busy, 0) end
  end
end
for i = 1, n do
  local rpm = L[i][1]
  if rpm then
    local l = level(KEYS[i] .. 'rpm', rpm, now)
    local wait = (1 - l) * 60 / rpm
    if wait > SLACK then return answer('0', 'rpm', i, fmt(wait), l, 0) end
  end
end
for i = 1, n do
  local tpm = L[i][2]
  if tpm then
    local need = math.min(tokens, tpm)  -- more than the bucket holds: admitted when it is full
    local l = level(KEYS[i] .. 'tpm', tpm, now)
    local wait = (need - l) * 60 / tpm
    if wait > SLACK then return answer('0', 'tpm', i, fmt(wait), l, 0) end
  end
end

for i = 1, n do
  local base = KEYS[i]
  if L[i][1] then put_level(base .. 'rpm', L[i][1], level(base .. 'rpm', L[i][1], now) - 1, now, ttl) end
  if L[i][2] then put_level(base .. 'tpm', L[i][2], level(base .. 'tpm', L[i][2], now) - tokens, now, ttl) end
  redis.call('ZADD', base .. 'res', fmt(now + ttl), rid)
  redis.call('HSET', base .. 'resd', rid, fmt(cost) .. ' ' .. string.format('%d', tokens) .. ' ' .. fmt(ttl))
  redis.call('INCRBYFLOAT', base .. 'held', fmt(cost))
  keep(base .. 'res', ttl + MARGIN)
  keep(base .. 'resd', ttl + MARGIN)
  keep(base .. 'held', ttl + MARGIN)
end
return answer('1', '', 0, '', 0, 0)
""").substitute(conc_retry=CONCURRENCY_RETRY_AFTER)

# KEYS: the key base of each subject. ARGV: now ('' = Redis TIME), request id, tokens, cost, release ('1'|'0').
_SETTLE = _PRELUDE + r"""
local now = clock(ARGV[1])
local rid, tokens, cost, release = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local w = windows(now)
for i = 1, #KEYS do
  local base = KEYS[i]
  purge(base, now)
  if not redis.call('ZSCORE', base .. 'done', rid) then
    local marker = LATE
    local r = redis.call('HGET', base .. 'resd', rid)
    if r then
      local rc, rt = string.match(r, '^(%S+) (%S+) %S+$')
      redis.call('ZREM', base .. 'res', rid)
      redis.call('HDEL', base .. 'resd', rid)
      if redis.call('ZCARD', base .. 'res') == 0 then
        redis.call('DEL', base .. 'held', base .. 'resd')
      else
        redis.call('INCRBYFLOAT', base .. 'held', fmt(-tonumber(rc)))
      end
      local bucket = base .. 'tpm'
      local cap = tonumber(redis.call('HGET', bucket, 'c') or '')
      if cap then put_level(bucket, cap, level(bucket, cap, now) + tonumber(rt) - tokens, now, 0) end
    end
    if not release and cost > 0 then
      redis.call('INCRBYFLOAT', base .. 'spend:t', fmt(cost))
      for _, win in ipairs({{w.day, w.day_end}, {w.month, w.month_end}}) do
        local key = base .. 'spend:' .. win[1]
        redis.call('INCRBYFLOAT', key, fmt(cost))
        redis.call('PEXPIRE', key, string.format('%d', math.ceil((win[2] + KEPT - now) * 1000)))
      end
    end
    redis.call('ZADD', base .. 'done', fmt(now + marker), rid)
    keep(base .. 'done', marker + MARGIN)
  end
end
return 1
"""

# KEYS: the subject's key base. ARGV: now ('' = Redis TIME).
# Returns {spent day, spent month, spent total, reserved, in flight}.
_USAGE = _PRELUDE + r"""
local now = clock(ARGV[1])
local base = KEYS[1]
purge(base, now)
local w = windows(now)
return {redis.call('GET', base .. 'spend:' .. w.day) or '0', redis.call('GET', base .. 'spend:' .. w.month) or '0',
        redis.call('GET', base .. 'spend:t') or '0', redis.call('GET', base .. 'held') or '0',
        tostring(redis.call('ZCARD', base .. 'res'))}
"""

_LIMIT_NAMES: frozenset[str] = frozenset(CHECK_ORDER)


def _num(x: float | None) -> str:
    return "-1" if x is None else repr(float(x))


def _limit_args(limits: Limits) -> list[str]:
    return [_num(limits.rpm), _num(limits.tpm), _num(limits.max_concurrency), _num(limits.budget_day),
            _num(limits.budget_month), _num(limits.budget_total)]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisLimiter:
    """A :class:`~switchboard.policy.limits.Limiter` in Redis, exact across every process that shares it.

    Each limiter has its own connection, on which concurrent calls are pipelined
    (:class:`~switchboard.storage.resp.RedisClient`). Redis errors (refused, timed out after ``timeout``
    seconds, a broken connection after one retry on a fresh one, or any other) surface as
    :class:`LimiterUnavailable`. ``clock`` replaces Redis's
    ``TIME`` for every call (tests); so does the ``now`` of a call.

    Usage: ``RedisLimiter("redis://redis.internal:6379/0", prefix="sb:")``
    """

    def __init__(self, url: str, *, prefix: str = "sb:", clock: Callable[[], float] | None = None,
                 timeout: float = 2.0) -> None:
        self.prefix = prefix
        self._clock = clock
        # Admitting and settling are idempotent per request id, so the client's one retry after a lost
        # answer takes nothing twice.
        self._redis = RedisClient(url, timeout=timeout)
        self._where = self._redis.where
        self._admit = Script(_ADMIT)
        self._settle = Script(_SETTLE)
        self._usage = Script(_USAGE)
        # The key base and limit arguments of the scopes seen lately (callers reuse their Scope objects).
        self._scope_args: dict[int, tuple[Scope, str, list[str]]] = {}

    def _base(self, subject: str) -> str:
        return f"{self.prefix}{{{subject}}}:"

    def _now(self, now: float | None) -> str:
        if now is None and self._clock is not None:
            now = self._clock()
        return "" if now is None else repr(float(now))

    async def _call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (RedisUnavailable, ReplyError) as exc:
            raise LimiterUnavailable(f"redis at {self._where}: {exc}") from exc

    async def admit(self, ask: Ask) -> Admission:
        if not ask.scopes:
            return Admission(True)
        args = [self._now(ask.now), ask.request_id, str(int(ask.tokens)), repr(float(ask.cost)), repr(float(ask.ttl))]
        keys = []
        for scope in ask.scopes:
            cached = self._scope_args.get(id(scope))
            if cached is None or cached[0] is not scope:
                if len(self._scope_args) >= 10_000:
                    self._scope_args.clear()
                cached = self._scope_args[id(scope)] = (scope, self._base(scope.subject), _limit_args(scope.limits))
            keys.append(cached[1])
            args += cached[2]
        out = cast(list[str], await self._call(self._redis.run(self._admit, keys, args)))
        admitted, limit, index, retry, used, reserved, rpm_level, tpm_level = out
        quota = quota_of(ask.scopes[0].limits, float(rpm_level) if rpm_level else None,
                         float(tpm_level) if tpm_level else None)
        if admitted == "1":
            return Admission(True, None, quota)
        if limit not in _LIMIT_NAMES:  # pragma: no cover - the script and CHECK_ORDER disagree
            raise LimiterUnavailable(f"redis at {self._where}: unexpected answer {out!r}")
        refusal = refusal_of(ask, ask.scopes[int(index) - 1], cast(LimitName, limit), float(retry) if retry else None,
                             float(used), float(reserved))
        return Admission(False, refusal, quota)

    async def settle(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *,
                     now: float | None = None) -> None:
        await self._finish(request_id, scopes, tokens, cost, release=False, now=now)

    def settle_nowait(self, request_id: str, subject: str, tokens: int, cost: float) -> None:
        """:meth:`settle` one subject without waiting for the answer (the request path's way: the settlement
        joins the next pipelined write). A failure is logged; the reservation then expires by itself."""
        if tokens < 0 or not (math.isfinite(cost) and cost >= 0):
            raise ValueError("tokens and cost must be ≥ 0")
        args = [self._now(None), request_id, str(int(tokens)), repr(float(cost)), "0"]
        self._redis.run_nowait(self._settle, [self._base(subject)], args, self._settle_failed)

    def _settle_failed(self, exc: BaseException) -> None:
        log.error("redis at %s: a settlement failed (its reservation expires by itself): %s", self._where, exc)

    async def release(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], *,
                      now: float | None = None) -> None:
        await self._finish(request_id, scopes, 0, 0.0, release=True, now=now)

    async def _finish(self, rid: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *,
                      release: bool, now: float | None) -> None:
        if tokens < 0 or not (math.isfinite(cost) and cost >= 0):
            raise ValueError("tokens and cost must be ≥ 0")
        keys = [self._base(s) for s in subjects_of(scopes)]
        if keys:
            args = [self._now(now), rid, str(int(tokens)), repr(float(cost)), "1" if release else "0"]
            await self._call(self._redis.run(self._settle, keys, args))

    async def usage(self, subject: str, *, now: float | None = None) -> SpendReport:
        out = cast(list[str], await self._call(self._redis.run(self._usage, [self._base(subject)], [self._now(now)])))
        day, month, total, held, in_flight = out
        return SpendReport(float(day), float(month), float(total), max(0.0, float(held)), int(in_flight))

    async def revoke(self, subject: str) -> None:
        await self._call(self._redis.call("SET", self._base(subject) + "revoked", "1"))

    async def unrevoke(self, subject: str) -> None:
        await self._call(self._redis.call("DEL", self._base(subject) + "revoked"))

    async def erase(self, subject: str) -> int:
        """Delete every key of ``subject`` (found with ``SCAN``, so it walks the whole database: an admin
        operation, not one for the request path). Returns how many keys were deleted."""
        return cast(int, await self._call(self._erase(self._base(subject))))

    async def _erase(self, base: str) -> int:
        removed, batch = 0, []
        async for key in self._redis.scan(_glob_escape(base) + "*"):
            batch.append(key)
            if len(batch) >= 500:
                removed += await self._redis.call("UNLINK", *batch)
                batch.clear()
        if batch:
            removed += await self._redis.call("UNLINK", *batch)
        return removed

    async def ping(self) -> None:
        await self._call(self._redis.call("PING"))

    async def aclose(self) -> None:
        await self._redis.aclose()
