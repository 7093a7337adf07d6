"""The Anthropic Messages API provider: canonical requests in, canonical answers and stream events out.

It owns everything Anthropic-specific: turning canonical messages into ``POST /v1/messages`` bodies
(top-level ``system``, strict user/assistant alternation, ``tool_use``/``tool_result`` blocks, the
required ``max_tokens``), and reading answers and SSE streams back. The HTTP side (headers, timeouts,
error bodies, key redaction) is the shared :class:`~switchboard.providers.exchange.Exchange`.

Choices worth knowing:

* JSON mode (``response_format`` ``json_object``/``json_schema``) is a forced tool named
  :data:`JSON_TOOL_NAME` whose ``input_schema`` is the requested schema; its input comes back as the
  assistant's *text* with ``finish_reason="stop"``, in streams too. This works on every model and API
  version, unlike Anthropic's newer structured-output parameter.
* ``seed`` is dropped silently (clients send it by habit; Anthropic has no equivalent).
  ``reasoning_effort`` is dropped as well: extended thinking changes sampling rules and cannot be
  combined with forced tools, so it is not mapped. ``metadata`` other than ``user`` is not sent
  (Anthropic accepts only ``metadata.user_id``). ``n > 1`` and non-zero penalties or ``logit_bias``
  raise :class:`~switchboard.errors.UnsupportedParameter`.
* Tool-call ids are rewritten to Anthropic's ``[A-Za-z0-9_-]`` alphabet so that a conversation begun
  on another provider can continue here.
* ``stop_reason: "refusal"`` is finish reason ``content_filter``; the answer's text (kept as content)
  is also its ``Message.refusal``, or :data:`DECLINED` when it has none.

Usage::

    provider = AnthropicProvider(config, http)
    answer = await provider.chat(request, deployment, CallOptions(request_id="req_1"))
    async for event in provider.stream(request, deployment, CallOptions(request_id="req_2")):
        ...
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import orjson

from switchboard.config.model import DeploymentConfig, ProviderConfig
from switchboard.errors import InvalidRequest, UnsupportedParameter, UpstreamConnectionError, UpstreamProtocolError
from switchboard.providers.base import CallOptions
from switchboard.providers.exchange import Exchange, event_batches
from switchboard.providers.http import HttpClient
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ImagePart,
    Message,
    StreamEvent,
    StreamFinish,
    StreamStart,
    StreamUsage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    Usage,
)

__all__ = ["ANTHROPIC_VERSION", "DECLINED", "JSON_TOOL_NAME", "AnthropicProvider", "StreamTranslator",
           "build_body", "parse_response"]

ANTHROPIC_VERSION = "2023-06-01"
JSON_TOOL_NAME = "json_response"
DEFAULT_MAX_TOKENS = 4096
#: The refusal of a ``stop_reason: "refusal"`` answer that came without any text.
DECLINED = "The model declined to answer."

_PROVIDER = "anthropic"
_JSON_TOOL_DESCRIPTION = "Respond to the user with a JSON value that follows this schema."
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9_-]")

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider:
    """The ``anthropic`` provider family: ``POST {base_url}/v1/messages`` with ``x-api-key``.

    Usage::

        config = ProviderConfig(type="anthropic", base_url="https://api.anthropic.com", api_key=key)
        provider = AnthropicProvider(config, http)
    """

    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        self.config = config
        self._link = Exchange(config, http, auth_header="x-api-key",
                              api_headers={"anthropic-version": ANTHROPIC_VERSION})
        self._url = f"{config.base_url}/v1/messages"

    async def chat(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> ChatResponse:
        """Send one Messages request and translate the answer."""
        body, json_tool = build_body(request, deployment, stream=False)
        data = await self._link.post_json(self._url, body, options, provider=_PROVIDER)
        return parse_response(data, json_tool)

    async def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> AsyncIterator[list[StreamEvent]]:
        """Stream one Messages request as canonical events; ends only after ``message_stop``.

        A stream cut before ``message_stop`` raises ``UpstreamConnectionError``; closing this iterator
        early closes the upstream connection.
        """
        body, json_tool = build_body(request, deployment, stream=True)
        translator = StreamTranslator(json_tool, link=self._link)
        async with self._link.open_stream(self._url, body, options) as resp:
            await self._link.check_stream(resp, provider=_PROVIDER)
            async with aclosing(event_batches(resp, translator)) as batches:
                async for batch in batches:
                    yield batch

    async def embed(
        self, request: EmbeddingRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> EmbeddingResponse:
        """Always refused: Anthropic has no embeddings API."""
        raise UnsupportedParameter("Anthropic has no embeddings API", param="model")


# ---------------------------------------------------------------------------------------------------
# Request: canonical → Messages API


def build_body(
    request: ChatRequest, deployment: DeploymentConfig, *, stream: bool
) -> tuple[dict[str, Any], str | None]:
    """The Messages API body for ``request``, and the JSON-mode tool name if JSON mode is on.

    Usage::

        body, json_tool = build_body(request, deployment, stream=False)
    """
    _refuse_unsupported(request)
    system, messages = _translate_messages(request.messages)
    body: dict[str, Any] = {
        "model": deployment.model,
        "max_tokens": request.max_tokens or deployment.max_output_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    json_tool = _add_tools(body, request)
    return body, json_tool


def _refuse_unsupported(request: ChatRequest) -> None:
    if request.n > 1:
        raise UnsupportedParameter("Anthropic returns a single choice; n must be 1", param="n")
    if request.presence_penalty:
        raise UnsupportedParameter("Anthropic does not support presence_penalty", param="presence_penalty")
    if request.frequency_penalty:
        raise UnsupportedParameter("Anthropic does not support frequency_penalty", param="frequency_penalty")
    if request.logit_bias:
        raise UnsupportedParameter("Anthropic does not support logit_bias", param="logit_bias")


def _translate_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Top-level system text, and user/assistant turns that alternate strictly."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if msg.role == "system":
            text = msg.text()
            if text:
                system.append(text)
            continue
        if msg.role == "tool":
            role = "user"
            blocks = [_tool_result_block(msg, i)]
        elif msg.role == "assistant":
            role = "assistant"
            blocks = _content_blocks(msg.content, i)
            blocks.extend(_tool_use_block(call, i, j) for j, call in enumerate(msg.tool_calls))
        else:
            role = "user"
            blocks = _content_blocks(msg.content, i)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def _content_blocks(parts: list[ContentPart], i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        if isinstance(part, TextPart):
            # Anthropic rejects empty or whitespace-only text blocks; clients send "" next to tool calls.
            if part.text.strip():
                blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append(_image_block(part, f"messages[{i}].content[{k}]"))
    return blocks


def _image_block(part: ImagePart, param: str) -> dict[str, Any]:
    url = part.url
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        fields = header.split(";")
        if not sep or "base64" not in fields[1:]:
            raise InvalidRequest("image data URLs must be base64-encoded", param=param)
        media_type = part.media_type or fields[0]
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"Anthropic accepts image/jpeg, image/png, image/gif and image/webp, not {media_type!r}",
                param=param,
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image URLs must be https:// or data: URLs", param=param)


def _tool_use_block(call: ToolCall, i: int, j: int) -> dict[str, Any]:
    param = f"messages[{i}].tool_calls[{j}].function.arguments"
    if call.arguments.strip():
        try:
            arguments = orjson.loads(call.arguments)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"tool call arguments are not valid JSON: {call.arguments[:100]!r}",
                                 param=param) from None
        if not isinstance(arguments, dict):
            raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    else:
        arguments = {}
    return {"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": arguments}


def _tool_result_block(msg: Message, i: int) -> dict[str, Any]:
    if not msg.tool_call_id:
        raise InvalidRequest("a tool message needs the tool_call_id it answers",
                             param=f"messages[{i}].tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(msg.tool_call_id)}
    if any(isinstance(p, ImagePart) for p in msg.content):
        block["content"] = _content_blocks(msg.content, i)
    else:
        text = msg.text()
        if text:
            block["content"] = text
    if msg.is_error:
        block["is_error"] = True
    return block


def _tool_id(call_id: str) -> str:
    return call_id if _TOOL_ID_OK.fullmatch(call_id) else _TOOL_ID_BAD_CHAR.sub("_", call_id)


def _add_tools(body: dict[str, Any], request: ChatRequest) -> str | None:
    """Add ``tools`` and ``tool_choice`` (including the JSON-mode tool); return that tool's name."""
    tools: list[dict[str, Any]] = []
    for spec in request.tools:
        schema = spec.parameters if "type" in spec.parameters else {"type": "object", **spec.parameters}
        tool: dict[str, Any] = {"name": spec.name, "input_schema": schema}
        if spec.description:
            tool["description"] = spec.description
        tools.append(tool)
    json_tool: str | None = None
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        if any(spec.name == JSON_TOOL_NAME for spec in request.tools):
            raise UnsupportedParameter(
                f"the tool name {JSON_TOOL_NAME!r} is reserved for JSON mode on Anthropic", param="tools"
            )
        json_tool = JSON_TOOL_NAME
        schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        tools.append({"name": json_tool, "description": _JSON_TOOL_DESCRIPTION, "input_schema": schema})
    if not tools:
        return None
    body["tools"] = tools
    choice = _tool_choice(request.tool_choice, json_tool, has_user_tools=bool(request.tools))
    if choice is not None:
        forced_json = json_tool is not None and choice.get("name") == json_tool
        if choice["type"] != "none" and (request.parallel_tool_calls is False or forced_json):
            # forced_json: one JSON answer, not several concatenated ones.
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    elif request.parallel_tool_calls is False:
        body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    return json_tool


def _tool_choice(
    choice: ToolChoice | None, json_tool: str | None, *, has_user_tools: bool
) -> dict[str, Any] | None:
    if choice is not None and choice.mode == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice")
        return {"type": "tool", "name": choice.name}
    if json_tool is not None:
        if has_user_tools and (choice is None or choice.mode != "none"):
            # Either call a real tool or give the final answer through the JSON tool.
            return {"type": "any"}
        return {"type": "tool", "name": json_tool}
    if choice is None:
        return None
    if choice.mode == "required":
        return {"type": "any"}
    return {"type": choice.mode}


# ---------------------------------------------------------------------------------------------------
# Response: Messages API → canonical


def parse_response(data: Any, json_tool: str | None) -> ChatResponse:
    """The canonical answer for a Messages API response body (already JSON-decoded).

    Usage::

        response = parse_response(orjson.loads(body), json_tool=None)
    """
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise UpstreamProtocolError(f"{_PROVIDER} returned a response without a content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            raise UpstreamProtocolError(f"{_PROVIDER} returned a malformed content block")
        kind = block.get("type")
        if kind == "text":
            texts.append(_str(block.get("text")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            name = _str(block.get("name"))
            if json_tool is not None and name == json_tool:
                texts.append(arguments)
            else:
                calls.append(ToolCall(id=_str(block.get("id")), name=name, arguments=arguments))
        # thinking, redacted_thinking and server-tool blocks carry no answer text.
    text = "".join(texts)
    refusal = (text or DECLINED) if data.get("stop_reason") == "refusal" else None
    message = Message("assistant", [TextPart(text)] if text else [], tool_calls=calls, refusal=refusal)
    usage = data.get("usage")
    return ChatResponse(
        id=_str(data.get("id")),
        model=_str(data.get("model")),
        choices=[Choice(0, message, _finish_reason(data.get("stop_reason"), has_tool_calls=bool(calls)))],
        usage=_usage(usage if isinstance(usage, dict) else {}),
        created=int(time.time()),
    )


def _finish_reason(stop_reason: Any, *, has_tool_calls: bool) -> FinishReason | None:
    if not isinstance(stop_reason, str):
        return None
    reason = _FINISH.get(stop_reason, "stop")
    if reason == "tool_calls" and not has_tool_calls:
        return "stop"  # only the JSON-mode tool was called
    return reason


def _usage(raw: Mapping[str, Any]) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; canonical input includes them."""
    read = _int(raw.get("cache_read_input_tokens"))
    written = _int(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    reasoning = _int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=_int(raw.get("input_tokens")) + read + written,
        output_tokens=_int(raw.get("output_tokens")),
        cached_tokens=read,
        reasoning_tokens=reasoning,
        cache_write_tokens=written,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------------
# Streaming: SSE events → canonical events


class StreamTranslator:
    """Turns Anthropic stream events, one at a time, into canonical stream events.

    Tool calls are numbered in order of appearance (not by Anthropic's block index); the JSON-mode
    tool's input streams as text. ``done`` turns true at ``message_stop``. ``link`` maps ``error``
    events onto Switchboard errors.

    Usage::

        t = StreamTranslator(json_tool=None, link=link)
        events = t.feed("message_start", '{"type":"message_start","message":{...}}')
    """

    __slots__ = ("_blocks", "_end_usage", "_filled", "_finished", "_json_tool", "_link", "_start_usage",
                 "_tool_count", "done", "started")

    def __init__(self, json_tool: str | None, *, link: Exchange) -> None:
        self._json_tool = json_tool
        self._link = link
        self._blocks: dict[int, int] = {}  # Anthropic block index → tool-call index; -1 = JSON-mode tool
        self._filled: set[int] = set()  # tool blocks that received some arguments
        self._tool_count = 0
        self._start_usage: dict[str, Any] = {}
        self._end_usage: dict[str, Any] = {}
        self._finished = False
        self.started = False
        self.done = False

    def end_of_body(self) -> list[StreamEvent]:
        """The body ended: fine after ``message_stop``, a cut stream otherwise."""
        if not self.done:
            raise UpstreamConnectionError(f"{_PROVIDER} stream ended before message_stop")
        return []

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        """The canonical events for one SSE event; raises the mapped error for an ``error`` event."""
        if not data.strip():
            return []
        payload = self._link.decode_frame(event, data, provider=_PROVIDER)
        kind = payload.get("type") or event
        if kind == "error":
            raise self._link.inband_error(payload, {}, provider=_PROVIDER)
        if kind == "ping" or self.done:
            return []
        if kind != "message_start" and not self.started:
            raise UpstreamProtocolError(f"{_PROVIDER} stream did not begin with message_start (got {kind!r})")
        try:
            return self._dispatch(kind, payload)
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"{_PROVIDER} sent a malformed {kind} event") from None

    def _dispatch(self, kind: Any, payload: dict[str, Any]) -> list[StreamEvent]:
        if kind == "content_block_delta":
            return self._delta(payload["index"], payload["delta"])
        if kind == "content_block_start":
            return self._block_start(payload["index"], payload["content_block"])
        if kind == "content_block_stop":
            return self._block_stop(payload["index"])
        if kind == "message_start":
            return self._message_start(payload["message"])
        if kind == "message_delta":
            return self._message_delta(payload["delta"], payload.get("usage"))
        if kind == "message_stop":
            return self._message_stop()
        return []  # event types added after this was written

    def _message_start(self, message: dict[str, Any]) -> list[StreamEvent]:
        if self.started:
            raise UpstreamProtocolError(f"{_PROVIDER} sent message_start twice")
        self.started = True
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._start_usage = usage
        return [StreamStart(_str(message.get("id")), _str(message.get("model")), created=int(time.time()))]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block["type"]
        if kind == "tool_use":
            name = _str(block.get("name"))
            if self._json_tool is not None and name == self._json_tool:
                self._blocks[index] = -1
                return []
            tool_index = self._tool_count
            self._tool_count += 1
            self._blocks[index] = tool_index
            return [ToolCallStart(index=tool_index, id=_str(block.get("id")), name=name)]
        if kind == "text" and block.get("text"):
            return [TextDelta(_str(block["text"]))]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        kind = delta["type"]
        if kind == "text_delta":
            text = _str(delta["text"])
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            target = self._blocks.get(index)
            piece = _str(delta["partial_json"])
            if target is None or not piece:  # server-tool input, or an empty opening piece
                return []
            self._filled.add(index)
            return [TextDelta(piece)] if target < 0 else [ToolCallDelta(index=target, arguments=piece)]
        return []  # thinking, signature and citation deltas

    def _block_stop(self, index: int) -> list[StreamEvent]:
        target = self._blocks.get(index)
        if target is None or index in self._filled:
            return []
        # A call without arguments streams no JSON at all; clients expect an object.
        return [TextDelta("{}")] if target < 0 else [ToolCallDelta(index=target, arguments="{}")]

    def _message_delta(self, delta: dict[str, Any], usage: Any) -> list[StreamEvent]:
        if isinstance(usage, dict):
            self._end_usage.update({k: v for k, v in usage.items() if v is not None})
        if self._finished:
            return []
        self._finished = True
        return [StreamFinish(_finish_reason(delta.get("stop_reason"), has_tool_calls=self._tool_count > 0))]

    def _message_stop(self) -> list[StreamEvent]:
        self.done = True
        events: list[StreamEvent] = []
        if not self._finished:
            self._finished = True
            events.append(StreamFinish(None))
        events.append(StreamUsage(_usage({**self._start_usage, **self._end_usage})))
        return events
