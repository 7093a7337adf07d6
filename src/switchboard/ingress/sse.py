"""Server-sent event frames as bytes, for the streaming encoders of both dialects.

Usage::

    sse_frame({"type": "ping"}, event="ping")  # b'event: ping\\ndata: {"type":"ping"}\\n\\n'
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["DONE_FRAME", "sse_frame"]

DONE_FRAME = b"data: [DONE]\n\n"
"""The OpenAI end-of-stream sentinel."""


def sse_frame(payload: Any, *, event: str | None = None) -> bytes:
    """One SSE frame whose ``data`` is ``payload`` as compact JSON (one line: JSON has no raw newlines)."""
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    if event is None:
        return data
    return b"event: " + event.encode() + b"\n" + data
