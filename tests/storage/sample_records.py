"""A fully populated request record to store, query and print."""

from __future__ import annotations

from switchboard.telemetry.record import Attempt, RequestRecord


def make_record(i: int = 0, **overrides: object) -> RequestRecord:
    """A fully populated record; ``i`` varies the id and start time."""
    fields: dict[str, object] = {
        "request_id": f"req_{i:04d}",
        "started_at": 1_700_000_000.125 + i,
        "endpoint": "chat",
        "dialect": "openai",
        "caller": "team-a",
        "public_model": "fast",
        "deployment": "sim/small",
        "provider": "sim-openai",
        "upstream_model": "small-2024",
        "stream": True,
        "status": 200,
        "error_type": None,
        "error_message": None,
        "attempts": [
            Attempt("sim/tiny", "sim-openai", "error", 12.5, error="RateLimited: slow down", http_status=429),
            Attempt("sim/small", "sim-openai", "ok", 340.25),
        ],
        "latency_ms": 353.75,
        "ttft_ms": 120.5,
        "input_tokens": 1200,
        "output_tokens": 345,
        "cached_tokens": 1024,
        "reasoning_tokens": 64,
        "cost_usd": 0.000123456789,
        "partial": False,
        "metadata": {"trace": "abc", "unicode": "é✓"},
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]
