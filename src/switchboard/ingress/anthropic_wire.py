"""The Anthropic Messages dialect: ``POST /v1/messages`` parsed and rendered.

Parsing is strict, as Anthropic's is: problems become :class:`InvalidRequest` (or
:class:`UnsupportedParameter`) with a pydantic-style message prefixed by the dotted path, which is
also the error's ``param`` (``messages.1.content.0.source``). A user turn holding ``tool_result``
blocks becomes canonical ``tool`` messages followed by a ``user`` message for what else it holds.

Decisions, so clients know what to expect:

- ``thinking``: ``enabled`` maps its ``budget_tokens`` onto ``reasoning_effort`` (< 4096 low,
  < 16384 medium, else high); ``disabled``, ``adaptive`` and ``between_tools`` leave it unset.
  ``output_config.effort`` sets ``reasoning_effort`` directly and wins; ``output_config.format``
  becomes a ``json_schema`` response format.
- ``thinking`` / ``redacted_thinking`` blocks in assistant history are dropped (they are the
  model's own earlier reasoning and canonical messages cannot carry them).
- Rejected with ``unsupported_parameter``: server tools (any tool ``type`` other than ``custom``),
  ``document``, ``search_result`` and server-tool result blocks, ``file`` image sources,
  ``container``, ``mcp_servers``, ``context_management``, ``diagnostics``, ``inference_geo``,
  ``speed: fast``, ``user_profile_id``, ``workspace_id``, tool ``allowed_callers`` /
  ``defer_loading``, image ``transformations``.
- Accepted and ignored: ``cache_control`` (everywhere), ``citations`` on text blocks,
  ``service_tier``, tool ``eager_input_streaming`` and ``input_examples``.
- ``stop_reason: stop_sequence`` is never produced: canonical results do not say which sequence
  matched, so a stop on a sequence is reported as ``end_turn``.
- A ``content_filter`` finish, or an answer carrying a refusal, is ``stop_reason: refusal``; a
  refusal without text is rendered as the answer's text block.

Usage::

    request = parse_messages_request(orjson.loads(body))
    body = render_message_response(response, model=request.model)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from switchboard.errors import InvalidRequest, SwitchboardError, UnsupportedParameter
from switchboard.ingress.short import text_turns
from switchboard.ingress.sse import sse_frame
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
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
    ToolSpec,
    Usage,
)
from switchboard.schemas.ids import new_id

__all__ = [
    "AnthropicStreamEncoder",
    "parse_count_tokens_request",
    "parse_messages_request",
    "render_error",
    "render_message_response",
]

JSONObject = dict[str, Any]
_T = TypeVar("_T")

_TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")

_REQUEST_KEYS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config",
        "service_tier", "cache_control", "container", "mcp_servers", "context_management",
        "diagnostics", "inference_geo", "speed", "user_profile_id", "workspace_id",
    }
)  # fmt: skip
_UNSUPPORTED_KEYS = {
    "container": "Containers are not supported.",
    "mcp_servers": "MCP servers are not supported.",
    "context_management": "Context management is not supported.",
    "diagnostics": "Diagnostics are not supported.",
    "inference_geo": "Choosing the inference region is not supported.",
    "user_profile_id": "User profiles are not supported.",
    "workspace_id": "Workspaces are not supported.",
}
_TEXT_KEYS = frozenset({"type", "text", "cache_control", "citations"})
_UNSUPPORTED_BLOCKS = frozenset(
    {
        "document", "search_result", "server_tool_use", "web_search_tool_result",
        "web_fetch_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result", "tool_search_tool_result", "mcp_tool_use",
        "mcp_tool_result", "container_upload", "tool_reference",
    }
)  # fmt: skip


# --- validation primitives -------------------------------------------------------------------


def _error(path: str, detail: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {detail}", param=path)


def _unsupported(path: str, detail: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"{path}: {detail}", param=path)


def _obj(value: object, path: str) -> JSONObject:
    if not isinstance(value, dict):
        raise _error(path, "Input should be a valid dictionary")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _error(path, "Input should be a valid list")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _error(path, "Input should be a valid string")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _error(path, "Input should be a valid boolean")
    return value


def _int(value: object, path: str, lo: int, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(path, "Input should be a valid integer")
    if value < lo:
        raise _error(path, f"Input should be greater than or equal to {lo}")
    if value > hi:
        raise _error(path, f"Input should be less than or equal to {hi}")
    return value


def _num(value: object, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(path, "Input should be a valid number")
    number = float(value)
    if not lo <= number <= hi:  # also refuses NaN
        raise _error(path, f"Input should be between {lo:g} and {hi:g}")
    return number


def _literal(value: object, path: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
        raise _error(
            path, f"Input should be {choices}" if len(allowed) > 1 else f"Input should be '{allowed[0]}'"
        )
    return value


def _required(obj: JSONObject, key: str, path: str) -> Any:
    if key not in obj:
        raise _error(path, "Field required")
    return obj[key]


def _opt(obj: JSONObject, key: str, convert: Callable[[Any, str], _T], parent: str = "") -> _T | None:
    """``convert(value, path)`` when the key is present and not null; else None."""
    value = obj.get(key)
    if value is None:
        return None
    return convert(value, f"{parent}.{key}" if parent else key)


def _known_keys(obj: JSONObject, allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _error(f"{path}.{key}", "Extra inputs are not permitted")


def _block_type(obj: JSONObject, path: str) -> str:
    return _str(_required(obj, "type", f"{path}.type"), f"{path}.type")


# --- request --------------------------------------------------------------------------------------


def parse_messages_request(body: object) -> ChatRequest:
    """Validate a decoded ``POST /v1/messages`` body and build the canonical request."""
    if type(body) is dict and _SHORT_KEYS.issuperset(body):
        request = _short_messages(body)
        if request is not None:
            return request
    return _parse_messages(body)


def parse_count_tokens_request(body: object) -> ChatRequest:
    """Validate a decoded ``POST /v1/messages/count_tokens`` body — a Messages request whose ``max_tokens`` may be
    left out — and build the canonical request whose tokens are counted."""
    if isinstance(body, dict) and "max_tokens" not in body:
        body = {**body, "max_tokens": _INT64_MAX}  # what it limits is the answer, which is not counted
    return parse_messages_request(body)


# The common shape: text turns, a text system prompt, and a few plain parameters.
_SHORT_KEYS = frozenset({"model", "max_tokens", "messages", "system", "stream", "temperature", "metadata"})
_SHORT_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant"}
_METADATA_KEYS = frozenset({"user_id"})
_INT64_MAX = 2**63 - 1


def _short_messages(body: dict[str, Any]) -> ChatRequest | None:
    """The request of a valid body of the common shape, built in one pass; ``None`` for any other body, which
    then goes the full way (that also finds what is wrong with an invalid one)."""
    model = body.get("model")
    max_tokens = body.get("max_tokens")
    items = body.get("messages")
    if (type(model) is not str or not model or type(max_tokens) is not int or not 1 <= max_tokens <= _INT64_MAX
            or type(items) is not list or not items):
        return None
    system = body.get("system")
    if system is None or system == "":
        messages: list[Message] = []
    elif type(system) is str:
        messages = [Message("system", [TextPart(system)])]
    else:
        return None
    if not text_turns(items, _SHORT_ROLES, messages):
        return None
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        return None
    temperature = body.get("temperature")
    if temperature is not None:
        if type(temperature) is not float and type(temperature) is not int:
            return None
        temperature = float(temperature)
        if not 0.0 <= temperature <= 1.0:  # NaN too
            return None
    user = None
    metadata = body.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict or not _METADATA_KEYS.issuperset(metadata):
            return None
        user = metadata.get("user_id")
        if user is not None and type(user) is not str:
            return None
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens, temperature=temperature,
                       stream=bool(stream), user=user)


def _parse_messages(body: object) -> ChatRequest:
    """``parse_messages_request`` the full way: every field, and an error naming the first bad one."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key in body:
        if key not in _REQUEST_KEYS:
            raise _error(str(key), "Extra inputs are not permitted")
    _reject_unsupported(body)
    model = _str(_required(body, "model", "model"), "model")
    if not model:
        raise _error("model", "String should have at least 1 character")
    max_tokens = _int(_required(body, "max_tokens", "max_tokens"), "max_tokens", 1)
    tools = _tools(body.get("tools"))
    tool_choice, parallel = _tool_choice(body.get("tool_choice"), tools)
    effort, response_format = _output_config(body.get("output_config"))
    thinking_effort = _thinking(body.get("thinking"), max_tokens)
    return ChatRequest(
        model=model,
        messages=_system(body.get("system")) + _messages(_required(body, "messages", "messages")),
        max_tokens=max_tokens,
        temperature=_opt(body, "temperature", lambda v, p: _num(v, p, 0.0, 1.0)),
        top_p=_opt(body, "top_p", lambda v, p: _num(v, p, 0.0, 1.0)),
        top_k=_opt(body, "top_k", lambda v, p: _int(v, p, 0)),
        stop=[
            _str(s, f"stop_sequences.{i}") for i, s in enumerate(_opt(body, "stop_sequences", _list) or [])
        ],
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        stream=bool(_opt(body, "stream", _bool)),
        user=_metadata_user(body.get("metadata")),
        reasoning_effort=effort or thinking_effort,
    )


def _reject_unsupported(body: JSONObject) -> None:
    for key, detail in _UNSUPPORTED_KEYS.items():
        if body.get(key) is not None:
            raise _unsupported(key, detail)
    if _opt(body, "speed", lambda v, p: _literal(v, p, ("standard", "fast"))) == "fast":
        raise _unsupported("speed", "Fast mode is not supported.")
    _opt(body, "service_tier", _str)  # ignored
    _opt(body, "cache_control", _obj)  # ignored


def _metadata_user(value: object) -> str | None:
    if value is None:
        return None
    obj = _obj(value, "metadata")
    _known_keys(obj, _METADATA_KEYS, "metadata")
    return _opt(obj, "user_id", _str, "metadata")


def _thinking(value: object, max_tokens: int) -> str | None:
    if value is None:
        return None
    obj = _obj(value, "thinking")
    kind = _literal(
        _required(obj, "type", "thinking.type"),
        "thinking.type",
        ("enabled", "disabled", "adaptive", "between_tools"),
    )
    if kind in ("disabled", "between_tools"):
        _known_keys(obj, frozenset({"type"}), "thinking")
        return None
    _known_keys(
        obj, frozenset({"type", "display"} | ({"budget_tokens"} if kind == "enabled" else set())), "thinking"
    )
    _opt(obj, "display", lambda v, p: _literal(v, p, ("summarized", "omitted")), "thinking")
    if kind == "adaptive":
        return None
    budget = _int(_required(obj, "budget_tokens", "thinking.budget_tokens"), "thinking.budget_tokens", 1024)
    if budget >= max_tokens:
        raise _error("max_tokens", "`max_tokens` must be greater than `thinking.budget_tokens`")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _output_config(value: object) -> tuple[str | None, ResponseFormat | None]:
    if value is None:
        return None, None
    obj = _obj(value, "output_config")
    _known_keys(obj, frozenset({"effort", "format"}), "output_config")
    effort = _opt(obj, "effort", lambda v, p: _literal(v, p, _EFFORTS), "output_config")
    fmt = obj.get("format")
    if fmt is None:
        return effort, None
    fmt = _obj(fmt, "output_config.format")
    _known_keys(fmt, frozenset({"type", "schema"}), "output_config.format")
    _literal(
        _required(fmt, "type", "output_config.format.type"), "output_config.format.type", ("json_schema",)
    )
    schema = _obj(_required(fmt, "schema", "output_config.format.schema"), "output_config.format.schema")
    return effort, ResponseFormat("json_schema", schema=schema)


def _system(value: object) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message("system", [TextPart(value)])] if value else []
    parts: list[ContentPart] = []
    for i, item in enumerate(_list(value, "system")):
        path = f"system.{i}"
        block = _obj(item, path)
        _literal(_block_type(block, path), f"{path}.type", ("text",))
        parts.append(_text_block(block, path))
    return [Message("system", parts)] if parts else []


def _text_block(block: JSONObject, path: str) -> TextPart:
    _known_keys(block, _TEXT_KEYS, path)
    return TextPart(_str(_required(block, "text", f"{path}.text"), f"{path}.text"))


# --- messages -------------------------------------------------------------------------------------


def _messages(value: object) -> list[Message]:
    items = _list(value, "messages")
    if not items:
        raise _error("messages", "List should have at least 1 item after validation, not 0")
    tool_names: dict[str, str] = {}  # tool_use id -> tool name, to name tool results
    out: list[Message] = []
    for i, item in enumerate(items):
        path = f"messages.{i}"
        obj = _obj(item, path)
        _known_keys(obj, frozenset({"role", "content"}), path)
        role = _literal(_required(obj, "role", f"{path}.role"), f"{path}.role", ("user", "assistant"))
        content = _required(obj, "content", f"{path}.content")
        if role == "assistant":
            message = _assistant(content, f"{path}.content")
            tool_names.update((call.id, call.name) for call in message.tool_calls)
            out.append(message)
        else:
            out.extend(_user(content, f"{path}.content", tool_names))
    return out


def _blocks(value: object, path: str) -> list[JSONObject]:
    items = _list(value, path)
    if not items:
        raise _error(path, "List should have at least 1 item after validation, not 0")
    return [_obj(item, f"{path}.{j}") for j, item in enumerate(items)]


def _user(value: object, path: str, tool_names: dict[str, str]) -> list[Message]:
    if isinstance(value, str):
        return [Message("user", [TextPart(value)])]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(_blocks(value, path)):
        block_path = f"{path}.{j}"
        kind = _block_type(block, block_path)
        if kind == "text":
            parts.append(_text_block(block, block_path))
        elif kind == "image":
            parts.append(_image_block(block, block_path))
        elif kind == "tool_result":
            results.append(_tool_result(block, block_path, tool_names))
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise _error(f"{block_path}.type", f"'{kind}' blocks are only allowed in assistant messages")
        else:
            raise _unknown_block(kind, block_path)
    return results + ([Message("user", parts)] if parts else [])


def _assistant(value: object, path: str) -> Message:
    if isinstance(value, str):
        return Message("assistant", [TextPart(value)])
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(_blocks(value, path)):
        block_path = f"{path}.{j}"
        kind = _block_type(block, block_path)
        if kind == "text":
            parts.append(_text_block(block, block_path))
        elif kind == "tool_use":
            calls.append(_tool_use(block, block_path))
        elif kind == "thinking":
            _known_keys(block, frozenset({"type", "thinking", "signature"}), block_path)
            _str(_required(block, "thinking", f"{block_path}.thinking"), f"{block_path}.thinking")
        elif kind == "redacted_thinking":
            _known_keys(block, frozenset({"type", "data"}), block_path)
            _str(_required(block, "data", f"{block_path}.data"), f"{block_path}.data")
        elif kind in ("image", "tool_result"):
            raise _error(f"{block_path}.type", f"'{kind}' blocks are only allowed in user messages")
        else:
            raise _unknown_block(kind, block_path)
    return Message("assistant", parts, tool_calls=calls)


def _unknown_block(kind: str, path: str) -> InvalidRequest:
    if kind in _UNSUPPORTED_BLOCKS:
        return _unsupported(path, f"'{kind}' blocks are not supported.")
    return _error(
        f"{path}.type", f"Input tag '{kind}' found using 'type' does not match any of the expected tags"
    )


def _tool_use(block: JSONObject, path: str) -> ToolCall:
    _known_keys(block, frozenset({"type", "id", "name", "input", "cache_control", "caller"}), path)
    call_id = _str(_required(block, "id", f"{path}.id"), f"{path}.id")
    name = _str(_required(block, "name", f"{path}.name"), f"{path}.name")
    arguments = _obj(_required(block, "input", f"{path}.input"), f"{path}.input")
    try:
        text = orjson.dumps(arguments).decode()
    except orjson.JSONEncodeError as exc:
        raise _error(f"{path}.input", f"Input could not be serialized as JSON: {exc}") from None
    return ToolCall(call_id, name, text)


def _tool_result(block: JSONObject, path: str, tool_names: dict[str, str]) -> Message:
    _known_keys(block, frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}), path)
    call_id = _str(_required(block, "tool_use_id", f"{path}.tool_use_id"), f"{path}.tool_use_id")
    is_error = bool(_opt(block, "is_error", _bool, path))
    raw = block.get("content")
    content: list[ContentPart] = []
    if isinstance(raw, str):
        content = [TextPart(raw)]
    elif raw is not None:
        for k, item in enumerate(_list(raw, f"{path}.content")):
            item_path = f"{path}.content.{k}"
            part = _obj(item, item_path)
            kind = _block_type(part, item_path)
            if kind == "text":
                content.append(_text_block(part, item_path))
            elif kind == "image":
                content.append(_image_block(part, item_path))
            else:
                raise _unknown_block(kind, item_path)
    return Message("tool", content, tool_call_id=call_id, name=tool_names.get(call_id), is_error=is_error)


def _image_block(block: JSONObject, path: str) -> ImagePart:
    _known_keys(block, frozenset({"type", "source", "cache_control", "transformations"}), path)
    if block.get("transformations") is not None:
        raise _unsupported(f"{path}.transformations", "Image transformations are not supported.")
    source_path = f"{path}.source"
    source = _obj(_required(block, "source", source_path), source_path)
    kind = _block_type(source, source_path)
    if kind == "base64":
        _known_keys(source, frozenset({"type", "media_type", "data"}), source_path)
        media_type = _literal(
            _required(source, "media_type", f"{source_path}.media_type"),
            f"{source_path}.media_type",
            _IMAGE_TYPES,
        )
        data = _str(_required(source, "data", f"{source_path}.data"), f"{source_path}.data")
        if not data:
            raise _error(f"{source_path}.data", "String should have at least 1 character")
        return ImagePart(f"data:{media_type};base64,{data}", media_type=media_type)
    if kind == "url":
        _known_keys(source, frozenset({"type", "url"}), source_path)
        url = _str(_required(source, "url", f"{source_path}.url"), f"{source_path}.url")
        if not url.startswith(("https://", "http://")):
            raise _error(f"{source_path}.url", "URL must use http or https")
        return ImagePart(url)
    if kind == "file":
        raise _unsupported(source_path, "File image sources are not supported.")
    raise _error(f"{source_path}.type", "Input should be 'base64' or 'url'")


# --- tools ----------------------------------------------------------------------------------------


_TOOL_KEYS = frozenset(
    {
        "type", "name", "description", "input_schema", "cache_control", "strict",
        "eager_input_streaming", "input_examples", "allowed_callers", "defer_loading",
    }
)  # fmt: skip


def _tools(value: object) -> list[ToolSpec]:
    if value is None:
        return []
    out: list[ToolSpec] = []
    for k, item in enumerate(_list(value, "tools")):
        path = f"tools.{k}"
        obj = _obj(item, path)
        kind = _opt(obj, "type", _str, path)
        if kind not in (None, "custom"):
            raise _unsupported(f"{path}.type", f"Server tool '{kind}' is not supported.")
        _known_keys(obj, _TOOL_KEYS, path)
        for key in ("allowed_callers", "defer_loading"):
            if obj.get(key) is not None:
                raise _unsupported(f"{path}.{key}", f"'{key}' is not supported.")
        _opt(obj, "eager_input_streaming", _bool, path)  # ignored
        _opt(obj, "input_examples", _list, path)  # ignored
        name = _str(_required(obj, "name", f"{path}.name"), f"{path}.name")
        if not _TOOL_NAME_RE.fullmatch(name):
            raise _error(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
        if any(tool.name == name for tool in out):
            raise _error("tools", f"Tool names must be unique; '{name}' is repeated")
        schema = _obj(_required(obj, "input_schema", f"{path}.input_schema"), f"{path}.input_schema")
        description = _opt(obj, "description", _str, path)
        out.append(ToolSpec(name, description, schema, strict=_opt(obj, "strict", _bool, path)))
    return out


def _tool_choice(value: object, tools: list[ToolSpec]) -> tuple[ToolChoice | None, bool | None]:
    """The choice and ``parallel_tool_calls`` (False when ``disable_parallel_tool_use`` is set)."""
    if value is None:
        return None, None
    obj = _obj(value, "tool_choice")
    kind = _literal(
        _required(obj, "type", "tool_choice.type"), "tool_choice.type", ("auto", "any", "tool", "none")
    )
    allowed = (
        {"type"}
        | ({"name"} if kind == "tool" else set())
        | (set() if kind == "none" else {"disable_parallel_tool_use"})
    )
    _known_keys(obj, frozenset(allowed), "tool_choice")
    disable = _opt(obj, "disable_parallel_tool_use", _bool, "tool_choice")
    parallel = None if disable is None else not disable
    if kind == "none":
        return ToolChoice("none"), parallel
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        return ToolChoice("required"), parallel
    name = _str(_required(obj, "name", "tool_choice.name"), "tool_choice.name")
    if not any(tool.name == name for tool in tools):
        raise _error("tool_choice.name", f"Tool '{name}' not found in 'tools'")
    return ToolChoice("tool", name), parallel


# --- rendering ------------------------------------------------------------------------------------


_STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _stop_reason(reason: FinishReason | None, had_tools: bool) -> str:
    if reason is None:
        return "tool_use" if had_tools else "end_turn"
    return _STOP_REASONS[reason]


def _tool_input(arguments: str) -> JSONObject:
    """The parsed ``input`` of a tool call; arguments that are not a JSON object are kept as ``_raw``."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _render_usage(usage: Usage) -> JSONObject:
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(0, uncached),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def render_message_response(resp: ChatResponse, *, model: str) -> JSONObject:
    """A ``message`` object from choice 0 (Anthropic has no ``n``); ``model`` is the client's name."""
    content: list[JSONObject] = []
    reason: FinishReason | None = None
    calls: list[ToolCall] = []
    if resp.choices:
        choice = resp.choices[0]
        message = choice.message
        reason = choice.finish_reason
        calls = message.tool_calls
        # A refusal without text is shown as the text: Anthropic has no other place for the why.
        text = message.text() or message.refusal or ""
        if text or not calls:
            content.append({"type": "text", "text": text})
        if message.refusal is not None and reason in (None, "stop"):
            reason = "content_filter"  # OpenAI ends a refusal with "stop"; Anthropic says "refusal"
    content.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)} for c in calls
    )
    return {
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reason, bool(calls)),
        "stop_sequence": None,
        "usage": _render_usage(resp.usage),
    }


def render_error(err: SwitchboardError) -> JSONObject:
    """``{"type": "error", "error": {"type", "message"}}``, as Anthropic sends it."""
    return {"type": "error", "error": {"type": err.anthropic_type, "message": err.message}}


# --- streaming ------------------------------------------------------------------------------------


class AnthropicStreamEncoder:
    """Turns canonical stream events into Messages SSE frames, in the documented order.

    ``message_start`` → per block ``content_block_start``, ``content_block_delta``\\*,
    ``content_block_stop`` → ``message_delta`` → ``message_stop``. The finish is held until
    :meth:`done` because usage may arrive after it. Events for choices other than 0 are ignored.

    Usage::

        enc = AnthropicStreamEncoder("claude-fast")
        for event in events:
            yield enc.encode(event)
        yield enc.done()
    """

    __slots__ = (
        "_block", "_block_kind", "_done", "_had_tools", "_id", "_model", "_next_block", "_reason",
        "_started", "_tool_blocks", "_usage",
    )  # fmt: skip

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = new_id("msg_")
        self._started = False
        self._done = False
        self._block: int | None = None  # index of the open content block
        self._block_kind = ""
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # canonical tool-call index -> block index
        self._had_tools = False
        self._reason: FinishReason | None = None
        self._usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        """The frame(s) for one event; ``b""`` when the event produces none."""
        if isinstance(event, TextDelta):
            if event.choice != 0 or not event.text:
                return b""
            out = self._start()
            if self._block_kind != "text":
                out += self._open_block({"type": "text", "text": ""}, "text")
            return out + self._block_delta(self._block, {"type": "text_delta", "text": event.text})
        if isinstance(event, ToolCallDelta):
            block = self._tool_blocks.get(event.index)
            if event.choice != 0 or block is None or not event.arguments:
                return b""
            # Deltas go to their tool's block even if it is no longer the open one: the SDK
            # accumulates by index, and upstreams stream one call after the other anyway.
            return self._block_delta(block, {"type": "input_json_delta", "partial_json": event.arguments})
        if isinstance(event, ToolCallStart):
            if event.choice != 0:
                return b""
            self._had_tools = True
            out = self._start()
            out += self._open_block(
                {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}, "tool"
            )
            self._tool_blocks[event.index] = self._next_block - 1
            return out
        if isinstance(event, StreamFinish):
            if event.choice != 0:
                return b""
            self._reason = event.reason
            return self._start() + self._close_block()
        if isinstance(event, StreamUsage):
            self._usage = event.usage
            return b""
        if isinstance(event, StreamStart):
            if not self._started:
                self._id = event.id or self._id
            return self._start()
        return b""

    def done(self) -> bytes:
        """The end of a complete stream: close the open block, ``message_delta``, ``message_stop``."""
        if self._done:
            return b""
        self._done = True
        out = self._start() + self._close_block()
        usage: JSONObject = {"output_tokens": 0}
        if self._usage is not None:
            usage = _render_usage(self._usage)
        delta = {"stop_reason": _stop_reason(self._reason, self._had_tools), "stop_sequence": None}
        out += sse_frame({"type": "message_delta", "delta": delta, "usage": usage}, event="message_delta")
        return out + sse_frame({"type": "message_stop"}, event="message_stop")

    def error(self, err: SwitchboardError) -> bytes:
        """An ``error`` event that aborts the stream."""
        return sse_frame(render_error(err), event="error")

    def ping(self) -> bytes:
        """A keep-alive ``ping`` event, valid at any point of the stream."""
        return sse_frame({"type": "ping"}, event="ping")

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        input_tokens = _render_usage(self._usage)["input_tokens"] if self._usage is not None else 0
        message: JSONObject = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return sse_frame({"type": "message_start", "message": message}, event="message_start")

    def _open_block(self, block: JSONObject, kind: str) -> bytes:
        out = self._close_block()
        self._block = self._next_block
        self._block_kind = kind
        self._next_block += 1
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + sse_frame(start, event="content_block_start")

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        frame = sse_frame({"type": "content_block_stop", "index": self._block}, event="content_block_stop")
        self._block = None
        self._block_kind = ""
        return frame

    def _block_delta(self, index: int | None, delta: JSONObject) -> bytes:
        frame = {"type": "content_block_delta", "index": index, "delta": delta}
        return sse_frame(frame, event="content_block_delta")
