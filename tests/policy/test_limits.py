"""Limits and budgets hold exactly: each limit refuses as it should, bursts never overshoot (in one process, across
limiter instances and across OS processes), reservations settle once and expire, and a Redis that is away is one
exception. Time is a fake clock or an explicit ``now``: nothing sleeps."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.policy.governor import quota_headers, quota_lines
from switchboard.policy.limits import (
    Admission,
    Ask,
    Limiter,
    LimiterUnavailable,
    Limits,
    LimitState,
    MemoryLimiter,
    Scope,
    ShownQuota,
    SpendReport,
)

T = TypeVar("T")
T0 = datetime(2025, 1, 15, 12, tzinfo=UTC).timestamp()  # a Wednesday noon, UTC
WORKER = Path(__file__).with_name("limits_worker.py")


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Backend:
    name: str
    url: str = ""
    prefix: str = ""


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory")
    return Backend("redis", request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


Make = Callable[..., Limiter]  # (clock=None) -> a limiter of the backend under test


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Make]:
    """Builds limiters of the backend under test (Redis ones share the test's prefix); closes them after."""
    made: list[Limiter] = []

    def build(clock: Callable[[], float] | None = None) -> Limiter:
        limiter: Limiter
        if backend.name == "memory":
            limiter = MemoryLimiter(clock) if clock is not None else MemoryLimiter()
        else:
            from switchboard.policy.limits_redis import RedisLimiter

            limiter = RedisLimiter(backend.url, prefix=backend.prefix, clock=clock)
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(make: Make, clock: FakeClock) -> Limiter:
    return make(clock)


def ask(rid: str, *scopes: Scope, tokens: int = 0, cost: float = 0.0, ttl: float = 60.0,
        now: float | None = None) -> Ask:
    return Ask(rid, scopes, tokens=tokens, cost=cost, ttl=ttl, now=now)


def quota(admission: Admission, name: str) -> tuple[float, float, float]:
    state = admission.quota[name]
    return state.limit, state.remaining, round(state.reset, 6)


def refused(admission: Admission) -> tuple[str, str, float | None]:
    assert not admission.admitted and admission.refusal is not None
    r = admission.refusal
    return r.subject, r.limit, None if r.retry_after is None else round(r.retry_after, 6)


# -- each limit --------------------------------------------------------------------------------------


async def test_rpm_is_a_bucket_of_the_limit_refilled_in_a_minute(limiter: Limiter, clock: FakeClock) -> None:
    key = Scope("key:a", Limits(rpm=5))
    for i in range(5):
        admission = await limiter.admit(ask(f"r{i}", key))
        assert admission.admitted and admission.refusal is None
        assert quota(admission, "requests") == (5, 4 - i, 12.0 * (i + 1))
        assert "tokens" not in admission.quota
    sixth = await limiter.admit(ask("r5", key))
    assert refused(sixth) == ("key:a", "rpm", 12.0)
    assert "requests per minute" in sixth.refusal.message  # type: ignore[union-attr]
    assert quota(sixth, "requests") == (5, 0, 60.0)
    clock.advance(12.0)
    assert (await limiter.admit(ask("r5", key))).admitted


async def test_tpm_reserves_the_estimate_and_settling_corrects_it(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(tpm=1000))
    first = await limiter.admit(ask("r1", key, tokens=600))
    assert first.admitted and quota(first, "tokens") == (1000, 400, 36.0)
    assert refused(await limiter.admit(ask("r2", key, tokens=600))) == ("key:a", "tpm", 12.0)
    await limiter.settle("r1", ["key:a"], 100, 0.0)  # 500 unused tokens come back
    second = await limiter.admit(ask("r2", key, tokens=600))
    assert second.admitted and quota(second, "tokens") == (1000, 300, 42.0)
    await limiter.settle("r2", [key], 900, 0.0)  # 300 more than reserved: the bucket is empty
    third = await limiter.admit(ask("r3", key, tokens=60))
    assert refused(third) == ("key:a", "tpm", 3.6)
    assert quota(third, "tokens") == (1000, 0, 60.0)


async def test_an_ask_larger_than_tpm_waits_for_a_full_bucket_then_overdraws(limiter: Limiter,
                                                                           clock: FakeClock) -> None:
    key = Scope("key:a", Limits(tpm=1000))
    assert (await limiter.admit(ask("small", key, tokens=10))).admitted
    assert refused(await limiter.admit(ask("big", key, tokens=1500))) == ("key:a", "tpm", 0.6)
    clock.advance(0.6)
    big = await limiter.admit(ask("big", key, tokens=1500))
    assert big.admitted and quota(big, "tokens") == (1000, 0, 90.0)
    assert refused(await limiter.admit(ask("next", key, tokens=1))) == ("key:a", "tpm", 30.06)


async def test_concurrency_counts_requests_in_flight(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(max_concurrency=2))
    assert (await limiter.admit(ask("r1", key))).admitted
    assert (await limiter.admit(ask("r2", key))).admitted
    third = await limiter.admit(ask("r3", key))
    assert refused(third) == ("key:a", "concurrency", 1.0)
    assert third.quota == {}
    await limiter.settle("r1", ["key:a"], 0, 0.0)
    assert (await limiter.admit(ask("r3", key))).admitted
    await limiter.release("r2", ["key:a"])
    assert (await limiter.usage("key:a")).in_flight == 1


# Seconds from T0 (Wednesday 15 January 2025, noon UTC) to the end of its window.
@pytest.mark.parametrize(("name", "renews"), [
    ("budget_day", 12 * 3600.0), ("budget_month", 16.5 * 86400), ("budget_total", None),
])
async def test_budgets_count_spend_and_reservations(limiter: Limiter, name: str, renews: float | None) -> None:
    limits: dict[str, Any] = {name: 2.0}
    key = Scope("key:a", Limits(**limits))
    assert (await limiter.admit(ask("r1", key, cost=1.5))).admitted
    over = await limiter.admit(ask("r2", key, cost=1.0))  # 1.5 reserved + 1.0 > 2.0
    assert refused(over) == ("key:a", name, renews)
    assert "budget" in over.refusal.message  # type: ignore[union-attr]
    await limiter.settle("r1", ["key:a"], 10, 0.2)
    assert (await limiter.admit(ask("r2", key, cost=1.0))).admitted  # 0.2 spent + 1.0 reserved
    assert await limiter.usage("key:a") == SpendReport(0.2, 0.2, 0.2, 1.0, 1)
    await limiter.settle("r2", ["key:a"], 10, 1.8)  # spent 2.0: the budget is used up
    assert refused(await limiter.admit(ask("r3", key, cost=0.0))) == ("key:a", name, renews)
    assert (await limiter.usage("key:a")).spent_total == pytest.approx(2.0)


async def test_day_and_month_spend_start_afresh_in_the_next_window(limiter: Limiter, clock: FakeClock) -> None:
    daily = Scope("key:d", Limits(budget_day=1.0))
    monthly = Scope("key:m", Limits(budget_month=1.0))
    for scope in (daily, monthly):
        assert (await limiter.admit(ask("r1", scope, cost=1.0))).admitted
        await limiter.settle("r1", [scope.subject], 0, 1.0)
        assert not (await limiter.admit(ask("r2", scope))).admitted
    clock.advance(12 * 3600.0)  # Thursday, 00:00 UTC
    assert (await limiter.admit(ask("r2", daily))).admitted
    assert not (await limiter.admit(ask("r2", monthly))).admitted
    assert await limiter.usage("key:d") == SpendReport(0.0, 1.0, 1.0, 0.0, 1)
    clock.advance(17 * 86400.0)  # 1 February
    assert (await limiter.admit(ask("r2", monthly))).admitted
    assert await limiter.usage("key:m") == SpendReport(0.0, 0.0, 1.0, 0.0, 1)


@pytest.mark.parametrize("at", [
    datetime(2024, 2, 28, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2024, 2, 29, 12, tzinfo=UTC),
    datetime(2023, 12, 31, 23, tzinfo=UTC),
    datetime(2000, 2, 29, tzinfo=UTC),
    datetime(2100, 2, 28, 6, tzinfo=UTC),
    datetime(2025, 7, 31, 23, 59, 59, tzinfo=UTC),
])
async def test_budget_windows_are_utc_calendar_days_and_months(make: Make, at: datetime) -> None:
    limiter = make()
    now = at.timestamp()
    day_end = (datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp() + 86400) - now
    month_end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC).timestamp() - now
    day = await limiter.admit(ask("r", Scope("key:d", Limits(budget_day=0.0)), now=now))
    month = await limiter.admit(ask("r", Scope("key:m", Limits(budget_month=0.0)), now=now))
    assert refused(day) == ("key:d", "budget_day", round(day_end, 6))
    assert refused(month) == ("key:m", "budget_month", round(month_end, 6))


async def test_revoked_subjects_are_refused_until_unrevoked(limiter: Limiter) -> None:
    key, team = Scope("key:a", Limits(rpm=5)), Scope("team:ml", Limits())
    await limiter.revoke("team:ml")
    assert refused(await limiter.admit(ask("r1", key, team))) == ("team:ml", "revoked", None)
    assert (await limiter.admit(ask("r1", key))).admitted
    await limiter.revoke("key:a")
    assert refused(await limiter.admit(ask("r2", key))) == ("key:a", "revoked", None)
    await limiter.unrevoke("key:a")
    await limiter.unrevoke("team:ml")
    assert (await limiter.admit(ask("r2", key, team))).admitted


async def test_the_refusal_reported_is_the_first_in_check_order(limiter: Limiter) -> None:
    key, team = Scope("key:a", Limits(rpm=1, max_concurrency=1)), Scope("team:ml", Limits(budget_total=0.0))
    assert (await limiter.admit(ask("r1", key))).admitted  # the key's rpm and concurrency are now used up
    assert refused(await limiter.admit(ask("r2", key, team))) == ("team:ml", "budget_total", None)
    assert refused(await limiter.admit(ask("r2", key))) == ("key:a", "concurrency", 1.0)
    await limiter.revoke("key:a")
    assert refused(await limiter.admit(ask("r2", key, team))) == ("key:a", "revoked", None)


async def test_admission_is_all_or_nothing_across_scopes(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(rpm=5, tpm=1000, max_concurrency=5, budget_total=10.0))
    team = Scope("team:ml", Limits(budget_total=1.0))
    assert (await limiter.admit(ask("t1", team, cost=1.0))).admitted
    await limiter.settle("t1", ["team:ml"], 0, 1.0)
    refusal = await limiter.admit(ask("r1", key, team, tokens=100, cost=0.5))
    assert refused(refusal) == ("team:ml", "budget_total", None)
    assert quota(refusal, "requests") == (5, 5, 0.0) and quota(refusal, "tokens") == (1000, 1000, 0.0)
    assert await limiter.usage("key:a") == SpendReport(0.0, 0.0, 0.0, 0.0, 0)
    alone = await limiter.admit(ask("r2", key, tokens=100, cost=0.5))
    assert quota(alone, "requests")[1] == 4 and quota(alone, "tokens")[1] == 900
    both = await limiter.admit(ask("r3", Scope("team:open", Limits()), key))
    assert both.admitted and both.quota == {}  # the quota is the first scope's


async def test_an_ask_without_scopes_is_admitted(limiter: Limiter) -> None:
    admission = await limiter.admit(ask("r1"))
    assert admission == Admission(True, None, {})


async def test_admitting_a_request_id_again_takes_nothing_more(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(rpm=5, budget_total=1.0))
    first = await limiter.admit(ask("r1", key, cost=1.0))
    again = await limiter.admit(ask("r1", key, cost=1.0))  # a retried call
    assert first.admitted and again.admitted
    assert quota(again, "requests")[1] == 4
    assert await limiter.usage("key:a") == SpendReport(0.0, 0.0, 0.0, 1.0, 1)


async def test_without_a_clock_the_stores_own_time_is_used(make: Make) -> None:
    limiter = make()  # Redis: the script reads TIME
    key = Scope("key:a", Limits(rpm=1, budget_total=1.0))
    assert (await limiter.admit(ask("r1", key, cost=0.5))).admitted
    await limiter.settle("r1", ["key:a"], 1, 0.25)
    again = refused(await limiter.admit(ask("r2", key)))
    assert again[:2] == ("key:a", "rpm") and again[2] is not None and 0 < again[2] <= 60
    report = await limiter.usage("key:a")
    assert (report.spent_total, report.reserved, report.in_flight) == (0.25, 0.0, 0)


# -- bursts --------------------------------------------------------------------------------------------

BURSTS = {
    "budget": Limits(budget_total=5.0),
    "rpm": Limits(rpm=5),
    "concurrency": Limits(max_concurrency=5),
}


async def burst(limiters: Sequence[Limiter], subject: str, limits: Limits, count: int, tag: str) -> list[str]:
    """``count`` admissions at once, spread over ``limiters``; the request ids admitted."""
    scope = Scope(subject, limits)
    asks = [ask(f"{tag}{i}", scope, tokens=10, cost=1.0) for i in range(count)]
    admissions = await asyncio.gather(*(limiters[i % len(limiters)].admit(a) for i, a in enumerate(asks)))
    return [a.request_id for a, adm in zip(asks, admissions, strict=True) if adm.admitted]


@pytest.mark.parametrize("kind", list(BURSTS))
async def test_fifty_at_once_admit_exactly_five(limiter: Limiter, kind: str) -> None:
    admitted = await burst([limiter], "key:a", BURSTS[kind], 50, "a")
    assert len(admitted) == 5
    if kind == "concurrency":
        for rid in admitted:
            await limiter.settle(rid, ["key:a"], 10, 0.0)
        assert len(await burst([limiter], "key:a", BURSTS[kind], 50, "b")) == 5


@pytest.mark.parametrize("kind", list(BURSTS))
async def test_two_redis_limiters_share_the_limits(redis_url: str, redis_prefix: str, kind: str) -> None:
    from switchboard.policy.limits_redis import RedisLimiter

    clock = FakeClock()
    limiters = [RedisLimiter(redis_url, prefix=redis_prefix, clock=clock) for _ in range(2)]
    try:
        admitted = await burst(limiters, "key:a", BURSTS[kind], 50, "a")
        assert len(admitted) == 5
        if kind == "concurrency":
            for i, rid in enumerate(admitted):
                await limiters[i % 2].settle(rid, ["key:a"], 10, 0.0)
            assert len(await burst(limiters, "key:a", BURSTS[kind], 50, "b")) == 5
    finally:
        for limiter in limiters:
            await limiter.aclose()


@pytest.mark.parametrize("kind", ["budget", "rpm"])
async def test_two_processes_share_the_limits(redis_url: str, redis_prefix: str, kind: str) -> None:
    from switchboard.policy.limits_redis import RedisLimiter

    limits = BURSTS[kind]
    config = json.dumps({k: v for k, v in (("rpm", limits.rpm), ("budget_total", limits.budget_total)) if v})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), redis_url, redis_prefix, "key:a", config, "25", repr(T0),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    limiter = RedisLimiter(redis_url, prefix=redis_prefix, clock=FakeClock())
    try:
        assert proc.stdout is not None and proc.stdin is not None
        await limiter.ping()
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert ready == b"ready\n", (ready, await proc.stderr.read())  # type: ignore[union-attr]
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        mine = await burst([limiter], "key:a", limits, 25, "parent")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert len(mine) + int(out) == 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await limiter.aclose()


# -- settling ------------------------------------------------------------------------------------------


async def test_settling_twice_counts_once(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(tpm=1000, budget_total=5.0))
    assert (await limiter.admit(ask("r1", key, tokens=500, cost=1.0))).admitted
    await limiter.settle("r1", [key], 100, 0.5)
    await limiter.settle("r1", [key], 100, 0.5)
    await limiter.release("r1", ["key:a"])
    assert await limiter.usage("key:a") == SpendReport(0.5, 0.5, 0.5, 0.0, 0)
    assert quota(await limiter.admit(ask("r2", key)), "tokens")[1] == 900


async def test_a_settled_marker_lasts_at_least_its_time_and_then_goes(limiter: Limiter, clock: FakeClock) -> None:
    from switchboard.policy.limits import SETTLED_MARKER_TTL

    key = Scope("key:a", Limits(budget_total=50.0))
    assert (await limiter.admit(ask("r1", key, cost=1.0))).admitted
    await limiter.settle("r1", ["key:a"], 10, 1.0)
    clock.advance(SETTLED_MARKER_TTL - 1)
    await limiter.settle("r1", ["key:a"], 10, 1.0)  # a late repeat, still remembered
    assert (await limiter.usage("key:a")).spent_total == pytest.approx(1.0)
    clock.advance(SETTLED_MARKER_TTL + 2)  # over twice the time: forgotten, in either store
    await limiter.settle("r1", ["key:a"], 10, 1.0)
    assert (await limiter.usage("key:a")).spent_total == pytest.approx(2.0)


@pytest.mark.parametrize("rid", ["req_0001", "réq-ü", " r 1 | 2 "], ids=["ascii", "non-ascii", "spaces"])
async def test_settling_without_waiting_counts_like_settling(limiter: Limiter, rid: str) -> None:
    key = Scope("key:a", Limits(tpm=1000, budget_total=5.0))
    assert (await limiter.admit(ask(rid, key, tokens=500, cost=1.0))).admitted
    limiter.settle_nowait(rid, "key:a", 100, 0.25)  # type: ignore[attr-defined]
    limiter.settle_nowait(rid, "key:a", 100, 0.25)  # type: ignore[attr-defined]
    # Later commands go the same way (one connection, in order): the usage is read after both settlements.
    assert await limiter.usage("key:a") == SpendReport(0.25, 0.25, 0.25, 0.0, 0)
    assert quota(await limiter.admit(ask("next", key)), "tokens")[1] == 900


async def test_settlements_of_one_turn_count_each_and_leave_together(limiter: Limiter) -> None:
    """Many settlements made in one turn of the event loop (several requests, two subjects, a repeat) count as
    if settled one by one; the Redis limiter sends them as one command, before the next one it is given."""
    limits = Limits(tpm=10_000, budget_total=100.0, max_concurrency=10)
    keys = {name: Scope(name, limits) for name in ("key:a", "key:b")}
    for i in range(6):
        name = "key:a" if i % 2 == 0 else "key:b"
        assert (await limiter.admit(ask(f"r{i}", keys[name], tokens=1000, cost=2.0))).admitted
    sent: list[int] = []
    redis = getattr(limiter, "_redis", None)
    if redis is not None:  # count the commands that leave without an answer awaited
        run_nowait = redis.run_nowait
        settle_many = limiter._settle_many  # type: ignore[attr-defined]
        redis.run_nowait = lambda script, count, *rest, **kw: (sent.append(count) if script is settle_many else None,
                                                               run_nowait(script, count, *rest, **kw))
    for i in range(6):
        name = "key:a" if i % 2 == 0 else "key:b"
        limiter.settle_nowait(f"r{i}", name, 100 * (i + 1), 0.5 * (i + 1))  # type: ignore[attr-defined]
    limiter.settle_nowait("r0", "key:a", 100, 0.5)  # type: ignore[attr-defined]  # a repeat: nothing more
    a, b = await limiter.usage("key:a"), await limiter.usage("key:b")
    assert (a.spent_total, a.reserved, a.in_flight) == (pytest.approx(0.5 + 1.5 + 2.5), 0.0, 0)
    assert (b.spent_total, b.reserved, b.in_flight) == (pytest.approx(1.0 + 2.0 + 3.0), 0.0, 0)
    # Unused tokens went back: 3 × 1000 reserved, 100 + 300 + 500 used.
    assert quota(await limiter.admit(ask("next", keys["key:a"])), "tokens")[1] == 10_000 - 900
    if redis is not None:
        assert sent == [1 + 2 + 1]  # one command: the number of keys, the two key bases, the settlements' text


def described(admission: Admission) -> tuple[Any, ...]:
    """What an admission says: admitted or the refusal, and the quota headers (the same as header lines)."""
    refusal = None if admission.admitted else refused(admission)
    headers = quota_headers(admission)
    assert quota_lines(admission) == b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return admission.admitted, refusal, headers


async def test_admissions_of_one_turn_leave_together_and_answer_as_one_by_one(redis_url: str, redis_prefix: str,
                                                                               clock: FakeClock) -> None:
    """Admissions made in one turn of the event loop (one scope or two, two keys, a repeat, refusals of several
    kinds) leave as one command, and each gets the answer it would get alone, in the order they were made: the
    memory limiter's, asked one by one. A Redis that has forgotten the script is sent it and answers the same."""
    from switchboard.policy.limits_redis import RedisLimiter

    a = Scope("key:a", Limits(max_concurrency=3, budget_total=10.0, tpm=1000))
    b = Scope("key:b", Limits(rpm=2))
    team = Scope("team:t", Limits(max_concurrency=4))
    asks = [ask("r0", a, team, tokens=400, cost=2.0), ask("r1", b), ask("r2", a, tokens=400, cost=3.0),
            ask("r3", b, team), ask("r4", b), ask("r0", a, team, tokens=400, cost=2.0),
            ask("r5", a, team, tokens=400, cost=1.0), ask("r6", a, cost=9.0), ask("r7", a, tokens=100),
            ask("r8", b, team), ask("r9", a, team, cost=1.0)]
    memory = MemoryLimiter(clock)
    expected = [described(await memory.admit(x)) for x in asks]
    assert {e[1][1] for e in expected if e[1]} == {"rpm", "tpm", "concurrency", "budget_total"}
    limiter = RedisLimiter(redis_url, prefix=redis_prefix, clock=clock)
    sent: list[int] = []
    run_nowait = limiter._redis.run_nowait
    limiter._redis.run_nowait = lambda script, count, *rest, **kw: (  # type: ignore[method-assign]
        sent.append(count) if script is limiter._admit_many else None, run_nowait(script, count, *rest, **kw))
    try:
        got = await asyncio.gather(*(limiter.admit(x) for x in asks))
        assert [described(g) for g in got] == expected
        # One command: the number of keys, the three scopes (key base and six limits each), the admissions' text.
        assert sent == [1 + 3 * 7 + 1]

        await limiter._redis.call("SCRIPT", "FLUSH")
        later = [ask("s0", b), ask("s1", a, team, cost=0.5), ask("s2", a, team, cost=0.5)]
        expected = [described(await memory.admit(x)) for x in later]
        assert [described(g) for g in await asyncio.gather(*(limiter.admit(x) for x in later))] == expected
    finally:
        await limiter.aclose()


SCOPES = {"a": Scope("key:a", Limits(rpm=6, tpm=3000, max_concurrency=4, budget_day=8.0)),
          "b": Scope("key:b", Limits(max_concurrency=3, budget_total=5.0)),
          "t": Scope("team:t", Limits(rpm=9, budget_month=10.0))}
BATCH = st.lists(st.tuples(st.sampled_from(["a", "b", "at", "bt"]), st.integers(0, 1200),
                           st.integers(0, 300).map(lambda cents: cents / 100), st.integers(0, 6),
                           st.sampled_from([None, 0.0, 2.0])), max_size=12)  # … its own time, if any


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.tuples(BATCH, st.sampled_from([0.0, 4.0, 30.0, 61.0]), st.floats(0, 1)), max_size=5))
def test_batched_admissions_answer_as_the_memory_limiter_one_by_one(
        redis_url: str, redis_prefix: str,
        rounds: list[tuple[list[tuple[str, int, float, int, float | None]], float, float]]) -> None:
    """Rounds of admissions made in one turn (random scopes, tokens, costs, repeated request ids, some at a time of
    their own), each round's
    admitted requests then settled for a part of their estimate and the clock moved on: the Redis limiter answers
    every admission as the memory limiter does when asked one by one."""
    from switchboard.policy.limits_redis import RedisLimiter

    prefix = f"{redis_prefix}{next(_EXAMPLES)}:"

    async def body() -> None:
        clock = FakeClock()
        memory, limiter = MemoryLimiter(clock), RedisLimiter(redis_url, prefix=prefix, clock=clock)
        try:
            for r, (batch, tick, used) in enumerate(rounds):
                asks = [ask(f"r{r}-{rid}", *(SCOPES[c] for c in scopes), tokens=tokens, cost=cost,
                            now=None if at is None else clock.t + at) for scopes, tokens, cost, rid, at in batch]
                expected = [described(await memory.admit(x)) for x in asks]
                got = await asyncio.gather(*(limiter.admit(x) for x in asks))
                assert [described(g) for g in got] == expected
                for x, admission in zip(asks, got, strict=True):
                    if admission.admitted:
                        for scope in x.scopes:
                            for lim in (memory, limiter):
                                lim.settle_nowait(x.request_id, scope.subject,  # type: ignore[attr-defined]
                                                  int(x.tokens * used), x.cost * used)
                clock.advance(tick)
        finally:
            await limiter.aclose()

    asyncio.run(body())


_EXAMPLES = itertools.count()


async def test_a_settle_after_the_reservation_expired_still_counts(limiter: Limiter, clock: FakeClock) -> None:
    key = Scope("key:a", Limits(budget_total=5.0, max_concurrency=1))
    assert (await limiter.admit(ask("r1", key, cost=1.0, ttl=10.0))).admitted
    clock.advance(11.0)
    assert await limiter.usage("key:a") == SpendReport(0.0, 0.0, 0.0, 0.0, 0)
    await limiter.settle("r1", ["key:a"], 50, 0.7)
    await limiter.settle("r1", ["key:a"], 50, 0.7)
    assert await limiter.usage("key:a") == SpendReport(0.7, 0.7, 0.7, 0.0, 0)


async def test_a_crashed_requests_reservation_expires_after_its_ttl(make: Make) -> None:
    limiter = make()  # the store's own clock, overridden by each call's now
    key = Scope("key:a", Limits(budget_total=1.0, max_concurrency=1, rpm=60))
    assert (await limiter.admit(ask("crashed", key, cost=1.0, ttl=30.0, now=T0))).admitted
    assert refused(await limiter.admit(ask("r2", key, cost=0.5, now=T0 + 29.0))) == ("key:a", "budget_total", None)
    assert await limiter.usage("key:a", now=T0 + 29.0) == SpendReport(0.0, 0.0, 0.0, 1.0, 1)
    assert (await limiter.admit(ask("r2", key, cost=0.5, now=T0 + 30.0))).admitted
    assert await limiter.usage("key:a", now=T0 + 30.0) == SpendReport(0.0, 0.0, 0.0, 0.5, 1)


async def test_release_gives_the_tokens_back_and_charges_nothing(limiter: Limiter) -> None:
    key = Scope("key:a", Limits(rpm=5, tpm=1000, max_concurrency=1, budget_total=1.0))
    assert (await limiter.admit(ask("r1", key, tokens=800, cost=1.0))).admitted
    await limiter.release("r1", ["key:a"])
    assert await limiter.usage("key:a") == SpendReport(0.0, 0.0, 0.0, 0.0, 0)
    again = await limiter.admit(ask("r2", key, tokens=800, cost=1.0))
    assert again.admitted
    assert quota(again, "tokens")[1] == 200 and quota(again, "requests")[1] == 3  # the request itself counted


async def test_bad_settlements_are_refused(limiter: Limiter) -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        await limiter.settle("r1", ["key:a"], -1, 0.0)
    with pytest.raises(TypeError, match="one string"):
        await limiter.settle("r1", "key:a", 1, 0.0)
    with pytest.raises(ValueError, match="line break"):
        limiter.settle_nowait("r\n1", "key:a", 1, 0.0)  # type: ignore[attr-defined]


# -- administration ------------------------------------------------------------------------------------


async def test_erase_forgets_everything_about_a_subject(limiter: Limiter, backend: Backend) -> None:
    key = Scope("key:a", Limits(rpm=5, tpm=1000, max_concurrency=2, budget_day=5.0, budget_total=5.0))
    other = Scope("key:ab", Limits(rpm=5))
    assert (await limiter.admit(ask("r1", key, other, tokens=100, cost=1.0))).admitted
    assert (await limiter.admit(ask("r2", key, tokens=100, cost=1.0))).admitted
    await limiter.settle("r1", ["key:a", "key:ab"], 50, 0.5)
    await limiter.revoke("key:a")
    assert await limiter.erase("key:a") > 0
    assert await limiter.usage("key:a") == SpendReport(0.0, 0.0, 0.0, 0.0, 0)
    fresh = await limiter.admit(ask("r3", key, tokens=100))
    assert fresh.admitted and quota(fresh, "requests")[1] == 4 and quota(fresh, "tokens")[1] == 900
    assert (await limiter.usage("key:ab")).spent_total == 0.5  # untouched
    await limiter.release("r3", ["key:a"])
    assert await limiter.erase("key:a") > 0
    if backend.name == "redis":
        import redis
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(backend.url, decode_responses=True,
                                         driver_info=redis.DriverInfo(lib_version=redis.__version__))
        try:
            keys = [k async for k in client.scan_iter(match=backend.prefix + "*")]
        finally:
            await client.aclose()
        assert keys and not [k for k in keys if "{key:a}" in k]
        assert all(k.startswith(backend.prefix + "{key:ab}:") for k in keys)
    assert await limiter.erase("key:a") == 0


async def test_redis_keys_expire_but_total_spend_and_revocation(redis_url: str, redis_prefix: str) -> None:
    import redis
    import redis.asyncio as aioredis

    from switchboard.policy.limits_redis import RedisLimiter

    limiter = RedisLimiter(redis_url, prefix=redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True,
                                     driver_info=redis.DriverInfo(lib_version=redis.__version__))
    key = Scope("key:a", Limits(rpm=60, tpm=6000, max_concurrency=5, budget_day=9.0, budget_month=9.0))
    try:
        assert (await limiter.admit(ask("r1", key, tokens=3000, cost=1.0, ttl=600.0))).admitted
        assert (await limiter.admit(ask("r2", key, tokens=100, cost=1.0, ttl=30.0))).admitted
        await limiter.settle("r2", ["key:a"], 50, 0.5)
        await limiter.revoke("key:a")
        base = redis_prefix + "{key:a}:"
        ttls = {k.removeprefix(base): await client.ttl(k) async for k in client.scan_iter(match=base + "*")}
    finally:
        await client.aclose()
        await limiter.aclose()
    assert ttls.pop("revoked") == ttls.pop("spend:t") == -1
    assert sorted(k[:8] for k in ttls if k.startswith("spend:")) == ["spend:d:", "spend:m:"]
    assert set(ttls) >= {"rpm", "tpm", "res", "resd", "held", "done"}
    assert all(0 < ttl <= 62 * 86400 for ttl in ttls.values()), ttls
    assert 600 <= ttls["res"] <= 660 and 600 <= ttls["tpm"] <= 660  # as long as its longest reservation


async def test_ping_answers(limiter: Limiter) -> None:
    await limiter.ping()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_redis_that_is_away_is_one_exception(closed_port: int) -> None:
    from switchboard.policy.limits_redis import RedisLimiter

    limiter = RedisLimiter(f"redis://:hunter2@127.0.0.1:{closed_port}/0", timeout=1.0)
    key = Scope("key:a", Limits(rpm=5))
    try:
        calls: list[Coroutine[Any, Any, Any]] = [
            limiter.ping(), limiter.admit(ask("r1", key)), limiter.settle("r1", [key], 1, 0.1),
            limiter.release("r1", [key]), limiter.usage("key:a"), limiter.revoke("key:a"),
            limiter.unrevoke("key:a"), limiter.erase("key:a"),
        ]
        for call in calls:
            with pytest.raises(LimiterUnavailable, match=f"127.0.0.1:{closed_port}") as info:
                await call
            assert "hunter2" not in str(info.value)
    finally:
        await limiter.aclose()


# -- data types ----------------------------------------------------------------------------------------


def test_limits_and_asks_are_checked() -> None:
    assert Limits.none().empty and not Limits(budget_total=0.0).empty
    bad: dict[str, Any]
    for bad in ({"rpm": 0}, {"tpm": -1}, {"max_concurrency": 1.5}, {"budget_day": -0.01},
                {"budget_month": float("nan")}):
        with pytest.raises(ValueError, match="must be"):
            Limits(**bad)
    key = Scope("key:a", Limits())
    with pytest.raises(ValueError, match="twice"):
        ask("r1", key, key)
    with pytest.raises(ValueError, match="ttl"):
        ask("r1", key, ttl=0)
    for field, value in (("cost", float("nan")), ("cost", float("inf")), ("cost", -0.5), ("ttl", float("inf")),
                         ("tokens", -1), ("now", float("nan"))):
        with pytest.raises(ValueError, match="must be"):
            Ask("r1", (key,), **{"tokens": 1, "cost": 0.0, "ttl": 1.0, field: value})
    for rid in ("", "r\n1"):
        with pytest.raises(ValueError, match="request id"):
            Ask(rid, (key,), tokens=1, cost=0.0, ttl=1.0)
    assert LimitState.of_bucket(60, -3.5) == LimitState(60.0, 0.0, 63.5)


def test_a_quota_as_the_store_shows_it_reads_as_limit_states() -> None:
    both = ShownQuota(Limits(rpm=60, tpm=1000), (b"41", b"19.000s"), (b"0", b"60.000s"))
    assert dict(both) == {"requests": LimitState(60.0, 41.0, 19.0), "tokens": LimitState(1000.0, 0.0, 60.0)}
    assert len(both) == 2 and "requests" in both and "cost" not in both
    with pytest.raises(KeyError):
        both["cost"]
    # A bucket the limits do not have is not shown, whatever the store said.
    rpm_only = ShownQuota(Limits(rpm=60), (b"59", b"1.000s"), (b"5", b"1.000s"))
    assert list(rpm_only) == ["requests"] and len(rpm_only) == 1
    assert quota_headers(Admission(True, None, rpm_only)) == [
        (b"x-ratelimit-limit-requests", b"60"), (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1.000s")]
    assert ShownQuota(Limits(), None, None) == {}


# -- a property of the memory limiter --------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a MemoryLimiter call without an event loop; it must finish without awaiting anything midway,
    which is what makes it atomic on one loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("a MemoryLimiter call awaited midway")


DOLLARS = st.integers(0, 1000).map(lambda cents: cents / 100)
ADMIT = st.tuples(st.just("admit"), st.integers(0, 300).map(lambda cents: cents / 100), st.integers(0, 1000),
                  st.sampled_from([30.0, 600.0]))  # cost, tokens, ttl
OPS = st.lists(st.one_of(
    ADMIT, ADMIT,
    st.tuples(st.just("settle"), st.integers(0, 99), st.floats(0, 1)),  # which one, fraction of its estimate
    st.tuples(st.just("release"), st.integers(0, 99), st.just(0.0)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 5.0, 61.0, 3 * 3600.0])),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, budget_total=DOLLARS, budget_day=DOLLARS, most=st.integers(1, 5), team_budget=DOLLARS)
def test_memory_limiter_never_overshoots(ops: list[tuple[Any, ...]], budget_total: float, budget_day: float,
                                         most: int, team_budget: float) -> None:
    """Against a model of what should be held and spent: the limiter reports exactly that, and it never exceeds
    a budget or the concurrency limit."""
    clock = FakeClock(T0 + 20 * 3600)  # the ticks cross midnight
    limiter = MemoryLimiter(clock)
    key = Scope("key:a", Limits(rpm=20, tpm=5000, max_concurrency=most, budget_day=budget_day,
                                budget_total=budget_total))
    team = Scope("team:t", Limits(budget_month=team_budget))
    outstanding: dict[str, tuple[float, float]] = {}  # request id → (estimated cost, expiry)
    spent: dict[object, float] = {}  # "total", a day's number, a month's (year, month) → dollars
    for n, op in enumerate(ops):
        if op[0] == "admit":
            _, cost, tokens, ttl = op
            if run(limiter.admit(ask(f"r{n}", key, team, tokens=tokens, cost=cost, ttl=ttl))).admitted:
                outstanding[f"r{n}"] = (cost, clock.t + ttl)
        elif op[0] == "tick":
            clock.advance(op[1])
        elif outstanding:
            rid = sorted(outstanding)[op[1] % len(outstanding)]
            cost, expires = outstanding.pop(rid)
            if clock.t >= expires:
                continue  # its process crashed: a settle now would count spend no longer reserved
            if op[0] == "settle":  # a request never costs more than its estimate
                run(limiter.settle(rid, ["key:a", "team:t"], 10, cost * op[2]))
                at = datetime.fromtimestamp(clock.t, UTC)
                for window in ("total", int(clock.t // 86400), (at.year, at.month)):
                    spent[window] = spent.get(window, 0.0) + cost * op[2]
            else:
                run(limiter.release(rid, ["key:a", "team:t"]))
        outstanding = {rid: v for rid, v in outstanding.items() if v[1] > clock.t}  # expired: crashed
        held = sum(cost for cost, _ in outstanding.values())
        at = datetime.fromtimestamp(clock.t, UTC)
        day, month = spent.get(int(clock.t // 86400), 0.0), spent.get((at.year, at.month), 0.0)
        mine, theirs = run(limiter.usage("key:a")), run(limiter.usage("team:t"))
        approx = pytest.approx
        assert (mine.spent_total, mine.spent_day, mine.reserved) == approx((spent.get("total", 0.0), day, held))
        assert (theirs.spent_month, theirs.reserved) == approx((month, held))
        assert mine.in_flight == theirs.in_flight == len(outstanding) <= most
        assert spent.get("total", 0.0) + held <= budget_total + 1e-6
        assert day + held <= budget_day + 1e-6
        assert month + held <= team_budget + 1e-6


async def test_a_redis_older_than_7_is_refused_at_the_ping() -> None:
    """The scripts use PEXPIRE … GT (Redis 7.0): an older server is named, not failed on at every request."""
    from switchboard.policy.limits import LimiterUnsupported
    from switchboard.policy.limits_redis import RedisLimiter

    info = b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"

    handled = asyncio.Event()

    async def old_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent, loads = b"", 0
        while not sent.endswith(b"server\r\n"):  # the scripts loaded as the connection opens, then INFO server
            chunk = await reader.read(65536)
            assert chunk, "the client closed the connection"
            sent += chunk
            seen = sent.count(b"$6\r\nSCRIPT\r\n")
            writer.write(b"$40\r\n%s\r\n" % (b"0" * 40) * (seen - loads))
            loads = seen
        writer.write(b"$%d\r\n%s\r\n" % (len(info), info))
        writer.close()
        await writer.wait_closed()
        handled.set()

    server = await asyncio.start_server(old_redis, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(LimiterUnsupported, match=r"version 6\.2\.14; limits need Redis 7\.0"):
            await limiter.ping()
        await asyncio.wait_for(handled.wait(), 10)
    finally:
        await limiter.aclose()
        server.close()
        await server.wait_closed()
