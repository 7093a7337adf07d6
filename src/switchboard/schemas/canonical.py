"""Canonical request, response and stream-event types.

Ingress parses each wire dialect into these once; providers translate them into their upstream's
wire format at their edge. Everything in between (routing, execution, telemetry) speaks only these.
They are plain slotted dataclasses: cheap to build on the hot path, easy to read in a debugger.

Usage::

    req = ChatRequest(model="fast", messages=[Message("user", [TextPart("Hi")])])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ContentPart",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishReason",
    "ImagePart",
    "LastBatch",
    "Message",
    "ResponseFormat",
    "Role",
    "StreamEvent",
    "StreamFinish",
    "StreamStart",
    "StreamUsage",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolChoice",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class TextPart:
    """A piece of text in a message."""

    text: str


@dataclass(slots=True)
class ImagePart:
    """An image: ``url`` is an https URL or a ``data:`` URL; ``media_type`` is set for data URLs."""

    url: str
    media_type: str | None = None
    detail: str | None = None


ContentPart = TextPart | ImagePart


@dataclass(slots=True)
class ToolCall:
    """A function call made by the assistant. ``arguments`` is the JSON text, exactly as produced."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Message:
    """One conversation turn.

    ``role="tool"`` carries a tool result: ``tool_call_id`` names the call, ``content`` its output.
    An assistant turn may carry ``tool_calls`` with or without text, and ``refusal``: the model's
    explanation when it declined to answer (OpenAI ``message.refusal``). ``role="system"`` covers
    OpenAI's ``system`` and ``developer`` messages and Anthropic's top-level ``system``.
    """

    role: Role
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    refusal: str | None = None

    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    """``auto``, ``none``, ``required`` (any tool) or ``tool`` (the one named)."""

    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None


@dataclass(slots=True)
class ResponseFormat:
    """``text``, ``json_object`` or ``json_schema`` (with ``schema``, ``name`` and ``strict``)."""

    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ChatRequest:
    """A chat request in canonical form. ``model`` is the public name the client asked for."""

    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    reasoning_effort: str | None = None


@dataclass(slots=True)
class Usage:
    """Token counts. ``input_tokens`` includes ``cached_tokens``; ``output_tokens`` includes
    ``reasoning_tokens``. ``cache_write_tokens`` counts tokens written to a prompt cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Choice:
    """One generated alternative; ``message`` is the assistant turn."""

    index: int
    message: Message
    finish_reason: FinishReason | None


@dataclass(slots=True)
class ChatResponse:
    """A complete answer. ``id`` and ``model`` are the upstream's; ``created`` is unix seconds."""

    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    created: int = 0


@dataclass(slots=True)
class StreamStart:
    """First event of every stream: the upstream's id and model."""

    id: str
    model: str
    created: int = 0


@dataclass(slots=True)
class TextDelta:
    """A piece of assistant text for choice ``choice``."""

    text: str
    choice: int = 0


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins. ``index`` counts the calls within the choice, from 0."""

    index: int
    id: str
    name: str
    choice: int = 0


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call's JSON arguments, in order."""

    index: int
    arguments: str
    choice: int = 0


@dataclass(slots=True)
class StreamFinish:
    """Choice ``choice`` is complete."""

    reason: FinishReason | None
    choice: int = 0


@dataclass(slots=True)
class StreamUsage:
    """Token counts for the whole stream; providers emit it once, usually last."""

    usage: Usage


StreamEvent = StreamStart | TextDelta | ToolCallStart | ToolCallDelta | StreamFinish | StreamUsage


class LastBatch(list[StreamEvent]):
    """A stream's last batch of events (possibly none): the upstream's end arrived with it, so nothing follows
    and the answer can be completed at once, before the stream's own clean-up runs."""

    __slots__ = ()


@dataclass(slots=True)
class EmbeddingRequest:
    """An embeddings request. ``inputs`` holds strings; token-id inputs are passed as lists of ints."""

    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResponse:
    """One vector per input, in input order."""

    model: str
    vectors: list[list[float]]
    usage: Usage
