"""Server-Sent Events parsing for upstream streams (OpenAI, Anthropic, Gemini ``alt=sse``).

Follows the WHATWG ``text/event-stream`` rules: lines end in LF, CRLF or CR (also when split between
chunks); ``data`` lines join with LF; one space after the colon is dropped; ``:`` lines are comments;
a blank line dispatches; an event without data is not dispatched; ``id`` persists as the last event
id. One deliberate difference: a final event not followed by a blank line is still dispatched at the
end of the stream if it has data, because some upstreams omit the last blank line.

Usage::

    async with http.stream("POST", url, headers=h, body=b) as response:
        async for event in iter_sse(response.iter_bytes()):
            handle(event.event, event.data)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol

from switchboard.errors import SwitchboardError
from switchboard.schemas.canonical import StreamEvent

__all__ = ["EventTranslator", "SSEDecoder", "SSEEvent", "iter_sse", "translate_batch"]

_BOM: Final = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``event`` is ``None`` when the stream named no type (i.e. "message")."""

    event: str | None
    data: str
    id: str | None


class SSEDecoder:
    """Incremental event-stream decoder: feed it bytes as they arrive, get whole events back.

    Works on bytes and decodes (UTF-8, invalid sequences replaced) once per event.

    Usage::

        decoder = SSEDecoder()
        for event in decoder.feed(b"data: hel"):  # nothing yet
            ...
        events = decoder.feed(b"lo\\n\\n")  # [SSEEvent(event=None, data='hello', id=None)]
        events += decoder.close()  # flushes a last event that lacked its blank line
    """

    __slots__ = ("_data", "_event", "_id", "_partial", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the current line so far
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False  # past the optional byte-order mark
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed."""
        if not self._started:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:  # b"\n"
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 13  # b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial = []
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(self._dispatch())
                    data = self._data
                else:
                    self._event = None
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[0] != 58:  # b":" starts a comment
                self._field(line)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: return the last event if it has data but lacked its closing blank line."""
        self._started = True  # bytes held back as a possible byte-order mark are just a partial line
        events = self.feed(b"\n") if self._partial else []
        self._skip_lf = False
        if self._data:
            events.append(self._dispatch())
        self._event = None
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Hold back bytes until we know whether the stream starts with a byte-order mark."""
        if self._partial:
            chunk = b"".join(self._partial) + chunk
            self._partial = []
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            if chunk:
                self._partial.append(chunk)
            return b""
        self._started = True
        return chunk[len(_BOM):] if chunk.startswith(_BOM) else chunk

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        # "retry" and unknown fields are ignored

    def _dispatch(self) -> SSEEvent:
        data = self._data
        text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
        event = self._event
        self._data = []
        self._event = None
        return SSEEvent(event.decode("utf-8", "replace") if event else None, text, self._id)


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Parse an event stream from byte chunks (e.g. ``StreamingResponse.iter_bytes()``)."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event


class EventTranslator(Protocol):
    """Turns one upstream SSE event into canonical stream events; ``done`` once the upstream finished."""

    done: bool

    def feed(self, event: str | None, data: str) -> list[StreamEvent]: ...


def translate_batch(
    decoder: SSEDecoder, translator: EventTranslator, chunk: bytes | None
) -> tuple[list[StreamEvent], SwitchboardError | None]:
    """The canonical events in one network read (``None``: end of body), stopping once the translator is
    done. An upstream error is returned, not raised, so the events decoded before it still reach the
    caller first — content that arrived is never dropped."""
    batch: list[StreamEvent] = []
    try:
        for sse in decoder.feed(chunk) if chunk is not None else decoder.close():
            batch += translator.feed(sse.event, sse.data)
            if translator.done:
                break
    except SwitchboardError as exc:
        return batch, exc
    return batch, None
