"""Circuit breakers: one per deployment, deciding whether it may take traffic now.

A breaker counts outcomes over a sliding window of time buckets. When enough of them failed it
opens: the deployment gets no traffic for a cooldown. After that it is half-open and lets a few
probe requests through; a probe that succeeds closes it, one that fails opens it again for twice as
long (up to ``max_cooldown``). Separately, an upstream's ``429`` with ``retry-after`` makes the
deployment unavailable for that long without counting as a failure (:meth:`CircuitBreaker.cool_down`).

Pure state: no I/O, no tasks. Time comes from an injected clock, and "open becomes half-open" is
worked out lazily whenever the breaker is looked at. Not thread-safe: one event loop owns it.

Usage::

    board = BreakerBoard(BreakerSettings(), on_change=lambda dep, old, new: log.info(...))
    breaker = board.get("openai/gpt-4o")
    if breaker.allow():
        ...  # then exactly one of breaker.record_success() / record_failure() / release()
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerBoard", "BreakerSettings", "BreakerSnapshot", "BreakerState", "ChangeHook", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]
ChangeHook = Callable[[str, BreakerState, BreakerState], None]
"""Called with (deployment id, old state, new state) on every transition."""

# The window is kept as this many time buckets: each event touches one bucket, and expiring old
# outcomes clears at most this many, so the cost per event is constant.
_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and for how long; see :class:`switchboard.config.model.BreakerConfig`.

    Usage: ``BreakerSettings(window=30.0, min_requests=5, failure_rate=0.5, cooldown=15.0)``
    """

    window: float = 30.0
    min_requests: int = 5
    failure_rate: float = 0.5
    cooldown: float = 15.0
    max_cooldown: float = 300.0
    half_open_probes: int = 1
    enabled: bool = True
    consecutive_failures: int = 5  # also opens after this many failures in a row (0: off)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError("window must be a positive number of seconds")
        if self.min_requests < 1:
            raise ValueError("min_requests must be at least 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if not (self.cooldown > 0 and self.max_cooldown > 0):
            raise ValueError("cooldown and max_cooldown must be positive")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures must not be negative")

    @property
    def base_cooldown(self) -> float:
        """The first open period: ``cooldown``, but never above ``max_cooldown``."""
        return min(self.cooldown, self.max_cooldown)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker at one moment, for metrics and ``/health``.

    Usage: ``board.snapshot()["openai/gpt-4o"].state``
    """

    state: BreakerState
    requests: int
    failures: int
    opened_count: int
    available_at: float | None


class _Window:
    """Outcome counts over the last ``window`` seconds, in ``_BUCKETS`` time buckets.

    An outcome leaves the window between ``window - window/_BUCKETS`` and ``window`` seconds after
    it was recorded, depending on where in its bucket it fell.
    """

    __slots__ = ("_failures", "_head", "_requests", "_width", "failures", "requests")

    def __init__(self, window: float) -> None:
        self._width = window / _BUCKETS
        self._requests = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._head: int | None = None
        self.requests = 0
        self.failures = 0

    def advance(self, now: float) -> None:
        """Drop the buckets that have slid out of the window by ``now``."""
        index = math.floor(now / self._width)
        head = self._head
        if head is not None and index <= head:
            return  # same bucket, or a clock that stepped back: keep what we have
        if head is None or index - head >= _BUCKETS:
            self.clear()
        else:
            for stale in range(head + 1, index + 1):
                self._drop(stale % _BUCKETS)
        self._head = index

    def add(self, now: float, failed: bool) -> None:
        self.advance(now)
        slot = (self._head or 0) % _BUCKETS  # advance() has set the head
        self._requests[slot] += 1
        self.requests += 1
        if failed:
            self._failures[slot] += 1
            self.failures += 1

    def clear(self) -> None:
        for slot in range(_BUCKETS):
            self._requests[slot] = self._failures[slot] = 0
        self.requests = self.failures = 0

    def _drop(self, slot: int) -> None:
        self.requests -= self._requests[slot]
        self.failures -= self._failures[slot]
        self._requests[slot] = self._failures[slot] = 0


class CircuitBreaker:
    """Whether one deployment may take traffic, from the outcomes of its recent calls.

    Verdicts are not tied to the :meth:`allow` call that preceded them: while half-open, a verdict
    is taken as a probe's whenever a probe slot is claimed, and ignored otherwise (it belongs to a
    call that started before the breaker opened). While open, verdicts are ignored.

    Usage::

        breaker = CircuitBreaker(BreakerSettings(), clock=time.monotonic)
        if breaker.allow():
            breaker.record_success()
    """

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic, *,
                 name: str = "", on_change: ChangeHook | None = None) -> None:
        self.settings = settings
        self.name = name
        self.on_change = on_change
        self._clock = clock
        self._window = _Window(settings.window)
        self._state: BreakerState = "closed"
        self._cooldown = settings.base_cooldown
        self._open_until = 0.0
        self._cool_until = 0.0
        self._probes = 0
        self._opened_count = 0
        self._streak = 0  # failures in a row
        # Set by a BreakerBoard: told the name whenever this breaker may have become unavailable.
        self._watch: Callable[[str], None] | None = None

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``; an open breaker whose cooldown passed reads half-open."""
        return self._observe(self._clock())

    def allow(self) -> bool:
        """Whether a request may go to this deployment now.

        In half-open state a ``True`` claims a probe slot, and the caller must later call exactly
        one of :meth:`record_success`, :meth:`record_failure` or :meth:`release`.
        """
        now = self._clock()
        state = self._observe(now)
        if now < self._cool_until:
            return False
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self.settings.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        """The call succeeded. A probe's success closes the breaker and resets the cooldown."""
        now = self._clock()
        state = self._observe(now)
        self._streak = 0
        if state == "closed":
            self._window.add(now, failed=False)
        elif state == "half_open" and self._probes:
            self._probes = 0
            self._window.clear()
            self._cooldown = self.settings.base_cooldown
            self._transition("closed")

    def record_failure(self) -> None:
        """The call failed upstream. May open the breaker; a probe's failure reopens it for longer."""
        now = self._clock()
        state = self._observe(now)
        if state == "closed":
            self._window.add(now, failed=True)
            self._streak += 1
            if self._trips():
                self._open(now)
        elif state == "half_open" and self._probes:
            self._cooldown = min(self._cooldown * 2, self.settings.max_cooldown)
            self._open(now)

    def release(self) -> None:
        """The call ended without a verdict on the deployment: frees a probe slot, counts nothing."""
        if self._observe(self._clock()) == "half_open" and self._probes:
            self._probes -= 1

    def probe_passed(self) -> None:
        """An active health probe got an answer: an open breaker turns half-open at once, so the next
        real requests can close it without waiting out the cooldown."""
        now = self._clock()
        if self._observe(now) == "open":
            self._open_until = now
            self._observe(now)

    def cool_down(self, seconds: float) -> None:
        """Keep traffic away for ``seconds`` (capped at ``max_cooldown``), as an upstream's
        ``retry-after`` asks. Neither a failure nor a state change; extends, never shortens."""
        if not seconds > 0:  # also rejects NaN
            return
        until = self._clock() + min(seconds, self.settings.max_cooldown)
        if until > self._cool_until:
            self._cool_until = until
            if self._watch is not None:
                self._watch(self.name)

    def available_at(self) -> float | None:
        """The clock time from which it may take traffic again, or ``None`` if it may now.

        A half-open breaker counts as available: :meth:`allow` hands out its probe slots.
        """
        return self._available_at(self._clock())

    def snapshot(self) -> BreakerSnapshot:
        """The current state and window counts. Usage: ``breaker.snapshot().failures``"""
        now = self._clock()
        state = self._observe(now)
        self._window.advance(now)
        return BreakerSnapshot(state=state, requests=self._window.requests, failures=self._window.failures,
                               opened_count=self._opened_count, available_at=self._available_at(now))

    def _available_at(self, now: float) -> float | None:
        until = self._open_until if self._observe(now) == "open" else 0.0
        until = max(until, self._cool_until)
        return until if until > now else None

    def _observe(self, now: float) -> BreakerState:
        if self._state == "open" and now >= self._open_until:
            self._transition("half_open")
        return self._state

    def _trips(self) -> bool:
        # A sharp change shows as a streak long before older successes leave the window.
        window, settings = self._window, self.settings
        if not settings.enabled:
            return False
        if settings.consecutive_failures and self._streak >= settings.consecutive_failures:
            return True
        return window.requests >= settings.min_requests and window.failures / window.requests >= settings.failure_rate

    def _open(self, now: float) -> None:
        self._probes = 0
        self._open_until = now + self._cooldown
        self._opened_count += 1
        self._streak = 0
        self._window.clear()  # counts start afresh once it closes again
        self._transition("open")
        if self._watch is not None:
            self._watch(self.name)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self.on_change is not None:
            self.on_change(self.name, old, new)


class BreakerBoard:
    """One breaker per deployment id, created on first use.

    Keeps the ids of breakers that opened or were cooled down, so :meth:`unavailable` looks only at
    those, not at every deployment.

    Usage::

        board = BreakerBoard(lambda dep_id: settings_for[dep_id], on_change=count_transition)
        skip = board.unavailable()  # {"openai/gpt-4o": 1234.5}
    """

    def __init__(self, settings: Callable[[str], BreakerSettings] | BreakerSettings,
                 clock: Callable[[], float] = time.monotonic, *, on_change: ChangeHook | None = None) -> None:
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._suspect: set[str] = set()

    def get(self, deployment_id: str) -> CircuitBreaker:
        """The deployment's breaker, created closed on first use."""
        breaker = self._breakers.get(deployment_id)
        if breaker is None:
            settings = self._settings if isinstance(self._settings, BreakerSettings) else self._settings(deployment_id)
            breaker = CircuitBreaker(settings, self._clock, name=deployment_id, on_change=self._on_change)
            breaker._watch = self._suspect.add
            self._breakers[deployment_id] = breaker
        return breaker

    def available(self, deployment_id: str) -> bool:
        """Whether the deployment may take traffic now (it is not among :meth:`unavailable`'s)."""
        return deployment_id not in self._suspect or deployment_id not in self.unavailable()

    def unavailable(self) -> dict[str, float]:
        """Deployment id → ``available_at`` for each deployment that may not take traffic now
        (open and not yet half-open, or cooling down)."""
        out: dict[str, float] = {}
        recovered: list[str] = []
        for deployment_id in self._suspect:
            at = self._breakers[deployment_id].available_at()
            if at is None:
                recovered.append(deployment_id)
            else:
                out[deployment_id] = at
        self._suspect.difference_update(recovered)
        return out

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        """Every breaker's snapshot, by deployment id."""
        return {deployment_id: breaker.snapshot() for deployment_id, breaker in self._breakers.items()}
