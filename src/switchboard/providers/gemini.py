"""The Google Gemini API provider: canonical requests in, canonical answers and stream events out.

``base_url`` is like ``https://generativelanguage.googleapis.com/v1beta``; requests go to
``{base}/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (each SSE frame is a
whole ``GenerateContentResponse``, no ``[DONE]``) and ``:batchEmbedContents``, authenticated with the
``x-goog-api-key`` header (never ``?key=``, which ends up in logs).

Choices worth knowing:

* Gemini has no tool-call ids on older models: calls without one get ``call_<hex>_<n>`` ids, unique per
  answer so that later turns never reuse them. A tool result finds its function name through the
  earlier assistant call with the same id. Function schemas go as ``parametersJsonSchema``, which takes
  full JSON Schema, so no keyword cleaning is needed; JSON mode uses ``responseJsonSchema`` likewise.
* Gemini 3 refuses replayed function calls without the ``thoughtSignature`` it issued. Canonical tool
  calls cannot carry one, so replayed calls get Google's documented bypass value instead; Gemini 1/2
  models get none (they do not require it and may reject a foreign one).
* ``reasoning_effort`` becomes ``thinkingConfig``: ``thinkingBudget`` for Gemini 1/2 models (Google's own
  OpenAI-compatible mapping: low 1024, medium 8192, high 24576, none 0), ``thinkingLevel`` otherwise.
* Usage: ``output_tokens`` is ``candidatesTokenCount + thoughtsTokenCount`` (Gemini counts thoughts apart),
  ``input_tokens`` is ``promptTokenCount + toolUsePromptTokenCount``.
* A finish for safety, recitation, blocklists and the like (``SAFETY``, ``PROHIBITED_CONTENT``,
  ``BLOCKLIST``, ``SPII``, ``RECITATION``, ``IMAGE_SAFETY`` …) is ``content_filter`` with a
  ``Message.refusal`` naming the reason; a blocked prompt (``promptFeedback.blockReason``, no
  candidates) is one such choice.
* ``logit_bias`` and token-id embedding inputs raise ``UnsupportedParameter``; ``user``, ``metadata``,
  ``parallel_tool_calls`` and ``strict`` have no Gemini equivalent and are not sent.

Usage::

    provider = GeminiProvider(config, http)
    answer = await provider.chat(request, deployment, CallOptions(request_id="req_1"))
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

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

__all__ = ["THOUGHT_SIGNATURE_BYPASS", "GeminiProvider", "StreamTranslator", "build_generate_body",
           "parse_generate_response"]

# Google's documented stand-in for a thought signature on function calls Gemini did not issue.
THOUGHT_SIGNATURE_BYPASS = "skip_thought_signature_validator"

_LEGACY_MODEL = re.compile(r"gemini-[12](?:[.\-]|$)")
_THINKING_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
_THINKING_LEVEL = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                   "xhigh": "XHIGH"}
_TOOL_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}
_IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "MODEL_ARMOR": "content_filter",
}


class GeminiProvider:
    """The ``gemini`` provider family: Google's Gemini API with ``x-goog-api-key``.

    Usage::

        config = ProviderConfig(type="gemini", base_url="https://generativelanguage.googleapis.com/v1beta",
                                api_key=key)
        provider = GeminiProvider(config, http)
    """

    def __init__(self, config: ProviderConfig, http: HttpClient) -> None:
        self.config = config
        self._link = Exchange(config, http, auth_header="x-goog-api-key")
        self._base = config.base_url

    async def chat(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> ChatResponse:
        """Send one ``generateContent`` request and translate the answer."""
        model = _model_id(deployment.model)
        body = build_generate_body(request, model)
        data = await self._link.post_json(self._url(model, "generateContent"), body, options,
                                          provider=deployment.provider)
        return parse_generate_response(data, model, provider=deployment.provider)

    async def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> AsyncIterator[list[StreamEvent]]:
        """Stream ``streamGenerateContent?alt=sse`` as canonical events.

        Ends after every candidate finished; a stream cut before that raises ``UpstreamConnectionError``.
        Closing this iterator early closes the upstream connection.
        """
        model = _model_id(deployment.model)
        body = build_generate_body(request, model)
        provider = deployment.provider
        translator = StreamTranslator(model, provider=provider, link=self._link)
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        async with self._link.open_stream(url, body, options) as resp:
            await self._link.check_stream(resp, provider=provider)
            async with aclosing(event_batches(resp, translator)) as batches:
                async for batch in batches:
                    yield batch

    async def embed(
        self, request: EmbeddingRequest, deployment: DeploymentConfig, options: CallOptions
    ) -> EmbeddingResponse:
        """Embed every input with one ``batchEmbedContents`` request.

        Gemini reports no token usage for embeddings; ``input_tokens`` is then estimated as a quarter
        of each input's UTF-8 length, rounded up (about right for English, not an undercount for CJK).
        """
        texts: list[str] = []
        for item in request.inputs:
            if not isinstance(item, str):
                raise UnsupportedParameter("Gemini embeddings take text, not token ids", param="input")
            texts.append(item)
        model = _model_id(deployment.model)
        name = f"models/{model}"
        requests: list[dict[str, Any]] = []
        for text in texts:
            entry: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if request.dimensions is not None:
                entry["outputDimensionality"] = request.dimensions
            requests.append(entry)
        url = self._url(model, "batchEmbedContents")
        data = await self._link.post_json(url, {"requests": requests}, options, provider=deployment.provider)
        try:
            vectors = [[float(v) for v in e["values"]] for e in data["embeddings"]]
            if len(vectors) != len(texts):
                raise ValueError("one vector per input expected")
            usage = data.get("usageMetadata") or {}
            tokens = int(usage.get("promptTokenCount") or 0)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(
                f"{deployment.provider} returned a malformed embeddings response") from None
        if not tokens:
            tokens = sum(-(-len(t.encode()) // 4) for t in texts)
        return EmbeddingResponse(model=model, vectors=vectors, usage=Usage(input_tokens=tokens))

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}/models/{quote(model, safe='-._~')}:{method}"


def _model_id(model: str) -> str:
    return model.removeprefix("models/")


def _legacy(model: str) -> bool:
    """Gemini 1.x and 2.x: thinking budgets, and no thought-signature checks."""
    return _LEGACY_MODEL.match(model) is not None


# ---------------------------------------------------------------------------------------------------
# Request: canonical → GenerateContentRequest


def build_generate_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``generateContent`` body for ``request`` sent to upstream model ``model`` (no ``models/``)."""
    legacy = _legacy(model)
    contents, system = _contents(request.messages, sign_calls=not legacy)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        declarations: list[dict[str, Any]] = []
        for tool in request.tools:
            decl: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                decl["description"] = tool.description
            if _has_parameters(tool.parameters):
                decl["parametersJsonSchema"] = tool.parameters
            declarations.append(decl)
        body["tools"] = [{"functionDeclarations": declarations}]
        if request.tool_choice is not None:
            choice = request.tool_choice
            calling: dict[str, Any] = {"mode": _TOOL_MODE[choice.mode]}
            if choice.mode == "tool":
                if not choice.name:
                    raise InvalidRequest("tool_choice names no tool", param="tool_choice")
                calling["allowedFunctionNames"] = [choice.name]
            body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(request, legacy)
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request: ChatRequest, legacy: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.stop:
        config["stopSequences"] = request.stop
    if request.seed is not None:
        config["seed"] = request.seed
    if request.n != 1:
        config["candidateCount"] = request.n
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    if request.logit_bias:
        raise UnsupportedParameter("logit_bias is not supported by Gemini", param="logit_bias")
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            config["responseJsonSchema"] = fmt.schema
    effort = request.reasoning_effort
    if effort is not None:
        table: dict[str, Any] = _THINKING_BUDGET if legacy else _THINKING_LEVEL
        if effort not in table:
            raise UnsupportedParameter(f"reasoning_effort {effort!r} is not supported by this Gemini model",
                                       param="reasoning_effort")
        key = "thinkingBudget" if legacy else "thinkingLevel"
        config["thinkingConfig"] = {key: table[effort]}
    return config


def _has_parameters(schema: dict[str, Any]) -> bool:
    # A function without parameters is declared without a schema; an empty object schema is refused
    # by some Gemini versions.
    return bool(schema) and schema != {"type": "object", "properties": {}}


def _contents(
    messages: list[Message], *, sign_calls: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``contents`` and the ``systemInstruction`` parts. Consecutive tool results share one user turn,
    as Gemini expects one function response per call of the model turn before."""
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, the latest call with that id winning
    tool_turn: list[dict[str, Any]] | None = None
    for msg in messages:
        if msg.role == "tool":
            if tool_turn is None:
                tool_turn = []
                contents.append({"role": "user", "parts": tool_turn})
            tool_turn.append(_function_response(msg, names))
            continue
        tool_turn = None
        if msg.role == "system":
            for part in msg.content:
                if isinstance(part, ImagePart):
                    raise UnsupportedParameter("system messages cannot carry images", param="messages")
                system.append({"text": part.text})
        elif msg.role == "user":
            parts = [_part(p) for p in msg.content]
            if parts:
                contents.append({"role": "user", "parts": parts})
        else:
            parts = []
            for p in msg.content:
                if isinstance(p, ImagePart):
                    raise UnsupportedParameter("assistant messages cannot carry images", param="messages")
                if p.text:
                    parts.append({"text": p.text})
            for i, call in enumerate(msg.tool_calls):
                names[call.id] = call.name
                wire: dict[str, Any] = {"functionCall": {"name": call.name, "args": _args_object(call)}}
                if sign_calls and i == 0:
                    # Gemini 3 checks the signature of the first call of each model turn only.
                    wire["thoughtSignature"] = THOUGHT_SIGNATURE_BYPASS
                parts.append(wire)
            if parts:
                contents.append({"role": "model", "parts": parts})
    return contents, system


def _function_response(msg: Message, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(msg.tool_call_id or "") or msg.name
    if not name:
        raise InvalidRequest(f"tool result {msg.tool_call_id!r} answers no earlier tool call",
                             param="messages")
    if any(isinstance(p, ImagePart) for p in msg.content):
        raise UnsupportedParameter("tool results with images are not supported for Gemini", param="messages")
    # Gemini's convention: "output" for a result, "error" for a failure.
    key = "error" if msg.is_error else "output"
    return {"functionResponse": {"name": name, "response": {key: msg.text()}}}


def _args_object(call: ToolCall) -> dict[str, Any]:
    if not call.arguments.strip():
        return {}
    try:
        args = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest(f"arguments of tool call {call.id!r} are not a JSON object", param="messages")
    return args


def _part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    url = part.url
    if url.startswith("data:"):
        mime, data = _data_url(url, part.media_type)
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = part.media_type or _guess_type(url)
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _data_url(url: str, media_type: str | None) -> tuple[str, str]:
    """``(media type, base64 data)`` of a ``data:`` URL."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InvalidRequest("malformed data URL in an image part", param="messages")
    fields = header.split(";")
    mime = fields[0] or media_type
    if not mime:
        raise InvalidRequest("data URL of an image part names no media type", param="messages")
    if "base64" in fields[1:]:
        return mime, payload
    return mime, base64.b64encode(unquote_to_bytes(payload)).decode()


def _guess_type(url: str) -> str:
    # Not the mimetypes module: its first use reads system files, which would block the event loop.
    path = urlsplit(url).path
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return _IMAGE_TYPES.get(ext, "image/jpeg")


# ---------------------------------------------------------------------------------------------------
# Response: GenerateContentResponse → canonical


def parse_generate_response(data: Any, model: str, *, provider: str = "gemini") -> ChatResponse:
    """The canonical answer for a ``GenerateContentResponse``; ``model`` stands in if it names none."""
    try:
        return _parse_generate(data, model)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamProtocolError(f"{provider} returned a malformed generateContent response") from None


def _parse_generate(data: Any, model: str) -> ChatResponse:
    ids = _CallIds()
    choices: list[Choice] = []
    for cand in data.get("candidates") or ():
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in (cand.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            fc = part.get("functionCall")
            if isinstance(fc, dict):
                calls.append(ToolCall(id=_str(fc.get("id")) or ids.next(), name=_str(fc["name"]),
                                      arguments=orjson.dumps(fc.get("args") or {}).decode()))
        content: list[ContentPart] = [TextPart("".join(texts))] if texts else []
        raw_finish = cand.get("finishReason")
        finish = _finish(raw_finish, has_calls=bool(calls)) or "stop"
        refusal = _blocked("answer", raw_finish, cand.get("finishMessage")) if finish == "content_filter" else None
        choices.append(Choice(
            index=int(cand.get("index") or 0),
            message=Message("assistant", content, calls, refusal=refusal),
            finish_reason=finish,
        ))
    if not choices:
        # The prompt itself was blocked: Gemini answers without candidates.
        feedback = data.get("promptFeedback") or {}
        reason = feedback.get("blockReason")
        if reason:
            refusal = _blocked("prompt", reason, feedback.get("blockReasonMessage"))
            choices.append(Choice(0, Message("assistant", refusal=refusal), "content_filter"))
        else:
            choices.append(Choice(0, Message("assistant"), "stop"))
    usage = data.get("usageMetadata")
    return ChatResponse(
        id=_str(data.get("responseId")) or _synthetic_id(),
        model=_str(data.get("modelVersion")) or model,
        choices=choices,
        usage=_usage(usage) if isinstance(usage, dict) else Usage(),
        created=_created(data.get("createTime")),
    )


def _blocked(what: str, reason: Any, detail: Any) -> str:
    """The refusal text for a blocked answer or prompt: ``Gemini blocked the answer (SAFETY).``"""
    text = f"Gemini blocked the {what} ({reason if isinstance(reason, str) else 'unknown reason'})."
    return f"{text} {detail}" if isinstance(detail, str) and detail else text


def _finish(value: Any, *, has_calls: bool) -> FinishReason | None:
    if not isinstance(value, str) or not value:
        return None
    reason = _FINISH.get(value, "stop")
    return "tool_calls" if reason == "stop" and has_calls else reason


def _usage(raw: dict[str, Any]) -> Usage:
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _created(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp())
        except ValueError:
            pass
    return int(time.time())


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _synthetic_id() -> str:
    return new_id("gen-")


class _CallIds:
    """Ids for the tool calls of one answer: ``call_<hex>_<n>``, the hex unique to the answer."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = new_id("call_") + "_"
        self._count = 0

    def next(self) -> str:
        call_id = f"{self._prefix}{self._count}"
        self._count += 1
        return call_id


# ---------------------------------------------------------------------------------------------------
# Streaming: one GenerateContentResponse per SSE frame → canonical events


class StreamTranslator:
    """Turns the SSE events of one ``streamGenerateContent?alt=sse`` stream into canonical events.

    Each function call arrives whole, so it becomes a ``ToolCallStart`` and one ``ToolCallDelta`` with
    all its arguments. Usage (the last ``usageMetadata`` seen) is emitted by :meth:`end_of_body`, which
    raises ``UpstreamConnectionError`` if some candidate never finished.

    Usage::

        t = StreamTranslator("gemini-2.5-flash", provider="gemini", link=link)
        events = t.feed(None, '{"candidates": [...]}')
    """

    # Gemini streams have no end marker: the body ends when the answer does.
    done = False

    def __init__(self, model: str, *, provider: str, link: Exchange) -> None:
        self._model = model
        self._provider = provider
        self._link = link
        self._started = False
        self._ids = _CallIds()
        self._calls: dict[int, int] = {}  # candidate index → calls so far
        self._open: set[int] = set()
        self._finished: set[int] = set()
        self._usage: Usage | None = None

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        """The canonical events for one SSE event."""
        if not data.strip():
            return []
        frame = self._link.decode_frame(event, data, provider=self._provider)
        if event == "error" or frame.get("error"):
            raise self._link.inband_error(frame, {}, provider=self._provider)
        try:
            return self._frame(frame)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(f"{self._provider} sent a malformed stream frame") from None

    def end_of_body(self) -> list[StreamEvent]:
        """The body ended: the usage if every candidate finished, else ``UpstreamConnectionError``."""
        if not self._finished or self._open - self._finished:
            raise UpstreamConnectionError(f"{self._provider} closed the stream before it finished")
        return [StreamUsage(self._usage)] if self._usage is not None else []

    def _frame(self, frame: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(StreamStart(
                id=_str(frame.get("responseId")) or _synthetic_id(),
                model=_str(frame.get("modelVersion")) or self._model,
                created=_created(frame.get("createTime")),
            ))
        usage = frame.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
        candidates = frame.get("candidates") or ()
        blocked = (frame.get("promptFeedback") or {}).get("blockReason")
        if not candidates and blocked and 0 not in self._finished:
            self._open.add(0)
            self._finished.add(0)
            out.append(StreamFinish("content_filter", 0))
        for cand in candidates:
            index = int(cand.get("index") or 0)
            if index in self._finished:
                continue
            self._open.add(index)
            for part in (cand.get("content") or {}).get("parts") or ():
                if part.get("thought"):
                    continue
                text = part.get("text")
                if isinstance(text, str) and text:
                    out.append(TextDelta(text, index))
                fc = part.get("functionCall")
                if isinstance(fc, dict):
                    n = self._calls.get(index, 0)
                    self._calls[index] = n + 1
                    call_id = _str(fc.get("id")) or self._ids.next()
                    out.append(ToolCallStart(n, call_id, _str(fc["name"]), index))
                    out.append(ToolCallDelta(n, orjson.dumps(fc.get("args") or {}).decode(), index))
            reason = _finish(cand.get("finishReason"), has_calls=index in self._calls)
            if reason is not None:
                self._finished.add(index)
                out.append(StreamFinish(reason, index))
        return out
