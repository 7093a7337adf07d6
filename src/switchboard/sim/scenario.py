"""How one request should go: timing, reply, usage extras and failures, from ``x-sim-*`` headers.

A :class:`Scenario` starts from the model's defaults; request headers override them; a model's
``failure_rate`` may inject a failure from its ``failure_modes`` (with the server's seeded RNG) when
the request scripts none. The headers are listed in :mod:`switchboard.sim`.

Usage::

    scripts = Scripts(random.Random(0))
    sc = scripts.for_request({"x-sim-status": "429"}, model, fleet.get)
    sc.status   # 429
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from switchboard.sim.fleet import SimModel

__all__ = ["SCRIPT_HEADERS", "Scenario", "ScriptError", "Scripts"]

SCRIPT_HEADERS = (
    "x-sim-reply",
    "x-sim-output-tokens",
    "x-sim-ttft-ms",
    "x-sim-tps",
    "x-sim-status",
    "x-sim-error-message",
    "x-sim-retry-after",
    "x-sim-timeout",
    "x-sim-reset-after",
    "x-sim-malformed",
    "x-sim-stream-error-after",
    "x-sim-cached-tokens",
    "x-sim-cache-write-tokens",
    "x-sim-reasoning-tokens",
    "x-sim-tool-call",
    "x-sim-refusal",
    "x-sim-target",
    "x-sim-times",
    "x-sim-id",
)
_KNOWN = frozenset(SCRIPT_HEADERS)
_RETRY_STATUSES = (429, 503, 529)
_MAX_COUNTERS = 10_000


class ScriptError(ValueError):
    """A malformed ``x-sim-*`` header; answered with 400 in the request's format."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything about one request that is not in its body. Times are in seconds."""

    ttft: float = 0.0
    tps: float = 0.0
    reply: str | None = None
    output_tokens: int | None = None
    status: int | None = None
    error_message: str | None = None
    retry_after: str | None = None
    timeout: bool = False
    reset_after: int | None = None
    malformed: bool = False
    stream_error_after: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tool_call: Literal["auto", "never", "always"] = "auto"
    refusal: str | None = None
    injected: str | None = None

    @property
    def fails(self) -> bool:
        """Whether this request is scripted to fail in some way."""
        return (
            self.status is not None
            or self.timeout
            or self.reset_after is not None
            or self.malformed
            or self.stream_error_after is not None
        )

    @property
    def scripted(self) -> bool:
        """Whether this request is scripted to fail or to refuse: what ``x-sim-times`` counts."""
        return self.fails or self.refusal is not None

    def interval(self) -> float:
        """Seconds between streamed tokens."""
        return 1.0 / self.tps if self.tps > 0 else 0.0

    def generation_time(self, tokens: int) -> float:
        """Seconds until a whole answer of ``tokens`` tokens is ready."""
        return self.ttft + max(tokens - 1, 0) * self.interval()


def _int(name: str, value: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise ScriptError(f"{name}: must be a non-negative integer, got {value!r}") from None
    if n < 0:
        raise ScriptError(f"{name}: must be a non-negative integer, got {value!r}")
    return n


def _float(name: str, value: str) -> float:
    try:
        f = float(value.strip())
    except ValueError:
        raise ScriptError(f"{name}: must be a non-negative number, got {value!r}") from None
    if not f >= 0 or f == float("inf"):
        raise ScriptError(f"{name}: must be a non-negative number, got {value!r}")
    return f


def _text(name: str, value: str) -> str:
    """Header text: a JSON string literal (for newlines and such) is decoded; raw UTF-8 bytes are restored."""
    if value.startswith('"'):
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, str):
            raise ScriptError(f"{name}: a value starting with a quote must be a JSON string literal")
        return decoded
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ScriptError(f"{name}: must be 1 or 0, got {value!r}")


def _parse(sim: Mapping[str, str], base: Scenario) -> Scenario:
    unknown = sorted(set(sim) - _KNOWN)
    if unknown:
        raise ScriptError(f"unknown scripting header(s) {', '.join(unknown)} (known: {', '.join(SCRIPT_HEADERS)})")
    g = sim.get
    changes: dict[str, object] = {}
    if (v := g("x-sim-reply")) is not None:
        changes["reply"] = _text("x-sim-reply", v)
    if (v := g("x-sim-output-tokens")) is not None:
        changes["output_tokens"] = _int("x-sim-output-tokens", v)
    if (v := g("x-sim-ttft-ms")) is not None:
        changes["ttft"] = _float("x-sim-ttft-ms", v) / 1000.0
    if (v := g("x-sim-tps")) is not None:
        changes["tps"] = _float("x-sim-tps", v)
    if (v := g("x-sim-status")) is not None:
        status = _int("x-sim-status", v)
        if not 400 <= status <= 599:
            raise ScriptError(f"x-sim-status: must be an HTTP error status 400-599, got {v!r}")
        changes["status"] = status
    if (v := g("x-sim-error-message")) is not None:
        changes["error_message"] = _text("x-sim-error-message", v)
    if (v := g("x-sim-retry-after")) is not None:
        changes["retry_after"] = v.strip()
    if (v := g("x-sim-timeout")) is not None:
        changes["timeout"] = _flag("x-sim-timeout", v)
    if (v := g("x-sim-reset-after")) is not None:
        changes["reset_after"] = _int("x-sim-reset-after", v)
    if (v := g("x-sim-malformed")) is not None:
        changes["malformed"] = _flag("x-sim-malformed", v)
    if (v := g("x-sim-stream-error-after")) is not None:
        changes["stream_error_after"] = _int("x-sim-stream-error-after", v)
    for header, attr in (
        ("x-sim-cached-tokens", "cached_tokens"),
        ("x-sim-cache-write-tokens", "cache_write_tokens"),
        ("x-sim-reasoning-tokens", "reasoning_tokens"),
    ):
        if (v := g(header)) is not None:
            changes[attr] = _int(header, v)
    if (v := g("x-sim-tool-call")) is not None:
        mode = v.strip().lower()
        if mode not in ("auto", "never", "always"):
            raise ScriptError(f"x-sim-tool-call: must be never, always or auto, got {v!r}")
        changes["tool_call"] = mode
    if (v := g("x-sim-refusal")) is not None:
        changes["refusal"] = _text("x-sim-refusal", v)
    return dataclasses.replace(base, **changes) if changes else base  # type: ignore[arg-type]


def _unscripted(sc: Scenario) -> Scenario:
    """``sc`` without its scripted failure or refusal (once ``x-sim-times`` is used up)."""
    return dataclasses.replace(
        sc, status=None, timeout=False, reset_after=None, malformed=False, stream_error_after=None, refusal=None
    )


class Scripts:
    """Turns ``x-sim-*`` headers into a :class:`Scenario`; owns the RNG and the ``x-sim-times`` counts."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._defaults: dict[SimModel, Scenario] = {}
        self._times: dict[tuple[tuple[str, str], ...], int] = {}

    def default(self, model: SimModel) -> Scenario:
        sc = self._defaults.get(model)
        if sc is None:
            sc = Scenario(ttft=model.ttft_ms / 1000.0, tps=model.tokens_per_second)
            self._defaults[model] = sc
        return sc

    def for_request(
        self, sim: Mapping[str, str], model: SimModel, resolve: Callable[[str], SimModel | None]
    ) -> Scenario:
        """The scenario for a request to ``model`` carrying the ``x-sim-*`` headers ``sim``.

        ``resolve`` maps a name or alias to a model (for ``x-sim-target``).
        """
        base = self.default(model)
        if sim:
            target = sim.get("x-sim-target")
            if target is not None and not _targets(target, model, resolve):
                sim = {}
        if not sim:
            return self._maybe_inject(base, model)
        sc = _parse(sim, base)
        if sc.scripted and (times := sim.get("x-sim-times")) is not None:
            limit = _int("x-sim-times", times)
            key = tuple(sorted(sim.items()))
            used = self._times.get(key, 0)
            if used >= limit:
                return _unscripted(sc)
            if len(self._times) >= _MAX_COUNTERS:
                self._times.clear()
            self._times[key] = used + 1
        return sc if sc.fails else self._maybe_inject(sc, model)

    def _maybe_inject(self, sc: Scenario, model: SimModel) -> Scenario:
        rate = model.failure_rate
        if not rate or self.rng.random() >= rate:
            return sc
        mode = self.rng.choice(model.failure_modes)
        if mode == "reset":
            return dataclasses.replace(sc, reset_after=self.rng.randrange(max(model.output_tokens, 1)), injected=mode)
        if mode == "early-reset":
            return dataclasses.replace(sc, reset_after=0, injected=mode)
        if mode == "timeout":
            return dataclasses.replace(sc, timeout=True, injected=mode)
        if mode == "malformed":
            return dataclasses.replace(sc, malformed=True, injected=mode)
        if mode == "stream-error":
            after = self.rng.randrange(max(model.output_tokens, 1))
            return dataclasses.replace(sc, stream_error_after=after, injected=mode)
        status = int(mode)
        retry = "1" if status in _RETRY_STATUSES else None
        return dataclasses.replace(sc, status=status, retry_after=retry, injected=mode)


def _targets(target: str, model: SimModel, resolve: Callable[[str], SimModel | None]) -> bool:
    for name in target.split(","):
        name = name.strip()
        if name and (name == model.name or resolve(name) is model):
            return True
    return False
