"""Redaction of secrets and personal data from text the gateway keeps (captured prompts in records).

Secrets: bearer tokens, OpenAI / Anthropic keys (``sk-…``), Google keys (``AIza…``), AWS access key ids,
JWTs, ``key=value`` credentials. Personal data: e-mail addresses, payment card numbers (Luhn-checked),
IBANs (mod-97-checked), IPv4 addresses and phone numbers. Each match becomes ``[REDACTED:<kind>]``.
Pattern-based: it catches what has a recognisable shape, not names or addresses in prose.

Usage::

    redact("mail bob@example.com, key sk-abc123…")   # 'mail [REDACTED:email], key [REDACTED:api_key]'
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["redact", "redact_route"]

_SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")),
    ("api_key", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")),
    ("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("api_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("credential", re.compile(
        r"(?i)\b(?:api[_-]?key|secret|password|passwd|token|x-api-key)\b(\s*[:=]\s*)[\"']?[^\s\"',;]{6,}")),
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
# A phone number stands alone: not glued to other digit groups (a card number that failed Luhn stays).
_PHONE = re.compile(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}"
                    r"(?![ .-]?\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return len(s) >= 15 and int(number) % 97 == 1


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group()


def _iban(m: re.Match[str]) -> str:
    return "[REDACTED:iban]" if _iban_ok(m.group()) else m.group()


def redact(text: str) -> str:
    """``text`` with every secret and personal datum of a recognisable shape replaced."""
    for kind, pattern in _SECRETS:
        if kind == "credential":
            text = pattern.sub(lambda m: m.group()[: m.start(1) - m.start()] + m.group(1) + "[REDACTED:credential]",
                               text)
        else:
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    text = _EMAIL.sub("[REDACTED:email]", text)
    text = _IBAN.sub(_iban, text)
    text = _CARD.sub(_card, text)
    text = _IPV4.sub("[REDACTED:ip]", text)
    return _PHONE.sub("[REDACTED:phone]", text)


def redact_route(route: dict[str, Any]) -> dict[str, Any]:
    """A routing decision as it may be stored: the captured prompt text in its ``input`` redacted. Called by
    the record writers, off the request path."""
    data = route.get("input")
    if not isinstance(data, dict) or not any(isinstance(data.get(k), str) for k in ("prompt", "last_user")):
        return route
    clean = {k: redact(v) if k in ("prompt", "last_user") and isinstance(v, str) else v for k, v in data.items()}
    return {**route, "input": clean}
