"""The Anthropic Messages wire format: ``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/models``.

Streams follow the documented order — ``message_start``, ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop`` — each with its
``event:`` line. ``message_start`` and the ping are sent as soon as the request is accepted, the first
content after the model's time to first token. Errors are ``{"type": "error", "error": {...}}``;
``x-sim-stream-error-after`` sends an in-band ``overloaded_error`` event (529 when not streaming). A
refusal (``x-sim-refusal``) is its text as the answer with ``stop_reason: "refusal"``.

Usage::

    reply = messages(ctx, request)
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard.sim.answer import Answer, Prompt, ToolSpec
from switchboard.sim.dialect import Dialect, SimContext, SimError, StreamParts, Turn, serve_chat
from switchboard.sim.fleet import SimModel
from switchboard.sim.http import Reply, Respond, SimRequest, header_lines
from switchboard.sim.words import IMAGE_TOKENS

__all__ = ["ANTHROPIC", "AnthropicDialect", "count_tokens", "list_models", "messages", "retrieve_model"]

_STOP = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
    "refusal": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _usage(a: Answer, *, final: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": a.prompt_tokens - a.cached_tokens - a.cache_write_tokens,
        "cache_creation_input_tokens": a.cache_write_tokens,
        "cache_read_input_tokens": a.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": a.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": a.completion_tokens if final else 1,
        "service_tier": "standard",
    }
    if final and a.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": a.reasoning_tokens}
    return usage


def _block_texts(content: Any, texts: list[str]) -> tuple[int, bool]:
    """Collect the text of a message's content; return (extra tokens, has a tool_result block)."""
    if isinstance(content, str):
        texts.append(content)
        return 0, False
    if not isinstance(content, list):
        raise SimError(400, "messages: content must be a string or a list of content blocks")
    extra = 0
    tool_result = False
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            texts.append(str(block.get("name", "")))
            texts.append(orjson.dumps(block.get("input", {})).decode())
        elif kind == "tool_result":
            tool_result = True
            inner = block.get("content", "")
            more, _ = _block_texts(inner if isinstance(inner, str | list) else "", texts)
            extra += more
        elif kind == "thinking":
            texts.append(str(block.get("thinking", "")))
        elif kind in ("image", "document"):
            extra += IMAGE_TOKENS
    return extra, tool_result


def _prompt(body: dict[str, Any], *, require_max_tokens: bool) -> Prompt:
    if not isinstance(body.get("model"), str):
        raise SimError(400, "model: Field required")
    messages = body.get("messages")
    if messages is None:
        raise SimError(400, "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "messages: at least one message is required")
    p = Prompt(messages=len(messages))
    max_tokens = body.get("max_tokens")
    if require_max_tokens and max_tokens is None:
        raise SimError(400, "max_tokens: Field required")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise SimError(400, "max_tokens: Input should be greater than or equal to 1")
        p.max_tokens = max_tokens
    system = body.get("system")
    if system is not None:
        extra, _ = _block_texts(system, p.texts)
        p.extra_tokens += extra
    tool_result = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise SimError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        extra, tool_result = _block_texts(m.get("content", ""), p.texts)
        p.extra_tokens += extra
    last = messages[-1]["role"]
    p.last_role = "assistant" if last == "assistant" else "tool" if tool_result else "user"
    stops = body.get("stop_sequences")
    if isinstance(stops, list):
        p.stop = tuple(s for s in stops if isinstance(s, str))
    _tools(body, p)
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        fmt = body.get("output_format")  # the structured-outputs beta spelling
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        p.json_schema = fmt["schema"]
    return p


def _tools(body: dict[str, Any], p: Prompt) -> None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return
    for t in tools:
        if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("input_schema"), dict):
            p.tools.append(ToolSpec(t["name"], t["input_schema"]))
    p.extra_tokens += len(orjson.dumps(tools)) // 4
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "none":
            p.tool_mode = "none"
        elif kind == "any":
            p.tool_mode = "any"
        elif kind == "tool":
            p.tool_mode = "any"
            p.forced_tool = choice.get("name")


class AnthropicDialect(Dialect):
    name = "anthropic"
    tool_id_prefix = "toolu_"
    eager_preamble = True
    stream_error_status = 529
    stream_error_message = "Overloaded"

    def error(self, err: SimError, rid: str) -> Respond:
        body = {
            "type": "error",
            "error": {"type": err.kind or _error_type(err.status), "message": err.message},
            "request_id": f"req_{rid}",
        }
        headers = header_lines(("request-id", f"req_{rid}"), ("retry-after", err.retry_after))
        return Respond(err.status, orjson.dumps(body), headers=headers)

    def stream_error_frame(self, message: str, rid: str) -> bytes:
        return _event(
            b"error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": message},
                "request_id": f"req_{rid}",
            },
        )

    def overflow(self, tokens: int, limit: int) -> SimError:
        return SimError(400, f"prompt is too long: {tokens} tokens > {limit} maximum")

    def unknown_model(self, name: str) -> SimError:
        return SimError(404, f"model: {name}")

    def check_auth(self, req: SimRequest, api_key: str | None) -> SimError | None:
        key = req.headers.get("x-api-key")
        if key is None:
            scheme, _, token = req.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            return SimError(401, "x-api-key header is required")
        if api_key is not None and key != api_key:
            return SimError(401, "invalid x-api-key")
        if "anthropic-version" not in req.headers:
            return SimError(400, "anthropic-version: header is required")
        return None

    def headers(self, rid: str) -> bytes:
        return b"request-id: req_" + rid.encode() + b"\r\n"

    def parse_prompt(self, body: dict[str, Any]) -> Prompt:
        return _prompt(body, require_max_tokens=True)

    def render(self, turn: Turn) -> bytes:
        a = turn.answer
        c = a.choices[0]
        content: list[dict[str, Any]]
        if c.tool is not None:
            content = [{"type": "tool_use", "id": c.tool.id, "name": c.tool.name, "input": c.tool.input}]
        else:
            content = [{"type": "text", "text": c.text}] if c.tokens else []
        return orjson.dumps(
            {
                "id": f"msg_{turn.id}",
                "type": "message",
                "role": "assistant",
                "model": turn.model.name,
                "content": content,
                "stop_reason": _STOP[c.finish],
                "stop_sequence": c.stop_sequence,
                "usage": _usage(a),
            }
        )

    def stream(self, turn: Turn) -> StreamParts:
        a = turn.answer
        c = a.choices[0]
        start = {
            "type": "message_start",
            "message": {
                "id": f"msg_{turn.id}",
                "type": "message",
                "role": "assistant",
                "model": turn.model.name,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(a, final=False),
            },
        }
        preamble = [_event(b"message_start", start), b'event: ping\ndata: {"type": "ping"}\n\n']
        chunks: list[bytes]
        if c.tool is not None:
            block: dict[str, Any] = {"type": "tool_use", "id": c.tool.id, "name": c.tool.name, "input": {}}
            prefix = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"input_json_delta","partial_json":'
            )
            chunks = [prefix + orjson.dumps(f) + b"}}\n\n" for f in c.tool.fragments]
        else:
            block = {"type": "text", "text": ""}
            prefix = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":'
            )
            chunks = [prefix + orjson.dumps(t) + b"}}\n\n" for t in c.tokens]
        epilogue: list[bytes] = []
        if chunks:
            chunks[0] = (
                _event(
                    b"content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
                + chunks[0]
            )
            epilogue.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
        usage = _usage(a)
        usage.pop("cache_creation")
        usage.pop("service_tier")
        epilogue.append(
            _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP[c.finish], "stop_sequence": c.stop_sequence},
                    "usage": usage,
                },
            )
        )
        epilogue.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return StreamParts(preamble, chunks, epilogue)


ANTHROPIC = AnthropicDialect()


def messages(ctx: SimContext, req: SimRequest) -> Reply:
    """``POST /v1/messages``."""
    try:
        body = ANTHROPIC.json_body(req)
    except SimError as err:
        return ANTHROPIC.error(err, ctx.new_id())
    return serve_chat(ANTHROPIC, ctx, req, body.get("model"), body, bool(body.get("stream")))


def count_tokens(ctx: SimContext, req: SimRequest) -> Reply:
    """``POST /v1/messages/count_tokens``: the sim's prompt-token estimate."""
    rid = ctx.new_id()
    try:
        body = ANTHROPIC.json_body(req)
        if ctx.fleet.get(str(body.get("model"))) is None:
            raise ANTHROPIC.unknown_model(str(body.get("model")))
        tokens = _prompt(body, require_max_tokens=False).token_count()
    except SimError as err:
        return ANTHROPIC.error(err, rid)
    return Respond(200, orjson.dumps({"input_tokens": tokens}), headers=ANTHROPIC.headers(rid))


def _model_info(m: SimModel) -> dict[str, Any]:
    return {
        "type": "model",
        "id": m.name,
        "display_name": m.name.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
        "max_input_tokens": m.context_window,
        "max_tokens": max(m.output_tokens, 8192),
        "lifecycle": "active",
    }


def list_models(ctx: SimContext, req: SimRequest) -> Reply:
    """``GET /v1/models`` (Anthropic shape: chosen when the request carries ``anthropic-version``)."""
    data = [_model_info(m) for m in ctx.fleet]
    body = {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return Respond(200, orjson.dumps(body), headers=ANTHROPIC.headers(ctx.new_id()))


def retrieve_model(ctx: SimContext, req: SimRequest, name: str) -> Reply:
    """``GET /v1/models/{model}``."""
    model = ctx.fleet.get(name)
    rid = ctx.new_id()
    if model is None:
        return ANTHROPIC.error(ANTHROPIC.unknown_model(name), rid)
    return Respond(200, orjson.dumps(_model_info(model)), headers=ANTHROPIC.headers(rid))
