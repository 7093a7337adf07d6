"""What routing knows about a request, computed once per request from the canonical request.

Usage::

    features = features_of(request, public="auto", caller="alice", headers={"x-tier": "gold"})
    features.prompt_tokens, features.needs_tools, features.last_user
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from switchboard.schemas.canonical import ChatRequest, ImagePart, Message, TextPart

__all__ = [
    "IMAGE_TOKENS",
    "PROMPT_CHARS",
    "RequestFeatures",
    "estimate_input_tokens",
    "features_from_input",
    "features_of",
    "prompt_text",
    "replay_input",
]

#: The most characters of a prompt that text-reading stages (rules' regex, the learned router) look at:
#: the end of the conversation, where the question is. Bounds the work per request.
PROMPT_CHARS = 16_000


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Facts about one request that strategies decide on. ``public_model`` is the model (or router) that
    serves it, ``requested`` the name the client used; ``prompt_tokens`` is an estimate (characters / 4)."""

    public_model: str
    needs_tools: bool = False
    needs_vision: bool = False
    needs_json: bool = False
    requested: str = ""
    prompt_tokens: int = 0
    caller: str | None = None
    team: str | None = None
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    last_user: str = ""

    def for_model(self, public_model: str) -> RequestFeatures:
        """The same facts, for planning another model (a fallback or a router's choice)."""
        return replace(self, public_model=public_model)


#: What one image counts for in an input-token estimate: about what Anthropic's models take for an image of
#: 1.15 megapixels (width × height / 750), the largest they read without scaling it down.
IMAGE_TOKENS = 1_600


def estimate_input_tokens(request: ChatRequest) -> int:
    """An estimate of the input tokens ``request`` takes: a token for every four characters the model reads —
    the system prompt and messages, tool calls and their results, the tool definitions (name, description and
    parameter schema as JSON) — and :data:`IMAGE_TOKENS` per image. It does not depend on the model."""
    chars = 0
    images = 0
    for m in request.messages:
        for p in m.content:
            if isinstance(p, TextPart):
                chars += len(p.text)
            elif isinstance(p, ImagePart):
                images += 1
        for call in m.tool_calls:
            chars += len(call.name) + len(call.arguments)
        if m.refusal:
            chars += len(m.refusal)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + len(orjson.dumps(tool.parameters))
    return (chars + 3) // 4 + images * IMAGE_TOKENS


def features_of(request: ChatRequest, public: str, *, caller: str | None = None,
                headers: Mapping[str, str] | None = None, for_rules: bool = True) -> RequestFeatures:
    """The routing facts of ``request``, served by ``public``. Without ``for_rules`` only what balancing
    deployments needs (capabilities, prompt size) is computed: the request path of a plain model."""
    headers = headers or {}
    chars = 0
    vision = False
    for m in request.messages:
        for p in m.content:
            if isinstance(p, TextPart):
                chars += len(p.text)
            elif isinstance(p, ImagePart):
                vision = True
    needs_tools = bool(request.tools) and (request.tool_choice is None or request.tool_choice.mode != "none")
    needs_json = request.response_format is not None and request.response_format.type != "text"
    if not for_rules:
        return RequestFeatures(public, needs_tools, vision, needs_json, request.model, (chars + 3) // 4)
    tags = {t.strip() for t in request.metadata.get("tags", "").split(",") if t.strip()}
    tags.update(t.strip() for t in headers.get("x-switchboard-tags", "").split(",") if t.strip())
    return RequestFeatures(
        public_model=public,
        needs_tools=needs_tools,
        needs_vision=vision,
        needs_json=needs_json,
        requested=request.model,
        prompt_tokens=(chars + 3) // 4,
        caller=caller if caller is not None else request.user,
        team=request.metadata.get("team"),
        tags=frozenset(tags),
        metadata=request.metadata,
        headers=headers,
        last_user=_last_user(request.messages)[-PROMPT_CHARS:],
    )


def prompt_text(messages: list[Message], limit: int = PROMPT_CHARS) -> str:
    """The text of the conversation (system and user turns, and earlier answers), its last ``limit``
    characters: what a quality predictor reads."""
    pieces: list[str] = []
    size = 0
    for m in reversed(messages):
        if m.role == "tool":
            continue
        text = "\n".join(p.text for p in m.content if isinstance(p, TextPart))
        if not text:
            continue
        pieces.append(text)
        size += len(text) + 1
        if size >= limit:
            break
    return "\n".join(reversed(pieces))[-limit:]


def _last_user(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return "\n".join(p.text for p in m.content if isinstance(p, TextPart))
    return ""


def replay_input(features: RequestFeatures, request: ChatRequest, with_prompt: bool) -> dict[str, Any]:
    """What a request record keeps of a routed request so that it can be routed again later: the facts
    rules read and, when prompts are captured, the prompt text."""
    out: dict[str, Any] = {"requested": features.requested, "prompt_tokens": features.prompt_tokens,
                           "tools": features.needs_tools, "vision": features.needs_vision,
                           "json": features.needs_json}
    if features.team is not None:
        out["team"] = features.team
    if features.tags:
        out["tags"] = sorted(features.tags)
    if with_prompt:
        out["prompt"] = prompt_text(request.messages)
        out["last_user"] = features.last_user
    return out


def features_from_input(data: dict[str, Any], public: str, *, caller: str | None,
                        metadata: Mapping[str, str]) -> RequestFeatures:
    """The routing facts of a recorded request, from :func:`replay_input`'s output and the record."""
    return RequestFeatures(
        public_model=public, needs_tools=bool(data.get("tools")), needs_vision=bool(data.get("vision")),
        needs_json=bool(data.get("json")), requested=str(data.get("requested", public)),
        prompt_tokens=int(data.get("prompt_tokens", 0)), caller=caller, team=data.get("team"),
        tags=frozenset(data.get("tags", ())), metadata=metadata, last_user=str(data.get("last_user", "")),
    )
