"""The :class:`~switchboard.policy.limits.Limiter` shared by every gateway process: one Redis, one atomic Lua
script call for the admissions a process made in one turn of its event loop (decided in order, each as if it
were alone), and one for the settlements it finished in one turn.

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

import asyncio
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
    LimiterUnsupported,
    LimitName,
    Limits,
    Scope,
    ShownQuota,
    SpendReport,
    refusal_of,
    subjects_of,
)
from switchboard.storage.resp import RedisClient, RedisUnavailable, ReplyError, Script, bulk

__all__ = ["RedisLimiter"]

log = logging.getLogger("switchboard.policy")

#: Keys outlive what they hold by this many seconds, so a key never vanishes just before it is read.
_MARGIN = 60.0
#: Expired reservations purged per subject and call (the rest on the next calls; until then they count).
_PURGE_BATCH = 256
#: Settlements sent in one script call at most (more in one turn of the event loop leave in several).
_SETTLE_BATCH = 512
#: Admissions sent in one script call at most (likewise).
_ADMIT_BATCH = 512

_PRELUDE = Template(r"""
local MARGIN, EPS, SLACK, KEPT, LATE = $margin, $eps, $slack, $kept, $late

local function fmt(x) return string.format('%.17g', x) end

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- As clock(), for the many requests of one call: Redis's time is read once.
local server_now
local function at(arg)
  if arg ~= '' then return tonumber(arg) end
  server_now = server_now or clock('')
  return server_now
end

-- Keep `key` at least `seconds` longer; never shortens its TTL. A key these scripts wrote before always has a
-- TTL (`old`): one call, GT. A key just created (`old` false) has none yet. Unsure (`old` nil): GT, else NX.
local function keep(key, seconds, old)
  local ms = string.format('%d', math.ceil(seconds * 1000))
  if old == false then redis.call('PEXPIRE', key, ms) return end
  if redis.call('PEXPIRE', key, ms, 'GT') == 0 and old == nil then redis.call('PEXPIRE', key, ms, 'NX') end
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

-- Drop the reservations that expired by `now` (their dollars are no longer held). Returns how many are live.
local function purge(base, now)
  local res, resd = base .. 'res', base .. 'resd'
  local gone = redis.call('ZRANGEBYSCORE', res, '-inf', fmt(now), 'LIMIT', 0, $batch)
  if #gone > 0 then
    local cost = 0
    for _, v in ipairs(redis.call('HMGET', resd, unpack(gone))) do
      if v then cost = cost + tonumber(string.match(v, '^(%S+)')) end
    end
    redis.call('ZREM', res, unpack(gone))
    redis.call('HDEL', resd, unpack(gone))
    if cost ~= 0 then redis.call('INCRBYFLOAT', base .. 'held', fmt(-cost)) end
  end
  local live = redis.call('ZCARD', res)
  if live == 0 and #gone > 0 then redis.call('DEL', base .. 'held', resd) end  -- no float drift
  return live
end

-- Store a bucket's level; it lives until full again, and at least `hold` seconds (its reservations' ttl).
local function put_level(key, cap, l, now, hold, old)
  l = math.min(cap, l)
  redis.call('HSET', key, 'l', fmt(l), 't', fmt(now), 'c', fmt(cap))
  keep(key, math.max((cap - l) * 60 / cap, hold) + MARGIN, old)
  return l
end
""").substitute(margin=_MARGIN, eps=MONEY_EPSILON, slack=BUCKET_SLACK, kept=SPEND_KEPT_AFTER_WINDOW,
                late=SETTLED_MARKER_TTL, batch=_PURGE_BATCH)

# The admissions a process made in one turn of its event loop, in one call, answered in order, each exactly as if
# it had been made alone. Each subject's state (reservations, revocation, spend, held dollars, buckets) is read
# once, when first needed, kept in the script while the admissions are decided, and written back once at the end
# (or before an admission at another time reads it again): a constant number of Redis calls per subject, among them
# one that finds which of the call's request ids hold a reservation already (retries).
# KEYS: the key base of each scope the admissions name (a base twice if two of their scopes name one subject).
# ARGV: first, per scope in KEYS, its six limits (-1 = none) in the order rpm, tpm, max_concurrency, budget_day,
# budget_month, budget_total; then one text of the admissions, a line each: now ('' = Redis TIME), tokens, cost,
# ttl, the indexes in KEYS of its scopes (joined by commas) and the request id (the rest of the line), separated
# by spaces.
# Returns one answer per admission, joined by newlines: "admitted|limit|scope index|retry_after|used|reserved|rpm
# left|rpm reset|tpm left|tpm reset" (admitted '1' or '0', retry_after '' for none; then what the x-ratelimit headers
# show of the first scope's buckets, as ShownQuota holds it, '' = not limited; see refusal_of() for what used and
# reserved are).
_ADMIT_MANY = _PRELUDE + Template(r"""
local S, order = {}, {}  -- key base -> the subject's state in this call; the states in the order made

-- Unpack `list` into `cmd` in pieces (Lua's unpack has a limit).
local function call_with(cmd, key, list)
  for first = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, first, math.min(first + 999, #list)))
  end
end

local BUCKETS = {'rpm', 'tpm'}  -- the token buckets, in the order of the limits in ARGV

local function flush(s)
  for _, name in ipairs(BUCKETS) do
    local b = s.b[name]
    if b and b.dirty then
      redis.call('HSET', s.base .. name, 'l', fmt(b.l), 't', fmt(b.t), 'c', fmt(b.cap))
      keep(s.base .. name, math.max((b.cap - b.l) * 60 / b.cap, b.hold) + MARGIN, b.exists)
      b.dirty = false
    end
  end
  if #s.res > 0 then
    call_with('ZADD', s.base .. 'res', s.res)
    call_with('HSET', s.base .. 'resd', s.resd)
    redis.call('INCRBYFLOAT', s.base .. 'held', fmt(s.cost))
    local old = s.live0 > 0  -- with reservations live, the three keys exist and have their TTLs
    keep(s.base .. 'res', s.ttl + MARGIN, old)
    keep(s.base .. 'resd', s.ttl + MARGIN, old)
    keep(s.base .. 'held', s.ttl + MARGIN, old)
    s.res, s.resd, s.cost, s.ttl = {}, {}, 0, 0
  end
end

-- The request ids of the call's admissions, by the key base of their first scope (filled before they are decided).
local asked = {}

-- The state of the subject at `base` at `now`: read now, or kept from an earlier admission at the same time.
-- `before`: which of the request ids asked for in this call held a reservation already (retries).
local function state(base, now)
  local s = S[base]
  if s and s.now == now then return s end
  if s then flush(s) end
  local live, before = purge(base, now), {}
  if live > 0 and asked[base] then
    local rids = asked[base]
    for first = 1, #rids, 1000 do
      local last = math.min(first + 999, #rids)
      for i, score in ipairs(redis.call('ZMSCORE', base .. 'res', unpack(rids, first, last))) do
        if score then before[rids[first + i - 1]] = true end
      end
    end
  end
  s = {base = base, now = now, live0 = live, live = live, revoked = redis.call('EXISTS', base .. 'revoked') == 1,
       spend = {}, b = {}, res = {}, resd = {}, added = {}, before = before, cost = 0, ttl = 0}
  S[base] = s
  order[#order + 1] = s
  return s
end

local function spent(s, window)
  local v = s.spend[window]
  if v == nil then
    v = tonumber(redis.call('GET', s.base .. 'spend:' .. window) or '0')
    s.spend[window] = v
  end
  return v
end

local function held(s)
  if s.held == nil then
    s.held = s.live0 > 0 and tonumber(redis.call('GET', s.base .. 'held') or '0') or 0
  end
  return s.held
end

-- A token bucket's level now (`cap` deep, refilled in a minute, full when absent).
local function level(s, name, cap)
  local b = s.b[name]
  if b == nil then
    local v = redis.call('HMGET', s.base .. name, 'l', 't')
    b = {exists = v[1] ~= false, hold = 0}
    if b.exists then b.l, b.t = tonumber(v[1]), tonumber(v[2]) end
    s.b[name] = b
  end
  if b.l == nil then return cap end
  return math.min(cap, b.l + math.max(0, s.now - b.t) * cap / 60)
end

local function take(s, name, cap, l, hold)
  local b = s.b[name]
  b.l, b.t, b.cap, b.dirty, b.hold = math.min(cap, l), s.now, cap, true, math.max(b.hold, hold)
  return b.l
end

-- The budget windows at `now`, and the budgets in the order checked (one table per time of the call).
local W = {}
local function budgets_at(now)
  local b = W[now]
  if b == nil then
    local w = windows(now)
    b = {{'budget_total', 6, 't', false}, {'budget_month', 5, w.month, w.month_end},
         {'budget_day', 4, w.day, w.day_end}}
    W[now] = b
  end
  return b
end

-- What the x-ratelimit headers show of a bucket `cap` deep that holds `l`: the whole units left, and the time until
-- it is full again.
local function shown(l, cap)
  return string.format('%d|%.3fs', math.max(0, math.floor(l)), math.max(0, (cap - l) * 60 / cap))
end

-- The answer to an admission: what its first scope's buckets (state `s`, limits `l`) show after it.
local function admitted(s, l)
  local r, t = '|', '|'
  if l[1] then r = shown(level(s, 'rpm', l[1]), l[1]) end
  if l[2] then t = shown(level(s, 'tpm', l[2]), l[2]) end
  return '1||0||0|0|' .. r .. '|' .. t
end

local function refused(s, l, limit, i, retry, used, reserved)
  return '0|' .. limit .. '|' .. tostring(i) .. '|' .. retry .. '|' .. fmt(used) .. '|' .. fmt(reserved)
         .. string.sub(admitted(s, l), 10)
end

-- `ctext`, `ttext`, `ltext`: the cost, tokens and ttl as sent, kept as the reservation's details.
local function admit(K, L, now, rid, tokens, cost, ttl, ctext, ttext, ltext)
  local n = #K
  local st = {}
  for i = 1, n do st[i] = state(K[i], now) end

  local first = st[1]
  if first.added[rid] or first.before[rid] then
    return admitted(first, L[1])  -- retried
  end

  -- Check everything (in CHECK_ORDER, then scope order) before taking anything.
  for i = 1, n do
    if st[i].revoked then return refused(st[1], L[1], 'revoked', i, '', 0, 0) end
  end
  for _, b in ipairs(budgets_at(now)) do
    for i = 1, n do
      local budget = L[i][b[2]]
      if budget then
        local used, reserved = spent(st[i], b[3]), held(st[i])
        local left = budget - used - reserved
        if left <= EPS or cost > left + EPS then
          local retry = ''
          if b[4] then retry = fmt(b[4] - now) end
          return refused(st[1], L[1], b[1], i, retry, used, reserved)
        end
      end
    end
  end
  for i = 1, n do
    local most = L[i][3]
    if most and st[i].live >= most then
      return refused(st[1], L[1], 'concurrency', i, fmt($conc_retry), st[i].live, 0)
    end
  end
  for m = 1, 2 do  -- every scope's rpm, then every scope's tpm
    local name, one = BUCKETS[m], m == 1
    for i = 1, n do
      local cap = L[i][m]
      if cap then
        local l = level(st[i], name, cap)
        -- A request takes one from rpm, its tokens from tpm: more than the bucket holds is admitted when it is full.
        local wait = (math.min(one and 1 or tokens, cap) - l) * 60 / cap
        if wait > SLACK then return refused(st[1], L[1], name, i, fmt(wait), l, 0) end
      end
    end
  end

  for i = 1, n do
    local s = st[i]
    if L[i][1] then take(s, 'rpm', L[i][1], level(s, 'rpm', L[i][1]) - 1, ttl) end
    if L[i][2] then take(s, 'tpm', L[i][2], level(s, 'tpm', L[i][2]) - tokens, ttl) end
    s.res[#s.res + 1], s.res[#s.res + 2] = fmt(now + ttl), rid
    s.resd[#s.resd + 1], s.resd[#s.resd + 2] = rid, ctext .. ' ' .. ttext .. ' ' .. ltext
    s.added[rid] = true
    s.live = s.live + 1
    s.held = held(s) + cost
    s.cost = s.cost + cost
    s.ttl = math.max(s.ttl, ttl)
  end
  return admitted(first, L[1])
end

local L = {}
for e = 1, #KEYS do
  local limits, p = {}, (e - 1) * 6
  for m = 1, 6 do
    local v = tonumber(ARGV[p + m])
    if v >= 0 then limits[m] = v end
  end
  L[e] = limits
end
local asks = {}
for now, t, c, l, scopes, rid in string.gmatch(ARGV[#KEYS * 6 + 1],
                                             '([^ \n]*) ([^ \n]+) ([^ \n]+) ([^ \n]+) ([^ \n]+) ([^\n]+)') do
  local ks, ls = {}, {}
  for e in string.gmatch(scopes, '%d+') do
    e = tonumber(e)
    ks[#ks + 1], ls[#ls + 1] = KEYS[e], L[e]
  end
  local rids = asked[ks[1]] or {}
  rids[#rids + 1] = rid
  asked[ks[1]] = rids
  asks[#asks + 1] = {now, t, c, l, ks, ls, rid}
end
local out = {}
for i, a in ipairs(asks) do
  local t, c, l = a[2], a[3], a[4]
  out[i] = admit(a[5], a[6], at(a[1]), a[7], tonumber(t), tonumber(c), tonumber(l), c, t, l)
end
for _, s in ipairs(order) do flush(s) end
return table.concat(out, '\n')
""").substitute(conc_retry=CONCURRENCY_RETRY_AFTER)

# Settle requests `rids` (with the tokens and dollars each used) for the subject at `base`, in order, at `now`:
# their reservations go (unused tokens back to the tpm bucket) and, unless only released, their cost is spent;
# then they are marked settled, so a repeat counts nothing. A constant number of calls however many there are.
_SETTLE_GROUP = r"""
local function settle(base, now, w, rids, tokens, costs, release)
  local live = purge(base, now)
  local done = base .. 'done'
  redis.call('ZREMRANGEBYSCORE', done, '-inf', fmt(now))
  local seen, todo, fresh = redis.call('ZMSCORE', done, unpack(rids)), {}, {}
  for i, rid in ipairs(rids) do
    if not seen[i] and not fresh[rid] then fresh[rid] = true todo[#todo + 1] = i end
  end
  if #todo == 0 then return end
  local names = {}
  for n, i in ipairs(todo) do names[n] = rids[i] end
  if live > 0 then
    local gone, held, refunds = {}, 0, {}
    for n, r in ipairs(redis.call('HMGET', base .. 'resd', unpack(names))) do
      if r then
        local rc, rt = string.match(r, '^(%S+) (%S+) %S+$')
        gone[#gone + 1] = names[n]
        held = held + tonumber(rc)
        refunds[#refunds + 1] = tonumber(rt) - tokens[todo[n]]
      end
    end
    if #gone > 0 then
      if #gone >= live then
        redis.call('DEL', base .. 'res', base .. 'resd', base .. 'held')  -- the last ones: no float drift
      else
        redis.call('ZREM', base .. 'res', unpack(gone))
        redis.call('HDEL', base .. 'resd', unpack(gone))
        redis.call('INCRBYFLOAT', base .. 'held', fmt(-held))
      end
      local key = base .. 'tpm'
      local v = redis.call('HMGET', key, 'l', 't', 'c')
      if v[3] then
        local cap = tonumber(v[3])
        local l = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
        for _, back in ipairs(refunds) do l = math.min(cap, l + back) end  -- as if one by one
        put_level(key, cap, l, now, 0, true)
      end
    end
  end
  local spent = 0
  if not release then
    for _, i in ipairs(todo) do spent = spent + costs[i] end
  end
  if spent > 0 then
    redis.call('INCRBYFLOAT', base .. 'spend:t', fmt(spent))
    for _, win in ipairs({{w.day, w.day_end}, {w.month, w.month_end}}) do
      local key = base .. 'spend:' .. win[1]
      redis.call('INCRBYFLOAT', key, fmt(spent))
      redis.call('PEXPIRE', key, string.format('%d', math.ceil((win[2] + KEPT - now) * 1000)))
    end
  end
  local marks, expires = {}, fmt(now + LATE)
  for n, name in ipairs(names) do marks[2 * n - 1], marks[2 * n] = expires, name end
  redis.call('ZADD', done, unpack(marks))
  keep(done, LATE + MARGIN)
end
"""

# KEYS: the key base of each subject. ARGV: now ('' = Redis TIME), request id, tokens, cost, release ('1'|'0').
_SETTLE = _PRELUDE + _SETTLE_GROUP + r"""
local now = clock(ARGV[1])
local w = windows(now)
for i = 1, #KEYS do settle(KEYS[i], now, w, {ARGV[2]}, {tonumber(ARGV[3])}, {tonumber(ARGV[4])}, ARGV[5] == '1') end
return 1
"""

# Many settlements in one call (what a process finished in one turn of its event loop), grouped by subject.
# KEYS: the key bases of their subjects. ARGV: one text of the settlements, a line each: now ('' = Redis TIME),
# the index of its subject's key base in KEYS, tokens, cost and the request id (the rest of the line), separated
# by spaces.
_SETTLE_MANY = _PRELUDE + _SETTLE_GROUP + r"""
local groups, order = {}, {}
for at_text, e, tokens, cost, rid in string.gmatch(ARGV[1], '([^ \n]*) ([^ \n]+) ([^ \n]+) ([^ \n]+) ([^\n]+)') do
  local now = at(at_text)
  local id = e .. ' ' .. fmt(now)
  local g = groups[id]
  if not g then
    g = {KEYS[tonumber(e)], now, {}, {}, {}}
    groups[id] = g
    order[#order + 1] = g
  end
  local n = #g[3] + 1
  g[3][n], g[4][n], g[5][n] = rid, tonumber(tokens), tonumber(cost)
end
local w, w_at = nil, nil
for _, g in ipairs(order) do
  if g[2] ~= w_at then w, w_at = windows(g[2]), g[2] end
  settle(g[1], g[2], w, g[3], g[4], g[5], false)
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
        self._admit_many = Script(_ADMIT_MANY)
        self._settle = Script(_SETTLE)
        self._settle_many = Script(_SETTLE_MANY)
        self._usage = Script(_USAGE)
        self._redis = RedisClient(url, timeout=timeout,
                                  scripts=(self._admit_many, self._settle, self._settle_many))
        self._where = self._redis.where
        # The key base and limit arguments of the scopes seen lately (callers reuse their Scope objects).
        self._scope_args: dict[int, tuple[Scope, tuple[str, bytes]]] = {}
        # Admissions waiting for the end of this turn of the event loop, then sent as one script call: the line
        # of each (as the script reads them), who waits for its answer, and the scopes they name, in the order of
        # the call's KEYS (by identity → their index: their asks keep them alive while they wait).
        self._admissions: list[str] = []
        self._ttl_texts: dict[float, str] = {}  # an ask's ttl as sent (callers use one or two)
        self._admitted: list[tuple[asyncio.Future[Admission], Ask]] = []
        self._admission_scopes: dict[int, int] = {}
        self._admission_scope_list: list[Scope] = []
        self._admissions_scheduled = False
        # Settlements waiting for the end of this turn of the event loop, then sent as one script call: the line
        # of each, and the subjects they name (→ the index of their key base in the call's KEYS).
        self._pending: list[str] = []
        self._pending_keys: dict[str, int] = {}
        self._send_scheduled = False

    def _base(self, subject: str) -> str:
        return f"{self.prefix}{{{subject}}}:"

    def _now(self, now: float | None) -> str:
        if now is None and self._clock is not None:
            now = self._clock()
        return "" if now is None else repr(float(now))

    async def _call(self, call: Awaitable[Any]) -> Any:
        # Commands reach Redis in the order they were made: settlements and admissions made earlier go first.
        if self._pending:
            self._send_settlements()
        if self._admissions:
            self._send_admissions()
        try:
            return await call
        except (RedisUnavailable, ReplyError) as exc:
            raise LimiterUnavailable(f"redis at {self._where}: {exc}") from exc

    def _scope_parts(self, scope: Scope) -> tuple[str, bytes]:
        """A scope's key base and its six limits, encoded (callers reuse their Scope objects: cached)."""
        cached = self._scope_args.get(id(scope))
        if cached is None or cached[0] is not scope:
            if len(self._scope_args) >= 10_000:
                self._scope_args.clear()
            cached = self._scope_args[id(scope)] = (scope, (self._base(scope.subject), bulk(_limit_args(scope.limits))))
        return cached[1]

    async def admit(self, ask: Ask) -> Admission:
        """Admit ``ask``. The admissions of one turn of the event loop leave together, as one script call that
        Redis answers in order, after any settlement made before them."""
        return await self.admit_soon(ask)

    def admit_soon(self, ask: Ask) -> asyncio.Future[Admission]:
        """:meth:`admit` as a future (the request path's way: no coroutine of its own)."""
        answered: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        scopes = ask.scopes
        if not scopes:
            answered.set_result(Admission(True))
            return answered
        now = "" if ask.now is None and self._clock is None else self._now(ask.now)
        if len(scopes) == 1:
            at: int | str = self._scope_index(scopes[0])
        else:
            at = ",".join([str(self._scope_index(scope)) for scope in scopes])
        ttl = self._ttl_texts.get(ask.ttl)
        if ttl is None:
            if len(self._ttl_texts) >= 64:
                self._ttl_texts.clear()
            ttl = self._ttl_texts[ask.ttl] = repr(float(ask.ttl))
        self._admissions.append(f"{now} {int(ask.tokens)} {float(ask.cost)!r} {ttl} {at} {ask.request_id}")
        self._admitted.append((answered, ask))
        if len(self._admitted) >= _ADMIT_BATCH:
            self._send_admissions()
        elif not self._admissions_scheduled:
            self._admissions_scheduled = True
            answered.get_loop().call_soon(self._send_admissions)
        return answered

    def _scope_index(self, scope: Scope) -> int:
        """The position (from 1) of ``scope`` in the next admission call's KEYS, which it joins if new."""
        index = self._admission_scopes.get(id(scope))
        if index is None:
            index = self._admission_scopes[id(scope)] = len(self._admission_scopes) + 1
            self._admission_scope_list.append(scope)
        return index

    def _admission(self, ask: Ask, out: bytes) -> Admission:
        """The admission the script's answer ``out`` to ``ask`` stands for."""
        admitted, limit, index_text, retry, used, reserved, rpm_left, rpm_reset, tpm_left, tpm_reset = out.split(b"|")
        scopes = ask.scopes
        quota = ShownQuota(scopes[0].limits, (rpm_left, rpm_reset) if rpm_left else None,
                           (tpm_left, tpm_reset) if tpm_left else None)
        if admitted == b"1":
            return Admission(True, None, quota)
        name = limit.decode()
        if name not in _LIMIT_NAMES:  # pragma: no cover - the script and CHECK_ORDER disagree
            raise LimiterUnavailable(f"redis at {self._where}: unexpected answer {out!r}")
        refusal = refusal_of(ask, scopes[int(index_text) - 1], cast(LimitName, name),
                             float(retry) if retry else None, float(used), float(reserved))
        return Admission(False, refusal, quota)

    def _send_admissions(self) -> None:
        self._admissions_scheduled = False
        admissions, waiting, scopes = self._admissions, self._admitted, self._admission_scope_list
        if not admissions:
            return
        if self._pending:  # settlements made earlier go first (in the same write)
            self._send_settlements()
        self._admissions, self._admitted, self._admission_scopes, self._admission_scope_list = [], [], {}, []
        named = [self._scope_parts(scope) for scope in scopes]
        lines = "\n".join(admissions).encode()
        body = b"".join([bulk([len(named), *(base for base, _ in named)]), *(limits for _, limits in named),
                         b"$%d\r\n%s\r\n" % (len(lines), lines)])

        def answered(out: Any) -> None:
            answers = cast(str, out).encode().split(b"\n")
            if len(answers) != len(waiting):  # pragma: no cover - the script answers each admission
                failed(RedisUnavailable(f"{len(answers)} answers to {len(waiting)} admissions"))
                return
            for (fut, ask), answer in zip(waiting, answers, strict=True):
                if fut.done():  # its request may have been cancelled meanwhile
                    continue
                try:
                    fut.set_result(self._admission(ask, answer))
                except LimiterUnavailable as exc:  # pragma: no cover - see _admission
                    fut.set_exception(exc)

        def failed(exc: BaseException) -> None:
            for fut, _ in waiting:
                if not fut.done():
                    fut.set_exception(LimiterUnavailable(f"redis at {self._where}: {exc}"))

        try:
            self._redis.run_nowait(self._admit_many, 2 + 7 * len(named), body, failed, answered, at_once=True)
        except Exception as exc:  # pragma: no cover - nothing is left waiting for an answer that cannot come
            failed(exc)

    async def settle(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *,
                     now: float | None = None) -> None:
        await self._finish(request_id, scopes, tokens, cost, release=False, now=now)

    def settle_nowait(self, request_id: str, subject: str, tokens: int, cost: float) -> None:
        """:meth:`settle` one subject without waiting for the answer (the request path's way). The settlements
        of one turn of the event loop leave together, as one script call, before any later command of this
        limiter. A failure is logged; the reservations then expire by themselves."""
        if not (tokens >= 0 and 0.0 <= cost < math.inf):
            raise ValueError("tokens and cost must be ≥ 0")
        if not request_id or "\n" in request_id:
            raise ValueError("a request id is not empty and has no line break")
        now = "" if self._clock is None else repr(float(self._clock()))
        index = self._pending_keys.get(subject)
        if index is None:
            index = self._pending_keys[subject] = len(self._pending_keys) + 1
        self._pending.append(f"{now} {index} {int(tokens)} {float(cost)!r} {request_id}")
        if len(self._pending) >= _SETTLE_BATCH:
            self._send_settlements()
        elif not self._send_scheduled:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_settlements)

    def _send_settlements(self) -> None:
        self._send_scheduled = False
        pending, keys = self._pending, self._pending_keys
        if not pending:
            return
        self._pending, self._pending_keys = [], {}
        lines = "\n".join(pending).encode()
        body = b"%s$%d\r\n%s\r\n" % (bulk([len(keys), *map(self._base, keys)]), len(lines), lines)
        self._redis.run_nowait(self._settle_many, 2 + len(keys), body, self._settle_failed)

    def _settle_failed(self, exc: BaseException) -> None:
        log.error("redis at %s: settlements failed (their reservations expire by themselves): %s", self._where, exc)

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
        """Check that Redis answers and is new enough (7.0: the scripts use ``PEXPIRE … GT``)."""
        info = cast(str, await self._call(self._redis.call("INFO", "server")))
        version = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                        if line.startswith("redis_version:")), "")
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < 7:
            raise LimiterUnsupported(f"redis at {self._where} is version {version}; limits need Redis 7.0 or newer")

    async def aclose(self) -> None:
        self._send_settlements()
        self._send_admissions()
        await self._redis.aclose()
