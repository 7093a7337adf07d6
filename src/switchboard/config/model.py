"""The frozen, typed configuration.

Read once by :mod:`switchboard.config.load`, then passed in; nothing reads settings from anywhere else.

Usage::

    cfg = load_config("switchboard.yaml")
    cfg.models["fast"].deployments[0].price.input   # $ per million input tokens
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from switchboard.config.governance import AuthConfig, GuardrailConfig, LimitsConfig
from switchboard.config.routers import BalanceStrategy, RouterConfig

__all__ = [
    "AdminConfig",
    "BreakerConfig",
    "Capabilities",
    "Config",
    "DeploymentConfig",
    "HedgeConfig",
    "ModelConfig",
    "Price",
    "ProviderConfig",
    "ProviderType",
    "RecordsConfig",
    "ResilienceConfig",
    "RetryConfig",
    "ServerConfig",
    "StateConfig",
    "TracingConfig",
]

ProviderType = Literal["openai", "anthropic", "gemini"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Price(_Frozen):
    """Dollars per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)


class Capabilities(_Frozen):
    """What a deployment can do; requests that need more are refused or routed elsewhere."""

    tools: bool = True
    vision: bool = False
    json_mode: bool = Field(True, alias="json")


def _http_url(value: str, example: str) -> str:
    """``value`` when it is an http(s) URL with a host; a validation error naming ``example`` otherwise."""
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"must be an http:// or https:// URL (e.g. {example})")
    return value


class ProviderConfig(_Frozen):
    """An upstream API endpoint and how to authenticate to it.

    ``api_key`` is written as a reference (``env:NAME`` or ``file:/path``) and resolved at load time
    into a secret that never prints. ``forward_headers`` lists client header names (a trailing ``*``
    matches a prefix) that are passed through to this upstream.
    """

    type: ProviderType
    base_url: str
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    forward_headers: tuple[str, ...] = ()
    connect_timeout: float = Field(10.0, gt=0)
    timeout: float = Field(600.0, gt=0)
    max_connections: int = Field(256, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return _http_url(v, "https://api.openai.com/v1").rstrip("/")


class DeploymentConfig(_Frozen):
    """One place a model is served: a provider plus the upstream's model id, price and limits."""

    provider: str
    model: str
    name: str | None = None
    weight: float = Field(1.0, gt=0)
    price: Price = Field(default_factory=Price)
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)

    @cached_property
    def id(self) -> str:
        """A stable identifier: ``name`` if given, else ``provider/model`` (made once: every request asks)."""
        return self.name or f"{self.provider}/{self.model}"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> DeploymentConfig:
        """A copy (with ``update`` applied) that makes its own ``id``."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("id", None)
        return copy


class RetryConfig(_Frozen):
    """Trying the same deployment again after a transient failure (timeout, reset, 429, 5xx, 529).

    ``attempts`` counts tries per deployment (1 = no retry). Waits grow exponentially from ``backoff``
    up to ``max_backoff`` with full jitter; an upstream ``retry-after`` is honoured when it is no longer
    than ``max_retry_after`` — a longer one sends the request to the next deployment instead.
    """

    attempts: int = Field(2, ge=1, le=10)
    backoff: float = Field(0.1, ge=0)
    max_backoff: float = Field(2.0, ge=0)
    max_retry_after: float = Field(5.0, ge=0)


class BreakerConfig(_Frozen):
    """A circuit breaker per deployment: when at least ``failure_rate`` of the last ``window`` seconds'
    calls failed (and there were ``min_requests``), the deployment gets no traffic for ``cooldown``
    seconds — as it does after ``consecutive_failures`` failures in a row (0: never), which notices a
    sudden outage before older successes leave the window. Then ``half_open_probes`` trial requests
    decide. A failed probe doubles the cooldown,
    up to ``max_cooldown``. With ``probe_interval`` set, an open deployment is also probed actively
    (a one-token request) every that many seconds."""

    enabled: bool = True
    window: float = Field(30.0, gt=0)
    min_requests: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    cooldown: float = Field(15.0, gt=0)
    max_cooldown: float = Field(300.0, gt=0)
    half_open_probes: int = Field(1, ge=1)
    consecutive_failures: int = Field(5, ge=0)
    probe_interval: float | None = Field(None, gt=0)


class HedgeConfig(_Frozen):
    """Hedged requests: when an attempt has produced no first token ``after`` seconds (or after the
    deployment's observed p95 time to first token, ``"p95"``), the next candidate starts in parallel;
    the first to deliver content wins. ``budget`` caps hedges at that fraction of requests."""

    after: float | Literal["p95"] | None = None
    budget: float = Field(0.1, ge=0, le=1)

    @field_validator("after")
    @classmethod
    def _positive(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float | int) and v <= 0:
            raise ValueError("must be a positive number of seconds or 'p95'")
        return v


class ResilienceConfig(_Frozen):
    """How hard Switchboard tries: the request's deadline, per-attempt timeouts, retries, breakers,
    hedging and the validators that judge an answer. Set once at the top level; a model may override
    any part under its own ``resilience``.

    ``deadline`` bounds the whole request, every attempt included (a client may ask for another with
    ``x-switchboard-timeout``, up to ``max_deadline``). ``attempt_timeout`` bounds one non-streaming
    attempt (default: the rest of the deadline); ``ttft_timeout`` one streaming attempt's wait for its
    first content and ``idle_timeout`` the silence between its chunks. ``buffer_streams`` holds a
    stream back until it is complete, so the validators can judge it as a whole.
    """

    deadline: float = Field(600.0, gt=0)
    max_deadline: float = Field(3600.0, gt=0)
    attempt_timeout: float | None = Field(None, gt=0)
    ttft_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    hedge: HedgeConfig = Field(default_factory=HedgeConfig)
    validators: tuple[str, ...] = ()
    buffer_streams: bool = False


class ModelConfig(_Frozen):
    """A public model name, its aliases and the deployments that serve it.

    ``fallbacks`` are public models tried, in order, when every deployment of this one failed;
    ``context_fallback`` serves prompts too long for this model's context window and
    ``refusal_fallback`` requests this model refused. ``resilience`` (filled in from the top level by
    the loader) overrides the top-level settings for this model. ``balance`` is how requests spread over
    the deployments.
    """

    kind: Literal["chat", "embedding"] = "chat"
    aliases: tuple[str, ...] = ()
    description: str | None = None
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1)
    balance: BalanceStrategy = "weighted"
    fallbacks: tuple[str, ...] = ()
    context_fallback: str | None = None
    refusal_fallback: str | None = None
    resilience: ResilienceConfig | None = None
    guardrails: tuple[str, ...] = ()


class ServerConfig(_Frozen):
    """How ``switchboard serve`` listens and runs its workers. ``gc_threshold`` is how many more container
    objects a worker may hold before Python's cycle collector looks at the youngest ones (Python's default is
    700, which a gateway with dozens of requests in flight crosses all the time; 0 keeps Python's setting).
    Each worker also freezes what it built at start-up (``gc.freeze``), so full collections skip it.
    ``keep_alive_timeout`` is how long a client connection may stay idle between requests before the gateway
    closes it: longer than the idle timeout of any load balancer or proxy in front (60 s on AWS's, nginx's
    upstream keep-alive 60 s), or that one may send a request on a connection the gateway is closing."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    drain_timeout: float = Field(30.0, ge=0)
    keep_alive_timeout: float = Field(75.0, gt=0)
    gc_threshold: int = Field(10_000, ge=0)


class RecordsConfig(_Frozen):
    """Where request records go. The request path never waits on this. With ``capture_prompts`` the
    record of a chat request keeps its prompt text (the last 16,000 characters; a routed request's routing
    input too, so that ``switchboard router replay`` can run it through another policy), with
    ``capture_completions`` the answer's text; both off by default, and redacted of secrets and personal data
    by the record writer. ``backend: postgres``
    writes to ``dsn`` (a secret reference such as ``env:SWITCHBOARD_RECORDS_DSN``), in ``schema``, so that
    several gateway processes share one store; ``path`` is the SQLite file otherwise. With
    ``retention_days`` records older than that are deleted at start-up and every hour after."""

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> RecordsConfig:
        if self.enabled and self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs a dsn (e.g. env:SWITCHBOARD_RECORDS_DSN)")
        return self

    enabled: bool = True
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "switchboard.db"
    dsn: SecretStr | None = None
    schema_name: str = Field("public", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(256, ge=1)
    flush_interval: float = Field(0.5, gt=0)
    capture_prompts: bool = False
    capture_completions: bool = False
    retention_days: float | None = Field(None, gt=0)


class TracingConfig(_Frozen):
    """OpenTelemetry traces of requests, sent to ``endpoint`` (OTLP over HTTP, protobuf) in the
    background; off by default. Needs ``pip install 'switchboard[otel]'``. ``headers`` go with every
    export (e.g. a collector's credential, written as a secret reference such as
    ``env:OTEL_COLLECTOR_TOKEN``). A request that arrives with a W3C ``traceparent`` is traced when its
    caller sampled it; any other is traced with probability ``sample_ratio``. With ``capture_prompts``
    the request's span carries its prompt text, redacted. Up to ``queue_size`` finished requests wait
    for export, ``batch_size`` of them per export, at most ``flush_interval`` seconds apart; an export
    gives up after ``timeout`` seconds."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    service_name: str = Field("switchboard", min_length=1)
    sample_ratio: float = Field(1.0, ge=0, le=1)
    capture_prompts: bool = False
    queue_size: int = Field(2048, ge=1)
    batch_size: int = Field(256, ge=1)
    flush_interval: float = Field(1.0, gt=0)
    timeout: float = Field(10.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return _http_url(v, "http://127.0.0.1:4318/v1/traces")


class StateConfig(_Frozen):
    """Where learned routing state (the feedback bandit) is kept between restarts, and how often it is
    saved while running."""

    path: str = "switchboard-state.db"
    save_interval: float = Field(30.0, gt=0)


class AdminConfig(_Frozen):
    """The operator's credential for the dashboard (``/dashboard``) and its API. ``key`` is written as a
    reference (``env:NAME`` or ``file:/path``) like a provider's ``api_key``; without one the dashboard
    is disabled (its paths answer 404)."""

    key: SecretStr | None = None

    @field_validator("key")
    @classmethod
    def _not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("must not be empty (leave admin.key out to disable the dashboard)")
        return v


class Config(_Frozen):
    """The whole configuration. ``source`` says where it came from (a file, the environment, the sim)."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routers: dict[str, RouterConfig] = Field(default_factory=dict)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    guardrails: dict[str, GuardrailConfig] = Field(default_factory=dict)
    source: str = Field("file", exclude=True)

    def resilience_for(self, model: str) -> ResilienceConfig:
        """The effective resilience settings of a public model."""
        m = self.models.get(model)
        return m.resilience if m is not None and m.resilience is not None else self.resilience
