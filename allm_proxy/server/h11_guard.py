"""The HTTP/1.1 connection layer: uvicorn's h11 protocol with deadlines the application never sees."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import errors
from ..config import ServerLimits
from .failures import render


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on what the application never sees.

    uvicorn bounds idle keep-alive connections but not a request head that
    trickles in (slow loris), nor the rest of a body nobody reads any more.
    Here the client gets `header_timeout` seconds, from the connection
    opening or the previous response, to deliver a complete request line and
    headers; then it gets a 408 envelope and the connection is closed. A
    request that is not HTTP/1.1 gets a 400 envelope instead of plain text.
    """

    header_timeout: float = ServerLimits.header_timeout
    _deadline: asyncio.TimerHandle | None = None

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

    def _waiting_on_client(self) -> bool:
        """True while nothing in the application bounds the wait: a request head, or a body after the answer."""
        if self.transport is None or self.transport.is_closing():
            return False
        their, ours = self.conn.their_state, self.conn.our_state
        return their is h11.IDLE or (their is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE))

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
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
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
        rendered = render(err, close=True)
        headers = [
            *rendered.headers.items(),
            ("content-type", rendered.media_type),
            ("content-length", str(len(rendered.body))),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=rendered.status, headers=headers)) or b"")
            self.transport.write(self.conn.send(h11.Data(data=rendered.body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass  # a response is already under way; closing is all that is left


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})
