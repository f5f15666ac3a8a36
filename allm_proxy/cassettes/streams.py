"""Server-sent event streams: recorded as they pass, replayed event by event.

A recorded stream keeps, next to its body, when each chunk arrived:
``response["allm_stream"] = {"chunks": [[seconds_since_start, length], ...]}``.
Plain vcrpy ignores the key (it reads status, headers and body only) and
replays the body in one piece. `ReplayStream` yields one event at a time,
at once by default, or with the recorded pacing (``replay_timing = "recorded"``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from ..wire import sse
from ..wire.events import StreamEnd, stream_end
from ..wire.sse import EventSplitter, split

TIMING_KEY = "allm_stream"

Finish = Callable[[bytes, list[list[float]]], Awaitable[None]]


def is_event_stream(headers: Any) -> bool:
    """Whether headers (httpx.Headers or a vcrpy name -> [values] dict) say text/event-stream."""
    for name, value in headers.items() if hasattr(headers, "items") else headers:
        if name.lower() == "content-type":
            values = value if isinstance(value, list) else [value]
            return any(sse.is_event_stream(str(v)) for v in values)
    return False


class RecordingStream(httpx.AsyncByteStream):
    """Passes an upstream stream through, noting chunk timing; `finish` runs once the answer is whole.

    Whole means: the body reached its end, a `data: [DONE]` or an error event
    (the SDKs and the adapter stop reading there, so the end of the body may
    never be read), or the client closed the stream after a `*.completed`
    event. A stream the client abandons half-way is not recorded: replaying
    half an answer would be worse than a clear miss.
    """

    def __init__(self, inner: httpx.AsyncByteStream, finish: Finish) -> None:
        self._inner = inner
        self._finish = finish
        self._parts: list[bytes] = []
        self._timing: list[list[float]] = []
        self._events = EventSplitter()
        self._end: StreamEnd | None = None  # where the last event with data left the stream
        self._recorded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        started = time.monotonic()
        async for chunk in self._inner:
            self._parts.append(chunk)
            self._timing.append([round(time.monotonic() - started, 4), len(chunk)])
            for event in self._events.feed(chunk):
                if event.data is not None:  # a comment (keepalive) changes nothing
                    self._end = stream_end(event)
            if self._end in ("done", "error"):
                await self._record()  # before the reader sees the end, as for whole bodies
            yield chunk
        await self._record()

    async def aclose(self) -> None:
        try:
            if self._end == "completed":
                await self._record()
        finally:
            await self._inner.aclose()

    async def _record(self) -> None:
        if not self._recorded:
            self._recorded = True
            await self._finish(b"".join(self._parts), list(self._timing))


class ReplayStream(httpx.AsyncByteStream):
    """A recorded body, yielded event by event, optionally at the recorded pace."""

    def __init__(self, body: bytes, chunks: list[list[float]] | None = None, *, paced: bool = False) -> None:
        self._body = body
        # Timing only applies when it describes this very body (decompression changes lengths).
        valid = bool(chunks) and sum(int(c[1]) for c in chunks or []) == len(body)
        self._chunks = chunks if paced and valid else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            for event in split(self._body):
                yield event.raw
                await asyncio.sleep(0)  # let the consumer act on each event, as on a live stream
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        position = 0
        for offset, length in self._chunks:
            delay = started + float(offset) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield self._body[position : position + int(length)]
            position += int(length)

    async def aclose(self) -> None:
        return None
