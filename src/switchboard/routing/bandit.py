"""Learning from feedback: Thompson sampling over (context, model) with forgetting and a bounded exploration rate.

The gateway asks :meth:`Bandit.choose` which of the capable candidates should answer a request in a
context (a prompt cluster from :mod:`switchboard.routing.clusters`, or a semantic route name), and tells
:meth:`Bandit.update` how the answer went. Pure: no clock, no I/O, no global random state — ``now``
and the random draws are arguments, so a decision can be unit-tested and replayed from a saved state.

The model, per (context, model) cell:

- **Evidence** is a discounted count of successes ``s`` and failures ``f`` (a reward ``r`` in [0, 1]
  adds ``r`` to one and ``1 − r`` to the other). It halves every ``half_life`` seconds since the
  cell's last update, applied lazily when the cell is read or written, so the bandit follows drift
  and, left alone, falls back to its prior.
- **The prior** comes with each decision (e.g. the learned router's P(good) for this prompt) as
  ``prior_strength`` pseudo-observations: posterior ``Beta(½ + m·p + s, ½ + m·(1 − p) + f)``. A cold
  bandit therefore ranks like the learned router, and ``m`` contrary observations outweigh it. A
  candidate without a prior starts from ``Beta(1, 1)``.
- **Choosing**: each candidate's quality is sampled from its posterior; the objective is
  ``quality − cost_weight · cost``. The Thompson choice (best sampled objective) is taken when it is
  the greedy one (best posterior-mean objective). When it differs, it is an *exploration*, allowed
  only while the exploration token bucket holds a token: the bucket gains ``exploration_budget``
  per decision up to ``exploration_burst``, so over any n decisions there are at most
  ``exploration_burst + exploration_budget · n`` explorations. Otherwise the greedy model answers.
- **Memory** is bounded: at most ``max_contexts`` contexts (least recently updated evicted first)
  and ``max_models_per_context`` models in each.

Usage::

    bandit = Bandit(BanditConfig(half_life=86_400, exploration_budget=0.05))
    choice = bandit.choose("c07", ["small", "large"], costs={"small": 0.1, "large": 1.0},
                           prior={"small": 0.6, "large": 0.9}, now=time.time(), draws=rng)
    bandit.observe("c07", choice.model, Feedback.thumbs(up=False), now=time.time())
    store.save("bandit", bandit.to_state())     # and Bandit.from_state(store.load("bandit"), config)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist
from typing import Any, Protocol

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "Bandit",
    "BanditChoice",
    "BanditConfig",
    "BanditStateError",
    "BetaSampler",
    "Feedback",
    "Signal",
    "reward_of",
]

#: What :meth:`Bandit.to_state` writes under ``"format"`` and ``"version"``.
STATE_FORMAT = "switchboard.bandit"
STATE_VERSION = 1

_STANDARD_NORMAL = NormalDist()
_PRIOR_FLOOR = 0.5  # added to both Beta parameters so that a prior of exactly 0 or 1 stays proper


class BanditStateError(ValueError):
    """A saved bandit state that cannot be restored: another format, an unknown version, or malformed.

    The gateway logs it and starts from ``Bandit(config)``: the learned evidence is lost, the priors
    remain, and nothing is silently half-restored.
    """


@dataclass(frozen=True, slots=True)
class BanditConfig:
    """How the bandit learns; read once from the gateway config.

    - ``half_life``: seconds for evidence to lose half its weight; ``None`` never forgets. With ``n``
      feedback events per second in a cell, it remembers about ``n · half_life / ln 2`` of them.
    - ``prior_strength``: how many observations a supplied prior is worth.
    - ``cost_weight``: λ in ``quality − λ · cost`` (quality is in [0, 1], cost in the caller's unit);
      0 ranks by quality alone.
    - ``exploration_budget``: the long-run fraction of decisions that may differ from the greedy one;
      ``exploration_burst``: how many explorations may be saved up (the bucket starts full).
    - ``max_contexts``, ``max_models_per_context``: the memory bound.

    Usage::

        BanditConfig(half_life=6 * 3600, prior_strength=10, cost_weight=0.2, exploration_budget=0.05)
    """

    half_life: float | None = 86_400.0
    prior_strength: float = 10.0
    cost_weight: float = 0.0
    exploration_budget: float = 0.05
    exploration_burst: float = 10.0
    max_contexts: int = 4096
    max_models_per_context: int = 64

    def __post_init__(self) -> None:
        if self.half_life is not None and not (math.isfinite(self.half_life) and self.half_life > 0):
            raise ValueError(f"half_life must be a positive number of seconds or None, got {self.half_life}")
        if not (math.isfinite(self.prior_strength) and self.prior_strength >= 0):
            raise ValueError(f"prior_strength must be >= 0, got {self.prior_strength}")
        if not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ValueError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if not 0 <= self.exploration_budget <= 1:
            raise ValueError(f"exploration_budget must be in [0, 1], got {self.exploration_budget}")
        if not (math.isfinite(self.exploration_burst) and self.exploration_burst >= 1):
            raise ValueError(f"exploration_burst must be >= 1, got {self.exploration_burst}")
        if self.max_contexts < 1 or self.max_models_per_context < 1:
            raise ValueError("max_contexts and max_models_per_context must be >= 1")


class BetaSampler(Protocol):
    """A source of Beta draws, such as :class:`random.Random`."""

    def betavariate(self, alpha: float, beta: float) -> float: ...


@dataclass(frozen=True, slots=True)
class BanditChoice:
    """One decision and why: the model to call, the greedy alternative, and each candidate's scores.

    ``scores`` are the sampled objectives and ``means`` the posterior-mean objectives, per candidate;
    ``ranking`` is the order to try: the chosen model, then the rest by mean objective.
    """

    model: str
    greedy: str
    explored: bool
    reason: str
    scores: Mapping[str, float]
    means: Mapping[str, float]
    ranking: tuple[str, ...]


class Signal(StrEnum):
    """What the gateway learned about one answer of one model."""

    SCORE = "score"  # an explicit score in [0, 1]
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    VALIDATOR_FAILED = "validator_failed"  # a response validator rejected the answer
    UNSATISFACTORY = "unsatisfactory"  # delivered, but judged not good enough
    FALLBACK_AWAY = "fallback_away"  # the gateway gave up on this model for the request
    ANSWERED = "answered"  # a clean answer with no feedback: no evidence either way


_SIGNAL_REWARDS: dict[Signal, float | None] = {
    Signal.THUMBS_UP: 1.0,
    Signal.THUMBS_DOWN: 0.0,
    Signal.VALIDATOR_FAILED: 0.0,
    Signal.UNSATISFACTORY: 0.0,
    Signal.FALLBACK_AWAY: 0.0,
    Signal.ANSWERED: None,
}


@dataclass(frozen=True, slots=True)
class Feedback:
    """One piece of evidence about an answer, and how much it counts (``weight`` observations).

    Usage::

        Feedback.thumbs(up=True);  Feedback.scored(0.7);  Feedback(Signal.VALIDATOR_FAILED, weight=0.5)
    """

    signal: Signal
    score: float | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.signal is Signal.SCORE:
            if self.score is None or not 0.0 <= self.score <= 1.0:
                raise ValueError(f"a score must be in [0, 1], got {self.score}")
        elif self.score is not None:
            raise ValueError(f"only Signal.SCORE carries a score, not {self.signal}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight must be >= 0, got {self.weight}")

    @classmethod
    def scored(cls, score: float, weight: float = 1.0) -> Feedback:
        """An explicit score in [0, 1] (a rating, a judge's verdict …)."""
        return cls(Signal.SCORE, score, weight)

    @classmethod
    def thumbs(cls, *, up: bool, weight: float = 1.0) -> Feedback:
        """A thumbs up (reward 1) or down (reward 0)."""
        return cls(Signal.THUMBS_UP if up else Signal.THUMBS_DOWN, None, weight)


def reward_of(feedback: Feedback | Signal) -> float | None:
    """The reward in [0, 1] that ``feedback`` is worth, or ``None`` when it is no evidence.

    Explicit scores count as given, thumbs as 1 or 0; a validator failure, an unsatisfactory answer
    or a fallback away from the model count 0 for that model; a clean answer without feedback is
    ``None``, not 1 — silence is not praise.
    """
    if isinstance(feedback, Feedback):
        if feedback.signal is Signal.SCORE:
            return feedback.score
        feedback = feedback.signal
    if feedback is Signal.SCORE:
        raise ValueError("Signal.SCORE needs a score: pass Feedback.scored(value)")
    return _SIGNAL_REWARDS[feedback]


@dataclass(slots=True)
class _Cell:
    """The discounted evidence of one (context, model), as of ``t``."""

    s: float
    f: float
    t: float


class Bandit:
    """The online learner; see the module docstring for the model. Not thread-safe: the gateway calls
    it from one thread (the event loop) and hands :meth:`to_state` snapshots to a worker to save.

    Usage::

        bandit = Bandit(BanditConfig());  choice = bandit.choose(ctx, models, costs, prior, now, rng)
    """

    def __init__(self, config: BanditConfig | None = None) -> None:
        self.config = config or BanditConfig()
        # Both levels are kept in least-recently-updated-first order (dicts keep insertion order).
        self._contexts: dict[str, dict[str, _Cell]] = {}
        self._tokens = self.config.exploration_burst
        self.decisions = 0
        self.explorations = 0

    # -- deciding -----------------------------------------------------------------------------

    def choose(
        self,
        context: str,
        candidates: Sequence[str],
        costs: Mapping[str, float] | None = None,
        prior: Mapping[str, float] | None = None,
        *,
        now: float,
        draws: Sequence[float] | BetaSampler,
    ) -> BanditChoice:
        """Pick one of ``candidates`` (already filtered for capability and health) for ``context``.

        ``costs`` (per candidate, any consistent unit) is required when ``cost_weight`` is not 0;
        ``prior`` maps candidates to a prior P(good) in [0, 1]. ``draws`` is either a sampler such
        as a seeded :class:`random.Random`, or one uniform number in [0, 1] per candidate, turned
        into a Beta draw by its inverse CDF (for replay from logged draws). Ties go to the earlier
        candidate. Spends an exploration token when the choice is not the greedy one.
        """
        if not candidates:
            raise ValueError("choose() needs at least one candidate")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"duplicate candidates: {list(candidates)}")
        if isinstance(draws, Sequence) and len(draws) != len(candidates):
            raise ValueError(f"{len(draws)} draws for {len(candidates)} candidates")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        lam = self.config.cost_weight
        penalties = self._penalties(candidates, costs) if lam else dict.fromkeys(candidates, 0.0)
        cells = self._contexts.get(context, {})

        scores: dict[str, float] = {}
        means: dict[str, float] = {}
        for i, model in enumerate(candidates):
            a, b = self._beta(cells.get(model), _prior_of(prior, model), now)
            quality = _beta_ppf(float(draws[i]), a, b) if isinstance(draws, Sequence) else draws.betavariate(a, b)
            scores[model] = quality - penalties[model]
            means[model] = a / (a + b) - penalties[model]

        greedy = max(candidates, key=means.__getitem__)  # max() keeps the first of equals
        sampled = max(candidates, key=scores.__getitem__)
        self.decisions += 1
        # Rounded so that, say, twenty refills of 0.05 make exactly one token.
        self._tokens = round(min(self.config.exploration_burst, self._tokens + self.config.exploration_budget), 9)
        if len(candidates) == 1:
            model, explored, reason = greedy, False, "only candidate"
        elif sampled == greedy:
            model, explored = greedy, False
            reason = f"sample agrees with posterior mean: {greedy} (mean {means[greedy]:.3f})"
        elif self._tokens >= 1.0:
            self._tokens -= 1.0
            self.explorations += 1
            model, explored = sampled, True
            reason = (
                f"explore: {sampled} sampled {scores[sampled]:.3f} over greedy {greedy} "
                f"(mean {means[greedy]:.3f}); {self._tokens:.2f} exploration tokens left"
            )
        else:
            model, explored = greedy, False
            reason = (
                f"greedy: {greedy} (mean {means[greedy]:.3f}); exploring {sampled} "
                f"(sampled {scores[sampled]:.3f}) denied, exploration budget spent"
            )
        rest = sorted((m for m in candidates if m != model), key=means.__getitem__, reverse=True)
        return BanditChoice(model, greedy, explored, reason, scores, means, (model, *rest))

    def posterior(self, context: str, model: str, now: float, prior: float | None = None) -> tuple[float, float]:
        """The Beta(α, β) the bandit holds for ``model`` in ``context`` at ``now`` (for explain/tests)."""
        p = _prior_of(None if prior is None else {model: prior}, model)
        return self._beta(self._contexts.get(context, {}).get(model), p, now)

    # -- learning -----------------------------------------------------------------------------

    def update(self, context: str, model: str, reward: float, now: float, weight: float = 1.0) -> None:
        """Record that ``model`` earned ``reward`` in [0, 1] in ``context`` at ``now``, counted as
        ``weight`` observations. Updates that arrive out of order count at the cell's latest time."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be >= 0, got {weight}")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        cells = self._contexts.pop(context, None)
        if cells is None:
            cells = {}
        self._contexts[context] = cells  # now the most recently updated
        cell = cells.pop(model, None)
        if cell is None:
            cell = _Cell(0.0, 0.0, now)
        else:
            cell.s, cell.f = self._decayed(cell, now)
            cell.t = max(cell.t, now)
        cell.s += weight * reward
        cell.f += weight * (1.0 - reward)
        cells[model] = cell
        self._evict()

    def observe(self, context: str, model: str, feedback: Feedback | Signal, now: float) -> float | None:
        """Map ``feedback`` with :func:`reward_of` and :meth:`update`; return the reward, ``None`` if
        the feedback was no evidence (nothing changes then)."""
        reward = reward_of(feedback)
        if reward is not None:
            weight = feedback.weight if isinstance(feedback, Feedback) else 1.0
            self.update(context, model, reward, now, weight)
        return reward

    def contexts(self) -> list[str]:
        """The contexts held, least recently updated first."""
        return list(self._contexts)

    # -- persistence --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe snapshot (lists, not objects, so that order survives any store)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "tokens": self._tokens,
            "decisions": self.decisions,
            "explorations": self.explorations,
            "contexts": [
                [ctx, [[model, c.s, c.f, c.t] for model, c in cells.items()]] for ctx, cells in self._contexts.items()
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: BanditConfig | None = None) -> Bandit:
        """Rebuild a bandit from :meth:`to_state` output, under ``config`` (which may have changed:
        the memory bound is applied again). Raises :class:`BanditStateError` for another format, an
        unknown version or malformed content."""
        if state.get("format") != STATE_FORMAT:
            raise BanditStateError(f"not a bandit state (format {state.get('format')!r})")
        version = state.get("version")
        if version != STATE_VERSION:
            raise BanditStateError(f"bandit state version {version!r} is not supported (this is {STATE_VERSION})")
        bandit = cls(config)
        try:
            bandit._tokens = min(float(state["tokens"]), bandit.config.exploration_burst)
            bandit.decisions = int(state["decisions"])
            bandit.explorations = int(state["explorations"])
            for ctx, cells in state["contexts"]:
                restored: dict[str, _Cell] = {}
                for model, s, f, t in cells:
                    cell = _Cell(float(s), float(f), float(t))
                    if not (isinstance(model, str) and cell.s >= 0 and cell.f >= 0 and math.isfinite(cell.t)):
                        raise ValueError(f"bad cell {model!r}: {[s, f, t]}")
                    restored[model] = cell
                if not isinstance(ctx, str):
                    raise ValueError(f"bad context key {ctx!r}")
                bandit._contexts[ctx] = restored
        except (KeyError, TypeError, ValueError) as exc:
            raise BanditStateError(f"malformed bandit state: {exc!r}") from exc
        if not (math.isfinite(bandit._tokens) and bandit._tokens >= 0):
            raise BanditStateError(f"malformed bandit state: tokens {bandit._tokens}")
        for cells in bandit._contexts.values():
            while len(cells) > bandit.config.max_models_per_context:
                del cells[next(iter(cells))]
        bandit._evict()
        return bandit

    # -- internals ----------------------------------------------------------------------------

    def _decayed(self, cell: _Cell, now: float) -> tuple[float, float]:
        half_life = self.config.half_life
        if half_life is None or now <= cell.t:
            return cell.s, cell.f
        keep = 0.5 ** ((now - cell.t) / half_life)
        return cell.s * keep, cell.f * keep

    def _beta(self, cell: _Cell | None, prior: float | None, now: float) -> tuple[float, float]:
        if prior is None:
            a = b = 1.0
        else:
            m = self.config.prior_strength
            a, b = _PRIOR_FLOOR + m * prior, _PRIOR_FLOOR + m * (1.0 - prior)
        if cell is not None:
            s, f = self._decayed(cell, now)
            a, b = a + s, b + f
        return a, b

    def _penalties(self, candidates: Sequence[str], costs: Mapping[str, float] | None) -> dict[str, float]:
        missing = [m for m in candidates if costs is None or m not in costs]
        if missing:
            raise ValueError(f"cost_weight is set but there is no cost for {missing}")
        assert costs is not None
        penalties = {m: self.config.cost_weight * float(costs[m]) for m in candidates}
        bad = [m for m, p in penalties.items() if not math.isfinite(p)]
        if bad:
            raise ValueError(f"costs must be finite: {bad}")
        return penalties

    def _evict(self) -> None:
        contexts = self._contexts
        while len(contexts) > self.config.max_contexts:
            del contexts[next(iter(contexts))]
        if contexts:
            cells = contexts[next(reversed(contexts))]
            while len(cells) > self.config.max_models_per_context:
                del cells[next(iter(cells))]


def _prior_of(prior: Mapping[str, float] | None, model: str) -> float | None:
    if prior is None or model not in prior:
        return None
    p = float(prior[model])
    if not math.isfinite(p):
        raise ValueError(f"prior for {model!r} must be finite, got {p}")
    return min(1.0, max(0.0, p))


# -- the Beta inverse CDF, for replayable uniform draws ------------------------------------------


def _beta_ppf(u: float, a: float, b: float) -> float:
    """x with I_x(a, b) = u: Newton steps on the regularised incomplete beta, kept inside a shrinking
    bracket (bisection when a step would leave it). Accurate to about 1e-10."""
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"draws must be in [0, 1], got {u}")
    if u == 0.0:
        return 0.0
    if u == 1.0:
        return 1.0
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    lo, hi = 0.0, 1.0
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    x = min(max(mean + sd * _STANDARD_NORMAL.inv_cdf(u), 1e-6), 1 - 1e-6)
    for _ in range(100):
        err = _betainc(a, b, x) - u
        if err > 0:
            hi = x
        else:
            lo = x
        pdf = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))
        step = err / pdf if pdf > 0 else 0.0
        nxt = x - step
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - x) < 1e-12 or hi - lo < 1e-12:
            return nxt
        x = nxt
    return x


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def _beta_cf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        even = m * (b - m) * x / ((a - 1 + m2) * (a + m2))
        odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1 + m2))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-13:
            break
    return h
