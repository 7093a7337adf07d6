"""The OpenAI dialect: Chat Completions, Embeddings and Models, parsed and rendered.

Parsing is strict, as OpenAI's is: every problem becomes an :class:`InvalidRequest` (or
:class:`UnsupportedParameter`) whose ``param`` is the exact path in OpenAI's style, e.g.
``messages[2].content[0].image_url``. Rendering produces objects that validate against OpenAI's
published schemas. Nothing here does I/O.

Decisions, so clients know what to expect:

- Rejected with ``unsupported_parameter``: ``functions`` / ``function_call`` (legacy; use ``tools``
  and ``tool_choice`` — translating them would also require legacy-shaped responses), ``role:
  function`` messages, ``logprobs: true``, ``top_logprobs``, ``audio``, ``modalities`` other than
  text, ``prediction``, ``web_search_options``, ``verbosity``, ``moderation``, ``input_audio`` and
  ``file`` content parts, custom tools and ``allowed_tools`` tool choices.
- Accepted and ignored: ``store``, ``service_tier``, ``prompt_cache_key``,
  ``prompt_cache_retention``, ``prompt_cache_options``, ``stream_options.include_obfuscation``,
  assistant ``annotations``. ``safety_identifier`` stands in for ``user`` when ``user`` is absent.
- ``max_completion_tokens`` wins over ``max_tokens`` when both are given.
- A refusal is rendered as ``message.refusal`` (``content`` null when there is no text). Streams
  carry it as ``content`` pieces, with ``finish_reason: content_filter``.

Usage::

    request = parse_chat_request(orjson.loads(body))
    body = render_chat_response(response, model=request.model)
"""

from __future__ import annotations

import array
import base64
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import orjson

from switchboard.errors import InvalidRequest, SwitchboardError, UnsupportedParameter
from switchboard.ingress.short import text_turns
from switchboard.ingress.sse import DONE_FRAME, sse_frame
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
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
    "OpenAIStreamEncoder",
    "parse_chat_request",
    "parse_embedding_request",
    "render_chat_response",
    "render_embedding_response",
    "render_error",
    "render_models",
]

JSONObject = dict[str, Any]
_T = TypeVar("_T")

_INT64_MAX = 2**63 - 1
_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MAX_STOP = 4
_MAX_N = 128
_MAX_METADATA_KEYS = 16
_MAX_EMBEDDING_INPUTS = 2048
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_IMAGE_DETAILS = ("auto", "low", "high")

_CHAT_KEYS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
        "stop", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format", "stream",
        "stream_options", "user", "safety_identifier", "metadata", "presence_penalty",
        "frequency_penalty", "logit_bias", "reasoning_effort", "logprobs", "top_logprobs",
        "functions", "function_call", "store", "service_tier", "modalities", "prediction", "audio",
        "web_search_options", "verbosity", "moderation", "prompt_cache_key",
        "prompt_cache_retention", "prompt_cache_options",
    }
)  # fmt: skip
# Recognised but refused whenever they are not null.
_UNSUPPORTED_CHAT = {
    "functions": "'functions' is deprecated and not supported; use 'tools'.",
    "function_call": "'function_call' is deprecated and not supported; use 'tool_choice'.",
    "top_logprobs": "Log probabilities are not supported.",
    "audio": "Audio output is not supported.",
    "prediction": "Predicted outputs are not supported.",
    "web_search_options": "Web search is not supported.",
    "verbosity": "'verbosity' is not supported.",
    "moderation": "Moderated completions are not supported.",
}
# The keys whose presence needs a check of its own; a body with none of them skips those checks.
_REFUSABLE = frozenset({*_UNSUPPORTED_CHAT, "logprobs", "modalities"})
_IGNORED = frozenset({"store", "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options"})
_MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "tool_calls", "refusal", "function_call", "audio", "annotations"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_EMPTY_ARRAY = "empty array. Expected an array with minimum length 1, but got an empty array instead."
_TEXT_ONLY = frozenset({"text"})
_USER_PARTS = frozenset({"text", "image_url"})
_ASSISTANT_PARTS = frozenset({"text", "refusal"})


# --- validation primitives -------------------------------------------------------------------


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _type_error(path: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{path}': expected {expected}, but got {_describe(value)} instead.", param=path
    )


def _invalid(path: str, detail: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{path}': {detail}", param=path)


def _unsupported(path: str, detail: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"Unsupported parameter: '{path}'. {detail}", param=path)


def _obj(value: object, path: str) -> JSONObject:
    if not isinstance(value, dict):
        raise _type_error(path, "an object", value)
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _type_error(path, "an array", value)
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _type_error(path, "a string", value)
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(path, "a boolean", value)
    return value


def _int(value: object, path: str, lo: int, hi: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(path, "an integer", value)
    if value < lo:
        raise _invalid(path, f"integer below minimum value. Expected a value >= {lo}, but got {value}.")
    if value > hi:
        raise _invalid(path, f"integer above maximum value. Expected a value <= {hi}, but got {value}.")
    return value


def _num(value: object, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(path, "a number", value)
    number = float(value)
    if math.isnan(number) or number < lo:
        raise _invalid(path, f"number below minimum value. Expected a value >= {lo:g}, but got {value}.")
    if number > hi:
        raise _invalid(path, f"number above maximum value. Expected a value <= {hi:g}, but got {value}.")
    return number


def _one_of(value: object, path: str, allowed: tuple[str, ...]) -> str:
    text = _str(value, path)
    if text not in allowed:
        raise _one_of_error(path, text, allowed)
    return text


def _required(obj: JSONObject, key: str, path: str) -> Any:
    if key not in obj:
        raise InvalidRequest(f"Missing required parameter: '{path}'.", param=path)
    return obj[key]


def _known_keys(obj: JSONObject, allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidRequest(f"Unrecognized parameter: '{path}.{key}'.", param=f"{path}.{key}")


def _name(value: object, path: str) -> str:
    name = _str(value, path)
    if not _NAME_RE.fullmatch(name):
        raise _invalid(
            path, f"'{name}' does not match '^[a-zA-Z0-9_-]{{1,64}}$' - letters, digits, '_' and '-' only."
        )
    return name


# --- chat request ------------------------------------------------------------------------------


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a decoded ``POST /v1/chat/completions`` body and build the canonical request."""
    if type(body) is dict and _SHORT_KEYS.issuperset(body):
        request = _short_chat(body)
        if request is not None:
            return request
    return _parse_chat(body)


# The common shape: text messages of system, developer and user turns, and a few plain parameters.
_SHORT_KEYS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stream", "temperature", "user"})
_SHORT_ROLES: dict[str, Role] = {"user": "user", "system": "system", "developer": "system"}


def _short_chat(body: dict[str, Any]) -> ChatRequest | None:
    """The request of a valid body of the common shape, built in one pass; ``None`` for any other body, which
    then goes the full way (that also finds what is wrong with an invalid one)."""
    model = body.get("model")
    items = body.get("messages")
    if type(model) is not str or not model or type(items) is not list or not items:
        return None
    messages: list[Message] = []
    if not text_turns(items, _SHORT_ROLES, messages):
        return None
    legacy = body.get("max_tokens")
    current = body.get("max_completion_tokens")
    for limit in (legacy, current):
        if limit is not None and (type(limit) is not int or not 1 <= limit <= _INT64_MAX):
            return None
    stream = body.get("stream")
    temperature = body.get("temperature")
    user = body.get("user")
    if (stream is not None and type(stream) is not bool) or (user is not None and type(user) is not str):
        return None
    if temperature is not None:
        if type(temperature) is not float and type(temperature) is not int:
            return None
        temperature = float(temperature)
        if not 0.0 <= temperature <= 2.0:  # NaN too
            return None
    return ChatRequest(model=model, messages=messages, max_tokens=current if current is not None else legacy,
                       temperature=temperature, stream=bool(stream), user=user)


def _parse_chat(body: object) -> ChatRequest:
    """``parse_chat_request`` the full way: every field, and an error naming the first bad one."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not _CHAT_KEYS.issuperset(body):
        for key in body:
            if key not in _CHAT_KEYS:
                raise InvalidRequest(f"Unrecognized request argument supplied: {key}", param=str(key))
    if not _REFUSABLE.isdisjoint(body):
        _reject_unsupported(body)
    if not _IGNORED.isdisjoint(body):
        _ignored_params(body)
    model = _str(_required(body, "model", "model"), "model")
    if not model:
        raise _invalid("model", "empty string. Expected a model name.")
    tools = _tools(body.get("tools"))
    stream, include_usage = _stream(body)
    user = _opt(body, "user", _str)
    return ChatRequest(
        model=model,
        messages=_messages(_required(body, "messages", "messages")),
        max_tokens=_max_tokens(body),
        temperature=_opt_num(body, "temperature", 0.0, 2.0),
        top_p=_opt_num(body, "top_p", 0.0, 1.0),
        stop=_stop(body.get("stop")),
        seed=_opt(body, "seed", _seed),
        n=_opt(body, "n", _n) or 1,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=_opt(body, "parallel_tool_calls", _bool),
        response_format=_response_format(body.get("response_format")),
        stream=stream,
        include_usage=include_usage,
        user=user if user is not None else _opt(body, "safety_identifier", _str),
        metadata=_metadata(body.get("metadata")),
        presence_penalty=_opt_num(body, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_opt_num(body, "frequency_penalty", -2.0, 2.0),
        logit_bias=_logit_bias(body.get("logit_bias")),
        reasoning_effort=_opt(body, "reasoning_effort", _reasoning_effort),
    )


def _seed(value: Any, path: str) -> int:
    return _int(value, path, -_INT64_MAX - 1)


def _n(value: Any, path: str) -> int:
    return _int(value, path, 1, _MAX_N)


def _reasoning_effort(value: Any, path: str) -> str:
    return _one_of(value, path, _REASONING_EFFORTS)


def _positive(value: Any, path: str) -> int:
    return _int(value, path, 1)


def _opt(obj: JSONObject, key: str, convert: Callable[[Any, str], _T], parent: str = "") -> _T | None:
    """``convert(value, path)`` when the key is present and not null; else None."""
    value = obj.get(key)
    if value is None:
        return None
    return convert(value, f"{parent}.{key}" if parent else key)


def _opt_num(body: JSONObject, key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    return None if value is None else _num(value, key, lo, hi)


def _reject_unsupported(body: JSONObject) -> None:
    for key, detail in _UNSUPPORTED_CHAT.items():
        if body.get(key) is not None:
            raise _unsupported(key, detail)
    if body.get("logprobs") is not None and _bool(body["logprobs"], "logprobs"):
        raise _unsupported("logprobs", "Log probabilities are not supported.")
    modalities = body.get("modalities")
    if modalities is not None:
        for i, item in enumerate(_list(modalities, "modalities")):
            if _one_of(item, f"modalities[{i}]", ("text", "audio")) == "audio":
                raise _unsupported("modalities", "Audio output is not supported.")


def _ignored_params(body: JSONObject) -> None:
    """Type-check the parameters we accept and ignore, so that garbage is still refused."""
    _opt(body, "store", _bool)
    _opt(body, "service_tier", _str)
    _opt(body, "prompt_cache_key", _str)
    _opt(body, "prompt_cache_retention", _str)
    _opt(body, "prompt_cache_options", _obj)


def _max_tokens(body: JSONObject) -> int | None:
    legacy = _opt(body, "max_tokens", _positive)
    current = _opt(body, "max_completion_tokens", _positive)
    return current if current is not None else legacy


def _stream(body: JSONObject) -> tuple[bool, bool]:
    stream = bool(_opt(body, "stream", _bool))
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    options = _obj(options, "stream_options")
    _known_keys(options, frozenset({"include_usage", "include_obfuscation"}), "stream_options")
    _opt(options, "include_obfuscation", _bool, "stream_options")
    usage = _opt(options, "include_usage", _bool, "stream_options")
    return stream, bool(usage)


def _stop(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _type_error("stop", "a string or an array of strings", value)
    if len(value) > _MAX_STOP:
        raise _invalid("stop", f"array too long. Expected an array with maximum length {_MAX_STOP}.")
    return [_str(item, f"stop[{i}]") for i, item in enumerate(value)]


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    obj = _obj(value, "metadata")
    if len(obj) > _MAX_METADATA_KEYS:
        raise _invalid("metadata", f"too many keys. Expected at most {_MAX_METADATA_KEYS}.")
    out: dict[str, str] = {}
    for key, item in obj.items():
        if len(key) > 64:
            raise _invalid(f"metadata.{key}", "key too long. Expected at most 64 characters.")
        text = _str(item, f"metadata.{key}")
        if len(text) > 512:
            raise _invalid(f"metadata.{key}", "value too long. Expected at most 512 characters.")
        out[key] = text
    return out


def _logit_bias(value: object) -> dict[str, float] | None:
    if value is None:
        return None
    out: dict[str, float] = {}
    for key, bias in _obj(value, "logit_bias").items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise _invalid("logit_bias", f"keys must be token ids (integers as strings), got '{key}'.")
        out[key] = _num(bias, f"logit_bias.{key}", -100.0, 100.0)
    return out


# --- messages -----------------------------------------------------------------------------------


def _messages(value: object) -> list[Message]:
    items = _list(value, "messages")
    if not items:
        raise _invalid("messages", _EMPTY_ARRAY)
    call_names: dict[str, str] = {}  # tool_call_id -> function name, to name tool results
    out: list[Message] = []
    for i, item in enumerate(items):
        message = _message(item, f"messages[{i}]", call_names)
        for call in message.tool_calls:
            call_names[call.id] = call.name
        out.append(message)
    return out


def _message(value: object, path: str, call_names: dict[str, str]) -> Message:
    obj = _obj(value, path)
    role = _str(_required(obj, "role", f"{path}.role"), f"{path}.role")
    if role == "function":
        raise _unsupported(f"{path}.role", "'function' messages are deprecated; use 'tool' messages.")
    if role not in _MESSAGE_KEYS:
        raise _one_of_error(f"{path}.role", role, ("system", "assistant", "user", "tool", "developer"))
    _known_keys(obj, _MESSAGE_KEYS[role], path)
    name = _opt(obj, "name", _str, path)
    content_path = f"{path}.content"
    if role == "assistant":
        return _assistant_message(obj, path, name)
    content = _content(_required(obj, "content", content_path), content_path, _parts_for(role))
    if role == "tool":
        call_id = _str(_required(obj, "tool_call_id", f"{path}.tool_call_id"), f"{path}.tool_call_id")
        return Message("tool", content, tool_call_id=call_id, name=call_names.get(call_id))
    return Message("user" if role == "user" else "system", content, name=name)


def _parts_for(role: str) -> frozenset[str]:
    return _USER_PARTS if role == "user" else _TEXT_ONLY


def _one_of_error(path: str, value: str, allowed: tuple[str, ...]) -> InvalidRequest:
    choices = ", ".join(f"'{a}'" for a in allowed)
    message = f"Invalid value for '{path}': '{value}'. Supported values are: {choices}."
    return InvalidRequest(message, param=path)


def _assistant_message(obj: JSONObject, path: str, name: str | None) -> Message:
    for key in ("function_call", "audio"):
        if obj.get(key) is not None:
            raise _unsupported(f"{path}.{key}", f"Assistant '{key}' is not supported.")
    if obj.get("annotations") is not None:
        _list(obj["annotations"], f"{path}.annotations")
    tool_calls = _tool_calls(obj.get("tool_calls"), f"{path}.tool_calls")
    raw = obj.get("content")
    content: list[ContentPart] = []
    if raw is not None:
        content = _content(raw, f"{path}.content", _ASSISTANT_PARTS, allow_empty=bool(tool_calls))
    elif not tool_calls and obj.get("refusal") is None:
        raise InvalidRequest(
            f"Missing required parameter: '{path}.content' (required unless 'tool_calls' is given).",
            param=f"{path}.content",
        )
    refusal = _opt(obj, "refusal", _str, path)
    if refusal and not content:
        content = [TextPart(refusal)]  # a refusal in history is what the assistant said
    return Message("assistant", content, tool_calls=tool_calls, name=name)


def _content(
    value: object, path: str, allowed: frozenset[str], *, allow_empty: bool = False
) -> list[ContentPart]:
    if isinstance(value, str):
        return [TextPart(value)]
    if not isinstance(value, list):
        raise _type_error(path, "a string or an array of content parts", value)
    if not value and not allow_empty:
        raise _invalid(path, _EMPTY_ARRAY)
    return [_part(item, f"{path}[{j}]", allowed) for j, item in enumerate(value)]


def _part(value: object, path: str, allowed: frozenset[str]) -> ContentPart:
    obj = _obj(value, path)
    kind = _str(_required(obj, "type", f"{path}.type"), f"{path}.type")
    if kind in ("input_audio", "file"):
        raise _unsupported(path, f"'{kind}' content parts are not supported.")
    if kind not in allowed:
        raise _one_of_error(f"{path}.type", kind, tuple(sorted(allowed)))
    if kind == "image_url":
        _known_keys(obj, frozenset({"type", "image_url"}), path)
        return _image_part(_required(obj, "image_url", f"{path}.image_url"), f"{path}.image_url")
    field = "refusal" if kind == "refusal" else "text"
    _known_keys(obj, frozenset({"type", field}), path)
    return TextPart(_str(_required(obj, field, f"{path}.{field}"), f"{path}.{field}"))


def _image_part(value: object, path: str) -> ImagePart:
    obj = _obj(value, path)
    _known_keys(obj, frozenset({"url", "detail"}), path)
    url = _str(_required(obj, "url", f"{path}.url"), f"{path}.url")
    detail = _opt(obj, "detail", lambda v, p: _one_of(v, p, _IMAGE_DETAILS), path)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type = header.split(";", 1)[0]
        if not comma or not data or not header.endswith(";base64") or not media_type.startswith("image/"):
            raise _invalid(f"{path}.url", "expected a base64 data URL like 'data:image/png;base64,...'.")
        return ImagePart(url, media_type=media_type, detail=detail)
    if not url.startswith(("https://", "http://")):
        raise _invalid(f"{path}.url", "expected an http(s) URL or a base64 data URL.")
    return ImagePart(url, detail=detail)


def _tool_calls(value: object, path: str) -> list[ToolCall]:
    if value is None:
        return []
    out: list[ToolCall] = []
    for k, item in enumerate(_list(value, path)):
        item_path = f"{path}[{k}]"
        obj = _obj(item, item_path)
        kind = _str(_required(obj, "type", f"{item_path}.type"), f"{item_path}.type")
        if kind == "custom":
            raise _unsupported(item_path, "Custom tool calls are not supported.")
        if kind != "function":
            raise _one_of_error(f"{item_path}.type", kind, ("function",))
        _known_keys(obj, frozenset({"id", "type", "function"}), item_path)
        call_id = _str(_required(obj, "id", f"{item_path}.id"), f"{item_path}.id")
        fn_path = f"{item_path}.function"
        fn = _obj(_required(obj, "function", fn_path), fn_path)
        _known_keys(fn, frozenset({"name", "arguments"}), fn_path)
        name = _str(_required(fn, "name", f"{fn_path}.name"), f"{fn_path}.name")
        arguments = _str(_required(fn, "arguments", f"{fn_path}.arguments"), f"{fn_path}.arguments")
        out.append(ToolCall(call_id, name, arguments))
    return out


# --- tools and formats --------------------------------------------------------------------------


def _tools(value: object) -> list[ToolSpec]:
    if value is None:
        return []
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for k, item in enumerate(_list(value, "tools")):
        path = f"tools[{k}]"
        obj = _obj(item, path)
        kind = _str(_required(obj, "type", f"{path}.type"), f"{path}.type")
        if kind == "custom":
            raise _unsupported(path, "Custom tools are not supported; use function tools.")
        if kind != "function":
            raise _one_of_error(f"{path}.type", kind, ("function",))
        _known_keys(obj, frozenset({"type", "function"}), path)
        fn_path = f"{path}.function"
        fn = _obj(_required(obj, "function", fn_path), fn_path)
        _known_keys(fn, frozenset({"name", "description", "parameters", "strict"}), fn_path)
        name = _name(_required(fn, "name", f"{fn_path}.name"), f"{fn_path}.name")
        if name in seen:
            raise _invalid(f"{fn_path}.name", f"duplicate function name '{name}'. Tool names must be unique.")
        seen.add(name)
        spec = ToolSpec(
            name,
            description=_opt(fn, "description", _str, fn_path),
            strict=_opt(fn, "strict", _bool, fn_path),
        )
        if fn.get("parameters") is not None:
            spec.parameters = _obj(fn["parameters"], f"{fn_path}.parameters")
        out.append(spec)
    return out


def _tool_choice(value: object, tools: list[ToolSpec]) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        mode = _one_of(value, "tool_choice", ("none", "auto", "required"))
        if mode == "required" and not tools:
            raise _invalid("tool_choice", "'required' is only allowed when 'tools' are specified.")
        return ToolChoice("none" if mode == "none" else "auto" if mode == "auto" else "required")
    if not isinstance(value, dict):
        raise _type_error("tool_choice", "a string or an object", value)
    kind = _str(_required(value, "type", "tool_choice.type"), "tool_choice.type")
    if kind in ("allowed_tools", "custom"):
        raise _unsupported("tool_choice", f"'{kind}' tool choices are not supported.")
    if kind != "function":
        raise _one_of_error("tool_choice.type", kind, ("function",))
    _known_keys(value, frozenset({"type", "function"}), "tool_choice")
    fn = _obj(_required(value, "function", "tool_choice.function"), "tool_choice.function")
    _known_keys(fn, frozenset({"name"}), "tool_choice.function")
    name = _str(_required(fn, "name", "tool_choice.function.name"), "tool_choice.function.name")
    if not any(tool.name == name for tool in tools):
        raise _invalid("tool_choice.function.name", f"no function named '{name}' is declared in 'tools'.")
    return ToolChoice("tool", name)


def _response_format(value: object) -> ResponseFormat | None:
    if value is None:
        return None
    obj = _obj(value, "response_format")
    kinds = ("text", "json_object", "json_schema")
    kind = _one_of(_required(obj, "type", "response_format.type"), "response_format.type", kinds)
    if kind == "text":
        _known_keys(obj, frozenset({"type"}), "response_format")
        return ResponseFormat("text")
    if kind == "json_object":
        _known_keys(obj, frozenset({"type"}), "response_format")
        return ResponseFormat("json_object")
    _known_keys(obj, frozenset({"type", "json_schema"}), "response_format")
    path = "response_format.json_schema"
    spec = _obj(_required(obj, "json_schema", path), path)
    _known_keys(spec, frozenset({"name", "description", "schema", "strict"}), path)
    _opt(spec, "description", _str, path)
    schema = _opt(spec, "schema", _obj, path)
    return ResponseFormat(
        "json_schema",
        schema=schema,
        name=_name(_required(spec, "name", f"{path}.name"), f"{path}.name"),
        strict=_opt(spec, "strict", _bool, path),
    )


# --- embeddings request -------------------------------------------------------------------------


def parse_embedding_request(body: object) -> EmbeddingRequest:
    """Validate a decoded ``POST /v1/embeddings`` body and build the canonical request."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key in body:
        if key not in ("model", "input", "encoding_format", "dimensions", "user"):
            raise InvalidRequest(f"Unrecognized request argument supplied: {key}", param=str(key))
    model = _str(_required(body, "model", "model"), "model")
    if not model:
        raise _invalid("model", "empty string. Expected a model name.")
    fmt = _opt(body, "encoding_format", lambda v, p: _one_of(v, p, ("float", "base64")))
    return EmbeddingRequest(
        model=model,
        inputs=_embedding_inputs(_required(body, "input", "input")),
        dimensions=_opt(body, "dimensions", lambda v, p: _int(v, p, 1)),
        encoding_format="base64" if fmt == "base64" else "float",
        user=_opt(body, "user", _str),
    )


def _embedding_inputs(value: object) -> list[str] | list[list[int]]:
    expected = "a string, an array of strings, an array of integers or an array of integer arrays"
    if isinstance(value, str):
        if not value:
            raise _invalid("input", "empty string. Expected a non-empty string.")
        return [value]
    items = _list(value, "input")
    if not items:
        raise _invalid("input", "empty array. Expected an array with minimum length 1.")
    if len(items) > _MAX_EMBEDDING_INPUTS:
        raise _invalid("input", f"array too long. Expected at most {_MAX_EMBEDDING_INPUTS} inputs.")
    first = items[0]
    if isinstance(first, str):
        texts = [_str(item, f"input[{i}]") for i, item in enumerate(items)]
        for i, text in enumerate(texts):
            if not text:
                raise _invalid(f"input[{i}]", "empty string. Expected a non-empty string.")
        return texts
    if isinstance(first, int) and not isinstance(first, bool):
        return [_token_ids(items, "input")]
    if isinstance(first, list):
        return [_token_ids(_list(item, f"input[{i}]"), f"input[{i}]") for i, item in enumerate(items)]
    raise _type_error("input[0]", expected, first)


def _token_ids(items: list[Any], path: str) -> list[int]:
    if not items:
        raise _invalid(path, "empty array. Expected at least one token id.")
    return [_int(item, f"{path}[{i}]", 0, 2**32 - 1) for i, item in enumerate(items)]


# --- rendering ----------------------------------------------------------------------------------


def render_chat_response(resp: ChatResponse, *, model: str) -> JSONObject:
    """A ``chat.completion`` object; ``model`` is the name the client asked for."""
    return {
        "id": resp.id,
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": model,
        "choices": [_render_choice(choice) for choice in resp.choices],
        "usage": _render_usage(resp.usage),
    }


def _render_choice(choice: Choice) -> JSONObject:
    msg = choice.message
    text = msg.text()
    message: JSONObject = {
        "role": "assistant",
        # OpenAI sends null content beside tool calls or a refusal, "" for an empty answer.
        "content": None if (not text and (msg.tool_calls or msg.refusal)) else text,
        "refusal": msg.refusal,
    }
    if msg.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    return {
        "index": choice.index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish_reason or ("tool_calls" if msg.tool_calls else "stop"),
    }


def _render_usage(usage: Usage) -> JSONObject:
    prompt_details: JSONObject = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def render_embedding_response(resp: EmbeddingResponse, *, model: str, encoding_format: str) -> JSONObject:
    """A ``list`` of ``embedding`` objects; with ``base64`` each vector is little-endian float32 bytes."""
    encode = _base64_vector if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector)}
            for i, vector in enumerate(resp.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.input_tokens},
    }


def _base64_vector(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def render_models(entries: list[tuple[str, str]], created: int) -> JSONObject:
    """The ``GET /v1/models`` list from ``(id, owned_by)`` pairs."""
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": owner}
            for model_id, owner in entries
        ],
    }


def render_error(err: SwitchboardError) -> JSONObject:
    """``{"error": {"message", "type", "param", "code"}}`` — all four keys, as OpenAI sends them."""
    return {"error": {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}}


# --- streaming ----------------------------------------------------------------------------------


#: What follows a text delta's text in its chunk (see ``OpenAIStreamEncoder._text_heads``).
_TEXT_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'


class OpenAIStreamEncoder:
    """Turns canonical stream events into ``chat.completion.chunk`` SSE frames.

    Every chunk carries the id and created time of the ``StreamStart``. Usage is held back until
    every started choice has finished (or the stream is done), and only sent when asked for.

    Usage::

        enc = OpenAIStreamEncoder("fast", include_usage=True)
        for event in events:
            yield enc.encode(event)
        yield enc.done()
    """

    __slots__ = (
        "_created", "_finished", "_id", "_include_usage", "_model", "_started", "_text_heads", "_tool_choices",
        "_usage", "_usage_sent",
    )  # fmt: skip

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = new_id("chatcmpl-")
        self._created = int(time.time())
        self._started: set[int] = set()  # choices whose first delta (with the role) went out
        self._finished: set[int] = set()
        self._tool_choices: set[int] = set()  # choices that made a tool call
        self._usage: Usage | None = None
        self._usage_sent = False
        # Per choice whose role went out: its text chunk's bytes up to the text, which is all that varies.
        self._text_heads: dict[int, bytes] = {}

    def encode(self, event: StreamEvent) -> bytes:
        """The frame(s) for one event; ``b""`` when the event produces none."""
        if type(event) is TextDelta:
            head = self._text_heads.get(event.choice)
            if head is not None:  # the same bytes as the chunk below, rendered once per choice
                return head + orjson.dumps(event.text) + _TEXT_TAIL
            return self._delta(event.choice, {"content": event.text})
        if isinstance(event, ToolCallDelta):
            piece = {"index": event.index, "function": {"arguments": event.arguments}}
            return self._delta(event.choice, {"tool_calls": [piece]})
        if isinstance(event, ToolCallStart):
            self._tool_choices.add(event.choice)
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._delta(event.choice, {"tool_calls": [call]})
        if isinstance(event, StreamFinish):
            return self._finish(event)
        if isinstance(event, StreamUsage):
            self._usage = event.usage
            return self._usage_frame() if self._started <= self._finished and self._started else b""
        if isinstance(event, StreamStart):
            self._id = event.id or self._id
            self._created = event.created or self._created
            self._text_heads.clear()
        return b""

    def done(self) -> bytes:
        """The end of a complete stream: the pending usage chunk (if asked for), then ``[DONE]``."""
        return self._usage_frame() + DONE_FRAME

    def error(self, err: SwitchboardError) -> bytes:
        """An ``error`` event that aborts the stream; the official SDK raises ``APIError`` on it."""
        return sse_frame(render_error(err), event="error")

    def _chunk(self, choices: list[JSONObject], usage: JSONObject | None = None) -> bytes:
        chunk: JSONObject = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return sse_frame(chunk)

    def _delta(self, choice: int, delta: JSONObject) -> bytes:
        if choice not in self._started:
            self._started.add(choice)
            delta = {"role": "assistant", **delta}
        elif choice not in self._text_heads:
            frame = self._chunk([{"index": choice, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}])
            self._text_heads[choice] = frame[: frame.rindex(b'"content":') + 10]
        return self._chunk([{"index": choice, "delta": delta, "logprobs": None, "finish_reason": None}])

    def _finish(self, event: StreamFinish) -> bytes:
        choice = event.choice
        if choice in self._finished:
            return b""
        delta: JSONObject = {}
        if choice not in self._started:
            self._started.add(choice)
            delta = {"role": "assistant", "content": ""}
        self._finished.add(choice)
        reason: Literal["stop", "length", "tool_calls", "content_filter"] = event.reason or (
            "tool_calls" if choice in self._tool_choices else "stop"
        )
        frame = self._chunk([{"index": choice, "delta": delta, "logprobs": None, "finish_reason": reason}])
        if self._usage is not None and self._started <= self._finished:
            frame += self._usage_frame()
        return frame

    def _usage_frame(self) -> bytes:
        if not self._include_usage or self._usage is None or self._usage_sent:
            return b""
        self._usage_sent = True
        return self._chunk([], _render_usage(self._usage))
