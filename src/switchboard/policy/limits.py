"""Rate limits, concurrency and budgets that hold exactly, however many requests arrive at once.

A request is *admitted* before its upstream call and *settled* after it. Admission reserves, atomically
and for every scope of the request at once (its key, its team …): one request and the estimated tokens
from the per-minute buckets, a concurrency slot, and the estimated dollars against the budgets. Either
everything is taken or nothing is, so N concurrent requests can never overshoot a limit. Settling replaces
the estimate with what the request really used: unused tokens go back to the bucket, the dollars spent
are added to the day's, the month's and the total spend. A request that never reached the upstream is
*released* instead: its tokens go back and nothing is charged. A reservation its request never settled (a
crashed process) expires after the ask's ``ttl``.

- ``rpm`` and ``tpm`` are token buckets: ``limit`` deep, refilled at ``limit / 60`` per second, full at
  first. A burst against ``rpm=5`` admits exactly 5. An ask for more tokens than ``tpm`` holds is admitted
  only when the bucket is full (so it is not refused forever) and leaves it negative.
- ``max_concurrency`` counts live reservations: freed by settle or release, or when the ``ttl`` runs out.
- ``budget_day`` / ``budget_month`` (UTC calendar windows) and ``budget_total`` admit a request only if
  spent + outstanding reservations + its cost stay within the budget, and never once the spend reached it.
- A revoked subject is refused inside the same atomic step, so every process sees a revocation at once.

When several limits refuse, the one reported is the first in :data:`CHECK_ORDER`, then the first scope:
budgets come first because they do not come back soon.

:class:`MemoryLimiter` is exact within one process; :class:`switchboard.policy.limits_redis.RedisLimiter`
across every process sharing one Redis. Both raise :class:`LimiterUnavailable` when their store cannot be
reached, so the gateway can fail closed.

Usage::

    limiter = MemoryLimiter()
    key = Scope("key:k1", Limits(rpm=60, tpm=100_000, budget_month=50.0))
    admission = await limiter.admit(Ask("req-1", (key,), tokens=1_500, cost=0.02, ttl=600))
    if admission.admitted:
        ...  # call the upstream, then exactly one of:
        await limiter.settle("req-1", ["key:k1"], tokens=812, cost=0.011)
        await limiter.release("req-1", ["key:k1"])  # it never reached the upstream
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "CHECK_ORDER",
    "Admission",
    "Ask",
    "BudgetWindows",
    "LimitName",
    "LimitState",
    "Limiter",
    "LimiterUnavailable",
    "LimiterUnsupported",
    "Limits",
    "MemoryLimiter",
    "Quota",
    "Refusal",
    "Scope",
    "ShownQuota",
    "SpendReport",
    "budget_windows",
]

LimitName = Literal["revoked", "rpm", "tpm", "concurrency", "budget_day", "budget_month", "budget_total"]

#: The order limits are checked in; the first that refuses is the one reported.
CHECK_ORDER: tuple[LimitName, ...] = (
    "revoked", "budget_total", "budget_month", "budget_day", "concurrency", "rpm", "tpm",
)

#: Dollars are floats: sums may be off by rounding, never by this much.
MONEY_EPSILON = 1e-9
#: Bucket levels are floats too, refilled by float timestamps: a bucket this many seconds of refill short of
#: what is needed counts as enough (so a client that waits exactly its ``retry_after`` is admitted).
BUCKET_SLACK = 1e-5
#: What a refusal for concurrency suggests waiting: a slot frees whenever any request of the subject ends.
CONCURRENCY_RETRY_AFTER = 1.0
#: How long a settled request is remembered at least (in memory up to twice as long), so that settling it again
#: (a retry after a lost answer, which comes within seconds) counts nothing twice. Short, so that the markers
#: of a busy key stay few.
SETTLED_MARKER_TTL = 30.0
#: Day and month spend is kept this long after its window ends.
SPEND_KEPT_AFTER_WINDOW = 86400.0


class LimiterUnavailable(Exception):
    """The limits store cannot be reached: nothing can be admitted (the gateway answers 503)."""


class LimiterUnsupported(LimiterUnavailable):
    """The limits store answers but cannot serve these limits (a Redis too old)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one subject may do; ``None`` means unlimited. Budgets are in dollars.

    Usage: ``Limits(rpm=60, tpm=100_000, max_concurrency=4, budget_month=50.0)``
    """

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_day: float | None = None
    budget_month: float | None = None
    budget_total: float | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive whole number or None")
        for name in ("budget_day", "budget_month", "budget_total"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of dollars ≥ 0 or None")

    @classmethod
    def none(cls) -> Limits:
        """No limit at all (spend is still counted)."""
        return cls()

    @property
    def empty(self) -> bool:
        """True when nothing is limited."""
        return (self.rpm, self.tpm, self.max_concurrency, self.budget_day, self.budget_month,
                self.budget_total) == (None,) * 6


@dataclass(frozen=True, slots=True)
class Scope:
    """A subject whose limits a request counts against, e.g. ``Scope("key:abc123", limits)`` or ``"team:ml"``."""

    subject: str
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.subject:
            raise ValueError("a scope needs a subject")


@dataclass(slots=True)  # not frozen: one is made per request, and a frozen one costs three times as much to make
class Ask:
    """One request asking to be admitted: what to reserve, against which scopes, for how long.

    ``tokens`` (input + most output) is reserved against ``tpm``, ``cost`` (dollars, at most what the request
    may cost) against the budgets; a reservation not settled within ``ttl`` seconds expires. ``now`` replaces
    the store's clock (tests). The first scope is the one whose quota the admission reports.

    Usage: ``Ask("req-1", (Scope("key:k1", limits),), tokens=1_500, cost=0.02, ttl=600.0)``
    """

    request_id: str
    scopes: tuple[Scope, ...]
    tokens: int
    cost: float
    ttl: float
    now: float | None = None

    def __post_init__(self) -> None:
        if (self.request_id and "\n" not in self.request_id and self.tokens >= 0 and 0.0 <= self.cost < math.inf
                and 0.0 < self.ttl < math.inf and self.now is None and len(self.scopes) < 2):
            return  # the usual ask (one made per request): nothing more to check
        if not self.request_id or "\n" in self.request_id:
            raise ValueError("an ask needs a request id, without a line break")
        if self.tokens < 0:
            raise ValueError("tokens must be ≥ 0")
        if not (math.isfinite(self.cost) and self.cost >= 0):
            raise ValueError("cost must be a finite number of dollars ≥ 0")
        if not (math.isfinite(self.ttl) and self.ttl > 0):
            raise ValueError("ttl must be a positive number of seconds")
        if self.now is not None and not math.isfinite(self.now):
            raise ValueError("now must be finite")
        if len(self.scopes) > 1:
            subjects = [s.subject for s in self.scopes]
            if len(set(subjects)) != len(subjects):
                raise ValueError(f"a subject appears twice among the scopes: {subjects}")


class LimitState(NamedTuple):
    """One per-minute limit as the ``x-ratelimit-*`` headers show it: its size, what is left (whole units,
    ≥ 0) and the seconds until the bucket is full again. (A named tuple: one is made per admission.)"""

    limit: float
    remaining: float
    reset: float

    @classmethod
    def of_bucket(cls, limit: int, level: float) -> LimitState:
        """The state of a bucket of ``limit`` refilled in a minute that holds ``level`` now."""
        return cls(float(limit), float(max(0, math.floor(level))), max(0.0, (limit - level) * 60.0 / limit))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an ask was refused: the subject and its limit, and when trying again may help (``None``: not soon)."""

    subject: str
    limit: LimitName
    retry_after: float | None
    message: str


@dataclass(slots=True)  # not frozen: one is made per request
class Admission:
    """The answer to an ask. ``quota`` describes the first scope's per-minute limits (``"requests"`` for rpm,
    ``"tokens"`` for tpm, each only if configured) after this admission, admitted or not."""

    admitted: bool
    refusal: Refusal | None = None
    quota: Mapping[str, LimitState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpendReport:
    """A subject's spend in the current UTC day and month and in total, the dollars reserved by requests in
    flight, and how many are in flight."""

    spent_day: float
    spent_month: float
    spent_total: float
    reserved: float
    in_flight: int


@dataclass(frozen=True, slots=True)
class BudgetWindows:
    """The UTC day and month ``now`` falls in: their names (``d:20250131``, ``m:202501``) and end times."""

    day: str
    day_end: float
    month: str
    month_end: float


def budget_windows(now: float) -> BudgetWindows:
    """The budget windows at ``now`` (seconds since the epoch)."""
    return _windows_of_day(math.floor(now / 86400.0))


@functools.lru_cache(maxsize=8)
def _windows_of_day(day: int) -> BudgetWindows:  # every call on one day asks for the same windows
    t = datetime.fromtimestamp(day * 86400.0, UTC)
    next_month = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return BudgetWindows(f"d:{t:%Y%m%d}", (day + 1) * 86400.0, f"m:{t:%Y%m}", next_month.timestamp())


class _BucketQuota(Mapping[str, LimitState]):
    """A quota of the two per-minute buckets: ``"requests"`` and ``"tokens"``, each present when ``_held`` has
    something for it."""

    __slots__ = ()

    def _held(self) -> tuple[object, object]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        requests, tokens = self._held()
        if requests is not None:
            yield "requests"
        if tokens is not None:
            yield "tokens"

    def __len__(self) -> int:
        requests, tokens = self._held()
        return (requests is not None) + (tokens is not None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


class Quota(_BucketQuota):
    """The quota an admission reports for a scope with ``limits`` whose buckets hold these levels: a mapping of
    ``"requests"`` (rpm) and ``"tokens"`` (tpm), each only if limited, to its :class:`LimitState`. The states
    are made when read; the response headers are written from the levels directly (one is made per request).
    """

    __slots__ = ("limits", "requests_level", "tokens_level")

    def __init__(self, limits: Limits, requests_level: float | None, tokens_level: float | None) -> None:
        self.limits = limits
        self.requests_level = requests_level if limits.rpm is not None else None
        self.tokens_level = tokens_level if limits.tpm is not None else None

    def __getitem__(self, name: str) -> LimitState:
        if name == "requests" and self.requests_level is not None and self.limits.rpm is not None:
            return LimitState.of_bucket(self.limits.rpm, self.requests_level)
        if name == "tokens" and self.tokens_level is not None and self.limits.tpm is not None:
            return LimitState.of_bucket(self.limits.tpm, self.tokens_level)
        raise KeyError(name)

    def _held(self) -> tuple[object, object]:
        return self.requests_level, self.tokens_level


class ShownQuota(_BucketQuota):
    """A quota as a store renders it for the ``x-ratelimit-*`` headers: for ``"requests"`` (rpm) and ``"tokens"``
    (tpm), each only if limited, the whole units left and the time until the bucket is full again, as ASCII
    (``b"41"``, ``b"1.500s"``). The :class:`LimitState` mapping is made when read.
    """

    __slots__ = ("limits", "requests", "tokens")

    def __init__(self, limits: Limits, requests: tuple[bytes, bytes] | None,
                 tokens: tuple[bytes, bytes] | None) -> None:
        self.limits = limits
        self.requests = requests if limits.rpm is not None else None
        self.tokens = tokens if limits.tpm is not None else None

    def __getitem__(self, name: str) -> LimitState:
        shown, limit = (self.requests, self.limits.rpm) if name == "requests" else (
            (self.tokens, self.limits.tpm) if name == "tokens" else (None, None))
        if shown is None or limit is None:
            raise KeyError(name)
        return LimitState(float(limit), float(shown[0]), float(shown[1].removesuffix(b"s")))

    def _held(self) -> tuple[object, object]:
        return self.requests, self.tokens


def quota_of(limits: Limits, requests_level: float | None, tokens_level: float | None) -> Quota:
    """The quota an admission reports for a scope with ``limits`` whose buckets hold these levels."""
    return Quota(limits, requests_level, tokens_level)


def refusal_of(ask: Ask, scope: Scope, limit: LimitName, retry_after: float | None, used: float,
               reserved: float) -> Refusal:
    """The refusal of ``ask`` by ``scope``'s ``limit``; ``used``/``reserved`` are what the store saw: spent and
    reserved dollars for budgets, requests in flight for concurrency, the bucket's level for rpm and tpm."""
    who, lim = scope.subject, scope.limits
    wait = "" if retry_after is None else f"; retry in {retry_after:.1f} s"
    if limit == "revoked":
        message = f"{who} is revoked"
    elif limit.startswith("budget_"):
        period = {"budget_day": "daily", "budget_month": "monthly", "budget_total": "total"}[limit]
        budget = getattr(lim, limit)
        message = (f"{who} has no {period} budget left for this request (budget ${budget:.4f}, spent ${used:.4f}, "
                   f"reserved ${reserved:.4f}, this request ${ask.cost:.4f})")
        if retry_after is not None:
            message += f"; it renews in {retry_after:.0f} s"
    elif limit == "concurrency":
        message = f"{who} has {used:.0f} requests in flight, its limit of {lim.max_concurrency}{wait}"
    elif limit == "rpm":
        message = f"{who} is over its limit of {lim.rpm} requests per minute{wait}"
    else:
        message = f"{who} is over its limit of {lim.tpm} tokens per minute (this request: {ask.tokens}){wait}"
    return Refusal(who, limit, retry_after, message)


def subjects_of(scopes: Sequence[Scope] | Sequence[str]) -> list[str]:
    """The subjects of ``scopes``, given as scopes or as subjects."""
    if isinstance(scopes, str):
        raise TypeError("scopes must be a sequence of scopes or subjects, not one string")
    return [s.subject if isinstance(s, Scope) else s for s in scopes]


class Limiter(Protocol):
    """Where limits are counted. Every method is atomic on its own; ``now`` (tests) replaces the clock."""

    async def admit(self, ask: Ask) -> Admission:
        """Reserve what ``ask`` needs in all its scopes, or nothing if any limit refuses. Admitting a request
        id again while its reservation lives takes nothing more and reports it admitted (a retried call)."""
        ...

    async def settle(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *,
                     now: float | None = None) -> None:
        """Replace the reservation with what the request really used; the spend counts even if the reservation
        had expired. Settling (or releasing) twice changes nothing."""
        ...

    async def release(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], *,
                      now: float | None = None) -> None:
        """Drop the reservation of a request that never reached the upstream: its tokens go back to the
        bucket, nothing is charged (the request still counted against rpm)."""
        ...

    async def usage(self, subject: str, *, now: float | None = None) -> SpendReport:
        """What ``subject`` has spent and has reserved now."""
        ...

    async def revoke(self, subject: str) -> None:
        """Refuse every ask with ``subject`` among its scopes from now on."""
        ...

    async def unrevoke(self, subject: str) -> None:
        """Undo :meth:`revoke`."""
        ...

    async def erase(self, subject: str) -> int:
        """Forget everything about ``subject``: counters, reservations, spend, revocation. Returns how many
        stored entries were removed."""
        ...

    async def ping(self) -> None:
        """Raise :class:`LimiterUnavailable` unless the store answers."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


# -- in memory -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    cap: int
    level: float
    at: float

    def level_at(self, now: float) -> float:
        return min(float(self.cap), self.level + max(0.0, now - self.at) * self.cap / 60.0)

    def put(self, level: float, now: float) -> None:
        self.level, self.at = min(float(self.cap), level), now


@dataclass(slots=True)
class _Held:
    cost: float
    tokens: int
    ttl: float
    expires: float


@dataclass(slots=True)
class _Account:
    """One subject's state; what :class:`RedisLimiter` keeps in the keys under ``{prefix}{subject}``."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)  # "rpm", "tpm"
    held: dict[str, _Held] = field(default_factory=dict)  # request id → its reservation
    held_heap: list[tuple[float, str]] = field(default_factory=list)  # (expiry, request id); stale entries skipped
    held_cost: float = 0.0
    # Settled requests' ids, in two generations: a marker lives from SETTLED_MARKER_TTL to twice that. Two
    # sets swapped wholesale cost a set insertion per settlement, where expiring markers one by one cost a
    # timestamped entry each, and at thousands of requests per second tens of thousands of them live.
    settled: set[str] = field(default_factory=set)
    settled_before: set[str] = field(default_factory=set)
    settled_turns: float = -math.inf  # when the current generation becomes the previous one
    spend: dict[str, float] = field(default_factory=dict)  # "t", "d:20250131", "m:202501" → dollars
    spend_expires: dict[str, float] = field(default_factory=dict)
    next_spend_expiry: float = math.inf
    revoked: bool = False

    def purge(self, now: float) -> None:
        """Drop the reservations and settled markers that expired by ``now``, and spend windows long over."""
        heap = self.held_heap
        if heap and heap[0][0] <= now:
            while heap and heap[0][0] <= now:
                expires, rid = heapq.heappop(heap)
                held = self.held.get(rid)
                if held is not None and held.expires == expires:
                    del self.held[rid]
                    self.held_cost -= held.cost
        if not self.held:
            self.held_cost = 0.0  # no drift from float sums
            if self.buckets:
                for name in [n for n, b in self.buckets.items() if b.level_at(now) >= b.cap]:
                    del self.buckets[name]  # a full bucket is the same as none
        if len(heap) > 2 * len(self.held) + 64:  # mostly entries of settled requests: rebuild
            self.held_heap = [(h.expires, rid) for rid, h in self.held.items()]
            heapq.heapify(self.held_heap)
        if now >= self.settled_turns:
            # Idle for a whole generation or more: the previous markers are past their time as well.
            self.settled_before = self.settled if now < self.settled_turns + SETTLED_MARKER_TTL else set()
            self.settled = set()
            self.settled_turns = now + SETTLED_MARKER_TTL
        if self.next_spend_expiry <= now:
            for window in [w for w, end in self.spend_expires.items() if end <= now]:
                del self.spend[window], self.spend_expires[window]
            self.next_spend_expiry = min(self.spend_expires.values(), default=math.inf)

    def level(self, name: str, cap: int, now: float) -> float:
        bucket = self.buckets.get(name)
        if bucket is None:
            return float(cap)
        bucket.cap = cap  # the limit may have changed since
        return bucket.level_at(now)

    def put_level(self, name: str, cap: int, level: float, now: float) -> float:
        """Store a bucket's level (at most ``cap``); returns what was stored."""
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = _Bucket(cap, float(cap), now)
        bucket.put(level, now)
        return bucket.level

    def spent(self, window: str) -> float:
        return self.spend.get(window, 0.0)

    def add_spend(self, window: str, cost: float, expires: float | None) -> None:
        self.spend[window] = self.spend.get(window, 0.0) + cost
        if expires is not None:
            self.spend_expires[window] = expires
            if expires < self.next_spend_expiry:
                self.next_spend_expiry = expires

    def is_settled(self, rid: str) -> bool:
        return rid in self.settled or rid in self.settled_before

    def entries(self) -> int:
        return (len(self.buckets) + len(self.held) + len(self.settled) + len(self.settled_before) + len(self.spend)
                + int(self.revoked))


#: The budgets in CHECK_ORDER: (limit, which spend window it reads: total, month or day).
_BUDGETS: tuple[tuple[LimitName, str], ...] = (("budget_total", "t"), ("budget_month", "m"), ("budget_day", "d"))


class MemoryLimiter:
    """A :class:`Limiter` in this process's memory: exact for one event loop (no method awaits midway).

    Usage: ``MemoryLimiter()``, or ``MemoryLimiter(clock=fake_clock)`` in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._accounts: dict[str, _Account] = {}

    def _account(self, subject: str) -> _Account:
        account = self._accounts.get(subject)
        if account is None:
            account = self._accounts[subject] = _Account()
        return account

    async def admit(self, ask: Ask) -> Admission:
        now = self._clock() if ask.now is None else ask.now
        scopes = ask.scopes
        if not scopes:
            return Admission(True)
        accounts = [self._account(s.subject) for s in scopes]
        for account in accounts:
            account.purge(now)
        first, first_account = scopes[0], accounts[0]
        if ask.request_id in first_account.held:
            return Admission(True, None, self._quota(first, first_account, now))
        # Each bucket's level, read once: checked, then taken from, then reported.
        levels = [(None if (lim := s.limits).rpm is None else a.level("rpm", lim.rpm, now),
                   None if lim.tpm is None else a.level("tpm", lim.tpm, now))
                  for s, a in zip(scopes, accounts, strict=True)]
        refusal = self._check(ask, accounts, levels, now)
        if refusal is not None:
            return Admission(False, refusal, quota_of(first.limits, *levels[0]))
        reported: tuple[float | None, float | None] = (None, None)
        for scope, account, (rpm_level, tpm_level) in zip(scopes, accounts, levels, strict=True):
            lim = scope.limits
            if lim.rpm is not None and rpm_level is not None:
                rpm_level = account.put_level("rpm", lim.rpm, rpm_level - 1, now)
            if lim.tpm is not None and tpm_level is not None:
                tpm_level = account.put_level("tpm", lim.tpm, tpm_level - ask.tokens, now)
            if account is first_account:
                reported = (rpm_level, tpm_level)
            held = _Held(ask.cost, ask.tokens, ask.ttl, now + ask.ttl)
            account.held[ask.request_id] = held
            heapq.heappush(account.held_heap, (held.expires, ask.request_id))
            account.held_cost += ask.cost
        return Admission(True, None, quota_of(first.limits, *reported))

    def _check(self, ask: Ask, accounts: list[_Account], levels: list[tuple[float | None, float | None]],
               now: float) -> Refusal | None:
        scopes = ask.scopes
        for scope, account in zip(scopes, accounts, strict=True):
            if account.revoked:
                return refusal_of(ask, scope, "revoked", None, 0.0, 0.0)
        windows: BudgetWindows | None = None
        for name, period in _BUDGETS:
            for scope, account in zip(scopes, accounts, strict=True):
                budget: float | None = getattr(scope.limits, name)
                if budget is None:
                    continue
                if windows is None:
                    windows = budget_windows(now)
                window = "t" if period == "t" else windows.month if period == "m" else windows.day
                spent, held = account.spent(window), account.held_cost
                left = budget - spent - held
                if left <= MONEY_EPSILON or ask.cost > left + MONEY_EPSILON:
                    renews = (None if period == "t" else
                              (windows.month_end if period == "m" else windows.day_end) - now)
                    return refusal_of(ask, scope, name, renews, spent, held)
        for scope, account in zip(scopes, accounts, strict=True):
            limit = scope.limits.max_concurrency
            if limit is not None and len(account.held) >= limit:
                return refusal_of(ask, scope, "concurrency", CONCURRENCY_RETRY_AFTER, len(account.held), 0.0)
        for scope, (level, _) in zip(scopes, levels, strict=True):
            rpm = scope.limits.rpm
            if rpm is not None and level is not None and (wait := (1 - level) * 60.0 / rpm) > BUCKET_SLACK:
                return refusal_of(ask, scope, "rpm", wait, level, 0.0)
        for scope, (_, level) in zip(scopes, levels, strict=True):
            tpm = scope.limits.tpm
            if tpm is not None and level is not None:
                need = min(ask.tokens, tpm)  # more than the bucket holds: admitted when it is full
                if (wait := (need - level) * 60.0 / tpm) > BUCKET_SLACK:
                    return refusal_of(ask, scope, "tpm", wait, level, 0.0)
        return None

    @staticmethod
    def _quota(scope: Scope, account: _Account, now: float) -> Quota:
        lim = scope.limits
        return quota_of(lim, None if lim.rpm is None else account.level("rpm", lim.rpm, now),
                        None if lim.tpm is None else account.level("tpm", lim.tpm, now))

    async def settle(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *,
                     now: float | None = None) -> None:
        self._finish(request_id, scopes, tokens, cost, release=False, now=now)

    def settle_nowait(self, request_id: str, subject: str, tokens: int, cost: float) -> None:
        """:meth:`settle` one subject at once, without a coroutine (the request path's way)."""
        if "\n" in request_id:  # as in the Redis limiter, which sends request ids a line each
            raise ValueError("a request id has no line break")
        self._finish(request_id, (subject,), tokens, cost, release=False, now=None)

    async def release(self, request_id: str, scopes: Sequence[Scope] | Sequence[str], *,
                      now: float | None = None) -> None:
        self._finish(request_id, scopes, 0, 0.0, release=True, now=now)

    def _finish(self, rid: str, scopes: Sequence[Scope] | Sequence[str], tokens: int, cost: float, *, release: bool,
                now: float | None) -> None:
        if tokens < 0 or not (math.isfinite(cost) and cost >= 0):
            raise ValueError("tokens and cost must be ≥ 0")
        now = self._clock() if now is None else now
        windows = budget_windows(now)
        for subject in subjects_of(scopes):
            account = self._account(subject)
            account.purge(now)
            if account.is_settled(rid):
                continue
            held = account.held.pop(rid, None)
            if held is not None:  # its heap entry goes stale and is skipped
                account.held_cost = account.held_cost - held.cost if account.held else 0.0
                bucket = account.buckets.get("tpm")
                if bucket is not None:
                    bucket.put(bucket.level_at(now) + held.tokens - tokens, now)
            if not release and cost > 0:
                account.add_spend("t", cost, None)
                account.add_spend(windows.day, cost, windows.day_end + SPEND_KEPT_AFTER_WINDOW)
                account.add_spend(windows.month, cost, windows.month_end + SPEND_KEPT_AFTER_WINDOW)
            account.settled.add(rid)

    async def usage(self, subject: str, *, now: float | None = None) -> SpendReport:
        now = self._clock() if now is None else now
        account = self._accounts.get(subject)
        if account is None:
            return SpendReport(0.0, 0.0, 0.0, 0.0, 0)
        account.purge(now)
        windows = budget_windows(now)
        return SpendReport(account.spent(windows.day), account.spent(windows.month), account.spent("t"),
                           max(0.0, account.held_cost), len(account.held))

    async def revoke(self, subject: str) -> None:
        self._account(subject).revoked = True

    async def unrevoke(self, subject: str) -> None:
        account = self._accounts.get(subject)
        if account is not None:
            account.revoked = False

    async def erase(self, subject: str) -> int:
        account = self._accounts.pop(subject, None)
        return 0 if account is None else account.entries()

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
