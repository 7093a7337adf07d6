"""``switchboard keys`` and ``switchboard erase``: manage virtual keys, read the audit log and erase a subject,
as a client of a running gateway's admin API (:mod:`switchboard.policy.admin_api`) over HTTP.

The credential is read from the environment, never from a flag (another user can read a command's
arguments): ``SWITCHBOARD_ADMIN_KEY`` holds the operator's ``admin.key`` or a ``team_admin`` virtual key, or
``--admin-key-file PATH`` names a file holding it. The gateway is ``--url``, else ``SWITCHBOARD_URL``, else
http://127.0.0.1:8080. ``--json`` prints the API's whole answer. A request the API refuses prints its
message and HTTP status on stderr and exits 1, as does a gateway that cannot be reached; a missing
credential exits 2.

Usage::

    export SWITCHBOARD_ADMIN_KEY=…
    switchboard keys create --name ci --team search --models gpt-4o,fast --rpm 60 --budget-month 50
    switchboard keys list --team search
    switchboard keys show KEY_ID
    switchboard keys update KEY_ID --rpm 120 --clear budget_month
    switchboard keys rotate KEY_ID
    switchboard keys revoke KEY_ID
    switchboard keys audit --limit 20
    switchboard erase --user alice
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from switchboard.policy.admin import KEY_FIELDS

__all__ = ["add_parser", "run"]

_DEFAULT_URL = "http://127.0.0.1:8080"
_TIMEOUT = 30.0


class _Failure(Exception):
    """What to tell the user on stderr, and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- the command line -------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register ``keys`` (with its actions) and ``erase``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the gateway (default: $SWITCHBOARD_URL, else {_DEFAULT_URL})")
    common.add_argument("--admin-key-file", metavar="PATH",
                        help="read the admin credential from this file (default: $SWITCHBOARD_ADMIN_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's answer as JSON")

    keys: argparse.ArgumentParser = sub.add_parser("keys", help="manage virtual keys through the admin API")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, call: Callable[[_Admin, argparse.Namespace], int], summary: str,
               key_id: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=summary)
        if key_id:
            p.add_argument("id", help="the key's id")
        p.set_defaults(run=run, call=call)
        return p

    _add_field_flags(action("create", _create, "create a key (its secret is shown once)", key_id=False))
    listing = action("list", _list, "list keys (never their secrets)", key_id=False)
    listing.add_argument("--team", help="only this team's keys")
    listing.add_argument("--user", help="only this user's keys")
    action("show", _show, "one key and its spend")
    update = action("update", _update, "change a key's fields")
    _add_field_flags(update)
    update.add_argument("--clear", action="append", metavar="FIELD",
                        choices=[name for name in KEY_FIELDS if name != "role"],
                        help="remove a field's value: a limit, budget, owner or expiry becomes none; models, "
                             "guardrails, tags or metadata become empty (no models listed allows every model)")
    action("rotate", _rotate, "give a key a new secret (shown once); the old one stops working")
    action("revoke", _revoke, "revoke a key on every gateway process")
    audit = action("audit", _audit, "the audit log of admin writes, newest first (operator only)", key_id=False)
    audit.add_argument("--limit", type=int, default=100, help="at most this many entries (default 100)")

    erase: argparse.ArgumentParser = sub.add_parser(
        "erase", parents=[common], help="erase an end user or a key from every store the gateway keeps")
    subject = erase.add_mutually_exclusive_group(required=True)
    subject.add_argument("--user", help="the end user to erase: their keys, records and counters")
    subject.add_argument("--key-id", metavar="ID", help="the key to erase, with its records and counters")
    erase.set_defaults(run=run, call=_erase)


def _add_field_flags(p: argparse.ArgumentParser) -> None:
    """One flag per writable key field of the admin API (:data:`~switchboard.policy.admin.KEY_FIELDS`)."""
    for name, spec in KEY_FIELDS.items():
        flag = "--" + name.replace("_", "-")
        if spec.kind == "count":
            p.add_argument(flag, dest=name, type=int, metavar="N", help=spec.doc)
        elif spec.kind == "money":
            p.add_argument(flag, dest=name, type=float, metavar="$", help=spec.doc)
        elif spec.kind in ("models", "guardrails"):
            doc = spec.doc.removesuffix("; [] for every model")
            p.add_argument(flag, dest=name, type=_names, metavar="A,B", help=f"{doc}, comma-separated")
        elif spec.kind == "tags":
            p.add_argument("--tag", dest=name, action="append", metavar="T", help=f"{spec.doc} (repeatable)")
        elif spec.kind == "metadata":
            p.add_argument("--meta", dest=name, action="append", type=_pair, metavar="K=V",
                           help=f"metadata: {spec.doc} (repeatable)")
        elif spec.kind == "time":
            p.add_argument(flag, dest=name, type=float, metavar="UNIX_TIME", help=spec.doc)
        elif spec.kind == "role":
            p.add_argument(flag, dest=name, choices=("user", "team_admin"), help=spec.doc)
        else:
            p.add_argument(flag, dest=name, metavar=name.upper(), help=spec.doc)
    p.add_argument("--expires-in", type=float, metavar="SECONDS", help="expire this many seconds from now")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _fields(args: argparse.Namespace) -> dict[str, object]:
    """The payload of a create or update: the fields given on the command line, and ``--clear``'s."""
    payload: dict[str, object] = {}
    for name in KEY_FIELDS:
        value = getattr(args, name)
        if value is not None:
            payload[name] = dict(value) if name == "metadata" else value
    if args.expires_in is not None:
        payload["expires_in"] = args.expires_in
    for name in getattr(args, "clear", None) or []:
        if name in payload or (name == "expires_at" and "expires_in" in payload):
            raise _Failure(f"give a value for {name} or --clear it, not both", 2)
        payload[name] = None if KEY_FIELDS[name].nullable else {} if name == "metadata" else []
    return payload


# -- the admin API over HTTP ----------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would repeat the Authorization header to wherever a redirect points; the admin API never redirects.
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


class _Admin:
    """The admin API of one gateway, called with one credential.

    Usage::

        body = _Admin("http://127.0.0.1:8080", token).call("GET", "/admin/keys", query={"team": "search"})
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._token = token
        self._opener = urllib.request.build_opener(_NoRedirects)

    def call(self, method: str, path: str, body: dict[str, object] | None = None,
             query: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON answer of one request; :class:`_Failure` when it is refused or the gateway is unreachable."""
        target = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else orjson.dumps(body)
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        request = urllib.request.Request(target, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except urllib.error.URLError as exc:
            reason = "connection refused" if isinstance(exc.reason, ConnectionRefusedError) else str(exc.reason)
            raise _Failure(f"cannot reach the gateway at {self.url}: {reason}", 1) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Failure(f"cannot reach the gateway at {self.url}: {str(exc) or type(exc).__name__}", 1) from None
        try:
            answer = orjson.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _Failure(f"the gateway at {self.url} answered {method} {path} with something other than a "
                           "JSON object", 1)
        return answer


def _refusal(exc: urllib.error.HTTPError) -> _Failure:
    """The API's error (``{"error": {"message", "type", "param", "code"}}``) as a message with its status."""
    with exc:
        raw = exc.read()
    try:
        error = orjson.loads(raw)["error"]
        message = f"{error['message']} ({error['type']})"
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace").strip()[:500] or str(exc.reason)
    return _Failure(f"HTTP {exc.code}: {message}", 1)


def _connect(args: argparse.Namespace) -> _Admin:
    url = (args.url or os.environ.get("SWITCHBOARD_URL") or _DEFAULT_URL).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Failure(f"--url must be an http:// or https:// address, got {url!r}", 2)
    if args.admin_key_file is not None:
        try:
            token = Path(args.admin_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _Failure(f"cannot read --admin-key-file: {exc}", 2) from None
        if not token:
            raise _Failure(f"--admin-key-file {args.admin_key_file} is empty", 2)
    else:
        token = os.environ.get("SWITCHBOARD_ADMIN_KEY", "").strip()
        if not token:
            raise _Failure("no admin credential: set SWITCHBOARD_ADMIN_KEY to the gateway's admin.key (or a "
                           "team_admin key), or name a file holding it with --admin-key-file", 2)
    return _Admin(url, token)


def run(args: argparse.Namespace) -> int:
    call: Callable[[_Admin, argparse.Namespace], int] = args.call
    try:
        return call(_connect(args), args)
    except _Failure as exc:
        command = f"keys {args.action}" if args.command == "keys" else args.command
        print(f"switchboard {command}: {exc}", file=sys.stderr)
        return exc.status


# -- the actions ----------------------------------------------------------------------------------------


def _path(key_id: str, *rest: str) -> str:
    return "/".join(("/admin/keys", urllib.parse.quote(key_id, safe=""), *rest))


def _create(api: _Admin, args: argparse.Namespace) -> int:
    return _print_secret(api.call("POST", "/admin/keys", _fields(args)), "Created", args.json)


def _list(api: _Admin, args: argparse.Namespace) -> int:
    query = {name: value for name, value in (("team", args.team), ("user", args.user)) if value is not None}
    body = api.call("GET", "/admin/keys", query=query)
    if args.json:
        return _print_json(body)
    now = time.time()
    rows = [[k["id"], k.get("name"), k.get("team"), k.get("user"), k.get("role"), _limits(k), _status(k, now)]
            for k in body["data"]]
    print(_table(("ID", "NAME", "TEAM", "USER", "ROLE", "LIMITS", "STATUS"), rows) if rows else "No keys.")
    return 0


def _show(api: _Admin, args: argparse.Namespace) -> int:
    return _print_key(api.call("GET", _path(args.id)), args.json)


def _update(api: _Admin, args: argparse.Namespace) -> int:
    payload = _fields(args)
    if not payload:
        raise _Failure("nothing to change: give a field flag such as --rpm, or --clear FIELD", 2)
    return _print_key(api.call("PATCH", _path(args.id), payload), args.json)


def _rotate(api: _Admin, args: argparse.Namespace) -> int:
    return _print_secret(api.call("POST", _path(args.id, "rotate")), "Rotated", args.json)


def _revoke(api: _Admin, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.id, "revoke"))
    if args.json:
        return _print_json(body)
    print(f"Revoked key {body['id']}.")
    return 0


def _audit(api: _Admin, args: argparse.Namespace) -> int:
    body = api.call("GET", "/admin/audit", query={"limit": str(args.limit)})
    if args.json:
        return _print_json(body)
    rows = [[_time(e["at"]), e["actor"], e["action"], e["target"], e["outcome"], ",".join(e["fields"]),
             e["request_id"]] for e in body["data"]]
    print(_table(("TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "FIELDS", "REQUEST ID"), rows)
          if rows else "No audit entries.")
    return 0


def _erase(api: _Admin, args: argparse.Namespace) -> int:
    subject = {"user": args.user} if args.user is not None else {"key_id": args.key_id}
    return _print_json(api.call("POST", "/admin/erase", subject))


# -- output ---------------------------------------------------------------------------------------------


def _print_json(body: object) -> int:
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0


def _print_secret(body: dict[str, Any], verb: str, as_json: bool) -> int:
    """A freshly minted secret: printed here and nowhere else, ever."""
    if as_json:
        return _print_json(body)
    name = f" ({body['name']})" if body.get("name") else ""
    print(f"{verb} key {body['id']}{name}, hint …{body['hint']}:")
    print(body["key"])
    print("This key will not be shown again: store it now.")
    return 0


def _print_key(body: dict[str, Any], as_json: bool) -> int:
    if as_json:
        return _print_json(body)
    spend = body.get("spend")
    rows = [[name, _value(name, value)] for name, value in body.items() if name != "spend"]
    if isinstance(spend, dict):
        rows.append(["spend", f"{_money(spend['day'])} today, {_money(spend['month'])} this month, "
                              f"{_money(spend['total'])} in total ({_money(spend['reserved'])} reserved, "
                              f"{spend['in_flight']} in flight)"])
    print(_table(None, rows))
    return 0


def _value(name: str, value: object) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    if name.endswith("_at"):
        return _time(value)
    if name.startswith("budget_") and isinstance(value, int | float):
        return _money(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _time(at: object) -> str:
    if isinstance(at, int | float) and not isinstance(at, bool):
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(at)


def _money(dollars: float) -> str:
    """``$50``, ``$0.0125``: every digit that counts, no trailing zeros."""
    return "$" + f"{dollars:f}".rstrip("0").rstrip(".")


def _limits(key: dict[str, Any]) -> str:
    """The limits and budgets a key has, in a few words: ``rpm 60, $5/day``."""
    shown = (("rpm", "rpm {}"), ("tpm", "tpm {}"), ("max_concurrency", "{} at once"),
             ("max_tokens", "max_tokens {}"), ("budget_day", "{}/day"), ("budget_month", "{}/month"),
             ("budget_total", "{} total"))
    parts = [form.format(_money(key[name]) if name.startswith("budget_") else key[name])
             for name, form in shown if key.get(name) is not None]
    return ", ".join(parts) or "-"


def _status(key: dict[str, Any], now: float) -> str:
    if key.get("revoked_at") is not None:
        return "revoked"
    expires = key.get("expires_at")
    if expires is not None and now >= expires:
        return "expired"
    return "active"


def _table(headers: Sequence[str] | None, rows: list[list[Any]]) -> str:
    """Left-aligned columns two spaces apart; ``None`` cells print as ``-``."""
    cells = [["-" if c is None else str(c) for c in row] for row in rows]
    if headers is not None:
        cells.insert(0, list(headers))
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
