"""The provider protocol and the registry of provider families.

A provider is one upstream API family (OpenAI-compatible, Anthropic Messages, Gemini). It owns
translation between canonical types and its wire format, streaming, usage and error mapping. An
OpenAI-compatible vendor is a config entry with a ``base_url``, not a new provider.

Usage::

    provider = create_provider("anthropic", config, http)
    response = await provider.chat(request, deployment, CallOptions(request_id="req_1"))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from switchboard.config.model import DeploymentConfig, ProviderConfig
from switchboard.providers.http import HttpClient
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
)

__all__ = ["CallOptions", "Provider", "ProviderFactory", "create_provider", "register_provider"]


@dataclass(slots=True)
class CallOptions:
    """Per-attempt settings: the request id, headers forwarded from the client, and the time budget.

    ``timeout`` is the total seconds this attempt may take (for streams: until the last byte);
    ``idle_timeout`` bounds the silence between a stream's chunks.
    """

    request_id: str
    forward_headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    idle_timeout: float | None = None


class Provider(Protocol):
    """One upstream API family. Every method raises only :mod:`switchboard.errors` types."""

    config: ProviderConfig

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions) -> ChatResponse:
        """Send a non-streaming chat request."""
        ...

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> AsyncIterator[list[StreamEvent]]:
        """Stream a chat request as batches of events: each batch holds the events decoded from one
        network read, so a consumer can pass them on with one write. The first event is a
        ``StreamStart``; closing the iterator early closes the upstream connection."""
        ...

    async def embed(
        self, request: EmbeddingRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> EmbeddingResponse:
        """Create embeddings."""
        ...


ProviderFactory = Callable[[ProviderConfig, HttpClient], Provider]

_REGISTRY: dict[str, ProviderFactory] = {}


def register_provider(type_name: str, factory: ProviderFactory) -> None:
    """Register a provider family under the ``type`` used in configuration."""
    _REGISTRY[type_name] = factory


def create_provider(config: ProviderConfig, http: HttpClient) -> Provider:
    """Build the provider for ``config.type``; built-in families register on first use."""
    if not _REGISTRY:
        _register_builtins()
    try:
        factory = _REGISTRY[config.type]
    except KeyError:
        raise ValueError(f"unknown provider type {config.type!r}") from None
    return factory(config, http)


def _register_builtins() -> None:
    from switchboard.providers.anthropic import AnthropicProvider
    from switchboard.providers.gemini import GeminiProvider
    from switchboard.providers.openai import OpenAIProvider

    register_provider("openai", OpenAIProvider)
    register_provider("anthropic", AnthropicProvider)
    register_provider("gemini", GeminiProvider)
