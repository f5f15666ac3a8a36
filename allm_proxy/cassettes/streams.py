"""Server-sent event streams: recorded as they pass, replayed event by event.

A recorded stream keeps, next to its body, when each chunk arrived:
``response["allm_stream"] = {"chunks": [[seconds_since_start, length], ...]}``.
Plain vcrpy ignores the key (it reads status, headers and body only) and
replays the body in one piece. `ReplayStream` yields one event at a time,
at once by default, or with the recorded pacing (``replay_timing = "recorded"``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

TIMING_KEY = "allm_stream"
_EVENT_END = re.compile(rb"\r?\n\r?\n")

Finish = Callable[[bytes, list[list[float]]], Awaitable[None]]


def is_event_stream(headers: Any) -> bool:
    """Whether headers (httpx.Headers or a vcrpy name -> [values] dict) say text/event-stream."""
    for name, value in (headers.items() if hasattr(headers, "items") else headers):
        if name.lower() == "content-type":
            values = value if isinstance(value, list) else [value]
            return any("text/event-stream" in str(v).lower() for v in values)
    return False


class RecordingStream(httpx.AsyncByteStream):
    """Passes an upstream stream through, noting chunk timing; `finish` runs once it is read to the end.

    A stream the client abandons half-way is not recorded: replaying half an
    answer would be worse than a clear miss.
    """

    def __init__(self, inner: httpx.AsyncByteStream, finish: Finish) -> None:
        self._inner = inner
        self._finish = finish

    async def __aiter__(self) -> AsyncIterator[bytes]:
        started = time.monotonic()
        parts: list[bytes] = []
        timing: list[list[float]] = []
        async for chunk in self._inner:
            parts.append(chunk)
            timing.append([round(time.monotonic() - started, 4), len(chunk)])
            yield chunk
        await self._finish(b"".join(parts), timing)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ReplayStream(httpx.AsyncByteStream):
    """A recorded body, yielded event by event, optionally at the recorded pace."""

    def __init__(self, body: bytes, chunks: list[list[float]] | None = None, *, paced: bool = False) -> None:
        self._body = body
        # Timing only applies when it describes this very body (decompression changes lengths).
        valid = bool(chunks) and sum(int(c[1]) for c in chunks or []) == len(body)
        self._chunks = chunks if paced and valid else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            for event in split_events(self._body):
                yield event
                await asyncio.sleep(0)  # let the consumer act on each event, as on a live stream
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        position = 0
        for offset, length in self._chunks:
            delay = started + float(offset) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield self._body[position:position + int(length)]
            position += int(length)

    async def aclose(self) -> None:
        return None


def split_events(body: bytes) -> list[bytes]:
    """The body cut after each blank line that ends an event (the pieces join back to the body)."""
    events: list[bytes] = []
    position = 0
    for match in _EVENT_END.finditer(body):
        events.append(body[position:match.end()])
        position = match.end()
    if position < len(body):
        events.append(body[position:])
    return events
