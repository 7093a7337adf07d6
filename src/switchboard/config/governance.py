"""Configuration of governance: virtual keys, limits and budgets, guardrails.

Usage::

    cfg.auth.virtual_keys          # the API requires a virtual key
    cfg.limits.backend             # "memory" (one process) or "redis" (several)
    cfg.guardrails["pii"].action   # "block" | "redact" | "flag" | "route"
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["PII_KINDS", "AuthConfig", "GuardrailConfig", "LimitsConfig"]

#: What the PII guardrail can find (``entities`` picks among them; empty means all).
PII_KINDS = ("email", "phone", "card", "iban", "ip", "national_id", "secret")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AuthConfig(_Frozen):
    """Who may call the API. With ``virtual_keys`` every API request needs a key created through the admin
    API (``Authorization: Bearer sk-sb-…`` or ``x-api-key``). Keys are stored only as an HMAC under
    ``secret`` (a reference such as ``env:SWITCHBOARD_KEY_SECRET``, kept outside the key store). With
    ``limits.backend: memory`` keys live in the SQLite file at ``path``; with ``redis`` in Redis, shared by
    every process. A worker trusts a key it looked up for ``cache_ttl`` seconds: a rotated key's old secret
    stops working on other processes within that time. Revocation is immediate everywhere (the limits store
    checks it with every admission)."""

    virtual_keys: bool = False
    secret: SecretStr | None = None
    path: str = "switchboard-keys.db"
    cache_ttl: float = Field(2.0, ge=0, le=300)

    @model_validator(mode="after")
    def _secret_for_keys(self) -> AuthConfig:
        if self.virtual_keys and (self.secret is None or len(self.secret.get_secret_value()) < 16):
            raise ValueError("virtual_keys needs a secret of at least 16 characters (e.g. env:SWITCHBOARD_KEY_SECRET)")
        return self


class LimitsConfig(_Frozen):
    """Where rate limits, concurrency and budgets are counted, and the request size caps.

    ``backend: memory`` is exact within one process; ``redis`` (``redis_url``, a reference or a URL) is exact
    across every process sharing it. Tokens and dollars are reserved before the upstream call and settled
    after; a reservation its request never settled (a crashed process) expires after ``reservation_ttl``
    seconds. A request without ``max_tokens`` reserves ``default_output_tokens`` of output.
    ``max_messages`` and ``max_tokens`` cap every request (``max_tokens`` is clamped, not refused)."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    prefix: str = Field("sb:", pattern=r"^[A-Za-z0-9:_.-]{0,32}$")
    reservation_ttl: float = Field(600.0, gt=0)
    default_output_tokens: int = Field(1024, ge=1)
    max_messages: int = Field(2000, ge=1)
    max_tokens: int | None = Field(None, ge=1)


class GuardrailConfig(_Frozen):
    """One guardrail: what it looks for (``type``) and what happens when it finds it (``action``).

    - ``pii``: e-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs, IP addresses, national
      ids, secrets and API keys (``entities`` picks some; empty means all). ``presidio`` does the same with
      Microsoft Presidio's recognisers (the ``presidio`` extra).
    - ``injection``: prompt-injection and jailbreak phrasing, scored; ``threshold`` between 0 and 1.

    ``block`` refuses the request (400, ``x-should-retry: false``); ``redact`` replaces each finding with a
    placeholder before the prompt leaves (``restore`` puts the values back into the answer); ``flag`` only
    records it; ``route`` sends the request to ``model`` instead. ``default`` applies it to every request;
    otherwise keys, models and routers name the guardrails they want."""

    type: Literal["pii", "injection", "presidio"]
    action: Literal["block", "redact", "flag", "route"]
    entities: tuple[str, ...] = ()
    restore: bool = False
    threshold: float = Field(0.5, gt=0, le=1)
    model: str | None = None
    default: bool = False

    @field_validator("entities")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in v if e not in PII_KINDS]
        if bad:
            raise ValueError(f"unknown entities {bad}; known: {', '.join(PII_KINDS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GuardrailConfig:
        if self.action == "route" and not self.model:
            raise ValueError("action route needs a model")
        if self.action != "route" and self.model:
            raise ValueError("model is only for action route")
        if self.type == "injection" and self.action == "redact":
            raise ValueError("an injection guardrail cannot redact; use block, flag or route")
        if self.restore and self.action != "redact":
            raise ValueError("restore is only for action redact")
        return self
