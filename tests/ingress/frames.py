"""Split SSE bytes back into frames, the way a client reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Frame:
    event: str | None
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)


def parse_frames(raw: bytes) -> list[Frame]:
    """Every frame in ``raw``; fails the test if the bytes are not well-formed SSE."""
    text = raw.decode()
    assert text == "" or text.endswith("\n\n"), f"stream does not end on a frame boundary: {text[-40:]!r}"
    frames = []
    for block in text.split("\n\n")[:-1]:
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, sep, value = line.partition(": ")
            assert sep, f"malformed SSE line {line!r}"
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE field {field!r}")
        assert len(data) == 1, f"frame without exactly one data line: {block!r}"
        frames.append(Frame(event, data[0]))
    return frames
