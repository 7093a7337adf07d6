"""A lean HTTP/1.1 client for talking to upstreams: pooled keep-alive connections on asyncio.

INTERFACE ONLY — the implementation is being written. Signatures and semantics below are the contract.

Usage::

    http = HttpClient()
    resp = await http.request("POST", "https://api.openai.com/v1/chat/completions",
                              headers={"authorization": "Bearer …"}, body=b"{…}", timeout=30)
    async with http.stream("POST", url, headers=h, body=b) as s:
        async for chunk in s.iter_bytes():
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

__all__ = ["HttpClient", "HttpResponse", "StreamingResponse"]


@dataclass(slots=True)
class HttpResponse:
    """A complete response. Header names are lower-case; repeated headers are joined with ``, ``."""

    status: int
    headers: dict[str, str]
    body: bytes


class StreamingResponse:
    """A response whose body is read incrementally."""

    status: int
    headers: dict[str, str]

    async def read(self) -> bytes:
        """Read the rest of the body."""
        raise NotImplementedError

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield body bytes as they arrive (chunked transfer encoding already decoded)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was fully read, else closed."""
        raise NotImplementedError


class HttpClient:
    """Pooled HTTP/1.1 (http and https) client. Raises only ``switchboard.errors`` upstream errors:
    ``UpstreamConnectionError`` (refused, reset, closed early), ``UpstreamTimeout``,
    ``UpstreamProtocolError`` (not HTTP)."""

    def __init__(self, *, max_connections_per_host: int = 256, connect_timeout: float = 10.0,
                 idle_timeout: float = 60.0) -> None:
        raise NotImplementedError

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
                      timeout: float | None = None, connect_timeout: float | None = None) -> HttpResponse:
        """Send a request and read the whole response within ``timeout`` seconds."""
        raise NotImplementedError

    def stream(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
               timeout: float | None = None,
               connect_timeout: float | None = None) -> AbstractAsyncContextManager[StreamingResponse]:
        """Send a request; the context manager yields once the status and headers arrived (within
        ``timeout``). Leaving the block early closes the connection."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close every pooled connection."""
        raise NotImplementedError
