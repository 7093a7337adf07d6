"""Guardrails: what content may pass. Each one scans the text of a request and acts on what it finds.

A :class:`Guardrail` is built from its configuration by :func:`build_guardrail` (the types are listed in
:data:`GUARDRAIL_TYPES`): ``pii`` finds personal data and secrets (:mod:`switchboard.policy.pii`),
``injection`` scores prompt injection (:mod:`switchboard.policy.injection`), ``presidio`` runs Microsoft
Presidio's recognisers (the ``presidio`` extra). :func:`apply_guardrails` runs them over what the caller
controls: the text of every message (PII guardrails read system, user, assistant and tool messages;
injection guardrails only user and tool messages, since system text is the operator's), assistant
refusals and tool-call arguments (as JSON text: string values are redacted without breaking the JSON).
Images are not scanned.

Actions, strongest first: ``block`` (the request is refused: :attr:`GuardOutcome.blocked_by`), ``route``
(it goes to the guardrail's ``model`` unchanged: :attr:`GuardOutcome.route_to`), ``redact`` (each finding
becomes a placeholder such as ``[EMAIL_1]``, numbered per kind, the same value always the same
placeholder within a request), ``flag`` (only recorded). Every finding is flagged whatever the action.
With ``restore``, the placeholders' values go into the outcome's :class:`Vault`, and
:func:`restore_response` / :class:`StreamRestorer` put them back into the answer.

Everything here is pure and synchronous; a scan is linear in the text. The caller runs the scan of a
large request off the event loop (``await asyncio.to_thread(apply_guardrails, request, guards)``).
When nothing fires nothing is copied: the outcome holds the request it was given.

Usage::

    guards = [build_guardrail(name, cfg) for name, cfg in config.guardrails.items()]
    outcome = apply_guardrails(request, guards)
    if outcome.blocked_by:
        ...  # refuse with outcome.block_reason
    response = restore_response(await call(outcome.route_to or request.model, outcome.request), outcome.vault)
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from switchboard.config.governance import PII_KINDS, GuardrailConfig
from switchboard.policy.injection import injection_score
from switchboard.policy.pii import Finding, find_pii, replace_findings, resolve_overlaps
from switchboard.schemas.canonical import ChatRequest, ChatResponse, Message, TextPart

__all__ = [
    "GUARDRAIL_TYPES",
    "GuardOutcome",
    "Guardrail",
    "GuardrailFactory",
    "InjectionGuardrail",
    "PIIGuardrail",
    "StreamRestorer",
    "Vault",
    "apply_guardrails",
    "build_guardrail",
    "restore_response",
    "restore_text",
]


class Guardrail(Protocol):
    """Something that scans text: the configuration name, its configuration, and what it finds."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> GuardrailConfig: ...

    def scan(self, text: str) -> list[Finding]:
        """What this guardrail finds in ``text`` (nothing means it does not fire)."""
        ...


@dataclass(frozen=True, slots=True)
class PIIGuardrail:
    """Finds the PII kinds of ``config.entities`` (all of them when it is empty)."""

    name: str
    config: GuardrailConfig

    def scan(self, text: str) -> list[Finding]:
        return find_pii(text, self.config.entities or PII_KINDS)


@dataclass(frozen=True, slots=True)
class InjectionGuardrail:
    """Fires when a text's injection score reaches ``config.threshold``: one finding spanning the text,
    with the score and the rules that fired (``label``), never the text itself."""

    name: str
    config: GuardrailConfig

    def scan(self, text: str) -> list[Finding]:
        verdict = injection_score(text)
        if verdict.score < self.config.threshold:
            return []
        return [Finding("injection", 0, len(text), "", ",".join(verdict.rules), verdict.score)]


GuardrailFactory = Callable[[str, GuardrailConfig], Guardrail]


def _presidio(name: str, config: GuardrailConfig) -> Guardrail:
    from switchboard.policy.presidio import PresidioGuardrail

    return PresidioGuardrail(name, config)


#: The guardrail types, by the ``type`` used in configuration.
GUARDRAIL_TYPES: Mapping[str, GuardrailFactory] = MappingProxyType(
    {"pii": PIIGuardrail, "injection": InjectionGuardrail, "presidio": _presidio})


def build_guardrail(name: str, config: GuardrailConfig) -> Guardrail:
    """The guardrail ``config`` describes, called ``name``. A ``presidio`` guardrail raises ImportError
    (with the install hint) when Presidio is not installed."""
    return GUARDRAIL_TYPES[config.type](name, config)


# ----------------------------------------------------------------------------------------------- outcome


@dataclass(frozen=True, slots=True)
class Vault:
    """What redaction took out and restore puts back: placeholder → original value. Only guardrails with
    ``restore`` put values here."""

    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __bool__(self) -> bool:
        return bool(self.values)


_EMPTY_VAULT = Vault()


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """What the guardrails decided about one request.

    ``request`` is the request to send: the one given when nothing was redacted, else a redacted copy
    (messages nothing was redacted from are shared with the original). ``blocked_by`` names the first
    blocking guardrail that fired and ``block_reason`` says what it found (kinds, never values).
    ``route_to`` is the model of the first routing guardrail that fired (unless one blocked). ``flags``
    lists every finding's kind once (``pii:email``, ``injection``), whatever the action."""

    request: ChatRequest
    blocked_by: str | None = None
    block_reason: str = ""
    flags: list[str] = field(default_factory=list)
    route_to: str | None = None
    vault: Vault = _EMPTY_VAULT


_ALL_ROLES = frozenset({"system", "user", "assistant", "tool"})
_UNTRUSTED_ROLES = frozenset({"user", "tool"})  # injection: the operator's system text is not scanned

# A place a text lives in a request: (message index, "part" | "call" | "refusal", index within it).
_Slot = tuple[int, str, int]


def apply_guardrails(request: ChatRequest, guardrails: Sequence[Guardrail]) -> GuardOutcome:
    """Run ``guardrails`` over the text of ``request``; ``request`` itself is never modified."""
    if not guardrails:
        return GuardOutcome(request)
    scan = _Scan(guardrails)
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                scan.text((i, "part", j), message.role, part.text)
        for k, call in enumerate(message.tool_calls):
            scan.text((i, "call", k), "assistant", call.arguments)
        if message.refusal:
            scan.text((i, "refusal", 0), message.role, message.refusal)
    return scan.outcome(request)


class _Scan:
    """The findings of a request's texts, gathered by action."""

    __slots__ = ("_block", "_flags", "_guards", "_redactions", "_route")

    def __init__(self, guardrails: Sequence[Guardrail]) -> None:
        self._guards = [(g, _UNTRUSTED_ROLES if g.config.type == "injection" else _ALL_ROLES) for g in guardrails]
        self._flags: dict[str, None] = {}
        self._block: tuple[Guardrail, list[Finding]] | None = None
        self._route: str | None = None
        self._redactions: dict[_Slot, list[tuple[Finding, bool]]] = {}

    def text(self, slot: _Slot, role: str, text: str) -> None:
        if not text:
            return
        for guard, roles in self._guards:
            if role not in roles:
                continue
            findings = guard.scan(text)
            if not findings:
                continue
            for f in findings:
                self._flags["injection" if f.kind == "injection" else f"pii:{f.kind}"] = None
            action = guard.config.action
            if action == "block":
                if self._block is None:
                    self._block = (guard, [])
                if self._block[0] is guard:
                    self._block[1].extend(findings)
            elif action == "route":
                self._route = self._route or guard.config.model
            elif action == "redact":
                self._redactions.setdefault(slot, []).extend((f, guard.config.restore) for f in findings)

    def outcome(self, request: ChatRequest) -> GuardOutcome:
        flags = list(self._flags)
        if self._block is not None:
            guard, findings = self._block
            return GuardOutcome(request, guard.name, _block_reason(guard, findings), flags)
        if self._route is not None or not self._redactions:
            return GuardOutcome(request, flags=flags, route_to=self._route)
        redacted, vault = _redact(request, self._redactions)
        return GuardOutcome(redacted, flags=flags, vault=vault)


def _block_reason(guard: Guardrail, findings: list[Finding]) -> str:
    if guard.config.type == "injection":
        top = max(findings, key=lambda f: f.score)
        rules = top.label.replace(",", ", ")
        return f"guardrail {guard.name!r} found a prompt injection (score {top.score:.2f}: {rules})"
    kinds = ", ".join(dict.fromkeys(f.kind for f in findings))
    return f"guardrail {guard.name!r} found {kinds}"


# --------------------------------------------------------------------------------------------- redaction

_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]*_[0-9]+\]")
_JSON_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)", re.DOTALL)


class _Placeholders:
    """Numbers placeholders per kind (``[EMAIL_1]``, ``[EMAIL_2]`` …), the same value the same placeholder,
    skipping any that the request already contains literally."""

    __slots__ = ("_by_value", "_counts", "_taken", "vault")

    def __init__(self, taken: set[str]) -> None:
        self._taken = taken
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self.vault: dict[str, str] = {}

    def get(self, kind: str, value: str, restore: bool) -> str:
        placeholder = self._by_value.get((kind, value))
        if placeholder is None:
            tag = kind.upper()
            n = self._counts.get(tag, 0)
            while True:
                n += 1
                placeholder = f"[{tag}_{n}]"
                if placeholder not in self._taken:
                    break
            self._counts[tag] = n
            self._by_value[(kind, value)] = placeholder
        if restore:
            self.vault[placeholder] = value
        return placeholder


def _slot_text(message: Message, kind: str, index: int) -> str:
    if kind == "part":
        part = message.content[index]
        return part.text if isinstance(part, TextPart) else ""
    if kind == "call":
        return message.tool_calls[index].arguments
    return message.refusal or ""


def _redact(request: ChatRequest, redactions: dict[_Slot, list[tuple[Finding, bool]]]) -> tuple[ChatRequest, Vault]:
    taken = {p for m in request.messages for t in _texts(m) for p in _PLACEHOLDER.findall(t)}
    placeholders = _Placeholders(taken)
    messages = list(request.messages)
    for (i, kind, index), items in sorted(redactions.items()):
        message = messages[i]
        text = _redact_text(_slot_text(message, kind, index), items, placeholders, as_json=kind == "call")
        messages[i] = _with_text(message, kind, index, text)
    return replace(request, messages=messages), Vault(MappingProxyType(placeholders.vault))


def _redact_text(text: str, items: list[tuple[Finding, bool]], placeholders: _Placeholders, *, as_json: bool) -> str:
    restore: dict[Finding, bool] = {}
    for f, r in items:  # two guardrails may find the same thing; either may want it restored
        restore[f] = restore.get(f, False) or r
    findings = [(f, restore[f]) for f in resolve_overlaps(restore)]
    if as_json:
        findings = _clear_of_escapes(text, findings)
    wanted = dict(findings)

    def placeholder(f: Finding) -> str:
        value = _json_unescape(f.value) if as_json else f.value
        return placeholders.get(f.kind, value, wanted[f])

    return replace_findings(text, (f for f, _ in findings), placeholder)


def _texts(message: Message) -> list[str]:
    texts = [p.text for p in message.content if isinstance(p, TextPart)]
    texts += [c.arguments for c in message.tool_calls]
    return [*texts, message.refusal] if message.refusal else texts


def _with_text(message: Message, kind: str, index: int, text: str) -> Message:
    if kind == "part":
        content = list(message.content)
        content[index] = TextPart(text)
        return replace(message, content=content)
    if kind == "call":
        calls = list(message.tool_calls)
        calls[index] = replace(calls[index], arguments=text)
        return replace(message, tool_calls=calls)
    return replace(message, refusal=text)


def _clear_of_escapes(text: str, findings: list[tuple[Finding, bool]]) -> list[tuple[Finding, bool]]:
    """Findings in JSON text shrunk so that none starts or ends inside an escape sequence (``\\n``,
    ``\\u00e9``): replacing them keeps the JSON valid."""
    if "\\" not in text:
        return findings
    escapes = [m.span() for m in _JSON_ESCAPE.finditer(text)]
    starts = [a for a, _ in escapes]

    def inside(pos: int) -> tuple[int, int] | None:
        k = bisect.bisect_left(starts, pos) - 1
        return escapes[k] if k >= 0 and escapes[k][0] < pos < escapes[k][1] else None

    out: list[tuple[Finding, bool]] = []
    for f, restore in findings:
        start, end = f.start, f.end
        if (esc := inside(start)) is not None:
            start = esc[1]
        if (esc := inside(end)) is not None:
            end = esc[0]
        if (start, end) == (f.start, f.end):
            out.append((f, restore))
        elif start < end:
            out.append((replace(f, start=start, end=end, value=text[start:end]), restore))
    return out


def _json_unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


# ----------------------------------------------------------------------------------------------- restore


def _json_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def restore_text(text: str, vault: Vault, *, json_escape: bool = False) -> str:
    """``text`` with every placeholder of ``vault`` replaced by its value (JSON-escaped with
    ``json_escape``, for text inside a JSON string such as tool-call arguments)."""
    if not vault.values or "[" not in text:
        return text
    values = vault.values
    if json_escape:
        return _PLACEHOLDER.sub(lambda m: _json_escape(values[m.group()]) if m.group() in values else m.group(), text)
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)


def _restore_message(message: Message, vault: Vault) -> Message:
    content = [TextPart(restore_text(p.text, vault)) if isinstance(p, TextPart) else p for p in message.content]
    calls = [replace(c, arguments=restore_text(c.arguments, vault, json_escape=True)) for c in message.tool_calls]
    refusal = restore_text(message.refusal, vault) if message.refusal else message.refusal
    if content == message.content and calls == message.tool_calls and refusal == message.refusal:
        return message
    return replace(message, content=content, tool_calls=calls, refusal=refusal)


def restore_response(response: ChatResponse, vault: Vault) -> ChatResponse:
    """``response`` with the vault's values back in its text, refusals and tool-call arguments (which stay
    valid JSON). The same object when there was nothing to restore."""
    if not vault.values:
        return response
    choices = [c if (m := _restore_message(c.message, vault)) is c.message else replace(c, message=m)
               for c in response.choices]
    if all(a is b for a, b in zip(choices, response.choices, strict=True)):
        return response
    return replace(response, choices=choices)


class StreamRestorer:
    """Puts the vault's values back into a stream of text deltas (one restorer per choice's text, or per
    tool call's arguments with ``json_escape``), even when a placeholder is split across deltas: it holds
    back only a tail that could still become a placeholder, never more than the longest one.

    Usage: ``r = StreamRestorer(vault); for d in deltas: send(r.feed(d))``, then ``send(r.flush())``.
    """

    __slots__ = ("_json", "_longest", "_pending", "_prefixes", "_vault")

    def __init__(self, vault: Vault, *, json_escape: bool = False) -> None:
        self._vault = vault
        self._json = json_escape
        self._prefixes = frozenset(p[:n] for p in vault.values for n in range(1, len(p)))
        self._longest = max(map(len, vault.values), default=0)
        self._pending = ""

    def feed(self, delta: str) -> str:
        """The text that can be sent now."""
        if not self._vault.values:
            return delta
        text = self._pending + delta
        hold = self._held_from(text)
        self._pending = text[hold:]
        return restore_text(text[:hold], self._vault, json_escape=self._json)

    def flush(self) -> str:
        """What was held back, at the end of the stream."""
        text, self._pending = self._pending, ""
        return restore_text(text, self._vault, json_escape=self._json)

    def _held_from(self, text: str) -> int:
        i = text.find("[", max(0, len(text) - self._longest + 1))
        while i != -1:
            if text[i:] in self._prefixes:
                return i
            i = text.find("[", i + 1)
        return len(text)
