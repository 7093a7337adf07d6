"""The event-stream parser: the WHATWG rules, and that chunk boundaries never change the events."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from switchboard.providers.sse import SSEDecoder, SSEEvent, iter_sse


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def reference(stream: bytes) -> list[SSEEvent]:
    """A literal, slow reading of the spec (plus dispatching a final event that has data)."""
    text = stream.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()
    events: list[SSEEvent] = []
    data: list[str] = []
    event_type = ""
    last_id: str | None = None
    for line in [*lines, ""]:
        if line == "":
            if data:
                events.append(SSEEvent(event_type or None, "\n".join(data), last_id))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


# -- the rules --------------------------------------------------------------------------------------


def test_openai_style_stream() -> None:
    stream = b'data: {"id":1}\n\ndata: {"id":2}\n\ndata: [DONE]\n\n'
    assert decode(stream) == [SSEEvent(None, '{"id":1}', None), SSEEvent(None, '{"id":2}', None),
                              SSEEvent(None, "[DONE]", None)]


def test_anthropic_style_stream() -> None:
    stream = (b"event: message_start\ndata: {\"a\":1}\n\n"
              b"event: ping\ndata: {}\n\n"
              b"event: message_stop\ndata: {}\n\n")
    assert [(e.event, e.data) for e in decode(stream)] == [("message_start", '{"a":1}'), ("ping", "{}"),
                                                            ("message_stop", "{}")]


def test_data_lines_join_with_newline() -> None:
    assert decode(b"data: a\ndata:b\ndata\ndata:  c\n\n") == [SSEEvent(None, "a\nb\n\n c", None)]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert decode(b"data:  two spaces\nevent:  x\n\n") == [SSEEvent(" x", " two spaces", None)]


def test_colon_inside_value_is_kept() -> None:
    assert decode(b"data: a: b:c\n\n") == [SSEEvent(None, "a: b:c", None)]


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\n:\nretry: 100\nfoo: bar\nDATA: shouted\ndata: x\n\n"
    assert decode(stream) == [SSEEvent(None, "x", None)]


def test_event_without_data_is_not_dispatched_and_resets_the_type() -> None:
    assert decode(b"event: ping\n\ndata: x\n\n") == [SSEEvent(None, "x", None)]
    assert decode(b": only a comment\n\n\n\n") == []


def test_empty_data_line_still_dispatches() -> None:
    assert decode(b"data\n\n") == [SSEEvent(None, "", None)]
    assert decode(b"data:\n\n") == [SSEEvent(None, "", None)]


def test_empty_event_name_means_default() -> None:
    assert decode(b"event:\ndata: x\n\n") == [SSEEvent(None, "x", None)]


def test_last_event_id_persists_and_ignores_nul() -> None:
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\nid\ndata: d\n\n"
    assert [(e.data, e.id) for e in decode(stream)] == [("a", "7"), ("b", "7"), ("c", "7"), ("d", "")]


def test_line_endings_cr_crlf_lf() -> None:
    expected = [SSEEvent(None, "a\nb", None), SSEEvent("e", "c", None)]
    assert decode(b"data: a\rdata: b\r\revent: e\rdata: c\r\r") == expected
    assert decode(b"data: a\r\ndata: b\r\n\r\nevent: e\r\ndata: c\r\n\r\n") == expected
    assert decode(b"data: a\ndata: b\r\n\revent: e\ndata: c\r\n\n") == expected


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SSEEvent(None, "a\nb", None)]


def test_cr_at_chunk_end_dispatches_without_waiting() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent(None, "a", None)]
    assert decoder.feed(b"\ndata: b\n\n") == [SSEEvent(None, "b", None)]


def test_final_event_without_blank_line() -> None:
    assert decode(b"data: a\n\ndata: tail") == [SSEEvent(None, "a", None), SSEEvent(None, "tail", None)]
    assert decode(b"data: tail\n") == [SSEEvent(None, "tail", None)]
    assert decode(b"data: a\n\nevent: only-a-type") == [SSEEvent(None, "a", None)]
    assert decode(b"") == []


def test_byte_order_mark_is_dropped_once() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent(None, "x", None)]
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [SSEEvent(None, "x", None)]
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []  # a second one is part of a field name


def test_utf8_split_between_chunks() -> None:
    raw = "data: héllo ✓ 😀\n\n".encode()
    assert decode(*[raw[i:i + 1] for i in range(len(raw))]) == [SSEEvent(None, "héllo ✓ 😀", None)]


def test_invalid_utf8_is_replaced() -> None:
    assert decode(b"data: \xff\xfe\n\n") == [SSEEvent(None, "\ufffd\ufffd", None)]


def test_feed_returns_events_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: hel") == []
    assert decoder.feed(b"lo\n") == []
    assert decoder.feed(b"\ndata: next") == [SSEEvent(None, "hello", None)]
    assert decoder.close() == [SSEEvent(None, "next", None)]


async def test_iter_sse_over_async_chunks() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"event: a\nda", b"ta: 1\n", b"\ndata: 2\n\n: bye\n", b"data: 3"):
            yield piece

    assert [(e.event, e.data) async for e in iter_sse(chunks())] == [("a", "1"), (None, "2"), (None, "3")]


# -- chunking never matters -------------------------------------------------------------------------

_value = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=12)
_line = st.one_of(
    st.builds(lambda v: f"data: {v}", _value),
    st.builds(lambda v: f"data:{v}", _value),
    st.just("data"),
    st.builds(lambda v: f"event: {v}", _value),
    st.builds(lambda v: f"id: {v}", _value),
    st.builds(lambda v: f":{v}", _value),
    st.builds(lambda v: f"retry: {v}", _value),
    st.builds(lambda n, v: f"{n}:{v}", st.sampled_from(["dat", "Data", "events", "x"]), _value),
    st.just(""),
    st.just(""),
)
_eol = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def event_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=25))
    text = "".join(line + eol for line, eol in lines)
    if draw(st.booleans()) and lines:
        text = text.removesuffix(lines[-1][1])  # the stream may stop mid-line
    prefix = "\ufeff" if draw(st.booleans()) else ""
    return (prefix + text).encode()


@st.composite
def splits(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    stream = data.draw(event_streams())
    chunks = data.draw(splits(stream))
    expected = reference(stream)
    assert decode(stream) == expected
    assert decode(*chunks) == expected
    assert decode(*[stream[i:i + 1] for i in range(len(stream))]) == expected


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=10))
def test_arbitrary_bytes_chunk_independently(stream: bytes, cuts: list[int]) -> None:
    edges = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(edges)]
    assert decode(*chunks) == decode(stream)
