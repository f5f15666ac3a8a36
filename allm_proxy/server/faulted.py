"""The faults that act on the HTTP connection: `slow`, `truncate` and `reset`.

The server hands its finished response to `shape_response`, and a
`ConnectionResetFault` to `reset_response`. Breaking a connection on purpose
needs the socket: uvicorn's `receive` is a method of the request cycle that
holds the connection's transport. Where there is none (another ASGI server),
the response raises after starting, and the server closes the connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from ..faults.injector import FaultDecision
from ..faults.kinds import DEFAULT_MS

PIECES = 20  # a slow body arrives in this many pieces; a slow stream, each event in this many


def shape_response(response: Response, decision: FaultDecision | None) -> Response:
    """`response` as the fault `slow` or `truncate` delivers it; unchanged otherwise."""
    if decision is None or decision.kind not in ("slow", "truncate"):
        return response
    if decision.kind == "truncate":
        if isinstance(response, StreamingResponse):
            return response  # truncate applies to whole answers only (the injector never picks it for streams)
        return TruncatedResponse(bytes(response.body), status_code=response.status_code, headers=response.headers)
    ms = decision.fault.ms if decision.fault.ms is not None else DEFAULT_MS
    if isinstance(response, StreamingResponse):
        length = response.headers.get("content-length")
        response.body_iterator = _paced(response.body_iterator, ms, int(length) if length else None)
        return response
    return SlowResponse(bytes(response.body), status_code=response.status_code, headers=response.headers, ms=ms)


def reset_response() -> Response:
    """A response that sends nothing and drops the connection (an RST where the OS allows)."""
    return _ResetResponse()


class SlowResponse(Response):
    """The whole body, in `PIECES` pieces spread over `ms`."""

    def __init__(self, content: bytes, *, status_code: int, headers: Any, ms: int) -> None:
        super().__init__(content, status_code=status_code, headers=dict(headers))
        self.ms = ms

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for piece in _paced(_once(bytes(self.body)), self.ms, len(self.body)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class TruncatedResponse(Response):
    """Declares the whole body's Content-Length, sends the first half, then closes the connection."""

    def __init__(self, content: bytes, *, status_code: int, headers: Any) -> None:
        super().__init__(content, status_code=status_code, headers=dict(headers))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        await asyncio.sleep(0.05)  # let the half reach the client before the close
        await _drop(receive, reset=False)


class _ResetResponse(Response):
    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _drop(receive, reset=True)


class ConnectionDropped(Exception):
    """Raised out of the app to make an ASGI server without a reachable transport drop the connection."""


async def _drop(receive: Any, *, reset: bool) -> None:
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionDropped("fault injection: drop this connection")
    drop_connection(transport, reset=reset)
    await receive()  # http.disconnect: the server then knows the connection is gone on purpose


def drop_connection(transport: Any, *, reset: bool) -> None:
    """Close an asyncio transport: with `reset`, at once and with an RST; else after what is buffered."""
    sock = transport.get_extra_info("socket")
    if not reset:
        transport.close()
        return
    if sock is not None:
        # Linger 0: closing sends RST, which the client reads as "connection reset by peer".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _paced(chunks: AsyncIterable[Any], ms: int, length: int | None) -> AsyncIterator[bytes]:
    """`chunks` re-cut into small pieces with pauses: a known `length` takes `ms` in all, else each chunk."""
    step = max(1, -(-length // PIECES)) if length else None
    pause = ms / 1000 / PIECES
    async for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        size = step or max(1, -(-len(data) // PIECES))
        for start in range(0, len(data), size):
            yield data[start : start + size]
            await asyncio.sleep(pause)
