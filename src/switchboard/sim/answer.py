"""What the simulated model says: a format-neutral prompt in, a format-neutral answer out.

Each wire format parses its request into a :class:`Prompt`; :func:`compose` turns it, the model and
the request's :class:`~switchboard.sim.scenario.Scenario` into an :class:`Answer`, which the format
renders (whole or streamed). The rules:

* default reply: ``min(max_tokens, output_tokens)`` words (``x-sim-output-tokens`` overrides the
  model's ``output_tokens``); ``finish = "length"`` when ``max_tokens`` cut it;
* ``x-sim-reply``: exactly that text, one token per word;
* JSON mode: ``{"answer": "..."}``; a JSON schema: an object generated from the schema; both cut in
  4-character tokens;
* stop sequences cut the reply before the first match (``finish = "stop_sequence"``);
* tools: when tools are given, tool choice is not "none" and the last message is the user's, the
  model calls the forced tool (or the first) with arguments generated from its schema; after a tool
  result it answers in text. ``x-sim-tool-call: never|always`` overrides.
* ``x-sim-refusal``: every choice declines with that text (``finish = "refusal"``), whatever the tools,
  ``max_tokens`` or stop sequences; each format renders it its own way.

Usage::

    answer = compose(prompt, model, scenario)
    answer.choices[0].text, answer.completion_tokens
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from switchboard.sim.fleet import SimModel
from switchboard.sim.scenario import Scenario
from switchboard.sim.schema_sample import sample_for_schema
from switchboard.sim.words import count_words, json_pieces, reply_tokens, split_reply, text_seed

__all__ = ["Answer", "Choice", "Finish", "Prompt", "ToolCall", "ToolSpec", "compose"]

Finish = Literal["stop", "length", "tool", "stop_sequence", "refusal"]
LastRole = Literal["user", "tool", "assistant"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name and the JSON schema of its arguments."""

    name: str
    schema: dict[str, Any]


@dataclass(slots=True)
class Prompt:
    """A request as the sim sees it, whatever its wire format."""

    texts: list[str] = field(default_factory=list)
    messages: int = 0
    extra_tokens: int = 0
    last_role: LastRole = "user"
    tools: list[ToolSpec] = field(default_factory=list)
    tool_mode: Literal["auto", "none", "any"] = "auto"
    forced_tool: str | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None

    def token_count(self) -> int:
        """Prompt tokens by the sim's estimate (see :mod:`switchboard.sim.words`)."""
        words = 0
        for t in self.texts:
            words += count_words(t)
        return words + 4 * self.messages + 3 + self.extra_tokens

    def seed(self) -> int:
        return text_seed(self.texts)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model makes; ``fragments`` are the streamed pieces of ``arguments``."""

    id: str
    name: str
    arguments: str
    fragments: tuple[str, ...]

    @property
    def input(self) -> dict[str, Any]:
        value = orjson.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(slots=True)
class Choice:
    """One generated alternative: text tokens or a tool call, and why it ended.

    With ``finish = "refusal"`` the tokens are the model's explanation of why it declined.
    """

    tokens: list[str]
    tool: ToolCall | None = None
    finish: Finish = "stop"
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def token_count(self) -> int:
        return len(self.tool.fragments) if self.tool is not None else len(self.tokens)


@dataclass(slots=True)
class Answer:
    """The model's answer plus the usage every format reports."""

    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def output_tokens(self) -> int:
        """Visible output tokens over all choices (reasoning not included)."""
        return sum(c.token_count for c in self.choices)

    @property
    def completion_tokens(self) -> int:
        """Output tokens including reasoning, as OpenAI and Anthropic bill them."""
        return self.output_tokens + self.reasoning_tokens


def _cut_at_stop(tokens: list[str], stops: tuple[str, ...]) -> tuple[list[str], str | None]:
    text = "".join(tokens)
    at, which = -1, None
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1 and (at == -1 or i < at):
                at, which = i, s
    if which is None:
        return tokens, None
    out: list[str] = []
    pos = 0
    for t in tokens:
        if pos + len(t) <= at:
            out.append(t)
            pos += len(t)
            continue
        if at > pos:
            out.append(t[: at - pos])
        break
    return out, which


def _tool_call(prompt: Prompt, seed: int, index: int, id_prefix: str) -> ToolCall:
    spec = prompt.tools[0]
    if prompt.forced_tool is not None:
        spec = next((t for t in prompt.tools if t.name == prompt.forced_tool), spec)
    arguments = orjson.dumps(sample_for_schema(spec.schema, seed)).decode()
    return ToolCall(
        id=f"{id_prefix}{seed:08x}{index:02x}sim",
        name=spec.name,
        arguments=arguments,
        fragments=tuple(json_pieces(arguments, 8)),
    )


def _text_tokens(prompt: Prompt, sc: Scenario, limit: int, seed: int) -> tuple[list[str], bool]:
    """The full reply and whether it is already cut at ``max_tokens``."""
    if sc.reply is not None:
        return split_reply(sc.reply), False
    if prompt.json_schema is not None:
        value = sample_for_schema(prompt.json_schema, seed, fill_optional=True)
        return json_pieces(orjson.dumps(value).decode()), False
    if prompt.json_mode:
        text = "".join(reply_tokens(seed, max(limit, 1)))
        return json_pieces(orjson.dumps({"answer": text}).decode()), False
    mt = prompt.max_tokens
    if mt is not None and mt < limit:
        return reply_tokens(seed, mt), True
    return reply_tokens(seed, limit), False


def compose(
    prompt: Prompt,
    model: SimModel,
    sc: Scenario,
    *,
    prompt_tokens: int | None = None,
    tool_id_prefix: str = "call_",
) -> Answer:
    """The answer ``model`` gives to ``prompt`` under scenario ``sc``."""
    seed = prompt.seed()
    limit = sc.output_tokens if sc.output_tokens is not None else model.output_tokens
    use_tool = (
        bool(prompt.tools)
        and prompt.tool_mode != "none"
        and sc.tool_call != "never"
        and (prompt.last_role == "user" or sc.tool_call == "always")
    )
    choices: list[Choice] = []
    for i in range(prompt.n):
        s = (seed + i * 7919) & 0xFFFFFFFF
        if sc.refusal is not None:
            choices.append(Choice(split_reply(sc.refusal), None, "refusal"))
            continue
        if use_tool:
            choices.append(Choice([], _tool_call(prompt, s, i, tool_id_prefix), "tool"))
            continue
        tokens, cut = _text_tokens(prompt, sc, limit, s)
        finish: Finish = "length" if cut else "stop"
        matched = None
        if prompt.stop and tokens:
            tokens, matched = _cut_at_stop(tokens, prompt.stop)
            if matched is not None:
                finish = "stop_sequence"
        if matched is None and prompt.max_tokens is not None and len(tokens) > prompt.max_tokens:
            tokens = tokens[: prompt.max_tokens]
            finish = "length"
        choices.append(Choice(tokens, None, finish, matched))
    if prompt_tokens is None:
        prompt_tokens = prompt.token_count()
    cached = min(sc.cached_tokens, prompt_tokens)
    return Answer(
        choices=choices,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        cache_write_tokens=min(sc.cache_write_tokens, prompt_tokens - cached),
        reasoning_tokens=sc.reasoning_tokens,
    )
