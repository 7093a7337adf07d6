"""The admin API: virtual keys, their spend, the audit log, and erasure.

Every path needs a credential of its own: the operator's ``admin.key`` (``Authorization: Bearer <admin.key>``)
may do anything; a virtual key with role ``team_admin`` may manage the keys of its own team within its own
limits (:mod:`switchboard.policy.admin` checks every field of every write). Other keys get 403. Without an
``admin.key`` configured, or with virtual keys off, every path answers 404. Every write, allowed or not, is
entered in the audit log.

::

    POST  /admin/keys                 create a key (its plaintext is in this answer only)
    GET   /admin/keys[?team=&user=]   list keys (never their secrets)
    GET   /admin/keys/{id}            one key and its spend
    PATCH /admin/keys/{id}            change fields (unknown or read-only fields are refused)
    POST  /admin/keys/{id}/rotate     a new secret; the old one stops working
    POST  /admin/keys/{id}/revoke     revoked on every process at once
    GET   /admin/audit[?limit=]       the audit log (operator only)
    POST  /admin/erase                {"user": …} or {"key_id": …}: erase a subject everywhere (operator only)

Usage::

    api = AdminAPI(config, governor, records)
    status, payload = await api.handle("POST", "/admin/keys", "", headers, body, request_id)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import orjson

from switchboard.config.model import Config
from switchboard.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MethodNotAllowed,
    NoHealthyDeployment,
    NotFound,
    PermissionDenied,
)
from switchboard.policy.admin import Actor, audited_fields, authorise_action, validate_create, validate_update
from switchboard.policy.governor import Governor, credential
from switchboard.policy.keys import (
    AuditEntry,
    KeyStore,
    KeyStoreError,
    VirtualKey,
    mint_key,
    pseudonym,
    rotate_key,
)
from switchboard.policy.limits import LimiterUnavailable
from switchboard.schemas.ids import new_id
from switchboard.storage.records import subject_digest

__all__ = ["AdminAPI", "ErasableRecords"]

log = logging.getLogger("switchboard.policy")

Handler = Callable[[Actor, list[str], dict[str, list[str]], Any, str], Awaitable[tuple[int, object]]]


class ErasableRecords(Protocol):
    """A record store that can erase a subject's records (both writers can). Blocks: run it in a thread."""

    def erase(self, field: str, value: str, at: float | None = None) -> int: ...


class AdminAPI:
    """The ``/admin/…`` endpoints over the governor's key store and limiter and the record store."""

    def __init__(self, config: Config, governor: Governor, records: object | None = None) -> None:
        self._operator = config.admin.key.get_secret_value().encode() if config.admin.key is not None else None
        self.governor = governor
        self.enabled = self._operator is not None and governor.keys is not None
        secret = config.auth.secret
        self._secret = secret.get_secret_value().encode() if secret is not None else b""
        self._records: ErasableRecords | None = (
            cast(ErasableRecords, records) if callable(getattr(records, "erase", None)) else None)
        names: set[str] = set()
        for name, model in config.models.items():
            names.update((name, *model.aliases))
        for name, router in config.routers.items():
            names.update((name, *router.aliases))
        self._models = frozenset(names)
        self._guardrails = frozenset(config.guardrails)

    @property
    def _keys(self) -> KeyStore:
        assert self.governor.keys is not None
        return self.governor.keys

    async def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                     request_id: str) -> tuple[int, object]:
        """Answer one admin request: ``(status, JSON payload)``. Raises :class:`SwitchboardError`."""
        if not self.enabled:
            raise NotFound(f"Unknown endpoint: {method} {path}")
        actor = await self._actor(headers)
        parts = [p for p in path.removeprefix("/admin").split("/") if p]
        params = parse_qs(query, keep_blank_values=True)
        payload: Any = None
        if method in ("POST", "PATCH"):
            payload = _json_object(body)
        route = self._route(method, parts)
        try:
            return await route(actor, parts, params, payload, request_id)
        except (KeyStoreError, LimiterUnavailable) as exc:
            log.error("admin %s %s: a store is unavailable: %s", method, path, exc)
            raise NoHealthyDeployment("The key store or the limits store is unavailable; try again shortly.",
                                      retry_after=1.0) from None

    def _route(self, method: str, parts: list[str]) -> Handler:
        table: dict[tuple[str, str], Handler] = {
            ("POST", "keys"): self._create,
            ("GET", "keys"): self._list,
            ("GET", "keys/*"): self._show,
            ("PATCH", "keys/*"): self._update,
            ("POST", "keys/*/rotate"): self._rotate,
            ("POST", "keys/*/revoke"): self._revoke,
            ("GET", "audit"): self._audit,
            ("POST", "erase"): self._erase,
        }
        shape = "/".join("*" if i == 1 and parts[0] == "keys" else p for i, p in enumerate(parts))
        handler = table.get((method, shape))
        if handler is None:
            allow = [m for m, s in table if s == shape]
            if allow:
                raise MethodNotAllowed(f"Method {method} is not allowed on /admin/{'/'.join(parts)}.", allow=allow)
            raise NotFound(f"Unknown endpoint: {method} /admin/{'/'.join(parts)}")
        return handler

    async def _actor(self, headers: Mapping[str, str]) -> Actor:
        presented = credential(headers)
        if presented is None:
            raise AuthenticationFailed("The admin API needs a credential: Authorization: Bearer <admin.key>.")
        assert self._operator is not None
        if hmac.compare_digest(presented.encode("utf-8", "replace"), self._operator):
            return Actor.operator()
        if self.governor.authenticator is None:
            raise AuthenticationFailed("Invalid admin credential.")
        key = await self.governor.authenticate(headers)
        assert key is not None
        if key.role != "team_admin":
            raise PermissionDenied("This API key may not use the admin API.")
        return Actor.of_key(key)

    # -- keys ------------------------------------------------------------------------------------

    async def _target(self, key_id: str) -> VirtualKey:
        key = await self._keys.get(key_id)
        if key is None:
            raise NotFound(f"No key with id '{key_id}'.", param="id")
        return key

    async def _audited(self, actor: Actor, action: str, target: str, fields: tuple[str, ...], request_id: str,
                       work: Callable[[], Awaitable[tuple[int, object]]]) -> tuple[int, object]:
        try:
            result = await work()
        except PermissionDenied:
            await self._audit_entry(actor, action, target, fields, "denied", request_id)
            raise
        except InvalidRequest:
            await self._audit_entry(actor, action, target, fields, "invalid", request_id)
            raise
        await self._audit_entry(actor, action, target, fields, "ok", request_id)
        return result

    async def _audit_entry(self, actor: Actor, action: str, target: str, fields: tuple[str, ...], outcome: str,
                           request_id: str) -> None:
        await self._keys.audit(AuditEntry(at=time.time(), actor=actor.label, action=action, target=target,
                                          fields=fields, outcome=outcome, request_id=request_id))

    async def _create(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                      request_id: str) -> tuple[int, object]:
        fields = audited_fields(payload)

        async def work() -> tuple[int, object]:
            clean = validate_create(payload, actor, self._models, self._guardrails)
            key, plaintext = mint_key(self._secret, clean, now=time.time(), created_by=actor.label)
            await self._keys.create(key)
            return 201, {**key.public(), "key": plaintext}

        status, body = await self._audited(actor, "key.create", "key:new", fields, request_id, work)
        return status, body

    async def _list(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                    request_id: str) -> tuple[int, object]:
        authorise_action(actor, "read", None)
        team = _param(params, "team")
        if actor.key is not None:
            if team is not None and team != actor.key.team:
                raise PermissionDenied("A team admin may list only its own team's keys.", param="team")
            team = actor.key.team
        keys = await self._keys.list(team=team, user=_param(params, "user"))
        return 200, {"object": "list", "data": [k.public() for k in keys]}

    async def _show(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                    request_id: str) -> tuple[int, object]:
        key = await self._target(parts[1])
        authorise_action(actor, "read", key)
        view = key.public()
        limiter = self.governor.limiter
        if limiter is not None:
            spend = await limiter.usage(f"key:{key.id}")
            view["spend"] = {"day": spend.spent_day, "month": spend.spent_month, "total": spend.spent_total,
                             "reserved": spend.reserved, "in_flight": spend.in_flight}
        return 200, view

    async def _update(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                      request_id: str) -> tuple[int, object]:
        key_id = parts[1]
        fields = audited_fields(payload)

        async def work() -> tuple[int, object]:
            key = await self._target(key_id)
            clean = validate_update(payload, actor, key, self._models, self._guardrails)
            updated = key.with_changes(clean, now=time.time())
            await self._keys.replace(updated)
            self._forget(key_id)
            return 200, updated.public()

        return await self._audited(actor, "key.update", f"key:{key_id}", fields, request_id, work)

    async def _rotate(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                      request_id: str) -> tuple[int, object]:
        key_id = parts[1]
        if payload:
            raise InvalidRequest("Rotation takes no fields.", param=next(iter(payload)))

        async def work() -> tuple[int, object]:
            key = await self._target(key_id)
            authorise_action(actor, "rotate", key)
            if key.revoked_at is not None:
                raise InvalidRequest("A revoked key cannot be rotated.", param="id")
            rotated, plaintext = rotate_key(key, self._secret, now=time.time())
            await self._keys.replace(rotated)
            self._forget(key_id)
            return 200, {**rotated.public(), "key": plaintext}

        return await self._audited(actor, "key.rotate", f"key:{key_id}", (), request_id, work)

    async def _revoke(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                      request_id: str) -> tuple[int, object]:
        key_id = parts[1]
        if payload:
            raise InvalidRequest("Revocation takes no fields.", param=next(iter(payload)))

        async def work() -> tuple[int, object]:
            key = await self._target(key_id)
            authorise_action(actor, "revoke", key)
            revoked = key.revoked(time.time())
            await self._keys.replace(revoked)
            if self.governor.limiter is not None:
                await self.governor.limiter.revoke(f"key:{key_id}")
            self._forget(key_id)
            return 200, revoked.public()

        return await self._audited(actor, "key.revoke", f"key:{key_id}", ("revoked_at",), request_id, work)

    def _forget(self, key_id: str) -> None:
        if self.governor.authenticator is not None:
            self.governor.authenticator.invalidate(key_id)

    # -- audit and erasure -----------------------------------------------------------------------

    async def _audit(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                     request_id: str) -> tuple[int, object]:
        authorise_action(actor, "audit", None)
        raw = _param(params, "limit") or "100"
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
            raise InvalidRequest("limit must be a whole number from 1 to 10000.", param="limit")
        since_raw = _param(params, "since")
        since = _number(since_raw, "since") if since_raw is not None else None
        entries = await self._keys.audit_log(int(raw), since)
        return 200, {"object": "list", "data": [e.public() for e in entries]}

    async def _erase(self, actor: Actor, parts: list[str], params: dict[str, list[str]], payload: Any,
                     request_id: str) -> tuple[int, object]:
        authorise_action(actor, "erase", None)
        unknown = set(payload) - {"user", "key_id"}
        if unknown:
            raise InvalidRequest(f"Unknown field '{sorted(unknown)[0]}'; erase takes user or key_id.",
                                 param=sorted(unknown)[0])
        if len(payload) != 1 or not isinstance(next(iter(payload.values())), str) or not next(
                iter(payload.values())):
            raise InvalidRequest("Erase needs exactly one of user or key_id, a non-empty string.")
        field, value = next(iter(payload.items()))
        if len(value) > 256:
            raise InvalidRequest(f"{field} is at most 256 characters.", param=field)
        receipt = await self.erase(field, value)
        await self._audit_entry(actor, "erase", str(receipt["subject"]), (str(field),), "ok", request_id)
        return 200, receipt

    async def erase(self, field: str, value: str) -> dict[str, Any]:
        """Erase a subject (an end user, or a virtual key) from every store this gateway keeps, and return
        the receipt: what each sink removed. The subject appears in the receipt only as a digest."""
        at = time.time()
        keys = self._keys
        if field == "user":
            key_ids = await keys.keys_of(value, None)
            keys_deleted = await keys.erase_user(value)
        else:
            # A key already deleted still has records and counters: they go too.
            key_ids = [value]
            keys_deleted = int(await keys.delete(value))
        counters = 0
        if self.governor.limiter is not None:
            for key_id in key_ids:
                counters += await self.governor.limiter.erase(f"key:{key_id}")
        for key_id in key_ids:
            self._forget(key_id)
        records = 0
        if self._records is not None:
            store = self._records
            if field == "user":
                records += await asyncio.to_thread(store.erase, "caller", value, at)
            for key_id in key_ids:
                records += await asyncio.to_thread(store.erase, "key_id", key_id, at)
        subject = pseudonym(value) if field == "user" else f"key:{subject_digest(value)[:16]}"
        return {
            "object": "erasure.receipt",
            "id": new_id("era_"),
            "subject": subject,
            "field": field,
            "at": at,
            "erased": {
                "records": records,
                "queued_records": "dropped by every record writer at its next write (the erasure ledger), "
                                  "in-flight requests' records included",
                "keys": keys_deleted,
                "key_ids": key_ids,
                "limit_counters": counters,
                "key_cache_entries": len(key_ids),
            },
            "kept": {"audit_log": "entries naming the subject are pseudonymised",
                     "metrics": "aggregate counters carry no user or key labels"},
        }


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


def _param(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _number(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number.", param=name) from None
