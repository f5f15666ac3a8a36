"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with deadlines the application never sees."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .. import errors
from ..config import ServerLimits
from .failures import render
from .file_bytes import FileBytes

# What h11 (uvicorn's other protocol) allows a request line and headers; httptools itself has no bound.
MAX_HEAD_BYTES = 16 * 1024
# Not on Windows: there a head and its body go as two writes.
_writev = getattr(os, "writev", None)
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux only
# Set in a request's scope state once its whole body has arrived (`read_body` then needs no timer).
BODY_IN = "body_in"
# Set in a request's scope state when it begins: its `ClientLeft`.
CLIENT_LEFT = "client_left"


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
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            left = cycle.scope.get("state", {}).get(CLIENT_LEFT)
            if isinstance(left, ClientLeft):
                left.tell()

    def shutdown(self) -> None:
        self._send_held_head()  # a graceful stop closes the connection in this turn of the loop
        super().shutdown()

    def _send_held_head(self) -> None:
        """What the connection writes or closes itself goes after the answer's head a cycle holds."""
        transport = getattr(self.cycle, "transport", None)
        if isinstance(transport, HeadWithBody):
            transport.flush()

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
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            cycle.scope.setdefault("state", {})[CLIENT_LEFT] = ClientLeft(self.flow.resume_reading)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and not cycle.more_body:
            # The body is all in: reading it cannot wait, so it needs no deadline (`read_body`).
            cycle.scope.setdefault("state", {})[BODY_IN] = True

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
        self._send_held_head()
        if self._in_head:  # part of a head arrived; a connection that sent nothing is just closed
            self._send_envelope(
                errors.RequestTimeoutError(
                    f"The request line and headers did not arrive within {self.header_timeout:g} s."
                )
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._send_held_head()
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


class ClientLeft:
    """Told by the connection when its client closes it before the request's answer is complete.

    An app that waits on something long (the provider) and wants to stop when nobody is left to
    answer would otherwise keep an `await receive()` pending beside it, in a task of its own, for
    the disconnect message: two tasks made and one cancelled for every request. `listen` instead
    leaves one callback here, and resumes reading the connection, as that `receive()` would, so
    that the close is seen. Put in the request's scope state (`CLIENT_LEFT`) by this protocol;
    under another server there is none, and the app listens with `receive()`.
    """

    __slots__ = ("_listener", "_resume_reading")

    def __init__(self, resume_reading: Callable[[], None]) -> None:
        self._resume_reading = resume_reading
        self._listener: Callable[[], None] | None = None

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` (once) if the client leaves before `stop`."""
        self._listener = listener
        self._resume_reading()

    def stop(self) -> None:
        self._listener = None

    def tell(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener()


class HeadWithBody:
    """The transport one request's answer is written to: its head goes out with the body's first bytes.

    uvicorn writes the status line and headers as soon as the app starts its answer, then the body:
    two sends, and a client woken twice for every answer. Here the head (the cycle's first write)
    is held until the next write, and the two leave in one `os.writev` when nothing is queued on the
    connection, without copying the body; what the socket does not take then is queued on the
    transport, as its own write would. A head with no body after it in the same turn of the event
    loop (a stream, a HEAD request) leaves on the next turn. `100 Continue` is never held: the
    client waits for it before it sends the body. A body with a memory file of its own (a kept
    answer, `file_bytes.FileBytes`) is sent from that file instead. Everything else is the
    transport's own.
    """

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._write_both(head, data)
        elif self._started or bytes(data[:12]) == b"HTTP/1.1 100":
            self._transport.write(data)
        else:
            self._started = True
            self._head = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send a held head now (what follows it, if anything, goes on its own)."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _write_both(self, head: bytes, body: bytes | bytearray | memoryview) -> None:
        transport = self._transport
        sock = transport.get_extra_info("socket")
        if (
            _writev is None
            or sock is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or transport.get_extra_info("sslcontext") is not None
        ):
            transport.write(head)
            transport.write(body)
            return
        if isinstance(body, FileBytes):
            self._send_file(sock, head, body)
            return
        try:
            sent = _writev(sock.fileno(), [head, body])
        except OSError:  # a full socket; or a broken one, which the transport's own write reports its own way
            sent = 0
        self._queue_rest(head, body, sent)

    def _send_file(self, sock: Any, head: bytes, body: FileBytes) -> None:
        """The head written, then the body sent from its memory file (`file_bytes`): the kernel
        takes the file's pages, and the bytes are never copied through the CPU. The socket is corked
        meanwhile, so the head waits for the body and they leave together, as they do by writev."""
        corked = _cork(sock, True)
        sent = 0
        try:
            try:
                sent = os.write(sock.fileno(), head)
                if sent == len(head):
                    sent += os.sendfile(sock.fileno(), body.fd, 0, len(body))
            except OSError:
                # A full socket, or one sendfile refuses (EINVAL), or a broken connection, which the
                # transport's own write reports its own way: what is left goes there, after what went.
                pass
            self._queue_rest(head, body, sent)
        finally:
            if corked:
                _cork(sock, False)  # what the kernel holds leaves now

    def _queue_rest(self, head: bytes, body: bytes | bytearray | memoryview, sent: int) -> None:
        """What the socket did not take of head + body, queued on the transport in order."""
        transport = self._transport
        if sent < len(head):
            transport.write(head[sent:])
            transport.write(body)
        elif sent < len(head) + len(body):
            transport.write(memoryview(body)[sent - len(head) :])


def _cork(sock: Any, on: bool) -> bool:
    """Set TCP_CORK (Linux); False where there is none (another system, a Unix socket)."""
    if _TCP_CORK is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
    except OSError:
        return False
    return True


def guarded_protocol(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout": header_timeout})
