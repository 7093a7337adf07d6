"""Response validators: is this answer good enough, or should another model try?

A validator looks at the request and the complete response and returns ``None`` when the answer is
satisfactory, else a short reason (``"empty"``, ``"length"``, ``"invalid_json: …"``). They run after
every response, so each one is cheap and skips requests it has nothing to say about. Built-ins are in
:data:`BUILTIN_VALIDATORS`; :func:`load_validator` also loads a plugin function by
``"package.module:function"``, the same way. A buffered stream is judged by assembling its events
with :func:`response_from_events` first.

Usage::

    validators = [load_validator(spec) for spec in ("non_empty", "json", "mypkg.checks:no_apology")]
    failed = first_failure(validators, request, response)  # None, or ("json", "invalid_json: …")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import orjson

from switchboard.execution.jsonschema import type_name, validate
from switchboard.schemas.canonical import (
    ChatRequest,
    ChatResponse,
    Choice,
    FinishReason,
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

__all__ = [
    "BUILTIN_VALIDATORS",
    "Validator",
    "first_failure",
    "load_validator",
    "response_from_events",
]


class Validator(Protocol):
    """Judges a response: ``None`` if satisfactory, else a short reason. ``name`` is what logs show."""

    name: str

    def __call__(self, request: ChatRequest, response: ChatResponse) -> str | None: ...


@dataclass(slots=True)
class _FunctionValidator:
    """A function as a :class:`Validator`; an exception inside it becomes the reason, never escapes."""

    name: str
    function: Callable[[ChatRequest, ChatResponse], object]

    def __call__(self, request: ChatRequest, response: ChatResponse) -> str | None:
        try:
            reason = self.function(request, response)
        except Exception as exc:  # a plugin's bug must not fail the request; it fails the answer instead
            return f"validator {self.name} failed: {type(exc).__name__}"
        if reason is None or isinstance(reason, str):
            return reason
        return f"validator {self.name} failed: returned {type(reason).__name__}"


def _non_empty(request: ChatRequest, response: ChatResponse) -> str | None:
    """Every choice has text (not just whitespace) or tool calls."""
    if not response.choices:
        return "empty"
    for choice in response.choices:
        if not choice.message.tool_calls and not choice.message.text().strip():
            return "empty"
    return None


def _json(request: ChatRequest, response: ChatResponse) -> str | None:
    """With JSON output requested, each answer is JSON (an object, or matching the schema).

    A choice that called tools without text is skipped: the JSON answer comes on a later turn.
    """
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    for choice in response.choices:
        message = choice.message
        text = message.text()
        if message.tool_calls and not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"invalid_json: {exc.msg} at char {exc.pos}"
        if fmt.type == "json_object" and not isinstance(value, dict):
            return f"invalid_json: expected an object, got {type_name(value)}"
        if fmt.type == "json_schema" and fmt.schema is not None:
            problem = validate(value, fmt.schema)
            if problem is not None:
                return f"schema: {problem}"
    return None


def _tool_arguments(request: ChatRequest, response: ChatResponse) -> str | None:
    """Every tool call names a tool of the request, with a JSON object of arguments matching its schema.

    Empty arguments count as ``{}``: a streamed call to a tool without parameters may have no deltas.
    """
    if not any(choice.message.tool_calls for choice in response.choices):
        return None
    tools = {tool.name: tool for tool in request.tools}
    for choice in response.choices:
        for call in choice.message.tool_calls:
            spec = tools.get(call.name)
            if spec is None:
                return f"tool_arguments: unknown tool {call.name!r}"
            try:
                args = orjson.loads(call.arguments) if call.arguments.strip() else {}
            except orjson.JSONDecodeError as exc:
                return f"tool_arguments: {call.name}: invalid JSON: {exc.msg} at char {exc.pos}"
            if not isinstance(args, dict):
                return f"tool_arguments: {call.name}: expected an object, got {type_name(args)}"
            if spec.parameters:
                problem = validate(args, spec.parameters)
                if problem is not None:
                    return f"tool_arguments: {call.name}: {problem}"
    return None


def _complete(request: ChatRequest, response: ChatResponse) -> str | None:
    """No choice was cut off by the token limit."""
    return "length" if any(c.finish_reason == "length" for c in response.choices) else None


def _refusal(request: ChatRequest, response: ChatResponse) -> str | None:
    """No choice was declined by the model or stopped by a content filter."""
    for choice in response.choices:
        if choice.message.refusal is not None or choice.finish_reason == "content_filter":
            return "refusal"
    return None


#: The built-in validators by name, ready to use.
BUILTIN_VALIDATORS: Mapping[str, Validator] = MappingProxyType({
    name: _FunctionValidator(name, function)
    for name, function in (
        ("non_empty", _non_empty),
        ("json", _json),
        ("tool_arguments", _tool_arguments),
        ("complete", _complete),
        ("refusal", _refusal),
    )
})


def load_validator(spec: str) -> Validator:
    """A built-in validator by name, or a ``"package.module:function"`` callable ``(request, response)``.

    The loaded callable is named ``spec``; an exception inside it becomes the reason
    ``"validator <spec> failed: <ExcType>"``. Raises ``ValueError`` for a spec that cannot be loaded.

    Usage::

        load_validator("json"); load_validator("mypkg.checks:no_apology")
    """
    builtin = BUILTIN_VALIDATORS.get(spec)
    if builtin is not None:
        return builtin
    module_name, colon, attribute = spec.partition(":")
    if not colon:
        known = ", ".join(BUILTIN_VALIDATORS)
        raise ValueError(f"unknown validator {spec!r}: expected one of {known}, or 'package.module:function'")
    if not module_name or not attribute:
        raise ValueError(f"validator {spec!r}: expected 'package.module:function'")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ValueError(f"validator {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"validator {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"validator {spec!r}: {attribute!r} is not callable")
    return _FunctionValidator(spec, target)


def first_failure(validators: Sequence[Validator], request: ChatRequest,
                  response: ChatResponse) -> tuple[str, str] | None:
    """``(validator name, reason)`` of the first validator that rejects ``response``, or ``None``.

    Usage::

        if (failed := first_failure(validators, request, response)) is not None: name, reason = failed
    """
    for validator in validators:
        reason = validator(request, response)
        if reason is not None:
            return validator.name, reason
    return None


@dataclass(slots=True)
class _ChoiceParts:
    """One choice's pieces while a stream is assembled."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, tuple[str, str, list[str]]] = field(default_factory=dict)  # index -> id, name, arguments
    finish: FinishReason | None = None

    def call(self, index: int) -> tuple[str, str, list[str]]:
        return self.calls.setdefault(index, ("", "", []))

    def choice(self, index: int) -> Choice:
        calls = [ToolCall(id_, name, "".join(args)) for _, (id_, name, args) in sorted(self.calls.items())]
        text = "".join(self.text)
        return Choice(index, Message("assistant", [TextPart(text)] if text else [], tool_calls=calls), self.finish)


def response_from_events(events: Iterable[StreamEvent]) -> ChatResponse:
    """The complete response a stream's canonical events add up to, to validate a buffered stream.

    Usage::

        response = response_from_events(buffered_events)
    """
    start: StreamStart | None = None
    usage = Usage()
    parts: dict[int, _ChoiceParts] = {}
    for event in events:
        if isinstance(event, TextDelta):
            parts.setdefault(event.choice, _ChoiceParts()).text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            parts.setdefault(event.choice, _ChoiceParts()).call(event.index)[2].append(event.arguments)
        elif isinstance(event, ToolCallStart):
            choice = parts.setdefault(event.choice, _ChoiceParts())
            choice.calls[event.index] = (event.id, event.name, choice.call(event.index)[2])
        elif isinstance(event, StreamFinish):
            parts.setdefault(event.choice, _ChoiceParts()).finish = event.reason
        elif isinstance(event, StreamUsage):
            usage = event.usage
        elif isinstance(event, StreamStart):
            start = event
    if not parts:
        parts[0] = _ChoiceParts()
    choices = [parts[i].choice(i) for i in sorted(parts)]
    if start is None:
        return ChatResponse("", "", choices, usage)
    return ChatResponse(start.id, start.model, choices, usage, start.created)
