"""The OpenAI wire format: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

Shapes follow the official ``openai`` SDK's types: ``chat.completion`` objects, ``chat.completion.chunk``
SSE frames ending in ``data: [DONE]``, a final ``choices: []`` usage chunk when
``stream_options.include_usage`` is set, tool calls streamed as index-keyed fragments, and errors as
``{"error": {"message", "type", "param", "code"}}``. A refusal (``x-sim-refusal``) is null ``content``
with the text in ``refusal`` and ``finish_reason: "stop"``, streamed as ``delta.refusal`` pieces.

Usage::

    reply = chat_completions(ctx, request)
"""

from __future__ import annotations

import base64
from array import array
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
from switchboard.sim.http import Reply, Respond, SimRequest, header_lines
from switchboard.sim.scenario import ScriptError
from switchboard.sim.words import IMAGE_TOKENS, count_words

__all__ = ["OPENAI", "OpenAIDialect", "chat_completions", "embeddings", "list_models", "retrieve_model"]

_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls", "refusal": "stop"}
_FINGERPRINT = "fp_sim"
_OWNER = "switchboard-sim"


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_code(status: int) -> str | None:
    return {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)


def _usage(a: Answer) -> dict[str, Any]:
    completion = a.completion_tokens
    prompt_details: dict[str, int] = {"cached_tokens": a.cached_tokens, "audio_tokens": 0}
    if a.cache_write_tokens:
        prompt_details["cache_write_tokens"] = a.cache_write_tokens
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": a.prompt_tokens + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": a.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _message(c: Choice) -> dict[str, Any]:
    refused = c.finish == "refusal"
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": None if c.tool is not None or refused else c.text,
        "refusal": c.text if refused else None,
        "annotations": [],
    }
    if c.tool is not None:
        msg["tool_calls"] = [
            {
                "id": c.tool.id,
                "type": "function",
                "function": {"name": c.tool.name, "arguments": c.tool.arguments},
            }
        ]
    return msg


def _texts_of_content(content: Any, texts: list[str]) -> int:
    """Append the text parts of a message's content; return the extra tokens of non-text parts."""
    if isinstance(content, str):
        texts.append(content)
        return 0
    extra = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("text", "input_text", "refusal"):
                text = part.get("text", part.get("refusal"))
                if isinstance(text, str):
                    texts.append(text)
            else:
                extra += IMAGE_TOKENS
    return extra


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SimError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value!r} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return value


class OpenAIDialect(Dialect):
    name = "openai"
    tool_id_prefix = "call_"
    stream_error_status = 500
    stream_error_message = "The server had an error while processing your request. Sorry about that!"

    def error(self, err: SimError, rid: str) -> Respond:
        body = {
            "error": {
                "message": err.message,
                "type": err.kind or _error_type(err.status),
                "param": err.param,
                "code": err.code or _error_code(err.status),
            }
        }
        headers = header_lines(("x-request-id", f"req_{rid}"), ("retry-after", err.retry_after))
        return Respond(err.status, orjson.dumps(body), headers=headers)

    def stream_error_frame(self, message: str, rid: str) -> bytes:
        err = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return b"event: error\ndata: " + orjson.dumps(err) + b"\n\n"

    def overflow(self, tokens: int, limit: int) -> SimError:
        return SimError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {tokens} tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )

    def unknown_model(self, name: str) -> SimError:
        return SimError(
            404, f"The model `{name}` does not exist or you do not have access to it.", code="model_not_found"
        )

    def check_auth(self, req: SimRequest, api_key: str | None) -> SimError | None:
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return SimError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if api_key is not None and token.strip() != api_key:
            return SimError(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def headers(self, rid: str) -> bytes:
        return b"x-request-id: req_" + rid.encode() + b"\r\n"

    # -- request -----------------------------------------------------------------------------------------

    def parse_prompt(self, body: dict[str, Any]) -> Prompt:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SimError(400, "'messages' must be a non-empty array", param="messages")
        p = Prompt(messages=len(messages))
        texts = p.texts
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise SimError(
                    400,
                    f"Invalid value for 'messages[{i}]': expected an object with a 'role'.",
                    param=f"messages[{i}]",
                )
            p.extra_tokens += _texts_of_content(m.get("content"), texts)
            for call in m.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    texts.append(str(fn.get("name", "")))
                    texts.append(str(fn.get("arguments", "")))
        role = messages[-1]["role"]
        p.last_role = "tool" if role in ("tool", "function") else "assistant" if role == "assistant" else "user"
        self._tools(body, p)
        p.max_tokens = _positive_int(body, "max_completion_tokens")
        if p.max_tokens is None:
            p.max_tokens = _positive_int(body, "max_tokens")
        p.n = _positive_int(body, "n") or 1
        if p.n > 128:
            raise SimError(400, "Invalid 'n': integer above maximum value. Expected a value <= 128.", param="n")
        stop = body.get("stop")
        if isinstance(stop, str):
            p.stop = (stop,)
        elif isinstance(stop, list):
            p.stop = tuple(s for s in stop if isinstance(s, str))
        fmt = body.get("response_format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_object":
                p.json_mode = True
            elif fmt.get("type") == "json_schema":
                spec = fmt.get("json_schema")
                schema = spec.get("schema") if isinstance(spec, dict) else None
                if not isinstance(schema, dict):
                    raise SimError(
                        400,
                        "Missing required parameter: 'response_format.json_schema.schema'.",
                        param="response_format",
                    )
                p.json_schema = schema
        return p

    def _tools(self, body: dict[str, Any], p: Prompt) -> None:
        tools = body.get("tools")
        if not isinstance(tools, list) or not tools:
            return
        for t in tools:
            fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                params = fn.get("parameters")
                p.tools.append(ToolSpec(fn["name"], params if isinstance(params, dict) else {"type": "object"}))
        p.extra_tokens += len(orjson.dumps(tools)) // 4
        choice = body.get("tool_choice")
        if choice == "none":
            p.tool_mode = "none"
        elif choice == "required":
            p.tool_mode = "any"
        elif isinstance(choice, dict):
            p.tool_mode = "any"
            if choice.get("type") == "function" and isinstance(choice.get("function"), dict):
                p.forced_tool = choice["function"].get("name")
            elif choice.get("type") == "allowed_tools":
                allowed = choice.get("allowed_tools") or {}
                names = [x.get("function", {}).get("name") for x in allowed.get("tools", []) if isinstance(x, dict)]
                p.tools = [t for t in p.tools if t.name in names] or p.tools
                p.tool_mode = "any" if allowed.get("mode") == "required" else "auto"

    # -- answer ------------------------------------------------------------------------------------------

    def render(self, turn: Turn) -> bytes:
        a = turn.answer
        return orjson.dumps(
            {
                "id": f"chatcmpl-{turn.id}",
                "object": "chat.completion",
                "created": turn.created,
                "model": turn.model.name,
                "choices": [
                    {"index": i, "message": _message(c), "logprobs": None, "finish_reason": _FINISH[c.finish]}
                    for i, c in enumerate(a.choices)
                ],
                "usage": _usage(a),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )

    def stream(self, turn: Turn) -> StreamParts:
        a = turn.answer
        opts = turn.body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-{turn.id}",
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model.name,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        usage_null = b',"usage":null' if include_usage else b""

        def frame(choices: list[dict[str, Any]]) -> bytes:
            return b"data: " + orjson.dumps({**base, "choices": choices})[:-1] + usage_null + b"}\n\n"

        head = frame([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}])
        # content frames are the hot path: a fixed prefix and suffix around the token's JSON string
        cut = head.index(b'"delta":{}') + len(b'"delta":')
        prefix, suffix = head[:cut], head[cut + 2 :]
        preamble: list[bytes] = []
        chunks: list[bytes] = []
        for i, c in enumerate(a.choices):
            refused = c.finish == "refusal"
            delta: dict[str, Any] = {
                "role": "assistant",
                "content": None if c.tool or refused else "",
                "refusal": "" if refused else None,
            }
            if c.tool is not None:
                delta["tool_calls"] = [
                    {
                        "index": 0,
                        "id": c.tool.id,
                        "type": "function",
                        "function": {"name": c.tool.name, "arguments": ""},
                    }
                ]
            preamble.append(frame([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
        if len(a.choices) == 1:
            c = a.choices[0]
            if c.tool is None:
                key = b'{"refusal":' if c.finish == "refusal" else b'{"content":'
                chunks = [prefix + key + orjson.dumps(t) + b"}" + suffix for t in c.tokens]
            else:
                chunks = [
                    prefix + b'{"tool_calls":[{"index":0,"function":{"arguments":' + orjson.dumps(f) + b"}}]}" + suffix
                    for f in c.tool.fragments
                ]
        else:
            chunks = self._interleaved(a, frame)
        epilogue = [
            frame([{"index": i, "delta": {}, "logprobs": None, "finish_reason": _FINISH[c.finish]}])
            for i, c in enumerate(a.choices)
        ]
        if include_usage:
            epilogue.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(a)}) + b"\n\n")
        epilogue.append(b"data: [DONE]\n\n")
        return StreamParts(preamble, chunks, epilogue)

    @staticmethod
    def _interleaved(a: Answer, frame: Any) -> list[bytes]:
        pieces = [list(c.tool.fragments) if c.tool else c.tokens for c in a.choices]
        out: list[bytes] = []
        for k in range(max(map(len, pieces), default=0)):
            for i, c in enumerate(a.choices):
                if k >= len(pieces[i]):
                    continue
                if c.tool is not None:
                    delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": pieces[i][k]}}]}
                else:
                    delta = {"refusal" if c.finish == "refusal" else "content": pieces[i][k]}
                out.append(frame([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
        return out


OPENAI = OpenAIDialect()


def chat_completions(ctx: SimContext, req: SimRequest) -> Reply:
    """``POST /v1/chat/completions``."""
    try:
        body = OPENAI.json_body(req)
    except SimError as err:
        return OPENAI.error(err, ctx.new_id())
    return serve_chat(OPENAI, ctx, req, body.get("model"), body, bool(body.get("stream")))


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(x, int) for x in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise SimError(400, "'input' must be a string, an array of strings, or an array of token arrays", param="input")


def embeddings(ctx: SimContext, req: SimRequest) -> Reply:
    """``POST /v1/embeddings``: float or base64 (float32, little-endian) vectors, optional ``dimensions``."""
    rid = ctx.new_id()
    try:
        body = OPENAI.json_body(req)
        model = ctx.model(body.get("model"))
        if model is None:
            raise OPENAI.unknown_model(str(body.get("model")))
        if model.kind != "embedding":
            raise OPENAI.wrong_kind(model, "embeddings")
        try:
            sc = ctx.scenario(req, model)
        except ScriptError as exc:
            raise SimError(400, str(exc)) from None
        early = failure_reply(OPENAI, sc, False, rid)
        if early is not None:
            return early
        inputs = _embedding_inputs(body.get("input"))
        dim = _dimensions(body.get("dimensions"), model)
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise SimError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        total = 0
        data = []
        for i, text in enumerate(inputs):
            tokens = count_words(text)
            if tokens > model.context_window:
                raise SimError(
                    400,
                    f"This model's maximum context length is {model.context_window} tokens, "
                    f"however you requested {tokens} tokens ({tokens} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                    param="input",
                    code="context_length_exceeded",
                )
            total += tokens
            vector = embed(text, dim)
            value: Any = vector if fmt == "float" else base64.b64encode(array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
    except SimError as err:
        return OPENAI.error(err, rid)
    out = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
    return Respond(200, orjson.dumps(out), headers=OPENAI.headers(rid), delay=sc.ttft)


def _dimensions(value: Any, model: SimModel) -> int:
    if value is None:
        return model.embedding_dim
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= model.embedding_dim:
        raise SimError(400, f"'dimensions' must be an integer between 1 and {model.embedding_dim}", param="dimensions")
    return value


def _model_object(m: SimModel) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "created": 1_700_000_000, "owned_by": _OWNER}


def list_models(ctx: SimContext, req: SimRequest) -> Reply:
    """``GET /v1/models``."""
    body = {"object": "list", "data": [_model_object(m) for m in ctx.fleet]}
    return Respond(200, orjson.dumps(body), headers=OPENAI.headers(ctx.new_id()))


def retrieve_model(ctx: SimContext, req: SimRequest, name: str) -> Reply:
    """``GET /v1/models/{model}``."""
    model = ctx.fleet.get(name)
    if model is None:
        return OPENAI.error(OPENAI.unknown_model(name), ctx.new_id())
    return Respond(200, orjson.dumps(_model_object(model)), headers=OPENAI.headers(ctx.new_id()))
