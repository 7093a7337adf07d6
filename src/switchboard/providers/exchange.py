"""The HTTP side of a JSON exchange with an upstream, shared by the OpenAI, Anthropic and Gemini adapters.

It builds request headers (credential last, so a forwarded header cannot replace it), posts JSON and
parses the answer, reads ``{"error": {...}}`` bodies (OpenAI's, Anthropic's and Google's shapes) into
:mod:`switchboard.errors` through :func:`~switchboard.providers.errors.upstream_error`, and drains
finished streams so that their connections go back to the pool. The adapters keep only the payload
translation.

Usage::

    link = Exchange(config, http, auth_header="authorization", auth_scheme="Bearer ")
    data = await link.post_json(url, payload, options, provider="openai")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from switchboard.config.model import ProviderConfig
from switchboard.errors import SwitchboardError, UpstreamError, UpstreamProtocolError
from switchboard.providers.base import CallOptions
from switchboard.providers.errors import upstream_error
from switchboard.providers.http import HttpClient, StreamingResponse
from switchboard.providers.sse import EventTranslator, SSEDecoder, translate_batch
from switchboard.schemas.canonical import LastBatch, StreamEvent

__all__ = ["ErrorBody", "Exchange", "StreamTranslator", "drain", "event_batches", "parse_error_body"]

# Headers a client may never set through forwarding: credentials and the message framing.
_PROTECTED_HEADERS = frozenset({
    "authorization", "x-api-key", "x-goog-api-key", "proxy-authorization", "content-type", "content-length",
    "host", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "expect",
})
# After the last event only the end of the body is left; reading it lets the connection be reused.
_DRAIN_SECONDS = 1.0

# In-band (HTTP 200) stream errors carry a type or status word instead of an HTTP status; these are
# the statuses the vendors use for them (OpenAI types/codes, Anthropic error types, Google RPC status
# names). Anthropic sends overloaded_error with 529, which maps to the same error as 503.
_WORD_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_argument": 400,
    "failed_precondition": 400,
    "out_of_range": 400,
    "authentication_error": 401,
    "unauthenticated": 401,
    "billing_error": 402,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "not_found": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "resource_exhausted": 429,
    "timeout": 504,
    "timeout_error": 504,
    "deadline_exceeded": 504,
    "overloaded": 503,
    "overloaded_error": 503,
    "server_overloaded": 503,
    "unavailable": 503,
}


@dataclass(slots=True)
class ErrorBody:
    """What an upstream error body says. ``code`` is a string code or status word (``RESOURCE_EXHAUSTED``);
    ``status`` is a numeric HTTP code found in the body (Gemini and vLLM put one there)."""

    message: str = ""
    code: str | None = None
    type: str | None = None
    param: str | None = None
    status: int | None = None
    retry_delay: str | None = None


def parse_error_body(data: Any) -> ErrorBody:
    """Read ``{"error": {"message", "type", "param", "code"}}`` (OpenAI and compatibles),
    ``{"type": "error", "error": {"type", "message"}}`` (Anthropic, whose type is its code) or
    ``{"error": {"code", "message", "status", "details"}}`` (Google); anything else gives an empty one."""
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return ErrorBody()
    err = data.get("error")
    if isinstance(err, str):
        return ErrorBody(message=err)
    if not isinstance(err, dict):
        # Some compatible servers (older vLLM) put the fields at the top: {"object": "error", ...}.
        err = data
    out = ErrorBody(message=_str(err.get("message")), type=_opt_str(err.get("type")),
                    param=_opt_str(err.get("param")))
    code = err.get("code")
    if isinstance(code, str) and code:
        out.code = code
    elif isinstance(code, int) and 100 <= code <= 599:
        out.status = code
    if out.code is None:
        # Anthropic's only code is the error type, marked by the envelope {"type": "error", ...}.
        anthropic = err is not data and data.get("type") == "error"
        out.code = out.type if anthropic else _opt_str(err.get("status"))
    details = err.get("details")
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and isinstance(item.get("retryDelay"), str):
                out.retry_delay = item["retryDelay"]
    return out


class Exchange:
    """Sends JSON to one configured upstream and turns its error answers into Switchboard errors.

    ``auth`` holds the credential headers; ``secret`` is scrubbed from every upstream text we pass on.
    ``api_headers`` are headers the API requires on every request (``anthropic-version``); the
    configured headers may override them.
    """

    __slots__ = ("_auth", "_base_headers", "_config", "_http", "_secret")

    def __init__(self, config: ProviderConfig, http: HttpClient, *, auth_header: str, auth_scheme: str = "",
                 api_headers: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._http = http
        secret = config.api_key.get_secret_value() if config.api_key is not None else None
        self._auth = {auth_header: f"{auth_scheme}{secret}"} if secret else {}
        self._secret = secret
        base = {"content-type": "application/json", "accept": "application/json"}
        base.update(api_headers or {})
        base.update({k.lower(): v for k, v in config.headers.items()})
        self._base_headers = base

    def headers(self, options: CallOptions, *, accept: str | None = None) -> dict[str, str]:
        """Request headers: ours, the configured ones, the forwarded ones, then the credential."""
        headers = dict(self._base_headers)
        if accept is not None:
            headers["accept"] = accept
        for name, value in options.forward_headers.items():
            key = name.lower()
            if key not in _PROTECTED_HEADERS and key not in self._base_headers:
                headers[key] = value
        headers.update(self._auth)
        return headers

    def timeout(self, options: CallOptions) -> float:
        """Seconds for the whole exchange: the attempt's budget, at most the provider's."""
        limit = self._config.timeout
        return limit if options.timeout is None else min(options.timeout, limit)

    async def post_json(self, url: str, payload: dict[str, Any], options: CallOptions, *,
                        provider: str) -> Any:
        """POST ``payload`` and return the parsed 2xx answer; raise the mapped error otherwise."""
        resp = await self._http.request(
            "POST", url, headers=self.headers(options), body=orjson.dumps(payload),
            timeout=self.timeout(options), connect_timeout=self._config.connect_timeout,
        )
        if not 200 <= resp.status < 300:
            raise self.status_error(resp.status, resp.body, resp.headers, provider=provider)
        try:
            return orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{provider} returned a response that is not JSON") from None

    def open_stream(self, url: str, payload: dict[str, Any],
                    options: CallOptions) -> AbstractAsyncContextManager[StreamingResponse]:
        """``http.stream(...)`` for a streamed POST of ``payload`` (an async context manager)."""
        headers = self.headers(options, accept="text/event-stream")
        return self._http.stream(
            "POST", url, headers=headers, body=orjson.dumps(payload),
            timeout=self.timeout(options), connect_timeout=self._config.connect_timeout,
            idle_timeout=options.idle_timeout,
        )

    async def check_stream(self, resp: StreamingResponse, *, provider: str) -> None:
        """Raise the mapped error if a stream request was answered with an error status, or with one
        JSON body instead of events (some servers report errors that way even with HTTP 200)."""
        if not 200 <= resp.status < 300:
            raise self.status_error(resp.status, await resp.read(), resp.headers, provider=provider)
        if "application/json" in resp.headers.get("content-type", ""):
            body = await resp.read()
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
            if isinstance(data, dict | list) and parse_error_body(data).message:
                raise self.inband_error(data, resp.headers, provider=provider)
            raise UpstreamProtocolError(
                f"{provider} answered a stream request with JSON (HTTP {resp.status})")

    def status_error(self, status: int, body: bytes, headers: Mapping[str, str], *,
                     provider: str) -> SwitchboardError:
        """The error for a non-2xx answer."""
        try:
            info = parse_error_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            info = ErrorBody(message=body[:300].decode("utf-8", "replace").strip())
        return self._error(status, info, headers, provider)

    def decode_frame(self, event: str | None, data: str, *, provider: str) -> dict[str, Any]:
        """One SSE payload as a JSON object. A payload that is not JSON is the upstream's in-band error
        when the event is named ``error``, a protocol error otherwise; a frame wrapped in a one-element
        array is unwrapped."""
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            if event == "error":
                raise self.inband_error({"error": {"message": data}}, {}, provider=provider) from None
            raise UpstreamProtocolError(f"{provider} sent a malformed stream frame") from None
        if isinstance(frame, list) and len(frame) == 1:
            frame = frame[0]
        if not isinstance(frame, dict):
            raise UpstreamProtocolError(f"{provider} sent a stream frame that is not an object")
        return frame

    def inband_error(self, data: Any, headers: Mapping[str, str], *, provider: str) -> SwitchboardError:
        """The error for an error object that arrived inside a 2xx answer (a stream's error frame)."""
        info = parse_error_body(data)
        status = info.status
        if status is None:
            for word in (info.code, info.type):
                if word is not None and word.lower() in _WORD_STATUS:
                    status = _WORD_STATUS[word.lower()]
                    break
        return self._error(status or 500, info, headers, provider)

    def _error(self, status: int, info: ErrorBody, headers: Mapping[str, str],
               provider: str) -> SwitchboardError:
        hdrs: Mapping[str, str] = headers
        if info.retry_delay and "retry-after" not in headers and "retry-after-ms" not in headers:
            # Google says when to come back in the body (RetryInfo "38s"), not in a header.
            hdrs = {**headers, "retry-after": info.retry_delay.rstrip("s")}
        return upstream_error(status, self.scrub(info.message), code=info.code, param=info.param,
                              headers=hdrs, provider=provider)

    def scrub(self, text: str) -> str:
        """Remove our credential from upstream text, in case something echoed the request headers."""
        if self._secret and self._secret in text:
            return text.replace(self._secret, "[redacted]")
        return text


class StreamTranslator(EventTranslator, Protocol):
    """An upstream family's stream translator: events in, canonical events out; ``end_of_body`` checks
    that the upstream finished (raising ``UpstreamConnectionError`` if not) and returns what is left."""

    def end_of_body(self) -> list[StreamEvent]: ...


async def event_batches(
    resp: StreamingResponse, translator: StreamTranslator
) -> AsyncGenerator[list[StreamEvent], None]:
    """The canonical events of an SSE response, one batch per network read.

    Events decoded before an upstream error are delivered before the error is raised. The batch that
    ends the stream is a :class:`LastBatch` (empty if the end came alone), so the consumer can finish its
    answer at once; the rest of the body is drained after it so the connection can be reused.
    """
    decoder = SSEDecoder()
    chunks = resp.iter_bytes()
    async for chunk in chunks:
        batch, error = translate_batch(decoder, translator, chunk)
        if error is not None:
            if batch:
                yield batch
            raise error
        if translator.done:
            yield LastBatch(batch)
            await drain(chunks)
            return
        if batch:
            yield batch
    batch, error = translate_batch(decoder, translator, None)
    if error is None:
        try:
            batch += translator.end_of_body()
        except SwitchboardError as exc:  # the upstream stopped before it finished
            error = exc
    if error is not None:
        if batch:
            yield batch
        raise error
    yield LastBatch(batch)


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a finished stream so the connection can go back to the pool; give up
    quickly, since every event has been delivered already."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass
    except (TimeoutError, UpstreamError):
        pass


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
