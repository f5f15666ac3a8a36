"""Server-sent events: the one splitter, fed bytes as they arrive, giving back whole events.

Used wherever the proxy reads an event stream: the OpenAI adapter relaying
an upstream stream, the cassette layer recording and replaying one, and the
cassette summary and report reading a recorded one. Lines end in `\\n` or
`\\r\\n`; a blank line ends an event; `:` lines are comments (keepalives
such as `: ping`); `data:` lines join with `\\n`; one space after the colon
is dropped, as the SSE standard says.

Bytes, not text: events carry megabytes of base64 that are parsed as bytes,
so decoding them to `str` first would be a wasted pass. A line split over
many chunks is joined once, when its end arrives.

    splitter = EventSplitter()
    for chunk in chunks:
        for event in splitter.feed(chunk):
            ...
    last = splitter.close()          # an event the body did not end with a blank line, or None
"""

from __future__ import annotations

from collections.abc import Iterator

MEDIA_TYPE = "text/event-stream"
DONE = b"[DONE]"  # OpenAI's end-of-stream sentinel (both SDKs stop there)


class Event:
    """One event: its `event:` name, its `data:` (None without a data line), and its exact bytes."""

    __slots__ = ("_lines", "data", "name")

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines  # each with its line ending, so the bytes join back to the body
        self.name: str | None = None
        data: list[bytes] = []
        for line in lines:
            field, value = _field(line)
            if field == b"data":
                data.append(value)
            elif field == b"event":
                self.name = value.decode("utf-8", "replace")
        self.data: bytes | None = (data[0] if len(data) == 1 else b"\n".join(data)) if data else None

    @property
    def raw(self) -> bytes:
        """The event's bytes as they arrived, blank line included."""
        return b"".join(self._lines)

    @property
    def is_done(self) -> bool:
        return self.data is not None and self.data.strip() == DONE

    def __repr__(self) -> str:
        shown = self.data[:40] if self.data is not None else None
        return f"Event(name={self.name!r}, data={shown!r})"


def _field(line: bytes) -> tuple[bytes, bytes]:
    """(field, value) of one line; a comment or blank line has field b"".

    The value is cut out with one slice: a data line can be megabytes long.
    """
    end = len(line) - (2 if line.endswith(b"\r\n") else 1 if line.endswith((b"\n", b"\r")) else 0)
    if end <= 0 or line.startswith(b":"):
        return b"", b""
    colon = line.find(b":", 0, end)
    if colon == -1:
        return line[:end], b""
    start = colon + 2 if line[colon + 1 : colon + 2] == b" " else colon + 1
    return line[:colon], line[start:end]


class EventSplitter:
    """Cuts a byte stream into `Event`s; the events' `raw` bytes join back to exactly what was fed."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the pieces of the line not yet ended
        self._lines: list[bytes] = []  # the ended lines of the event not yet ended

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that `chunk` completes, in order."""
        events: list[Event] = []
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            self._pending.append(chunk[start : end + 1])
            line = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            self._lines.append(line)
            if line in (b"\n", b"\r\n"):  # a blank line ends the event
                events.append(Event(self._lines))
                self._lines = []
            start = end + 1
        if start < len(chunk):
            self._pending.append(chunk[start:])
        return events

    def close(self) -> Event | None:
        """What is left at the end of the body (an event with no blank line after it), or None."""
        if self._pending:
            self._lines.append(b"".join(self._pending))
            self._pending.clear()
        if not self._lines:
            return None
        event, self._lines = Event(self._lines), []
        return event


def split(body: bytes) -> Iterator[Event]:
    """Every event of a whole body, the unterminated last one included."""
    splitter = EventSplitter()
    yield from splitter.feed(body)
    last = splitter.close()
    if last is not None:
        yield last


def encode(name: str, data: bytes) -> bytes:
    """One event, `event: <name>\ndata: <data>\n\n`; `data` must be one line (JSON is)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def is_event_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == MEDIA_TYPE
