"""Redaction of secrets and personal data from text the gateway keeps (captured prompts in records).

Everything :func:`switchboard.policy.pii.find_pii` finds is replaced: secrets (API keys, tokens, JWTs,
bearer and ``key=value`` credentials, private keys), e-mail addresses, payment card numbers
(Luhn-checked), IBANs (mod-97-checked), IP addresses, national ids and phone numbers. Each becomes
``[REDACTED:<kind>]``, where a secret is named by its finer kind (``api_key``, ``jwt``, ``bearer``,
``credential`` …). Pattern-based: it catches what has a recognisable shape, not names or addresses in prose.

Usage::

    redact("mail bob@example.com, key sk-abc123…")   # 'mail [REDACTED:email], key [REDACTED:api_key]'
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from switchboard.config.governance import PII_KINDS
from switchboard.policy.pii import Finding, find_pii, replace_findings

__all__ = ["ERROR_KINDS", "redact", "redact_metadata", "redact_route"]

#: What error messages are redacted of: everything but IP addresses, which name the upstream hosts an
#: operator needs to see in a connection error.
ERROR_KINDS = tuple(k for k in PII_KINDS if k != "ip")


def _placeholder(f: Finding) -> str:
    return f"[REDACTED:{f.label if f.kind == 'secret' else f.kind}]"


def _with_opening_quote(text: str, f: Finding) -> Finding:
    # A quoted credential's opening quote goes with it (``password: [REDACTED:credential]'``), as records
    # have always been written.
    if f.label == "credential" and f.start > 0 and text[f.start - 1] in "\"'":
        return replace(f, start=f.start - 1)
    return f


def redact(text: str, kinds: Collection[str] = PII_KINDS) -> str:
    """``text`` with every secret and personal datum of a recognisable shape (of ``kinds``) replaced."""
    findings = find_pii(text, kinds)
    if not findings:
        return text
    return replace_findings(text, (_with_opening_quote(text, f) for f in findings), _placeholder)


def redact_route(route: dict[str, Any]) -> dict[str, Any]:
    """A routing decision as it may be stored: the captured prompt text in its ``input`` redacted. Called by
    the record writers, off the request path."""
    data = route.get("input")
    if not isinstance(data, dict) or not any(isinstance(data.get(k), str) for k in ("prompt", "last_user")):
        return route
    clean = {k: redact(v) if k in ("prompt", "last_user") and isinstance(v, str) else v for k, v in data.items()}
    return {**route, "input": clean}


def redact_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """A record's metadata as it may be stored: values redacted (clients put anything there). Called by the
    record writers, off the request path."""
    if not metadata:
        return metadata
    return {k: redact(v) if isinstance(v, str) else v for k, v in metadata.items()}
