from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.execution.breaker import (
    BreakerBoard,
    BreakerSettings,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
)


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


S = BreakerSettings(window=30.0, min_requests=5, failure_rate=0.5, cooldown=10.0, max_cooldown=35.0,
                    consecutive_failures=0)  # the window's rule alone; the streak rule has its own test


def make(settings: BreakerSettings = S) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(settings, clock, name="p/m"), clock


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.settings.min_requests):
        breaker.record_failure()
    assert breaker.state == "open"


def test_opens_at_exactly_the_failure_rate() -> None:
    breaker, _ = make()
    for _ in range(3):
        breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed"  # 2 / 5 < 0.5
    breaker.record_success()
    breaker.record_failure()  # 3 / 7 < 0.5
    assert breaker.state == "closed"
    breaker.record_failure()  # 4 / 8 == 0.5
    assert breaker.state == "open"
    assert not breaker.allow()


def test_does_not_open_below_min_requests() -> None:
    breaker, _ = make()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"  # 100 % failed, but only 4 outcomes
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"


def test_rate_comparison_is_exact_for_decimal_rates() -> None:
    breaker, _ = make(BreakerSettings(min_requests=10, failure_rate=0.3))
    for _ in range(7):
        breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "open"  # 3 / 10 is 0.3, not a hair below it


def test_old_outcomes_leave_the_window() -> None:
    breaker, clock = make()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 30.0  # one full window later the four failures are gone
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.snapshot().requests == 1


def test_outcomes_within_the_window_still_count() -> None:
    breaker, clock = make()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 26.0  # less than window minus one bucket (27 s)
    breaker.record_failure()
    assert breaker.state == "open"


def test_window_slides_bucket_by_bucket() -> None:
    breaker, clock = make()
    for _ in range(10):
        breaker.record_success()
        clock.now += 3.0  # one bucket each
    assert breaker.snapshot().requests == 9  # the oldest bucket slid out
    clock.now += 15.0
    assert breaker.snapshot().requests == 4
    clock.now += 1000.0
    assert breaker.snapshot() == BreakerSnapshot("closed", 0, 0, 0, None)


def test_a_clock_stepping_back_keeps_counting() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now -= 5.0
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "open"


def test_half_open_after_cooldown_allows_exactly_the_probe_count() -> None:
    breaker, clock = make(BreakerSettings(cooldown=10.0, half_open_probes=2))
    open_breaker(breaker)
    clock.now += 9.99
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.available_at() == pytest.approx(clock.now + 0.01)
    clock.now += 0.01
    assert breaker.state == "half_open"
    assert breaker.available_at() is None
    assert [breaker.allow() for _ in range(3)] == [True, True, False]


def test_probe_success_closes_and_clears_the_window() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.snapshot() == BreakerSnapshot("closed", 0, 0, 1, None)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"  # fresh window: min_requests applies again


def test_probe_failure_reopens_with_doubled_cooldown_capped_at_max() -> None:
    breaker, clock = make()  # cooldown 10, max 35
    open_breaker(breaker)
    periods = []
    for _ in range(4):
        opened_at = clock.now
        while breaker.state == "open":
            clock.now += 1.0
        periods.append(clock.now - opened_at)
        assert breaker.allow()
        breaker.record_failure()
        assert breaker.state == "open"
    assert periods == [10.0, 20.0, 35.0, 35.0]
    assert breaker.snapshot().opened_count == 5


def test_probe_success_resets_the_cooldown_to_base() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_failure()  # next open period: 20 s
    clock.now += 20.0
    assert breaker.allow()
    breaker.record_success()
    open_breaker(breaker)
    assert breaker.available_at() == clock.now + 10.0


def test_release_frees_a_probe_slot_and_counts_nothing() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    clock.now += 10.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.state == "half_open"
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_verdicts_without_a_probe_are_ignored_while_not_closed() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    breaker.record_success()  # a call from before the breaker opened, finishing late
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 10.0
    breaker.record_success()
    breaker.release()
    assert breaker.state == "half_open"
    assert breaker.snapshot().opened_count == 1


def test_cool_down_blocks_until_it_expires_without_counting() -> None:
    breaker, clock = make()
    breaker.cool_down(4.0)
    assert not breaker.allow()
    assert breaker.state == "closed"
    assert breaker.available_at() == clock.now + 4.0
    assert breaker.snapshot() == BreakerSnapshot("closed", 0, 0, 0, clock.now + 4.0)
    clock.now += 4.0
    assert breaker.allow()
    assert breaker.available_at() is None


def test_cool_down_extends_never_shortens_and_is_capped() -> None:
    breaker, clock = make()  # max_cooldown 35
    start = clock.now
    breaker.cool_down(10.0)
    breaker.cool_down(2.0)
    assert breaker.available_at() == start + 10.0
    breaker.cool_down(1000.0)
    assert breaker.available_at() == start + 35.0
    breaker.cool_down(0.0)
    breaker.cool_down(float("nan"))
    assert breaker.available_at() == start + 35.0


def test_cool_down_holds_back_half_open_probes() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    clock.now += 5.0
    breaker.cool_down(20.0)
    clock.now += 5.0
    assert breaker.state == "half_open"
    assert not breaker.allow()
    assert breaker.available_at() == clock.now + 15.0
    clock.now += 15.0
    assert breaker.allow()


def test_disabled_breaker_never_opens_but_cools_down() -> None:
    breaker, _ = make(BreakerSettings(enabled=False))
    for _ in range(100):
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.snapshot().failures == 100
    breaker.cool_down(1.0)
    assert not breaker.allow()


def test_first_cooldown_never_exceeds_max_cooldown() -> None:
    breaker, clock = make(BreakerSettings(cooldown=60.0, max_cooldown=20.0))
    open_breaker(breaker)
    assert breaker.available_at() == clock.now + 20.0


@pytest.mark.parametrize(("bad", "message"), [
    ({"window": 0.0}, "window"), ({"min_requests": 0}, "min_requests"), ({"failure_rate": 0.0}, "failure_rate"),
    ({"failure_rate": 1.5}, "failure_rate"), ({"cooldown": 0.0}, "cooldown"), ({"max_cooldown": -1.0}, "cooldown"),
    ({"half_open_probes": 0}, "half_open_probes"),
])
def test_settings_reject_nonsense(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerSettings(**bad)


def test_on_change_reports_every_transition() -> None:
    seen: list[tuple[str, BreakerState, BreakerState]] = []
    clock = FakeClock()
    board = BreakerBoard(S, clock, on_change=lambda *change: seen.append(change))
    breaker = board.get("a")
    open_breaker(breaker)
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_failure()
    clock.now += 20.0
    assert breaker.allow()
    breaker.record_success()
    assert seen == [
        ("a", "closed", "open"),
        ("a", "open", "half_open"),
        ("a", "half_open", "open"),
        ("a", "open", "half_open"),
        ("a", "half_open", "closed"),
    ]


def test_board_makes_one_breaker_per_deployment_with_its_settings() -> None:
    per = {"a": BreakerSettings(min_requests=1), "b": BreakerSettings(min_requests=9)}
    board = BreakerBoard(lambda dep: per[dep], FakeClock())
    assert board.get("a") is board.get("a")
    assert board.get("a").settings.min_requests == 1
    assert board.get("b").settings.min_requests == 9
    assert board.get("b").name == "b"


def test_board_unavailable_lists_exactly_the_blocked_deployments() -> None:
    clock = FakeClock()
    board = BreakerBoard(S, clock)
    assert board.unavailable() == {}
    for dep in "abcd":
        board.get(dep).record_success()
    assert board.unavailable() == {}

    open_breaker(board.get("a"))
    board.get("b").cool_down(3.0)
    for _ in range(3):
        board.get("c").record_failure()  # failing, but below min_requests
    assert board.unavailable() == {"a": clock.now + 10.0, "b": clock.now + 3.0}

    clock.now += 3.0  # b's cool-off is over
    assert board.unavailable() == {"a": clock.now + 7.0}
    clock.now += 7.0  # a is half-open: routing may send it a probe
    assert board.unavailable() == {}
    assert board.get("a").allow()
    board.get("a").record_failure()  # the probe failed: a is back for 20 s
    assert board.unavailable() == {"a": clock.now + 20.0}
    assert board.snapshot()["a"] == BreakerSnapshot("open", 0, 0, 2, clock.now + 20.0)
    assert board.snapshot()["c"] == BreakerSnapshot("closed", 4, 3, 0, None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "fail", "release", "allow", "cool"]),
                          st.floats(min_value=0, max_value=40)), max_size=60))
def test_board_availability_agrees_with_every_breaker(events: list[tuple[str, float]]) -> None:
    clock = FakeClock()
    board = BreakerBoard(BreakerSettings(window=10.0, min_requests=2, cooldown=3.0, max_cooldown=12.0), clock)
    for i, (event, step) in enumerate(events):
        breaker = board.get("abc"[i % 3])
        clock.now += step / 4
        if event == "ok":
            breaker.record_success()
        elif event == "fail":
            breaker.record_failure()
        elif event == "release":
            breaker.release()
        elif event == "allow":
            breaker.allow()
        else:
            breaker.cool_down(step)
        expected = {dep: at for dep in "abc" if (at := board.get(dep).available_at()) is not None}
        assert [board.available(dep) for dep in "abc"] == [dep not in expected for dep in "abc"]
        assert board.unavailable() == expected


def test_a_passed_health_probe_makes_an_open_breaker_half_open() -> None:
    breaker, clock = make()
    breaker.probe_passed()
    assert breaker.state == "closed"  # nothing to do for a closed breaker
    open_breaker(breaker)
    clock.now += 1.0  # well within the cooldown
    breaker.probe_passed()
    assert breaker.state == "half_open" and breaker.available_at() is None
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_a_streak_of_failures_opens_before_the_window_would() -> None:
    breaker, _ = make(BreakerSettings(window=30.0, min_requests=5, failure_rate=0.5, consecutive_failures=3))
    for _ in range(20):
        breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success breaks the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"  # 4 / 25 in the window, 2 in a row
    breaker.record_failure()
    assert breaker.state == "open"  # 3 in a row, though the window is only 5 / 26
