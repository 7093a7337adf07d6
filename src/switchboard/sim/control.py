"""The simulator's control endpoint: read or change one model's settings while it serves.

``GET /_sim/models/{name}`` answers the model's settings as a JSON object of :class:`SimModel` fields;
``POST /_sim/models/{name}`` with a JSON object of fields to change (see
:data:`~switchboard.sim.fleet.TUNABLE_FIELDS`) applies them and answers the new settings. An unknown
model is a 404, a bad field or value a 400 naming it, both as ``{"error": {"message", "type", ...}}``.
Benchmarks use it to change failure rates or latency between phases. With ``switchboard sim
--workers N`` each process holds its own fleet, so a change reaches only the worker that answered it.

Usage::

    reply = model_settings(req, name, ctx.fleet, sim.update_model)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from switchboard.sim.fleet import Fleet, FleetError, SimModel
from switchboard.sim.http import Reply, Respond, SimRequest, header_lines

__all__ = ["MODELS_PREFIX", "model_settings", "settings"]

MODELS_PREFIX = "/_sim/models/"

UpdateModel = Callable[..., SimModel]


def settings(model: SimModel) -> dict[str, Any]:
    """The model's fields as JSON-ready values (tuples become lists)."""
    return dataclasses.asdict(model)


def model_settings(req: SimRequest, name: str, fleet: Fleet, update: UpdateModel) -> Reply:
    """``GET`` or ``POST /_sim/models/{name}``; ``update(name, **fields)`` applies a change."""
    if req.method not in ("GET", "POST"):
        return _error(405, f"use GET or POST on {MODELS_PREFIX}{{name}}", "invalid_request_error",
                      header_lines(("allow", "GET, POST")))
    model = fleet.get(name)
    if model is None:
        return _error(404, f"no model {name!r} in the fleet", "not_found_error")
    if req.method == "POST":
        try:
            changes = req.json()
        except orjson.JSONDecodeError as exc:
            return _error(400, f"the body is not valid JSON: {exc}", "invalid_request_error")
        if not isinstance(changes, dict):
            return _error(400, "the body must be a JSON object of model fields", "invalid_request_error")
        try:
            model = update(name, **changes)
        except FleetError as exc:
            return _error(400, str(exc), "invalid_request_error")
    return Respond(200, orjson.dumps(settings(model)))


def _error(status: int, message: str, kind: str, headers: bytes = b"") -> Respond:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Respond(status, orjson.dumps(body), headers=headers)
