"""A closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending its next request
as soon as the last answer is in, for a bounded time and count. Every answer is verified.

    python -m bench.loadgen SPEC.json      # prints one JSON object with the figures

Built on `asyncio.BufferedProtocol` so that a body is received straight into a
reusable buffer of its size and compared with the expected bytes by one
`memcmp` (`bytearray == bytes`); httpx would make the client the bottleneck
above ~1,000 req/s. Requests are sent as the OpenAI Python SDK sends them,
`Accept-Encoding: gzip, deflate` included, so a proxy that recompresses is
caught (``gzip_responses`` counts such answers; they are gunzipped and
verified all the same).

The spec (JSON):

    {"host": "127.0.0.1", "port": 8400,
     "requests": [{"method": "POST", "path": "/v1/images/generations",
                   "content_type": "application/json", "body_file": "...", "expect_file": "..."}],
     "order": "cycle",            # or "random": which request a connection sends next
     "verify": "auto",            # exact | auto | shape | status (see `Verifier`)
     "concurrency": 16, "warmup": 1.0, "duration": 5.0,   # seconds; measured after warmup
     "max_requests": 0,           # >0: stop after this many (the time bound still holds)
     "timeout": 30.0}             # per request

Verify modes: ``exact``: status 200 and the body byte-identical to
``expect_file``; ``auto``: exact when the first answer is identical, else
``shape``; ``shape``: status 200 and an OpenAI image JSON (starts with ``{``,
has ``"b64_json"``); ``status``: status 200 only.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import random
import socket
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD_CAP = 64 * 1024
clock = time.perf_counter


@dataclass
class Request:
    raw: bytes
    expect: bytes | None


@dataclass
class Stats:
    latencies: array = field(default_factory=lambda: array("d"))
    completed: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    bytes_in: int = 0
    body_bytes: int = 0
    bodies: int = 0
    gzip_responses: int = 0
    chunked_responses: int = 0
    reconnects: int = 0

    def error(self, kind: str, sample: str = "") -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if sample and len(self.error_samples) < 3:
            self.error_samples.append(sample[:300])


class Verifier:
    """Checks one answer; returns None when it is right, else the kind of error."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def check(self, status: int, body: bytes | bytearray, length: int, expect: bytes | None) -> str | None:
        if status != 200:
            return f"status_{status}"
        if self.mode == "exact":
            if expect is None:
                return None
            if length != len(expect):
                return "length_mismatch"
            if len(body) == length:
                return None if body == expect else "body_mismatch"
            return None if body[:length] == expect else "body_mismatch"
        if self.mode == "shape" and (length < 2 or body[0] != 0x7B or body.find(b'"b64_json"', 0, length) < 0):
            return "not_an_image_response"
        return None


class _Probe(Verifier):
    """Runs every check on the first answer, so the run can choose its verify mode."""

    def __init__(self) -> None:
        super().__init__("probe")
        self.results: dict[str, str | None] = {}

    def check(self, status: int, body: bytes | bytearray, length: int, expect: bytes | None) -> str | None:
        self.results = {
            mode: Verifier(mode).check(status, body, length, expect) for mode in ("exact", "shape", "status")
        }
        return None


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one request in flight at a time (no pipelining)."""

    def __init__(self, stats: Stats, verifier: Verifier, body_capacity: int) -> None:
        self.stats = stats
        self.verifier = verifier
        self.head = bytearray(HEAD_CAP)
        self.head_view = memoryview(self.head)
        self.head_pos = 0
        self.body = bytearray(max(body_capacity, 1))
        self.body_view = memoryview(self.body)
        self.body_pos = 0
        self.body_len = 0
        self.chunks = bytearray()
        self.chunk_pos = 0
        self.state = "idle"  # idle | head | body | chunked
        self.status = 0
        self.gzipped = False
        self.close_after = False
        self.expect: bytes | None = None
        self.waiter: asyncio.Future[str | None] | None = None
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.lost = False

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.state == "body":
            return self.body_view[self.body_pos : self.body_len]
        if self.state == "chunked":
            if len(self.chunks) - self.chunk_pos < 65536:
                self.chunks.extend(bytes(max(65536, len(self.chunks))))
            return memoryview(self.chunks)[self.chunk_pos :]
        if self.head_pos >= HEAD_CAP:
            self._finish("head_too_large")
            return self.head_view  # the connection is aborted; whatever arrives is dropped
        return self.head_view[self.head_pos :]

    def buffer_updated(self, nbytes: int) -> None:
        self.stats.bytes_in += nbytes
        if self.state == "body":
            self.body_pos += nbytes
            if self.body_pos >= self.body_len:
                self._complete_body()
        elif self.state == "chunked":
            self.chunk_pos += nbytes
            self._maybe_complete_chunked()
        elif self.state == "head":
            self.head_pos += nbytes
            self._parse_head()
        else:
            self.head_pos = 0
            self._finish("unexpected_bytes")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result("disconnected")

    # -- one request ---------------------------------------------------------------

    def send(self, request: Request) -> asyncio.Future[str | None]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.expect = request.expect
        self.state = "head"
        self.head_pos = 0
        self.started = clock()
        self.transport.write(request.raw)
        return self.waiter

    def abort(self, kind: str) -> None:
        self._finish(kind)

    def _parse_head(self) -> None:
        end = self.head.find(b"\r\n\r\n", 0, self.head_pos)
        if end < 0:
            return
        head = bytes(self.head[:end]).lower()
        try:
            self.status = int(head[9:12])
        except ValueError:
            self._finish("bad_status_line")
            return
        self.gzipped = b"\r\ncontent-encoding: gzip" in head
        self.close_after = b"\r\nconnection: close" in head
        leftover = self.head_view[end + 4 : self.head_pos]
        if b"\r\ntransfer-encoding: chunked" in head:
            self.stats.chunked_responses += 1
            self.state = "chunked"
            self.chunk_pos = len(leftover)
            if len(self.chunks) < self.chunk_pos + 65536:
                self.chunks = bytearray(self.chunk_pos + 65536)
            self.chunks[: self.chunk_pos] = leftover
            self._maybe_complete_chunked()
            return
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            self._finish("no_content_length")
            return
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end > 0 else len(head)])
        if length > len(self.body):
            self.body_view.release()
            self.body = bytearray(length)
            self.body_view = memoryview(self.body)
        self.body_len = length
        self.body_pos = len(leftover)
        if self.body_pos > length:
            self._finish("extra_bytes")
            return
        self.body_view[: self.body_pos] = leftover
        if self.body_pos >= length:
            self._complete_body()
        else:
            self.state = "body"

    def _complete_body(self) -> None:
        body: bytes | bytearray = self.body
        if self.gzipped:
            self.stats.gzip_responses += 1
            body = gzip.decompress(self.body_view[: self.body_len])
            self._finish(self.verifier.check(self.status, body, len(body), self.expect), body)
            return
        self._finish(self.verifier.check(self.status, body, self.body_len, self.expect), body)

    def _maybe_complete_chunked(self) -> None:
        if self.chunk_pos < 5 or self.chunks[self.chunk_pos - 5 : self.chunk_pos] != b"0\r\n\r\n":
            return
        data = bytes(self.chunks[: self.chunk_pos])
        parts, pos = [], 0
        while True:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                return  # a "0\r\n\r\n" inside a chunk; wait for more
            size = int(data[pos:line_end].split(b";", 1)[0], 16)
            if size == 0:
                break
            parts.append(data[line_end + 2 : line_end + 2 + size])
            pos = line_end + 2 + size + 2
            if pos > len(data):
                return
        body = b"".join(parts)
        if self.gzipped:
            self.stats.gzip_responses += 1
            body = gzip.decompress(body)
        self._finish(self.verifier.check(self.status, body, len(body), self.expect), body)

    def _finish(self, error: str | None, body: bytes | bytearray | None = None) -> None:
        self.state = "idle"
        if body is not None:
            self.stats.bodies += 1
            self.stats.body_bytes += self.body_len if body is self.body else len(body)
        if error is not None and body is not None and error.startswith("status_") and len(self.stats.error_samples) < 3:
            self.stats.error_samples.append(bytes(body[:300]).decode("utf-8", "replace"))
        if (error is not None or self.close_after) and self.transport is not None:
            self.transport.abort()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(error)


class LoadGenerator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host = spec.get("host", "127.0.0.1")
        self.port = int(spec["port"])
        self.concurrency = int(spec.get("concurrency", 1))
        self.warmup = float(spec.get("warmup", 0.0))
        self.duration = float(spec.get("duration", 5.0))
        self.max_requests = int(spec.get("max_requests", 0))
        self.timeout = float(spec.get("timeout", 30.0))
        self.order = spec.get("order", "cycle")
        self.mode = spec.get("verify", "auto")
        self.requests = [self._build(r) for r in spec["requests"]]
        self.capacity = max((len(r.expect) for r in self.requests if r.expect), default=65536)
        self.stats = Stats()
        self.issued = 0
        self.next_index = 0
        self.rng = random.Random(7)
        self.connections: list[Connection] = []

    def _build(self, spec: dict[str, Any]) -> Request:
        body = Path(spec["body_file"]).read_bytes() if "body_file" in spec else spec.get("body", "").encode()
        head = [
            f"{spec.get('method', 'POST')} {spec['path']} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: application/json",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
            "User-Agent: OpenAI/Python 1.99.0 (allm-proxy bench)",
            "X-Stainless-Lang: python",
            "Authorization: Bearer sk-bench-client",
        ]
        head += [f"{k}: {v}" for k, v in spec.get("headers", {}).items()]
        if body or spec.get("method", "POST") == "POST":
            head += [f"Content-Type: {spec.get('content_type', 'application/json')}", f"Content-Length: {len(body)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        expect = Path(spec["expect_file"]).read_bytes() if spec.get("expect_file") else None
        return Request(raw, expect)

    def _pick(self) -> Request:
        if len(self.requests) == 1:
            return self.requests[0]
        if self.order == "random":
            return self.requests[self.rng.randrange(len(self.requests))]
        request = self.requests[self.next_index % len(self.requests)]
        self.next_index += 1
        return request

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: Connection(self.stats, Verifier(self.mode), self.capacity), self.host, self.port
            ),
            self.timeout,
        )
        self.connections.append(conn)
        return conn

    async def _one(self, conn: Connection, request: Request) -> tuple[str | None, float]:
        started = clock()
        error = await conn.send(request)
        return error, clock() - started

    async def calibrate(self) -> dict[str, Any]:
        """One request on its own connection: its latency, and whether the answer is byte-identical."""
        conn = await self._connect()
        # The first request of the cycle, counted like any: `max_requests` N sends N requests in all
        # (a recording of N requests must hold each once, or its replay takes a cursor).
        request = self._pick()
        self.issued += 1
        probe = _Probe()
        conn.verifier = probe
        error, elapsed = await self._one(conn, request)
        self.stats.completed += 1
        identical = probe.results.get("exact") is None if request.expect is not None and not error else None
        if self.mode == "auto":
            self.mode = "exact" if identical else "shape"
        error = error or probe.results.get(self.mode)
        if error is not None:
            self.stats.error(error, f"first request: {error}")
        if conn.transport is not None:
            conn.transport.close()
        self.connections.remove(conn)
        return {"first_ms": elapsed * 1000, "identical": identical}

    async def _worker(self, warm_end: float, end: float) -> None:
        conn: Connection | None = None
        stats = self.stats
        latencies = stats.latencies
        while True:
            if clock() >= end or (self.max_requests and self.issued >= self.max_requests):
                break
            if conn is None or conn.lost or conn.transport is None:
                if conn is not None:
                    stats.reconnects += 1
                try:
                    conn = await self._connect()
                except (OSError, TimeoutError) as exc:
                    stats.error("connect_failed", repr(exc))
                    await asyncio.sleep(0.05)
                    continue
            self.issued += 1
            request = self._pick()
            started = clock()
            error = await conn.send(request)
            done = clock()
            stats.completed += 1
            if error is not None:
                stats.error(error)
                continue
            if warm_end <= done <= end:
                latencies.append(done - started)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = clock()
            for conn in self.connections:
                if conn.state != "idle" and now - conn.started > self.timeout:
                    conn.abort("timeout")

    async def run(self) -> dict[str, Any]:
        calibration = await self.calibrate()
        watchdog = asyncio.ensure_future(self._watchdog())
        started = clock()
        warm_end = started + self.warmup
        end = warm_end + self.duration
        gc.collect()
        gc.disable()
        try:
            await asyncio.gather(*(self._worker(warm_end, end) for _ in range(self.concurrency)))
        finally:
            gc.enable()
            watchdog.cancel()
        finished = clock()
        window = min(finished, end) - warm_end if not self.max_requests else finished - started
        return self._summary(calibration, window, finished - started)

    def _summary(self, calibration: dict[str, Any], window: float, elapsed: float) -> dict[str, Any]:
        stats = self.stats
        lat = sorted(stats.latencies)
        count = count_in_window = len(lat)

        def pct(p: float) -> float | None:
            return lat[min(count - 1, int(p * count))] * 1000 if count else None

        return {
            "concurrency": self.concurrency,
            "verify": self.mode,
            "identical": calibration["identical"],
            "first_ms": calibration["first_ms"],
            "window_s": window,
            "elapsed_s": elapsed,
            "requests": count_in_window,
            "completed": stats.completed,
            "errors": stats.errors,
            "error_kinds": stats.error_kinds,
            "error_samples": stats.error_samples,
            "rps": count_in_window / window if window > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if count else None,
            "mean_ms": sum(lat) / count * 1000 if count else None,
            "bytes_in": stats.bytes_in,
            "mean_body_bytes": stats.body_bytes / stats.bodies if stats.bodies else None,
            "gzip_responses": stats.gzip_responses,
            "chunked_responses": stats.chunked_responses,
            "reconnects": stats.reconnects,
        }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if args else 2)
    spec = json.loads(Path(args[0]).read_text())
    generator = LoadGenerator(spec)
    try:
        result = asyncio.run(generator.run())
    except (OSError, TimeoutError) as exc:
        result = {
            "fatal": f"{type(exc).__name__}: {exc}",
            "errors": 1,
            "requests": 0,
            "rps": 0.0,
            "error_kinds": {"fatal": 1},
        }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
