"""Helpers shared by the tests/test_hardening_*.py files: a proxy with its connection guard, log capture,
raw sockets and hostile images. (It holds no tests itself, only what they share.)"""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
from PIL import Image as PILImage

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import ServerLimits
from allm_proxy.server import create_app, uvicorn_options
from tests.support.asgi_server import serve_asgi

# Loggers that do not pass records up to the root once uvicorn has configured logging.
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "allm_proxy", "httpx", "httpcore")


@contextmanager
def guarded_proxy(engine: Engine, config: ProxyConfig | None = None,
                  limits: ServerLimits | None = None) -> Iterator[str]:
    """The proxy as `allm-proxy serve` runs it (connection guard included) on a free port; yields its base URL."""
    limits = limits or ServerLimits()
    with serve_asgi(create_app(engine, config, limits=limits), **uvicorn_options(limits)) as url:
        yield url


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def assert_envelope(response: httpx.Response, status: int, *, param: str | None = None,
                    code: str | None = None) -> dict:
    """The OpenAI error envelope with this status; returns its `error` object."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


class LogCapture(logging.Handler):
    """Every record of the proxy's, uvicorn's and httpx's loggers, at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """All records formatted, tracebacks included."""
        return "\n".join(self.format(record) for record in self.records)

    def problems(self) -> list[str]:
        """Records that would alarm an operator: errors, or anything with a traceback."""
        return [self.format(r) for r in self.records
                if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()]


@contextmanager
def captured_logs() -> Iterator[LogCapture]:
    """Capture at DEBUG on every logger that matters; the levels are restored afterwards."""
    capture = LogCapture()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(capture)
            logger.setLevel(level)


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (Content-Length framed) or until the server closes, within `timeout`."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
        if time.monotonic() > deadline:
            raise TimeoutError("no response head in time")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while (length < 0 or len(body) < length) and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        body += chunk
    return status, headers, body


def envelope_of(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- images -------------------------------------------------------------------------


def png(size: tuple[int, int] = (64, 64), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    PILImage.new(mode, size, (30, 90, 160, 255)[: len(mode)] if mode != "L" else 128).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    PILImage.effect_noise(size, 40).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of all zeros: a few kB that would decode to width*height pixels."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    idat = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
