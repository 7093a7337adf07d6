"""Who may write what through the admin API: validation and field-level authorisation of key writes.

Two kinds of caller. The operator (the admin token) may do anything valid. A team admin — a virtual key
with role ``team_admin`` — is confined to its team and to its own grant: it manages only the ``user`` keys
of its team (never itself, never another team admin), and every key it writes is at most as permissive as
its own — limits and budgets no looser, models within its allowlist, its guardrails kept, expiring no later.
A key with role ``user`` may do nothing here.

A payload is checked as a whole: a field that is unknown or read-only (``id``, ``digest``, ``created_by``,
``revoked_at``, ``spend`` …) refuses it rather than being dropped. Type and range errors raise
:class:`~switchboard.errors.InvalidRequest`, rights :class:`~switchboard.errors.PermissionDenied`; each names
the field (``param``). Pure and synchronous: the HTTP layer parses the JSON and stores the result.

Usage::

    actor = Actor.operator() if admin_token_ok else Actor.of_key(vk)
    clean = validate_create(payload, actor, cfg.public_models, cfg.guardrails)
    vk, plaintext = mint_key(secret, clean, now=time.time(), created_by=actor.label)

    authorise_action(actor, "update", target)          # validate_update does this itself
    target = target.with_changes(validate_update(payload, actor, target, models, guards), now=time.time())
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from switchboard.errors import InvalidRequest, PermissionDenied
from switchboard.policy.keys import BUDGET_FIELDS, LIMIT_FIELDS, VirtualKey

__all__ = [
    "KEY_FIELDS",
    "Action",
    "Actor",
    "FieldSpec",
    "audited_fields",
    "authorise_action",
    "validate_create",
    "validate_update",
]

Action = Literal["create", "update", "rotate", "revoke", "read", "erase", "audit"]
Kind = Literal["name", "ident", "role", "models", "guardrails", "tags", "count", "money", "metadata", "time"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What a writable key field holds (``kind``) and whether ``null`` clears it."""

    kind: Kind
    nullable: bool
    doc: str


#: The fields an admin write may set. ``expires_in`` (seconds from now) is accepted instead of ``expires_at``.
KEY_FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        "name": FieldSpec("name", True, "a label, at most 200 characters"),
        "team": FieldSpec("ident", True, "the owning team: 1-128 of A-Z a-z 0-9 . _ @ : -"),
        "user": FieldSpec("ident", True, "the owning user: 1-128 of A-Z a-z 0-9 . _ @ : -"),
        "role": FieldSpec("role", False, '"user" or "team_admin"'),
        "models": FieldSpec("models", False, "public model/router names it may call; [] for every model"),
        "rpm": FieldSpec("count", True, "requests per minute"),
        "tpm": FieldSpec("count", True, "tokens per minute"),
        "max_concurrency": FieldSpec("count", True, "requests in flight"),
        "max_tokens": FieldSpec("count", True, "cap on a request's max_tokens"),
        "budget_day": FieldSpec("money", True, "dollars per UTC day"),
        "budget_month": FieldSpec("money", True, "dollars per UTC month"),
        "budget_total": FieldSpec("money", True, "dollars for the key's lifetime"),
        "guardrails": FieldSpec("guardrails", False, "names of configured guardrails applied to its requests"),
        "metadata": FieldSpec("metadata", False, "at most 50 string entries, each at most 500 characters"),
        "tags": FieldSpec("tags", False, "labels for reports"),
        "expires_at": FieldSpec("time", True, "Unix time after which it stops working"),
    }
)
_EXPIRES_IN = "expires_in"
_READ_ONLY = frozenset(
    {"id", "digest", "hint", "created_at", "updated_at", "revoked_at", "created_by", "spend", "key", "secret"}
)

_IDENT_RE = re.compile(r"[A-Za-z0-9._@:-]{1,128}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # nothing that can break a log line
_MAX_NAME = 200
_MAX_LABEL = 256  # a model, guardrail or tag name
_MAX_ITEMS = 200
_MAX_METADATA = 50
_MAX_METADATA_TEXT = 500
_MAX_COUNT = 2**53 - 1  # exact in every JSON reader
_MAX_MONEY = 1e12
_MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
_MAX_LIFETIME = 100 * 366 * 86400.0


# -- who is asking ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of an admin endpoint: the operator, or the virtual key that authenticated.

    Usage::

        Actor.operator();  Actor.of_key(vk);  actor.label   # "admin" or "key:<id>", for the audit log
    """

    key: VirtualKey | None

    @classmethod
    def operator(cls) -> Actor:
        """The operator, with every right."""
        return cls(None)

    @classmethod
    def of_key(cls, key: VirtualKey) -> Actor:
        """A virtual key acting; only a ``team_admin`` key of a team may do anything."""
        return cls(key)

    @property
    def is_operator(self) -> bool:
        return self.key is None

    @property
    def team(self) -> str | None:
        """The team a key actor is confined to (list only this team's keys); ``None`` for the operator."""
        return None if self.key is None else self.key.team

    @property
    def label(self) -> str:
        """How the audit log names the actor."""
        return "admin" if self.key is None else f"key:{self.key.id}"


def authorise_action(actor: Actor, action: Action, target: VirtualKey | None) -> None:
    """Refuse (:class:`PermissionDenied`) an action the actor may not take on ``target`` (``None`` for a
    create or a listing). The operator may do everything; a team admin may read its team's keys and create,
    update, rotate and revoke its team's ``user`` keys other than itself; erase and audit are the operator's.

    Usage::

        authorise_action(actor, "revoke", await store.get(key_id))
    """
    admin = actor.key
    if admin is None:
        return
    if admin.role != "team_admin":
        raise PermissionDenied("This API key may not use the admin API; that needs a team_admin key.")
    if admin.team is None:
        raise PermissionDenied("This team_admin key has no 'team', so it may not manage keys.", param="team")
    if action in ("erase", "audit"):
        raise PermissionDenied(f"Only the operator may {action}.")
    if action == "create" or target is None:
        if action in ("create", "read"):
            return
        raise ValueError(f"the {action} action needs a target key")
    if target.team != admin.team:
        raise PermissionDenied("That key's 'team' is not yours.", param="team")
    if action == "read":
        return
    if target.id == admin.id:
        raise PermissionDenied("A team admin key may not change itself; ask the operator.")
    if target.role != "user":
        raise PermissionDenied("Only the operator may change a key whose 'role' is team_admin.", param="role")


# -- the public entry points ------------------------------------------------------------------------------


def validate_create(
    payload: Mapping[str, object],
    actor: Actor,
    known_models: Collection[str],
    known_guardrails: Collection[str],
    *,
    now: float | None = None,
) -> dict[str, object]:
    """The clean fields of a new key (for :func:`~switchboard.policy.keys.mint_key`), after checking every
    field's type and range and the actor's rights. A team admin's new key inherits, when the payload leaves
    them out, its team, its limits, budgets, models, guardrails and expiry.

    Usage::

        clean = validate_create({"name": "ci", "rpm": 60}, actor, {"gpt-4o"}, {"pii"})
    """
    authorise_action(actor, "create", None)
    now = time.time() if now is None else now
    changes, sources = _clean(payload, known_models, known_guardrails, now)
    if actor.key is not None:
        _confine_create(actor.key, changes, sources)
    _check_role_has_team(changes.get("role", "user"), changes.get("team"))
    return changes


def validate_update(
    payload: Mapping[str, object],
    actor: Actor,
    target: VirtualKey,
    known_models: Collection[str],
    known_guardrails: Collection[str],
    *,
    now: float | None = None,
) -> dict[str, object]:
    """The clean changes of an update of ``target`` (for :meth:`VirtualKey.with_changes`), after checking
    every field's type and range and the actor's rights on the key and on each field. ``null`` clears a
    nullable field; fields left out keep their values.

    Usage::

        target = target.with_changes(validate_update(payload, actor, target, models, guards), now=now)
    """
    authorise_action(actor, "update", target)
    now = time.time() if now is None else now
    changes, sources = _clean(payload, known_models, known_guardrails, now)
    if actor.key is not None:
        _confine_update(actor.key, changes, sources)
    _check_role_has_team(changes.get("role", target.role), changes.get("team", target.team))
    return changes


def audited_fields(payload: object) -> tuple[str, ...]:
    """The field names of a write for its audit entry — names only, never values; sorted, each clipped to 64
    characters, at most 32 — whatever the payload held (it may have been refused).

    Usage::

        AuditEntry(now, actor.label, "key.update", vk.id, audited_fields(payload), outcome, request_id)
    """
    if not isinstance(payload, Mapping):
        return ()
    names = sorted({str(name)[:64] for name in payload})
    return tuple(names[:32])


# -- validation -----------------------------------------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _invalid(name: str, must: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' must be {must}.", param=name)


def _check_names(payload: Mapping[str, object]) -> None:
    for name in payload:
        if not isinstance(name, str):
            raise InvalidRequest(f"Field names must be strings, got {_show(name)}.")
        if name in KEY_FIELDS or name == _EXPIRES_IN:
            continue
        shown = name if len(name) <= 60 else name[:57] + "..."
        if name in _READ_ONLY:
            raise InvalidRequest(f"'{shown}' cannot be written.", param=shown)
        raise InvalidRequest(f"Unknown field '{shown}'; the writable fields are {', '.join(KEY_FIELDS)}.", param=shown)


def _clean(
    payload: Mapping[str, object], known_models: Collection[str], known_guardrails: Collection[str], now: float
) -> tuple[dict[str, object], dict[str, str]]:
    """The clean values, and for each the payload field it came from (``expires_in`` for ``expires_at``)."""
    if not isinstance(payload, Mapping):
        raise InvalidRequest("The request body must be a JSON object.")
    _check_names(payload)
    if "expires_at" in payload and _EXPIRES_IN in payload:
        raise InvalidRequest("Give 'expires_at' or 'expires_in', not both.", param=_EXPIRES_IN)
    known = _Known(known_models, known_guardrails, now)
    changes: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, value in payload.items():
        if name == _EXPIRES_IN:
            changes["expires_at"] = now + _lifetime(value)
            sources["expires_at"] = _EXPIRES_IN
            continue
        spec = KEY_FIELDS[name]
        if value is None:
            if not spec.nullable:
                raise _invalid(name, f"{spec.doc}, not null")
            changes[name] = None
        else:
            changes[name] = _CLEANERS[spec.kind](name, value, known)
        sources[name] = name
    return changes, sources


@dataclass(frozen=True, slots=True)
class _Known:
    models: Collection[str]
    guardrails: Collection[str]
    now: float


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise _invalid(name, "a string")
    if len(value) > limit:
        raise _invalid(name, f"at most {limit} characters long")
    if _CONTROL_RE.search(value):
        raise _invalid(name, "free of control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(name, "valid Unicode text") from None
    return value


def _clean_name(name: str, value: object, known: _Known) -> str:
    return _text(name, value, _MAX_NAME)


def _clean_ident(name: str, value: object, known: _Known) -> str:
    if not isinstance(value, str) or not _IDENT_RE.fullmatch(value):
        raise _invalid(name, "1-128 characters of A-Z a-z 0-9 . _ @ : -")
    return value


def _clean_role(name: str, value: object, known: _Known) -> str:
    if value not in ("user", "team_admin"):
        raise _invalid(name, '"user" or "team_admin"')
    return str(value)


def _labels(name: str, value: object, allowed: Collection[str] | None, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _invalid(name, "a list of strings")
    if len(value) > _MAX_ITEMS:
        raise _invalid(name, f"a list of at most {_MAX_ITEMS} items")
    items: list[str] = []
    for item in value:
        text = _text(name, item, _MAX_LABEL)
        if not text:
            raise _invalid(name, "a list of non-empty strings")
        if allowed is not None and text not in allowed:
            raise InvalidRequest(f"'{name}' names an unknown {what}: {_show(text)}.", param=name)
        if text not in items:
            items.append(text)
    return tuple(items)


def _clean_models(name: str, value: object, known: _Known) -> tuple[str, ...]:
    return _labels(name, value, known.models, "model")


def _clean_guardrails(name: str, value: object, known: _Known) -> tuple[str, ...]:
    return _labels(name, value, known.guardrails, "guardrail")


def _clean_tags(name: str, value: object, known: _Known) -> tuple[str, ...]:
    return _labels(name, value, None, "tag")


def _clean_count(name: str, value: object, known: _Known) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNT:
        raise _invalid(name, f"an integer from 1 to {_MAX_COUNT}, or null")
    return value


def _number(name: str, value: object, low: float, high: float, must: str) -> float:
    # Compared before float(): a huge JSON integer would overflow it.
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(name, must)
    number = float(value)
    if not math.isfinite(number):
        raise _invalid(name, must)
    return number


def _clean_money(name: str, value: object, known: _Known) -> float:
    return _number(name, value, 0.0, _MAX_MONEY, f"a number of dollars from 0 to {_MAX_MONEY:.0f}, or null")


def _clean_time(name: str, value: object, known: _Known) -> float:
    at = _number(name, value, 0.0, _MAX_TIME, "a Unix time in seconds, or null")
    if at <= known.now:
        raise _invalid(name, "in the future")
    return at


def _lifetime(value: object) -> float:
    seconds = _number(_EXPIRES_IN, value, 0.0, _MAX_LIFETIME, "a number of seconds up to 100 years")
    if seconds < 1:
        raise _invalid(_EXPIRES_IN, "a number of seconds, at least 1")
    return seconds


def _clean_metadata(name: str, value: object, known: _Known) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _invalid(name, "an object of strings")
    if len(value) > _MAX_METADATA:
        raise _invalid(name, f"an object of at most {_MAX_METADATA} entries")
    clean: dict[str, str] = {}
    for key, item in value.items():
        clean[_text(name, key, _MAX_METADATA_TEXT)] = _text(name, item, _MAX_METADATA_TEXT)
    return clean


_CLEANERS: Mapping[Kind, Callable[[str, object, _Known], object]] = MappingProxyType(
    {
        "name": _clean_name,
        "ident": _clean_ident,
        "role": _clean_role,
        "models": _clean_models,
        "guardrails": _clean_guardrails,
        "tags": _clean_tags,
        "count": _clean_count,
        "money": _clean_money,
        "metadata": _clean_metadata,
        "time": _clean_time,
    }
)


def _check_role_has_team(role: object, team: object) -> None:
    if role == "team_admin" and team is None:
        raise InvalidRequest("A team_admin key needs a 'team'.", param="team")


# -- a team admin's confinement ------------------------------------------------------------------------------

_CAPPED = (*LIMIT_FIELDS, *BUDGET_FIELDS, "expires_at")


def _denied(field: str, why: str) -> PermissionDenied:
    return PermissionDenied(f"A team admin may not {why} ('{field}').", param=field)


def _confine_create(admin: VirtualKey, changes: dict[str, object], sources: Mapping[str, str]) -> None:
    """Check a team admin's new key against its grant, filling in what the payload left to inherit."""
    if "team" not in changes:
        changes["team"] = admin.team
    if "models" not in changes and admin.models:
        changes["models"] = admin.models
    if "guardrails" not in changes and admin.guardrails:
        changes["guardrails"] = admin.guardrails
    for field in _CAPPED:
        cap = getattr(admin, field)
        if cap is not None and changes.get(field) is None:
            changes[field] = cap
    _confine(admin, changes, sources)


def _confine_update(admin: VirtualKey, changes: dict[str, object], sources: Mapping[str, str]) -> None:
    """Check a team admin's changes against its grant (the target was checked by :func:`authorise_action`)."""
    for field in _CAPPED:
        if field in changes and changes[field] is None and getattr(admin, field) is not None:
            raise _denied(sources[field], f"remove a limit its own key has ({field})")
    _confine(admin, changes, sources)


def _confine(admin: VirtualKey, changes: Mapping[str, object], sources: Mapping[str, str]) -> None:
    if "team" in changes:
        if changes["team"] is None:
            raise _denied("team", "clear the team of a key")
        if changes["team"] != admin.team:
            raise _denied("team", "give a key to another team")
    if changes.get("role", "user") != "user":
        raise _denied("role", "create or promote a team_admin key")
    models = changes.get("models")
    if admin.models and isinstance(models, tuple):
        if not models:
            raise _denied("models", "allow every model when its own key has an allowlist")
        outside = [m for m in models if m not in admin.models]
        if outside:
            raise _denied("models", f"allow models outside its own allowlist, such as {_show(outside[0])}")
    guardrails = changes.get("guardrails")
    if isinstance(guardrails, tuple):
        dropped = [g for g in admin.guardrails if g not in guardrails]
        if dropped:
            raise _denied("guardrails", f"leave out a guardrail its own key has, such as {_show(dropped[0])}")
    for field in _CAPPED:
        cap, value = getattr(admin, field), changes.get(field)
        if cap is not None and isinstance(value, int | float) and value > cap:
            why = "expire later than its own key" if field == "expires_at" else f"set {field} above its own ({cap})"
            raise _denied(sources.get(field, field), why)
