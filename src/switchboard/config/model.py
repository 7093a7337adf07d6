"""The frozen, typed configuration.

Read once by :mod:`switchboard.config.load`, then passed in; nothing reads settings from anywhere else.

Usage::

    cfg = load_config("switchboard.yaml")
    cfg.models["fast"].deployments[0].price.input   # $ per million input tokens
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "Capabilities",
    "Config",
    "DeploymentConfig",
    "ModelConfig",
    "Price",
    "ProviderConfig",
    "ProviderType",
    "RecordsConfig",
    "ServerConfig",
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
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


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

    @property
    def id(self) -> str:
        """A stable identifier: ``name`` if given, else ``provider/model``."""
        return self.name or f"{self.provider}/{self.model}"


class ModelConfig(_Frozen):
    """A public model name, its aliases and the deployments that serve it."""

    kind: Literal["chat", "embedding"] = "chat"
    aliases: tuple[str, ...] = ()
    description: str | None = None
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1)


class ServerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    drain_timeout: float = Field(30.0, ge=0)


class RecordsConfig(_Frozen):
    """Where request records go. The request path never waits on this."""

    enabled: bool = True
    path: str = "switchboard.db"
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(256, ge=1)
    flush_interval: float = Field(0.5, gt=0)


class Config(_Frozen):
    """The whole configuration. ``source`` says where it came from (a file, the environment, the sim)."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    source: str = Field("file", exclude=True)
