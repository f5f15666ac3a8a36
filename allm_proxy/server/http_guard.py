"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with deadlines the application never sees."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .. import errors
from ..config import ServerLimits
from .failures import render

# What h11 (uvicorn's other protocol) allows a request line and headers; httptools itself has no bound.
MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks; httptools turns it into the parser error that gets the 400."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on what the application never sees.

    uvicorn bounds idle keep-alive connections but not a request head that
    trickles in (slow loris), nor the rest of a body nobody reads any more.
    Here the client gets `header_timeout` seconds, from the connection
    opening or the previous response, to deliver a complete request line and
    headers (at most 16 KB of them); then it gets a 408 envelope and the
    connection is closed. A request that is not valid HTTP/1.1 gets a 400
    envelope instead of plain text.

    httptools (llhttp in C) parses a request head in a fraction of h11's
    Python time; see docs/benchmarks.md, "Issue 15, part 3".
    """

    header_timeout: float = ServerLimits.header_timeout
    _deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _in_head = False  # a request line or headers have begun to arrive, and are not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_client()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_client()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    # -- the parser's callbacks: bound the head ----------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge

    # -- the deadline --------------------------------------------------------------------------

    def _waiting_on_client(self) -> bool:
        """True while nothing in the application bounds the wait: a request head, or a body after the answer."""
        if self.transport is None or self.transport.is_closing():
            return False
        # No request yet, or the last one is answered (its body may still be arriving) and none is queued.
        return self.cycle is None or (self.cycle.response_complete and not self.pipeline)

    def _watch_client(self) -> None:
        if not self._waiting_on_client():
            self._cancel_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self._waiting_on_client():
            return
        if self._in_head:  # part of a head arrived; a connection that sent nothing is just closed
            self._send_envelope(
                errors.RequestTimeoutError(
                    f"The request line and headers did not arrive within {self.header_timeout:g} s."
                )
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._send_envelope(
            errors.InvalidRequestError(
                "The request is not valid HTTP/1.1 (a malformed request line or header, or headers over 16 KB).",
                code="invalid_http",
            )
        )
        self.transport.close()

    def _send_envelope(self, err: errors.ProxyError) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # a response is already under way; closing is all that is left
        rendered = render(err, close=True)
        headers = [
            *rendered.headers.items(),
            ("content-type", rendered.media_type),
            ("content-length", str(len(rendered.body))),
        ]
        head = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
        self.transport.write(STATUS_LINE[rendered.status] + head + b"\r\n" + rendered.body)


def guarded_protocol(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout": header_timeout})
