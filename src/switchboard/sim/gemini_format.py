"""The Gemini wire format: ``/v1beta/models/{model}:{action}`` and ``GET /v1beta/models``.

Actions: ``generateContent``, ``streamGenerateContent`` (``?alt=sse``: each SSE frame a whole
``GenerateContentResponse``, no ``[DONE]``; without it one JSON array), ``countTokens``,
``embedContent`` and ``batchEmbedContents``. The same paths are also served under ``/v1``. A stream
sends one frame per token, then a final frame carrying ``finishReason`` and the full
``usageMetadata``. Errors are ``{"error": {"code", "message", "status"}}``; the key must come in the
``x-goog-api-key`` header (a ``?key=`` query is refused: it ends up in logs). A refusal
(``x-sim-refusal``) is a candidate without content, ``finishReason: "SAFETY"``, a blocking safety
rating and the text as ``finishMessage``; streamed, it is just the final frame.

Usage::

    reply = model_action(ctx, request, "sim-gemini", "generateContent")
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard.sim.answer import Answer, Choice, Prompt, ToolSpec
from switchboard.sim.dialect import (
    Dialect,
    SimContext,
    SimError,
    StreamParts,
    Turn,
    failure_reply,
    serve_chat,
)
from switchboard.sim.embedding import embed
from switchboard.sim.fleet import SimModel
from switchboard.sim.http import JSON, Reply, Respond, SimRequest
from switchboard.sim.scenario import ScriptError
from switchboard.sim.words import IMAGE_TOKENS, count_words

__all__ = ["GEMINI", "GEMINI_ARRAY", "GeminiDialect", "get_model", "list_models", "model_action"]

_FINISH = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP", "refusal": "SAFETY"}
_BLOCKED_RATING = {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_JSON_UTF8 = b"application/json; charset=UTF-8"


def _status_name(status: int) -> str:
    return _STATUS.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    """The REST API accepts both spellings of every field."""
    value = d.get(camel)
    return d.get(snake) if value is None else value


def _parts_texts(parts: Any, texts: list[str]) -> tuple[int, bool]:
    """Collect text from ``parts``; return (extra tokens, has a functionResponse part)."""
    extra = 0
    response = False
    if not isinstance(parts, list):
        return 0, False
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif (call := _get(part, "functionCall", "function_call")) is not None and isinstance(call, dict):
            texts.append(str(call.get("name", "")))
            texts.append(orjson.dumps(call.get("args", {})).decode())
        elif (resp := _get(part, "functionResponse", "function_response")) is not None and isinstance(resp, dict):
            response = True
            texts.append(str(resp.get("name", "")))
            texts.append(orjson.dumps(resp.get("response", {})).decode())
        else:
            extra += IMAGE_TOKENS
    return extra, response


def _prompt(body: dict[str, Any]) -> Prompt:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise SimError(400, "* GenerateContentRequest.contents: contents is not specified")
    p = Prompt(messages=len(contents))
    system = _get(body, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        p.extra_tokens += _parts_texts(system.get("parts"), p.texts)[0]
    elif isinstance(system, str):
        p.texts.append(system)
    response = False
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise SimError(400, f"* GenerateContentRequest.contents[{i}]: must be a Content object")
        extra, response = _parts_texts(content.get("parts"), p.texts)
        p.extra_tokens += extra
    last = contents[-1].get("role", "user")
    p.last_role = "assistant" if last == "model" else "tool" if response else "user"
    _tools(body, p)
    config = _get(body, "generationConfig", "generation_config")
    if isinstance(config, dict):
        _generation_config(config, p)
    return p


def _generation_config(config: dict[str, Any], p: Prompt) -> None:
    max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise SimError(400, "* GenerateContentRequest.generation_config.max_output_tokens: must be positive")
        p.max_tokens = max_tokens
    stops = _get(config, "stopSequences", "stop_sequences")
    if isinstance(stops, list):
        p.stop = tuple(s for s in stops if isinstance(s, str))
    count = _get(config, "candidateCount", "candidate_count")
    if isinstance(count, int) and not isinstance(count, bool):
        if not 1 <= count <= 8:
            raise SimError(400, "* GenerateContentRequest.generation_config.candidate_count: must be 1-8")
        p.n = count
    if _get(config, "responseMimeType", "response_mime_type") == "application/json":
        schema = (
            _get(config, "responseJsonSchema", "response_json_schema")
            or config.get("_responseJsonSchema")
            or _get(config, "responseSchema", "response_schema")
        )
        if isinstance(schema, dict):
            p.json_schema = schema
        else:
            p.json_mode = True


def _tools(body: dict[str, Any], p: Prompt) -> None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return
    for tool in tools:
        decls = _get(tool, "functionDeclarations", "function_declarations") if isinstance(tool, dict) else None
        for d in decls if isinstance(decls, list) else ():
            if isinstance(d, dict) and isinstance(d.get("name"), str):
                schema = _get(d, "parametersJsonSchema", "parameters_json_schema") or d.get("parameters")
                p.tools.append(ToolSpec(d["name"], schema if isinstance(schema, dict) else {"type": "object"}))
    p.extra_tokens += len(orjson.dumps(tools)) // 4
    tool_config = _get(body, "toolConfig", "tool_config")
    fcc = (
        _get(tool_config, "functionCallingConfig", "function_calling_config") if isinstance(tool_config, dict) else None
    )
    if isinstance(fcc, dict):
        mode = str(fcc.get("mode", "AUTO")).upper()
        if mode == "NONE":
            p.tool_mode = "none"
        elif mode == "ANY":
            p.tool_mode = "any"
        allowed = _get(fcc, "allowedFunctionNames", "allowed_function_names")
        if isinstance(allowed, list) and allowed:
            p.tools = [t for t in p.tools if t.name in allowed] or p.tools


def _usage(a: Answer, *, final: bool = True) -> dict[str, Any]:
    p = a.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": p}
    if final:
        # A refused candidate says nothing: its explanation is not generated output.
        output = sum(c.token_count for c in a.choices if c.finish != "refusal")
        usage["candidatesTokenCount"] = output
        usage["totalTokenCount"] = p + output + a.reasoning_tokens
        if a.cached_tokens:
            usage["cachedContentTokenCount"] = a.cached_tokens
        if a.reasoning_tokens:
            usage["thoughtsTokenCount"] = a.reasoning_tokens
    else:
        usage["totalTokenCount"] = p
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": p}]
    return usage


def _final_candidate(c: Choice, index: int, content: dict[str, Any]) -> dict[str, Any]:
    """A candidate with its ``finishReason``; a refused one has no content, a blocking rating instead."""
    if c.finish != "refusal":
        return {"content": content, "finishReason": _FINISH[c.finish], "index": index}
    cand: dict[str, Any] = {"finishReason": "SAFETY", "index": index, "safetyRatings": [_BLOCKED_RATING]}
    if c.text:
        cand["finishMessage"] = c.text
    return cand


def _content(c: Choice) -> dict[str, Any]:
    if c.tool is not None:
        return {"parts": [{"functionCall": {"name": c.tool.name, "args": c.tool.input}}], "role": "model"}
    if not c.tokens:
        return {"role": "model"}
    return {"parts": [{"text": c.text}], "role": "model"}


class GeminiDialect(Dialect):
    """Gemini's format; ``array=True`` streams one JSON array instead of SSE frames."""

    name = "gemini"
    tool_id_prefix = "fc_"
    stream_error_status = 503
    stream_error_message = "The model is overloaded. Please try again later."

    def __init__(self, *, array: bool = False) -> None:
        self.array = array
        self.stream_content_type = _JSON_UTF8 if array else b"text/event-stream"

    def _frame(self, obj: bytes) -> bytes:
        return obj + b",\r\n" if self.array else b"data: " + obj + b"\r\n\r\n"

    def error(self, err: SimError, rid: str) -> Respond:
        body = {
            "error": {
                "code": err.status,
                "message": err.message,
                "status": err.kind or _status_name(err.status),
            }
        }
        headers = b"retry-after: %b\r\n" % err.retry_after.encode() if err.retry_after else b""
        return Respond(err.status, orjson.dumps(body), _JSON_UTF8, headers)

    def stream_error_frame(self, message: str, rid: str) -> bytes:
        obj = orjson.dumps({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}})
        return obj + b"]" if self.array else b"data: " + obj + b"\r\n\r\n"

    def overflow(self, tokens: int, limit: int) -> SimError:
        return SimError(
            400, f"The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit})."
        )

    def unknown_model(self, name: str) -> SimError:
        return unsupported(name, "generateContent")

    def wrong_kind(self, model: SimModel, wanted: str) -> SimError:
        return unsupported(model.name, "generateContent" if wanted == "chat" else "embedContent")

    def check_auth(self, req: SimRequest, api_key: str | None) -> SimError | None:
        if "key=" in req.query and "key" in req.query_params():
            return SimError(
                403,
                "switchboard-sim: send the API key in the x-goog-api-key header, not as ?key= "
                "(query strings end up in logs)",
            )
        key = req.headers.get("x-goog-api-key", "").strip()
        if not key:
            return SimError(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if api_key is not None and key != api_key:
            return SimError(400, "API key not valid. Please pass a valid API key.")
        return None

    def malformed_body(self) -> bytes:
        return b'{"candidates": [{"content": {"parts": [{"text": "unterminated'

    def malformed_frame(self) -> bytes:
        return b'data: {"candidates": [{"content": {"parts": [{"text": "unterm\r\n\r\n'

    def parse_prompt(self, body: dict[str, Any]) -> Prompt:
        return _prompt(body)

    def render(self, turn: Turn) -> bytes:
        a = turn.answer
        return orjson.dumps(
            {
                "candidates": [_final_candidate(c, i, _content(c)) for i, c in enumerate(a.choices)],
                "usageMetadata": _usage(a),
                "modelVersion": turn.model.name,
                "responseId": turn.id,
            }
        )

    def stream(self, turn: Turn) -> StreamParts:
        a = turn.answer
        tail = orjson.dumps(
            {"usageMetadata": _usage(a, final=False), "modelVersion": turn.model.name, "responseId": turn.id}
        )
        chunks: list[bytes] = []
        for i, c in enumerate(a.choices):
            if c.finish == "refusal":
                continue  # only the final frame
            if c.tool is not None:
                cand = {"content": _content(c), "index": i}
                chunks.append(self._frame(orjson.dumps({"candidates": [cand]})[:-1] + b"," + tail[1:]))
                continue
            prefix = b'{"candidates":[{"content":{"parts":[{"text":'
            suffix = b'}],"role":"model"},"index":%d}],' % i + tail[1:]
            chunks += [self._frame(prefix + orjson.dumps(t) + suffix) for t in c.tokens]
        final = orjson.dumps(
            {
                "candidates": [_final_candidate(c, i, {"role": "model"}) for i, c in enumerate(a.choices)],
                "usageMetadata": _usage(a),
                "modelVersion": turn.model.name,
                "responseId": turn.id,
            }
        )
        if self.array:
            return StreamParts([b"["], chunks, [final + b"]"])
        return StreamParts([], chunks, [self._frame(final)])


GEMINI = GeminiDialect()
GEMINI_ARRAY = GeminiDialect(array=True)


def unsupported(name: str, action: str) -> SimError:
    return SimError(
        404,
        f"models/{name} is not found for API version v1beta, or is not supported for {action}. "
        "Call ListModels to see the list of available models and their supported methods.",
    )


def model_action(ctx: SimContext, req: SimRequest, model_name: str, action: str) -> Reply:
    """``POST /v1beta/models/{model}:{action}``."""
    if action == "generateContent":
        d = GEMINI
    elif action == "streamGenerateContent":
        d = GEMINI if req.query_params().get("alt") == "sse" else GEMINI_ARRAY
    elif action in ("embedContent", "batchEmbedContents"):
        return _embed(ctx, req, model_name, batch=action == "batchEmbedContents")
    elif action == "countTokens":
        return _count_tokens(ctx, req, model_name)
    else:
        return GEMINI.error(SimError(404, f"unknown method {action}"), ctx.new_id())
    try:
        body = d.json_body(req)
    except SimError as err:
        return d.error(err, ctx.new_id())
    return serve_chat(d, ctx, req, model_name, body, action == "streamGenerateContent")


def _content_text(content: Any) -> str:
    texts: list[str] = []
    if isinstance(content, dict):
        _parts_texts(content.get("parts"), texts)
    return " ".join(texts)


def _embed(ctx: SimContext, req: SimRequest, model_name: str, *, batch: bool) -> Reply:
    rid = ctx.new_id()
    try:
        body = GEMINI.json_body(req)
        model = ctx.model(model_name)
        if model is None or model.kind != "embedding":
            raise unsupported(model_name, "batchEmbedContents" if batch else "embedContent")
        try:
            sc = ctx.scenario(req, model)
        except ScriptError as exc:
            raise SimError(400, str(exc)) from None
        early = failure_reply(GEMINI, sc, False, rid)
        if early is not None:
            return early
        requests = body.get("requests") if batch else [body]
        if not isinstance(requests, list) or not requests:
            raise SimError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        vectors = []
        for r in requests:
            if not isinstance(r, dict) or not isinstance(r.get("content"), dict):
                raise SimError(400, "* EmbedContentRequest.content: content is not specified")
            text = _content_text(r["content"])
            if count_words(text) > model.context_window:
                raise SimError(
                    400,
                    f"The input token count ({count_words(text)}) exceeds the maximum number of "
                    f"tokens allowed ({model.context_window}).",
                )
            dim = _get(r, "outputDimensionality", "output_dimensionality")
            if dim is None:
                dim = model.embedding_dim
            if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= model.embedding_dim:
                raise SimError(
                    400,
                    f"* EmbedContentRequest.output_dimensionality: must be between 1 and {model.embedding_dim}",
                )
            vectors.append({"values": embed(text, dim)})
    except SimError as err:
        return GEMINI.error(err, rid)
    out = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
    return Respond(200, orjson.dumps(out), _JSON_UTF8, delay=sc.ttft)


def _count_tokens(ctx: SimContext, req: SimRequest, model_name: str) -> Reply:
    rid = ctx.new_id()
    try:
        body = GEMINI.json_body(req)
        if ctx.fleet.get(model_name) is None:
            raise unsupported(model_name, "countTokens")
        inner = _get(body, "generateContentRequest", "generate_content_request")
        tokens = _prompt(inner if isinstance(inner, dict) else body).token_count()
    except SimError as err:
        return GEMINI.error(err, rid)
    return Respond(200, orjson.dumps({"totalTokens": tokens}), JSON)


def _model_resource(m: SimModel) -> dict[str, Any]:
    methods = (
        ["embedContent", "batchEmbedContents"]
        if m.kind == "embedding"
        else ["generateContent", "streamGenerateContent", "countTokens"]
    )
    return {
        "name": f"models/{m.name}",
        "version": "001",
        "displayName": m.name,
        "description": f"Simulated {m.kind} model",
        "inputTokenLimit": m.context_window,
        "outputTokenLimit": max(m.output_tokens, 8192) if m.kind == "chat" else 1,
        "supportedGenerationMethods": methods,
    }


def list_models(ctx: SimContext, req: SimRequest) -> Reply:
    """``GET /v1beta/models``: the whole fleet on one page."""
    body = {"models": [_model_resource(m) for m in ctx.fleet]}
    return Respond(200, orjson.dumps(body), _JSON_UTF8)


def get_model(ctx: SimContext, req: SimRequest, name: str) -> Reply:
    """``GET /v1beta/models/{model}``."""
    model = ctx.fleet.get(name)
    if model is None:
        return GEMINI.error(unsupported(name, "get"), ctx.new_id())
    return Respond(200, orjson.dumps(_model_resource(model)), _JSON_UTF8)
