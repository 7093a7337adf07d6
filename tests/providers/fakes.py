"""The fake network edge the provider tests share: an ``HttpClient`` that records requests and answers
with canned responses or byte streams, plus builders for requests, configs and SSE frames.

Usage::

    http = FakeHttp(response=json_response({"id": "x"}))
    provider = OpenAIProvider(provider_config("openai", URL, KEY, {}), http)
    events = [e async for e in flat(provider.stream(chat_request(), deployment, OPTIONS))]
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st
from pydantic import SecretStr

from switchboard.config.model import ProviderConfig
from switchboard.providers.base import CallOptions
from switchboard.providers.http import HttpClient, HttpResponse, StreamingResponse
from switchboard.schemas.canonical import ChatRequest, Message, StreamEvent, TextPart

OPTIONS = CallOptions(request_id="req_1")


class FakeStream(StreamingResponse):
    """A streaming response fed from a list of byte chunks; ``error`` is raised after the last one."""

    def __init__(self, status: int, headers: dict[str, str], chunks: list[bytes],
                 error: Exception | None = None) -> None:
        self.status = status
        self.headers = headers
        self._chunks = chunks
        self._error = error
        self.sent = 0
        self.fully_read = False
        self.closed = False

    async def read(self) -> bytes:
        rest = b"".join(self._chunks[self.sent:])
        self.sent = len(self._chunks)
        self.fully_read = True
        return rest

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        while self.sent < len(self._chunks):
            chunk = self._chunks[self.sent]
            self.sent += 1
            yield chunk
        self.fully_read = True
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Call:
    """One recorded request, with its JSON body decoded."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    timeout: float | None
    connect_timeout: float | None


@dataclass
class FakeHttp(HttpClient):
    """Records each request and answers with the canned response or stream."""

    response: HttpResponse | None = None
    stream_status: int = 200
    stream_headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    chunks: list[bytes] = field(default_factory=list)
    stream_error: Exception | None = None
    calls: list[Call] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)

    def _record(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float | None, connect_timeout: float | None) -> None:
        assert body is not None
        self.calls.append(Call(method, url, dict(headers), orjson.loads(body), timeout, connect_timeout))

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
                      timeout: float | None = None,  # noqa: ASYNC109 - the HttpClient interface
                      connect_timeout: float | None = None) -> HttpResponse:
        self._record(method, url, headers, body, timeout, connect_timeout)
        assert self.response is not None
        return self.response

    def stream(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
               timeout: float | None = None, connect_timeout: float | None = None,
               idle_timeout: float | None = None) -> Any:
        self._record(method, url, headers, body, timeout, connect_timeout)
        resp = FakeStream(self.stream_status, self.stream_headers, list(self.chunks), self.stream_error)
        self.streams.append(resp)

        @asynccontextmanager
        async def ctx() -> AsyncIterator[FakeStream]:
            try:
                yield resp
            finally:
                await resp.aclose()

        return ctx()

    async def aclose(self) -> None:
        pass


def provider_config(type: str, base_url: str, api_key: str, headers: dict[str, str], /,
                    **overrides: Any) -> ProviderConfig:
    """A provider config with a key and test timeouts (30 s, connect 5 s); ``overrides`` replace any field."""
    cfg: dict[str, Any] = {
        "type": type,
        "base_url": base_url,
        "api_key": SecretStr(api_key),
        "headers": headers,
        "timeout": 30.0,
        "connect_timeout": 5.0,
    }
    cfg.update(overrides)
    return ProviderConfig(**cfg)


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def chat_request(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(model="smart", messages=list(messages) or [user("Hello")], **fields)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, headers or {"content-type": "application/json"}, orjson.dumps(payload))


def sse_frame(data: dict[str, Any] | str, *, event: str | None = None, eol: bytes = b"\n") -> bytes:
    """One SSE event: an optional ``event:`` line, a ``data:`` line (JSON unless a string), a blank line."""
    head = b"event: " + event.encode() + eol if event is not None else b""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return head + b"data: " + payload + eol + eol


@st.composite
def network_chunks(draw: st.DrawFn, raw: bytes, *, max_cuts: int) -> list[bytes]:
    """``raw`` cut at up to ``max_cuts`` places into the pieces a network might deliver.

    Draw inside a strategy, not with ``st.data()`` in an async test: Hypothesis may scan modules
    (blocking file I/O) while it draws, and on the event loop the blocking-call guard fails the test.
    """
    cuts = sorted(draw(st.sets(st.integers(1, len(raw) - 1), max_size=max_cuts)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


async def flat(batches: AsyncIterator[list[StreamEvent]]) -> AsyncGenerator[StreamEvent, None]:
    """A provider's batched stream one event at a time; closing this closes the provider's stream too."""
    try:
        async for batch in batches:
            for ev in batch:
                yield ev
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
