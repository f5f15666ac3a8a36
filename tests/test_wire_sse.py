"""The one SSE splitter: whole events from bytes fed in any pieces."""

from __future__ import annotations

import pytest

from allm_proxy.wire.events import stream_end
from allm_proxy.wire.sse import EventSplitter, is_event_stream, split

BODY = (
    b": ping\n\n"
    b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image"}\n\n'
    b"data: first line\r\ndata:second line\r\n\r\n"
    b'event: image_generation.completed\ndata: {"b64_json":"aGk="}\n\n'
    b"data: [DONE]\n\n"
)


def fed_in_pieces(body: bytes, size: int) -> list[tuple[str | None, bytes | None, bytes]]:
    splitter = EventSplitter()
    events = [e for i in range(0, len(body), size) for e in splitter.feed(body[i : i + size])]
    last = splitter.close()
    return [(e.name, e.data, e.raw) for e in [*events, *([last] if last else [])]]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(BODY)])
def test_events_are_the_same_however_the_bytes_are_cut(size: int) -> None:
    assert fed_in_pieces(BODY, size) == fed_in_pieces(BODY, len(BODY))


def test_names_data_comments_and_line_endings() -> None:
    events = list(split(BODY))
    assert [(e.name, e.data) for e in events] == [
        (None, None),  # the keepalive comment
        ("image_generation.partial_image", b'{"type":"image_generation.partial_image"}'),
        (None, b"first line\nsecond line"),  # data lines join with \n; CRLF ends lines too
        ("image_generation.completed", b'{"b64_json":"aGk="}'),
        (None, b"[DONE]"),
    ]
    assert [e.is_done for e in events] == [False, False, False, False, True]
    assert b"".join(e.raw for e in events) == BODY


def test_an_event_without_a_blank_line_at_the_end_comes_from_close() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a": 1}\n\ndata: {"b"')[0].data == b'{"a": 1}'
    assert splitter.feed(b": 2}") == []
    last = splitter.close()
    assert last is not None and last.data == b'{"b": 2}' and last.raw == b'data: {"b": 2}'
    assert splitter.close() is None


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert [e.data for e in split(b"data:  two spaces\n\ndata:none\n\ndata\n\n")] == [b" two spaces", b"none", b""]


def test_how_far_an_event_takes_an_image_stream() -> None:
    ends = [stream_end(e) for e in split(BODY)]
    assert ends == [None, None, None, "completed", "done"]
    named_error = next(split(b'event: error\ndata: {"type": "error"}\n\n'))
    unnamed_error = next(split(b'data: {"error": {"message": "boom"}}\n\n'))
    unnamed_completed = next(split(b'data: {"type": "image_edit.completed"}\n\n'))
    assert [stream_end(e) for e in (named_error, unnamed_error, unnamed_completed)] == ["error", "error", "completed"]


def test_event_stream_media_type() -> None:
    assert is_event_stream("text/event-stream; charset=utf-8")
    assert is_event_stream("Text/Event-Stream")
    assert not is_event_stream("application/json")
    assert not is_event_stream(None)
