"""How an attempt is stored: its JSON form is its fields, in order, and nothing else."""

from __future__ import annotations

import dataclasses

import orjson

from switchboard.telemetry.record import Attempt


def test_an_attempts_json_is_its_fields_in_order() -> None:
    attempt = Attempt("sim/m", "sim", "error", 12.5, error="boom", http_status=503, reason="http_503", model="m",
                      retry=1, hedge=True, cost_usd=0.25, input_price=3.0, started_ms=1.5, span_id="ab" * 8)
    data = orjson.loads(orjson.dumps(attempt))
    assert list(data) == [f.name for f in dataclasses.fields(Attempt)]
    assert Attempt(**data) == attempt
    changed = dataclasses.replace(attempt, outcome="ok")  # a copy is written the same way
    assert orjson.loads(orjson.dumps(changed)) == {**data, "outcome": "ok"}
