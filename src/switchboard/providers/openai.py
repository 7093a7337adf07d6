"""The OpenAI Chat Completions provider, for OpenAI and every OpenAI-compatible server.

vLLM, Ollama, Groq, Together, Mistral, DeepSeek and OpenRouter are this provider with another
``base_url`` (which includes the version, e.g. ``https://api.openai.com/v1``). It turns canonical
requests into ``POST {base_url}/chat/completions`` and ``/embeddings`` bodies, reads answers and
SSE streams back, and maps errors onto :mod:`switchboard.errors`.

Choices worth knowing:

* Only ``api.openai.com`` itself gets ``max_completion_tokens`` (its reasoning models refuse
  ``max_tokens``) and refuses ``top_k``; compatible servers get ``max_tokens`` (which many of them do
  not know under the newer name) and ``top_k`` passed through (vLLM, Ollama, Together accept it).
* Streams always ask for ``stream_options.include_usage``: the gateway needs usage even when the
  client did not ask for it. Usage is emitted once, after the last finish.
* ``metadata`` is the gateway's, never forwarded. Embeddings are always requested as floats; the
  gateway encodes base64 for clients that want it.
* A refusal (``message.refusal``) becomes ``Message.refusal``, its finish reason passed through. In a
  stream the ``delta.refusal`` pieces become text, and the choice's ``"stop"`` becomes
  ``"content_filter"`` so that the client can tell a refusal from an answer.

Usage::

    provider = OpenAIProvider(config, http)
    answer = await provider.chat(request, deployment, CallOptions(request_id="req_1"))
"""

from __future__ import annotations

import array
import base64
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import orjson

from switchboard.config.model import DeploymentConfig, ProviderConfig
from switchboard.errors import (
    InvalidRequest,
    UnsupportedParameter,
    UpstreamConnectionError,
    UpstreamProtocolError,
)
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
    Usage,
)
from switchboard.schemas.ids import new_id

__all__ = ["OpenAIProvider", "StreamTranslator", "build_chat_body", "parse_chat_response"]

_OFFICIAL_HOST = "api.openai.com"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",
}


class OpenAIProvider:
    """The ``openai`` provider family: ``{base_url}/chat/completions`` with ``authorization: Bearer``.

    Usage::

        config = ProviderConfig(type="openai", base_url="https://api.groq.com/openai/v1", api_key=key)
        provider = OpenAIProvider(config, http)
    """

    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        self.config = config
        self._link = Exchange(config, http, auth_header="authorization", auth_scheme="Bearer ")
        self._chat_url = f"{config.base_url}/chat/completions"
        self._embed_url = f"{config.base_url}/embeddings"
        self._official = urlsplit(config.base_url).hostname == _OFFICIAL_HOST

    async def chat(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> ChatResponse:
        """Send one non-streaming chat completion and translate the answer."""
        body = build_chat_body(request, deployment.model, official=self._official, stream=False)
        data = await self._link.post_json(self._chat_url, body, options, provider=deployment.provider)
        return parse_chat_response(data, deployment.model, provider=deployment.provider)

    async def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> AsyncIterator[list[StreamEvent]]:
        """Stream a chat completion as batches of canonical events (one batch per network read).

        Ends after every choice finished; a stream cut before that raises ``UpstreamConnectionError``.
        Closing this iterator early closes the upstream connection.
        """
        body = build_chat_body(request, deployment.model, official=self._official, stream=True)
        provider = deployment.provider
        translator = StreamTranslator(deployment.model, provider=provider, link=self._link)
        async with self._link.open_stream(self._chat_url, body, options) as resp:
            await self._link.check_stream(resp, provider=provider)
            async with aclosing(event_batches(resp, translator)) as batches:
                async for batch in batches:
                    yield batch

    async def embed(
        self, request: EmbeddingRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> EmbeddingResponse:
        """Create embeddings with ``POST {base_url}/embeddings``; vectors come back in input order."""
        body: dict[str, Any] = {"model": deployment.model, "input": request.inputs,
                                "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        data = await self._link.post_json(self._embed_url, body, options, provider=deployment.provider)
        try:
            return _parse_embeddings(data, deployment.model, len(request.inputs))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(
                f"{deployment.provider} returned a malformed embeddings response") from None


# ---------------------------------------------------------------------------------------------------
# Request: canonical → Chat Completions


def build_chat_body(request: ChatRequest, model: str, *, official: bool, stream: bool) -> dict[str, Any]:
    """The Chat Completions body for ``request`` sent to upstream model ``model``.

    ``official`` is whether the upstream is api.openai.com itself (see the module notes).
    """
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    if request.max_tokens is not None:
        # api.openai.com deprecated max_tokens and its o-series/gpt-5 models reject it; most compatible
        # servers only know max_tokens (or ignore the new name, leaving the output unbounded).
        body["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        if official:
            raise UnsupportedParameter("top_k is not supported by OpenAI models", param="top_k")
        body["top_k"] = request.top_k
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.n != 1:
        body["n"] = request.n
    if request.tools:
        body["tools"] = [_tool(t.name, t.description, t.parameters, t.strict) for t in request.tools]
        # OpenAI rejects tool_choice and parallel_tool_calls without tools.
        if request.tool_choice is not None:
            choice = request.tool_choice
            if choice.mode == "tool":
                if not choice.name:
                    raise InvalidRequest("tool_choice names no tool", param="tool_choice")
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                body["tool_choice"] = choice.mode
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None:
        if fmt.type == "json_schema":
            spec: dict[str, Any] = {"name": fmt.name or "response"}
            if fmt.schema is not None:
                spec["schema"] = fmt.schema
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            body["response_format"] = {"type": fmt.type}
    if request.user is not None:
        body["user"] = request.user
    if request.presence_penalty is not None:
        body["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        body["frequency_penalty"] = request.frequency_penalty
    if request.logit_bias is not None:
        body["logit_bias"] = request.logit_bias
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _message(msg: Message) -> dict[str, Any]:
    role = msg.role
    if role == "user":
        out: dict[str, Any] = {"role": "user", "content": _user_content(msg.content)}
    elif role == "assistant":
        _text_only(msg.content, "assistant")
        text = msg.text()
        out = {"role": "assistant", "content": text if text or not msg.tool_calls else None}
        if msg.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in msg.tool_calls
            ]
    elif role == "system":
        _text_only(msg.content, "system")
        out = {"role": "system", "content": msg.text()}
    else:
        if msg.tool_call_id is None:
            raise InvalidRequest("a tool message needs tool_call_id", param="messages")
        # OpenAI has no error flag on tool results; the text says what went wrong.
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "content": _user_content(msg.content)}
    if msg.name:
        out["name"] = msg.name
    return out


def _user_content(parts: list[ContentPart]) -> str | list[dict[str, Any]]:
    # A lone text part goes as a plain string: several compatible servers accept nothing else.
    if not parts:
        return ""
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        else:
            image: dict[str, Any] = {"url": part.url}
            if part.detail is not None:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def _text_only(parts: list[ContentPart], role: str) -> None:
    if any(isinstance(p, ImagePart) for p in parts):
        raise UnsupportedParameter(f"{role} messages cannot carry images", param="messages")


def _tool(
    name: str, description: str | None, parameters: dict[str, Any], strict: bool | None
) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name}
    if description is not None:
        fn["description"] = description
    fn["parameters"] = parameters
    if strict is not None:
        fn["strict"] = strict
    return {"type": "function", "function": fn}


# ---------------------------------------------------------------------------------------------------
# Response: Chat Completions → canonical


def parse_chat_response(data: Any, model: str, *, provider: str = "openai") -> ChatResponse:
    """The canonical answer for a ``chat.completion`` object; ``model`` stands in if it names none."""
    try:
        return _parse_completion(data, model)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamProtocolError(f"{provider} returned a malformed chat completion") from None


def _parse_completion(data: Any, model: str) -> ChatResponse:
    choices: list[Choice] = []
    for raw in data["choices"]:
        msg = raw.get("message") or {}
        text = _content_text(msg.get("content"))
        refusal = msg.get("refusal")
        calls = [
            ToolCall(id=_str(tc.get("id")) or _call_id(), name=_str(tc["function"]["name"]),
                     arguments=_arguments(tc["function"].get("arguments")))
            for tc in msg.get("tool_calls") or []
        ]
        legacy = msg.get("function_call")
        if isinstance(legacy, dict) and not calls:
            calls.append(ToolCall(id=_call_id(), name=_str(legacy.get("name")),
                                  arguments=_arguments(legacy.get("arguments"))))
        content: list[ContentPart] = [TextPart(text)] if text else []
        choices.append(Choice(
            index=int(raw.get("index") or 0),
            message=Message("assistant", content, calls,
                            refusal=refusal if isinstance(refusal, str) and refusal else None),
            finish_reason=_finish(raw.get("finish_reason")),
        ))
    usage = data.get("usage")
    return ChatResponse(
        id=_str(data.get("id")) or _synthetic_id(),
        model=_str(data.get("model")) or model,
        choices=choices,
        usage=_usage(usage) if isinstance(usage, dict) else Usage(),
        created=int(data.get("created") or 0) or int(time.time()),
    )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some compatible servers (Mistral's reasoning models) answer with a list of typed chunks.
        return "".join(c["text"] for c in content
                       if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str))
    return ""


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    # A few compatible servers send the arguments as an object rather than JSON text.
    return orjson.dumps(value).decode()


def _finish(value: Any) -> FinishReason | None:
    if not isinstance(value, str):
        return None
    return _FINISH.get(value, "stop")


def _usage(raw: dict[str, Any]) -> Usage:
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0  # DeepSeek
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(cached),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _parse_embeddings(data: Any, model: str, count: int) -> EmbeddingResponse:
    items = sorted(data["data"], key=lambda item: int(item.get("index") or 0))
    vectors = [_vector(item["embedding"]) for item in items]
    if len(vectors) != count:
        raise ValueError("one vector per input expected")
    usage = data.get("usage") or {}
    return EmbeddingResponse(
        model=_str(data.get("model")) or model,
        vectors=vectors,
        usage=Usage(input_tokens=int(usage.get("prompt_tokens") or 0)),
    )


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):
        # We ask for floats, but a server may answer base64 anyway: little-endian float32.
        values = array.array("f", base64.b64decode(value))
        if sys.byteorder == "big":
            values.byteswap()
        return values.tolist()
    if not isinstance(value, list):
        raise TypeError("embedding is neither a list nor base64")
    return [float(v) for v in value]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _synthetic_id() -> str:
    return new_id("chatcmpl-")


def _call_id() -> str:
    # Only for servers that omit call ids; unique so that a later turn never reuses one.
    return new_id("call_")


# ---------------------------------------------------------------------------------------------------
# Streaming: chat.completion.chunk frames → canonical events


class _ToolCallSlot:
    """A tool call being streamed: our index, its id, and arguments held back until its name came."""

    __slots__ = ("args", "call_id", "index", "name", "started")

    def __init__(self, index: int, call_id: str | None, name: str | None) -> None:
        self.index = index
        self.call_id = call_id
        self.name = name
        self.started = False
        self.args: list[str] = []


class _ChoiceState:
    __slots__ = ("by_upstream", "finished", "last", "refused", "slots")

    def __init__(self) -> None:
        self.by_upstream: dict[int, _ToolCallSlot] = {}
        self.slots: list[_ToolCallSlot] = []
        self.last: _ToolCallSlot | None = None
        self.finished = False
        self.refused = False  # some delta.refusal came: the finish is a content filter


class StreamTranslator:
    """Turns the SSE events of one Chat Completions stream into canonical events.

    Feed it each event's ``(event, data)``; it raises the mapped error on an error frame and
    ``UpstreamProtocolError`` on a malformed one. ``done`` turns true at ``[DONE]``; call
    :meth:`end_of_body` when the body ended without it.

    Usage::

        t = StreamTranslator("gpt-4o", provider="openai", link=link)
        events = t.feed(None, '{"id": "chatcmpl-1", "choices": [...]}')
    """

    def __init__(self, model: str, *, provider: str, link: Exchange) -> None:
        self.done = False
        self._model = model
        self._provider = provider
        self._link = link
        self._started = False
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: Usage | None = None

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        """The canonical events for one SSE event."""
        if self.done:
            return []
        if data == "[DONE]":
            return self._close(at_done=True)
        if not data:
            return []
        frame: Any = None
        if event is None and self._started:
            # Most frames after the first carry one known choice's next piece of text and nothing else: they
            # take this short way; every other frame (a malformed one too) takes the full one below.
            try:
                frame = orjson.loads(data)
            except orjson.JSONDecodeError:
                frame = None
            text = _plain_text(frame, self._choices)
            if text is not None:
                return text
        if type(frame) is not dict:
            frame = self._link.decode_frame(event, data, provider=self._provider)
        if event == "error" or frame.get("error") or frame.get("object") == "error":
            raise self._link.inband_error(frame, {}, provider=self._provider)
        try:
            return self._frame(frame)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(f"{self._provider} sent a malformed stream chunk") from None

    def end_of_body(self) -> list[StreamEvent]:
        """The body ended: the last events if every choice finished (``[DONE]`` missing is tolerated),
        else ``UpstreamConnectionError``."""
        if self.done:
            return []
        return self._close(at_done=False)

    def _close(self, *, at_done: bool) -> list[StreamEvent]:
        self.done = True
        if not self._choices or not all(c.finished for c in self._choices.values()):
            if at_done:
                raise UpstreamProtocolError(f"{self._provider} ended the stream without a finish_reason")
            raise UpstreamConnectionError(f"{self._provider} closed the stream before it finished")
        return [StreamUsage(self._usage)] if self._usage is not None else []

    def _frame(self, frame: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(StreamStart(
                id=_str(frame.get("id")) or _synthetic_id(),
                model=_str(frame.get("model")) or self._model,
                created=int(frame.get("created") or 0) or int(time.time()),
            ))
        usage = frame.get("usage")
        if isinstance(usage, dict):
            # Some servers repeat running totals in every chunk; the last one wins, emitted at the end.
            self._usage = _usage(usage)
        for raw in frame.get("choices") or ():
            index = int(raw.get("index") or 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            delta = raw.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content, index))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                # Streams have no refusal field downstream: the explanation goes out as text.
                state.refused = True
                out.append(TextDelta(refusal, index))
            fragments = delta.get("tool_calls")
            if fragments:
                for fragment in fragments:
                    _tool_fragment(state, index, fragment, out)
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                _tool_fragment(state, index, {"index": 0, "function": legacy}, out)
            reason = raw.get("finish_reason")
            if reason and not state.finished:
                for slot in state.slots:
                    _start_slot(slot, index, out, force=True)
                state.finished = True
                finish = _finish(reason)
                if state.refused and finish == "stop":
                    finish = "content_filter"  # OpenAI ends a refusal with "stop"
                out.append(StreamFinish(finish, index))
        return out


def _plain_text(frame: Any, known: dict[int, _ChoiceState]) -> list[StreamEvent] | None:
    """The events of a frame that carries only one known choice's next piece of text; ``None`` for any other
    frame (which then goes through :meth:`StreamTranslator._frame`)."""
    if type(frame) is not dict or frame.get("usage") is not None or "error" in frame:
        return None
    choices = frame.get("choices")
    if type(choices) is not list or len(choices) != 1 or frame.get("object") == "error":
        return None
    raw = choices[0]
    if type(raw) is not dict or raw.get("finish_reason") is not None:
        return None
    delta = raw.get("delta")
    index = raw.get("index") or 0
    if type(delta) is not dict or len(delta) != 1 or type(index) is not int or index not in known:
        return None
    content = delta.get("content")
    if type(content) is not str:
        return None
    return [TextDelta(content, index)] if content else []


def _tool_fragment(
    state: _ChoiceState, choice: int, fragment: dict[str, Any], out: list[StreamEvent]
) -> None:
    """One ``delta.tool_calls[]`` fragment. A fragment with a new index (or a new id at a known index,
    which some compatible servers send for parallel calls) starts a call; ``arguments`` pieces append."""
    upstream_index = fragment.get("index")
    call_id = _str(fragment.get("id")) or None
    fn = fragment.get("function") or {}
    name = _str(fn.get("name")) or None
    slot = state.by_upstream.get(upstream_index) if upstream_index is not None else state.last
    if slot is None or (call_id is not None and slot.call_id is not None and call_id != slot.call_id):
        slot = _ToolCallSlot(len(state.slots), call_id, name)
        state.slots.append(slot)
        if upstream_index is not None:
            state.by_upstream[upstream_index] = slot
    else:
        if slot.call_id is None:
            slot.call_id = call_id
        if slot.name is None:
            slot.name = name
    state.last = slot
    args = fn.get("arguments")
    if isinstance(args, str) and args:
        slot.args.append(args)
    elif args is not None and not isinstance(args, str):
        slot.args.append(orjson.dumps(args).decode())
    _start_slot(slot, choice, out, force=False)


def _start_slot(slot: _ToolCallSlot, choice: int, out: list[StreamEvent], *, force: bool) -> None:
    """Emit the call's start once its name is known (or at the finish, whatever came), then any
    arguments held back."""
    if not slot.started:
        if slot.name is None and not force:
            return
        slot.started = True
        out.append(ToolCallStart(slot.index, slot.call_id or _call_id(), slot.name or "", choice))
    if slot.args:
        out.append(ToolCallDelta(slot.index, "".join(slot.args), choice))
        slot.args.clear()
