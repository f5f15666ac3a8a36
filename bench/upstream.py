"""A fake OpenAI upstream as fast as plain asyncio allows: HTTP/1.1 keep-alive, pre-built answers.

    python -m bench.upstream --bodies DIR [--port 0] [--gzip]

prints ``LISTENING <port>`` once it accepts connections. Every image
request is answered with a complete pre-built response (status line,
headers and body in one bytes object, one `transport.write`), chosen by
`bench.bodies.select_response`. ``GET /healthz`` answers ok; ``GET
/_bench/stats`` counts the image requests served (so a run can check that a
replaying proxy never reached the upstream). With ``--gzip`` the upstream
answers gzip-compressed bodies to clients that accept them, as OpenAI's edge
does; off by default.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import socket
import sys
from collections import OrderedDict
from pathlib import Path

from .bodies import RESPONSE_KINDS, BodySet, response_body, select_response, with_text_chunk

MAX_HEAD = 64 * 1024
IMAGE_PATHS = frozenset(f"{base}/images/{op}" for base in ("/v1", "") for op in ("generations", "edits", "variations"))


def _response(status: str, body: bytes, *, gzipped: bool = False, close: bool = False) -> bytes:
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "x-request-id: req_bench_upstream",
        "openai-version: 2020-10-01",
        "openai-processing-ms: 1",
    ]
    if gzipped:
        head.append("content-encoding: gzip")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Answers:
    """Every answer, pre-built: the plain and (with gzip) compressed responses per body."""

    def __init__(self, bodies: BodySet, *, use_gzip: bool, cache_size: int = 128) -> None:
        self.bodies = bodies
        self.use_gzip = use_gzip
        self.plain = {kind: _response("200 OK", bodies.response(kind).read_bytes()) for kind in RESPONSE_KINDS}
        self.gzipped = {}
        if use_gzip:
            self.gzipped = {
                kind: _response("200 OK", gzip.compress(bodies.response(kind).read_bytes(), 6), gzipped=True)
                for kind in RESPONSE_KINDS
            }
        self.images = {kind: bodies.image(kind).read_bytes() for kind in RESPONSE_KINDS}
        self._variants: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()
        self._cache_size = cache_size
        self.served = 0
        self.not_found = _response(
            "404 Not Found",
            json.dumps(
                {
                    "error": {
                        "message": "Unknown route on the bench upstream.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "unknown_url",
                    }
                }
            ).encode(),
        )
        self.health = _response("200 OK", b'{"status":"ok"}')

    def image_answer(self, body: bytes | bytearray, content_type: str, accepts_gzip: bool) -> bytes:
        self.served += 1
        kind, variant = select_response(body, content_type)
        zipped = accepts_gzip and self.use_gzip
        if variant is None:
            return self.gzipped[kind] if zipped else self.plain[kind]
        key = (kind, variant, zipped)
        answer = self._variants.get(key)
        if answer is None:
            raw = response_body(kind, with_text_chunk(self.images[kind], f"bench variant {variant}"))
            answer = _response("200 OK", gzip.compress(raw, 6), gzipped=True) if zipped else _response("200 OK", raw)
            self._variants[key] = answer
            if len(self._variants) > self._cache_size:
                self._variants.popitem(last=False)
        return answer

    def stats(self) -> bytes:
        return _response("200 OK", json.dumps({"requests": self.served}).encode())


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection: parse a request (Content-Length or chunked), write the answer."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.buf = bytearray()
        self.head: tuple[str, str, dict[str, str]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._fail()
                    return
                self.head = self._parse_head(bytes(self.buf[:end]))
                del self.buf[: end + 4]
            body = self._take_body(self.head[2])
            if body is None:
                return
            method, path, headers = self.head
            self.head = None
            self._answer(method, path, headers, body)

    def _parse_head(self, raw: bytes) -> tuple[str, str, dict[str, str]]:
        lines = raw.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, target.split("?", 1)[0], headers

    def _take_body(self, headers: dict[str, str]) -> bytes | bytearray | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._take_chunked()
        length = int(headers.get("content-length", "0"))
        if len(self.buf) < length:
            return None
        if length == len(self.buf):
            whole, self.buf = self.buf, bytearray()
            return whole
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return body

    def _take_chunked(self) -> bytes | None:
        pos, parts = 0, list[bytes]()
        while True:
            line_end = self.buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(self.buf[pos:line_end]).split(b";", 1)[0], 16)
            start = line_end + 2
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0 and self.buf[start : start + 2] != b"\r\n":
                    return None
                end = start + 2 if self.buf[start : start + 2] == b"\r\n" else trailer_end + 4
                del self.buf[:end]
                return b"".join(parts)
            if len(self.buf) < start + size + 2:
                return None
            parts.append(bytes(self.buf[start : start + size]))
            pos = start + size + 2

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes | bytearray) -> None:
        assert self.transport is not None
        close = headers.get("connection", "").lower() == "close"
        if method == "POST" and path in IMAGE_PATHS:
            accepts_gzip = "gzip" in headers.get("accept-encoding", "")
            answer = self.answers.image_answer(body, headers.get("content-type", ""), accepts_gzip)
        elif method == "GET" and path == "/healthz":
            answer = self.answers.health
        elif method == "GET" and path == "/_bench/stats":
            answer = self.answers.stats()
        else:
            answer = self.answers.not_found
        self.transport.write(answer)
        if close:
            self.transport.close()
            self.transport = None

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(_response("431 Request Header Fields Too Large", b"{}", close=True))
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(bodies: BodySet, port: int, use_gzip: bool) -> None:
    answers = Answers(bodies, use_gzip=use_gzip)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(answers), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING {bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upstream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bodies", type=Path, required=True, help="directory written by bench.bodies.build")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--gzip", action="store_true", help="answer gzip bodies to clients that accept them")
    args = parser.parse_args(argv)
    asyncio.run(serve(BodySet(args.bodies), args.port, args.gzip))


if __name__ == "__main__":
    main()
