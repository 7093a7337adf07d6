"""The models the simulated providers serve, and the gateway configuration that reaches them.

A :class:`Fleet` is a frozen list of :class:`SimModel`. Every model answers on every endpoint (OpenAI,
Anthropic and Gemini wire formats alike); ``format`` only says which API the *gateway* is configured to
use for it. ``aliases`` are gateway-level aliases (the sim also accepts them as model names).

Usage::

    fleet = load_fleet("fleet.yaml")              # or DEFAULT_FLEET
    raw = gateway_config_for_fleet(fleet, "http://127.0.0.1:9000")
    cfg = parse_config(raw, env={})

A fleet file is YAML: ``models:`` is a list of mappings (or a mapping from name to fields) whose keys
are the :class:`SimModel` fields::

    models:
      - name: sim-gpt-small
        format: openai
        ttft_ms: 20
        tokens_per_second: 400
        aliases: [fast]
        failure_rate: 0.01
        failure_modes: ["500", "429", "reset"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

__all__ = [
    "DEFAULT_FLEET",
    "FAILURE_MODES",
    "TUNABLE_FIELDS",
    "Fleet",
    "FleetError",
    "SimFormat",
    "SimKind",
    "SimModel",
    "gateway_config_for_fleet",
    "load_fleet",
]

SimFormat = Literal["openai", "anthropic", "gemini"]
SimKind = Literal["chat", "embedding"]

#: Named failure modes; any HTTP status 400–599 written as a string (``"429"``) is also a mode.
#: ``reset`` drops the connection at a random point (streams: possibly after content), ``early-reset``
#: before any content; ``stream-error`` is an in-band error after a random number of chunks.
FAILURE_MODES = ("reset", "early-reset", "timeout", "malformed", "stream-error")

PROVIDER_NAMES: dict[SimFormat, str] = {
    "openai": "sim-openai",
    "anthropic": "sim-anthropic",
    "gemini": "sim-gemini",
}


class FleetError(ValueError):
    """A fleet definition that cannot be used; the message names the bad field."""


def _check_failure_mode(mode: str) -> None:
    if mode in FAILURE_MODES:
        return
    if mode.isdigit() and 400 <= int(mode) <= 599:
        return
    raise FleetError(
        f"failure_modes: unknown mode {mode!r} (use an HTTP status 400-599 or one of {', '.join(FAILURE_MODES)})"
    )


@dataclass(frozen=True, slots=True)
class SimModel:
    """One simulated model: its timing, default reply length, limits, prices and injected failures.

    Prices are dollars per million tokens. ``tokens_per_second = 0`` means the whole reply is ready at
    once; ``ttft_ms`` is the delay before the first token (or before a non-streamed answer).
    """

    name: str
    format: SimFormat = "openai"
    kind: SimKind = "chat"
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    output_tokens: int = 32
    context_window: int = 128_000
    price_input: float = 0.0
    price_output: float = 0.0
    price_cached: float | None = None
    embedding_dim: int = 256
    failure_rate: float = 0.0
    failure_modes: tuple[str, ...] = ("500",)
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise FleetError(f"name: must be a non-empty string without spaces, got {self.name!r}")
        if self.format not in get_args(SimFormat):
            raise FleetError(f"format: must be one of openai, anthropic, gemini, got {self.format!r}")
        if self.kind not in get_args(SimKind):
            raise FleetError(f"kind: must be chat or embedding, got {self.kind!r}")
        if self.kind == "embedding" and self.format == "anthropic":
            raise FleetError("format: anthropic has no embeddings API; use openai or gemini")
        for name in ("ttft_ms", "tokens_per_second", "price_input", "price_output"):
            _non_negative_number(name, getattr(self, name))
        if self.price_cached is not None:
            _non_negative_number("price_cached", self.price_cached)
        for name in ("output_tokens", "context_window", "embedding_dim"):
            value = getattr(self, name)
            least = 0 if name == "output_tokens" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise FleetError(f"{name}: must be an integer >= {least}, got {value!r}")
        rate = self.failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise FleetError(f"failure_rate: must be a number between 0 and 1, got {rate!r}")
        for mode in self.failure_modes:
            _check_failure_mode(str(mode))
        if rate and not self.failure_modes:
            raise FleetError("failure_modes: must not be empty when failure_rate > 0")
        for alias in self.aliases:
            if not isinstance(alias, str) or not alias:
                raise FleetError(f"aliases: must be non-empty strings, got {alias!r}")


def _non_negative_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FleetError(f"{name}: must be a number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Fleet:
    """The models a :class:`~switchboard.sim.server.SimServer` serves, looked up by name or alias."""

    models: tuple[SimModel, ...]
    _index: dict[str, SimModel] = field(init=False, repr=False, compare=False)

    def __init__(self, models: Iterable[SimModel]) -> None:
        items = tuple(models)
        index: dict[str, SimModel] = {}
        for model in items:
            for key in (model.name, *model.aliases):
                if key in index:
                    raise FleetError(f"models: name or alias {key!r} is used twice")
                index[key] = model
        object.__setattr__(self, "models", items)
        object.__setattr__(self, "_index", index)

    def get(self, name: str) -> SimModel | None:
        """The model called ``name`` (or aliased so), else ``None``."""
        return self._index.get(name)

    def __iter__(self) -> Iterator[SimModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def replace(self, name: str, **changes: Any) -> Fleet:
        """A copy with one model's fields changed: ``fleet.replace("sim-claude", failure_rate=1.0)``."""
        if name not in self._index:
            raise KeyError(name)
        target = self._index[name].name
        return Fleet(dataclasses.replace(m, **changes) if m.name == target else m for m in self.models)

    def tune(self, name: str, changes: Mapping[str, Any]) -> Fleet:
        """A copy with one model's :data:`TUNABLE_FIELDS` changed, the values read as in a fleet file
        (JSON or YAML values: lists for ``failure_modes``, integers for rates).

        Raises ``KeyError`` for an unknown model and :class:`FleetError` naming a bad field or value::

            fleet = fleet.tune("sim-claude", {"failure_rate": 0.2, "failure_modes": ["529"]})
        """
        if name not in self._index:
            raise KeyError(name)
        fixed = sorted(str(k) for k in changes if k in _FIELDS and k not in TUNABLE_FIELDS)
        if fixed:
            raise FleetError(
                f"{', '.join(fixed)}: cannot be changed while serving (tunable: {', '.join(TUNABLE_FIELDS)})"
            )
        unknown = sorted(str(k) for k in changes if k not in _FIELDS)
        if unknown:
            raise FleetError(f"unknown field(s) {', '.join(unknown)} (tunable: {', '.join(TUNABLE_FIELDS)})")
        return self.replace(name, **_coerce(changes, ""))


DEFAULT_FLEET = Fleet(
    [
        SimModel(
            "sim-gpt-small",
            "openai",
            ttft_ms=20,
            tokens_per_second=400,
            output_tokens=40,
            context_window=128_000,
            price_input=0.15,
            price_output=0.6,
            price_cached=0.075,
            aliases=("fast",),
        ),
        SimModel(
            "sim-gpt-large",
            "openai",
            ttft_ms=60,
            tokens_per_second=200,
            output_tokens=80,
            context_window=128_000,
            price_input=2.5,
            price_output=10.0,
            price_cached=1.25,
            aliases=("smart",),
        ),
        SimModel(
            "sim-claude",
            "anthropic",
            ttft_ms=45,
            tokens_per_second=250,
            output_tokens=60,
            context_window=200_000,
            price_input=3.0,
            price_output=15.0,
            price_cached=0.3,
            aliases=("claude",),
        ),
        SimModel(
            "sim-gemini",
            "gemini",
            ttft_ms=30,
            tokens_per_second=300,
            output_tokens=50,
            context_window=1_048_576,
            price_input=0.3,
            price_output=2.5,
            price_cached=0.075,
            aliases=("long-context",),
        ),
        SimModel(
            "sim-embed",
            "openai",
            kind="embedding",
            ttft_ms=5,
            context_window=8191,
            price_input=0.02,
            embedding_dim=256,
            aliases=("embed",),
        ),
        SimModel(
            "sim-gemini-embed",
            "gemini",
            kind="embedding",
            ttft_ms=5,
            context_window=2048,
            price_input=0.15,
            embedding_dim=256,
        ),
    ]
)

_FIELDS = {f.name: f for f in dataclasses.fields(SimModel)}

#: The :class:`SimModel` fields that may change while serving; the others say what the model is.
TUNABLE_FIELDS = (
    "ttft_ms",
    "tokens_per_second",
    "output_tokens",
    "context_window",
    "price_input",
    "price_output",
    "price_cached",
    "embedding_dim",
    "failure_rate",
    "failure_modes",
)


def _coerce(raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Field values as read from YAML or JSON in :class:`SimModel`'s types (lists into tuples).

    ``prefix`` starts error messages, before the field name.
    """
    args = dict(raw)
    for name in ("failure_modes", "aliases"):
        if name in args:
            value = args[name]
            if isinstance(value, str | int):
                value = [value]
            if not isinstance(value, list | tuple):
                raise FleetError(f"{prefix}{name}: must be a list")
            args[name] = tuple(str(v) for v in value)
    for name in ("ttft_ms", "tokens_per_second", "price_input", "price_output", "failure_rate"):
        if isinstance(args.get(name), int) and not isinstance(args.get(name), bool):
            args[name] = float(args[name])
    return args


def _model_from_mapping(raw: Any, where: str) -> SimModel:
    if not isinstance(raw, dict):
        raise FleetError(f"{where}: must be a mapping of model fields")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise FleetError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(_FIELDS)})")
    args = _coerce(raw, f"{where}.")
    if "name" not in args:
        raise FleetError(f"{where}.name: required")
    try:
        return SimModel(**args)
    except FleetError as exc:
        raise FleetError(f"{where}.{exc}") from None


def fleet_from_data(data: Any, source: str = "fleet") -> Fleet:
    """Build a fleet from parsed YAML: ``{models: [...]}``, ``{models: {name: {...}}}`` or a bare list."""
    if isinstance(data, dict):
        extra = sorted(set(data) - {"models"})
        if extra:
            raise FleetError(f"{source}: unknown top-level key(s) {', '.join(map(str, extra))} (expected 'models')")
        data = data.get("models")
    models: list[SimModel] = []
    if isinstance(data, dict):
        for name, spec in data.items():
            spec = {} if spec is None else spec
            if isinstance(spec, dict) and "name" not in spec:
                spec = {"name": name, **spec}
            models.append(_model_from_mapping(spec, f"{source}: models.{name}"))
    elif isinstance(data, list):
        for i, spec in enumerate(data):
            models.append(_model_from_mapping(spec, f"{source}: models[{i}]"))
    else:
        raise FleetError(f"{source}: 'models' must be a list or a mapping of models")
    if not models:
        raise FleetError(f"{source}: no models defined")
    try:
        return Fleet(models)
    except FleetError as exc:
        raise FleetError(f"{source}: {exc}") from None


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet YAML file; raises :class:`FleetError` naming the file and the bad field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise FleetError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    return fleet_from_data(data, str(p))


def gateway_config_for_fleet(fleet: Fleet, base_url: str) -> dict[str, Any]:
    """The raw gateway configuration (the YAML shape) that reaches ``fleet`` served at ``base_url``.

    Three providers (``sim-openai``, ``sim-anthropic``, ``sim-gemini``) each forward ``x-sim-*``
    headers so a client can script the upstream through the gateway.
    """
    base = base_url.rstrip("/")
    provider_urls: dict[SimFormat, str] = {
        "openai": f"{base}/v1",
        "anthropic": base,
        "gemini": f"{base}/v1beta",
    }
    providers: dict[str, Any] = {
        PROVIDER_NAMES[fmt]: {
            "type": fmt,
            "base_url": url,
            "api_key": "sim-key",
            "forward_headers": ["x-sim-*"],
        }
        for fmt, url in provider_urls.items()
    }
    models: dict[str, Any] = {}
    for m in fleet:
        chat = m.kind == "chat"
        price: dict[str, float] = {"input": m.price_input, "output": m.price_output}
        if m.price_cached is not None:
            price["cached_input"] = m.price_cached
        models[m.name] = {
            "kind": m.kind,
            "aliases": list(m.aliases),
            "description": f"simulated {m.format} {m.kind} model",
            "deployments": [
                {
                    "provider": PROVIDER_NAMES[m.format],
                    "model": m.name,
                    "price": price,
                    "context_window": m.context_window,
                    "capabilities": {"tools": chat, "vision": chat, "json": chat},
                }
            ],
        }
    return {"providers": providers, "models": models}


def demo_router(fleet: Fleet) -> dict[str, Any]:
    """A router named ``auto`` over the fleet's chat models, for the out-of-the-box gateway: long prompts
    go to the model with the largest context window, code and maths to the strongest (the dearest);
    otherwise quality is weighed against price
    (the quality figures are illustrative settings, not measurements)."""
    chat = [m for m in fleet if m.kind == "chat"]
    if not chat:
        return {}
    prices = {m.name: m.price_input + m.price_output for m in chat}
    top = max(prices.values()) or 1.0
    widest = max(chat, key=lambda m: m.context_window)
    strongest = max(chat, key=lambda m: prices[m.name])
    return {"auto": {
        "description": "picks a simulated model per request: quality weighed against price",
        "models": [m.name for m in sorted(chat, key=lambda m: prices[m.name])],
        "rules": [
            {"name": "long prompts", "when": {"min_prompt_tokens": 100_000}, "model": widest.name},
            {"name": "code and maths", "when": {"last_user": r"(?i)\b(code|function|python|sql|prove|integral)\b"},
             "model": strongest.name},
        ],
        # Dearer simulated models stand for stronger ones.
        "quality": {m.name: round(0.6 + 0.3 * prices[m.name] / top, 3) for m in chat},
        "objective": {"quality": 1.0, "cost": 0.5},
    }}
