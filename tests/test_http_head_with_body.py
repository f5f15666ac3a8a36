"""The connection layer's two shortcuts. `HeadWithBody`: a response head leaves with the body's first
bytes in one writev, on a real asyncio socket transport, and every byte still arrives in order when
the socket takes only part of them. `BODY_IN`: a body that is all in is read without a timer."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import ServerLimits
from allm_proxy.server import file_bytes, http_guard, uploads, uvicorn_options
from allm_proxy.server.file_bytes import FileBytes, file_backed
from allm_proxy.server.http_guard import BODY_IN, HeadWithBody
from tests.support.asgi_server import port_of, running_proxy, serve_asgi
from tests.support.sendfile_spy import Sendfiles

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n"
BODY = b'{"data": [1]}'


class Writes:
    """Counts what reaches the socket by os.writev and by the transport's own write."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writev: list[list[int]] = []
        real = os.writev

        def counted(fd: int, buffers: list[Any]) -> int:
            self.writev.append([len(b) for b in buffers])
            return real(fd, buffers)

        monkeypatch.setattr(http_guard, "_writev", counted)


def socket_pair(wire: str) -> tuple[socket.socket, socket.socket]:
    if wire == "unix":
        return socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as server:  # TCP: TCP_CORK is TCP's
        ours = socket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    return ours, theirs


@asynccontextmanager
async def connection(
    wire: str = "unix",
) -> AsyncIterator[tuple[HeadWithBody, asyncio.Transport, socket.socket, list[int]]]:
    """A real selector transport on one end of a socket pair (Unix or loopback TCP); the test reads the other end."""
    ours, theirs = socket_pair(wire)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    transport_writes: list[int] = []
    real_write = transport.write

    def counted_write(data: Any) -> None:
        transport_writes.append(len(data))
        real_write(data)

    transport.write = counted_write  # type: ignore[method-assign]
    try:
        yield HeadWithBody(transport, loop), transport, theirs, transport_writes
    finally:
        transport.close()
        theirs.close()


async def read_all(sock: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await loop.sock_recv(sock, count - len(got))
    return bytes(got)


async def test_head_and_body_leave_in_one_writev(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    async with connection() as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(HEAD)
        assert writes.writev == [] and transport_writes == []  # held
        cycle_transport.write(BODY)
        assert writes.writev == [[len(HEAD), len(BODY)]] and transport_writes == []
        assert await read_all(peer, len(HEAD) + len(BODY)) == HEAD + BODY
        cycle_transport.write(b"more")  # later writes are the transport's own
        assert transport_writes == [4]


async def test_a_head_with_nothing_after_it_leaves_on_the_next_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    async with connection() as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(HEAD)  # a HEAD request's answer, or a stream's head before its first event
        await asyncio.sleep(0)
        assert transport_writes == [len(HEAD)] and writes.writev == []
        assert await read_all(peer, len(HEAD)) == HEAD
        cycle_transport.write(b"event")
        assert transport_writes == [len(HEAD), 5]


async def test_100_continue_is_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    async with connection() as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert transport_writes == [25]
        cycle_transport.write(HEAD)
        cycle_transport.write(BODY)
        assert writes.writev == [[len(HEAD), len(BODY)]]
        assert await read_all(peer, 25 + len(HEAD) + len(BODY)) == b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + BODY


async def test_close_sends_a_held_head_first() -> None:
    async with connection() as (cycle_transport, transport, peer, _):
        cycle_transport.write(HEAD)
        cycle_transport.close()
        assert transport.is_closing()
        assert await read_all(peer, len(HEAD)) == HEAD


async def test_what_the_socket_does_not_take_is_queued_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    body = os.urandom(8 * 1024 * 1024)  # far more than a socket buffer
    async with connection() as (cycle_transport, transport, peer, transport_writes):
        cycle_transport.write(HEAD)
        cycle_transport.write(body)
        assert len(writes.writev) == 1 and len(transport_writes) == 1  # the rest went to the transport
        assert transport.get_write_buffer_size() > 0
        cycle_transport.write(b"tail")  # behind the queued rest
        assert await read_all(peer, len(HEAD) + len(body) + 4) == HEAD + body + b"tail"


async def test_with_bytes_queued_already_the_head_and_body_queue_behind_them(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(monkeypatch)
    first = os.urandom(8 * 1024 * 1024)
    async with connection() as (cycle_transport, transport, peer, _):
        transport.write(first)  # an earlier answer the socket has not taken yet
        assert transport.get_write_buffer_size() > 0
        cycle_transport.write(HEAD)
        cycle_transport.write(BODY)
        assert writes.writev == []  # never ahead of what is queued
        assert await read_all(peer, len(first) + len(HEAD) + len(BODY)) == first + HEAD + BODY


async def test_without_writev_the_two_go_as_the_transport_s_own_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_guard, "_writev", None)  # Windows has no os.writev
    async with connection() as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(HEAD)
        cycle_transport.write(BODY)
        assert transport_writes == [len(HEAD), len(BODY)]
        assert await read_all(peer, len(HEAD) + len(BODY)) == HEAD + BODY


async def test_what_the_connection_writes_itself_goes_after_a_held_head() -> None:
    """The protocol's own writes and closes (a 400 or 408 envelope, a graceful stop) send the
    head a cycle holds first, instead of overtaking or dropping it."""
    async with connection() as (cycle_transport, transport, peer, _):
        protocol = object.__new__(http_guard.GuardedHttpToolsProtocol)
        protocol.cycle = types.SimpleNamespace(transport=cycle_transport)  # type: ignore[assignment]
        cycle_transport.write(HEAD)  # a HEAD request's answer, held until the next turn
        protocol._send_held_head()
        transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        assert await read_all(peer, len(HEAD) + 28) == HEAD + b"HTTP/1.1 400 Bad Request\r\n\r\n"


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files (memfd) are Linux's")
@pytest.mark.parametrize("wire", ["tcp", "unix"])
async def test_a_file_backed_body_is_sent_from_its_file_after_its_head(
    monkeypatch: pytest.MonkeyPatch, wire: str
) -> None:
    writes, sendfiles = Writes(monkeypatch), Sendfiles(monkeypatch)
    body = file_backed(os.urandom(256 * 1024))
    assert isinstance(body, FileBytes)
    async with connection(wire) as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(HEAD)
        cycle_transport.write(body)
        assert writes.writev == [] and sendfiles.calls and sendfiles.calls[0][0] == len(body)
        assert await read_all(peer, len(HEAD) + len(body)) == HEAD + body
        if sendfiles.calls[0][1] == len(body):
            assert transport_writes == []  # the socket took it all from the file
        if wire == "tcp":
            sock = cycle_transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0  # uncorked again


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files (memfd) are Linux's")
async def test_what_the_socket_does_not_take_from_the_file_is_queued_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    sendfiles = Sendfiles(monkeypatch)
    monkeypatch.setattr(file_bytes, "MAX_BYTES", 16 * 1024 * 1024)
    body = file_backed(os.urandom(8 * 1024 * 1024))  # far more than a socket buffer (a full one is the same)
    async with connection("tcp") as (cycle_transport, transport, peer, transport_writes):
        cycle_transport.write(HEAD)
        cycle_transport.write(body)
        assert len(sendfiles.calls) == 1 and sendfiles.calls[0][1] < len(body)
        assert len(transport_writes) == 1 and transport.get_write_buffer_size() > 0  # the rest
        cycle_transport.write(b"tail")
        assert await read_all(peer, len(HEAD) + len(body) + 4) == HEAD + body + b"tail"


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files (memfd) are Linux's")
async def test_a_socket_that_refuses_sendfile_gets_the_body_by_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", refused)
    body = file_backed(os.urandom(256 * 1024))
    async with connection("tcp") as (cycle_transport, _, peer, transport_writes):
        cycle_transport.write(HEAD)
        cycle_transport.write(body)
        assert transport_writes == [len(body)]  # the head went; the body followed it by the transport
        assert await read_all(peer, len(HEAD) + len(body)) == HEAD + body


def test_answers_over_a_served_proxy_are_whole_and_pipelined_ones_in_order() -> None:
    """The fake provider's answers through the connection layer `serve` uses: a JSON answer, a
    streamed one, and two requests pipelined on one connection, answered in order."""
    with running_proxy(Engine()) as url:
        one = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a fox", "model": "gpt-image-1"})
        assert one.status_code == 200 and one.json()["data"][0]["b64_json"]
        with httpx.stream(
            "POST",
            f"{url}/v1/images/generations",
            json={"prompt": "a fox", "model": "gpt-image-1", "stream": True, "partial_images": 1},
        ) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("event:")]
        assert streamed.status_code == 200 and events[-1] == "event: image_generation.completed"
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # a head with no body after it
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            got = b""
            while got.count(b"HTTP/1.1 200") < 3 or not got.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
        assert got.index(b'"status"') < got.index(b'"object"')  # /healthz's answer, then /v1/models'


def test_the_connection_says_when_a_body_is_all_in() -> None:
    """`BODY_IN` in the scope's state is set once the whole body has arrived, so `read_body` needs
    no deadline; a body still arriving has it unset (and is read under the body timeout)."""
    seen: list[tuple[bool, bool]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        at_start = bool(scope.get("state", {}).get(BODY_IN))
        while (await receive()).get("more_body"):
            pass
        seen.append((at_start, bool(scope.get("state", {}).get(BODY_IN))))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve_asgi(app, **uvicorn_options()) as url, socket.create_connection(("127.0.0.1", port_of(url)), 10) as sock:
        head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        sock.sendall(head + b"0123")  # part of the body: the app starts before the rest
        time.sleep(0.2)
        sock.sendall(b"456789")
        assert sock.recv(1024).startswith(b"HTTP/1.1 204")
    assert seen == [(False, True)]


async def test_a_body_all_in_is_read_without_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timer(when: float) -> Any:
        raise AssertionError("a timer for a body that cannot wait")

    monkeypatch.setattr(asyncio, "timeout_at", no_timer)
    app = types.SimpleNamespace(state=types.SimpleNamespace(config=ProxyConfig(), limits=ServerLimits()))
    sent = [{"type": "http.request", "body": b'{"prompt": "x"}', "more_body": False}]

    async def receive() -> Any:
        return sent.pop(0)

    scope = {"type": "http", "method": "POST", "headers": [], "app": app, "state": {BODY_IN: True}}
    assert await uploads.read_body(Request(scope, receive)) == b'{"prompt": "x"}'
    with pytest.raises(AssertionError, match="a timer"):  # without the mark, the deadline is armed
        await uploads.read_body(Request({**scope, "state": {}}, receive))
