"""Helpers shared by the tests/test_hardening_*.py files: log capture, raw sockets, the error
envelope check, and counting a proxy's tasks. (Servers live in tests/support/asgi_server.py,
hostile images in tests/support/images.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from allm_proxy import Engine
from allm_proxy.server import create_app, uvicorn_options
from tests.support.asgi_server import serve_asgi

# Loggers that do not pass records up to the root once uvicorn has configured logging.
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "allm_proxy", "httpx", "httpcore")


def assert_envelope(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict:
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

    def access_lines(self, count: int = 1, *, containing: str = "", timeout: float = 5.0) -> list[str]:
        """The access-log lines (with `containing`) so far, waiting up to `timeout` for `count` of them:
        a line is written just after its answer's last bytes went, so a client may have its answer
        a moment before the line exists."""
        deadline = time.monotonic() + timeout
        while True:
            # dict.fromkeys: a record reaches this handler once per logger it is attached to
            lines = [
                r.getMessage()
                for r in dict.fromkeys(self.records)
                if r.name == "allm_proxy.access" and containing in r.getMessage()
            ]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    def problems(self) -> list[str]:
        """Records that would alarm an operator: errors, or anything with a traceback."""
        return [
            self.format(r)
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()
        ]


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


class LoopProbe:
    """Wraps the app to learn which event loop serves it, so the test can count that loop's tasks."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def tasks(self) -> int:
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=5)


@contextmanager
def probed_proxy(engine: Engine) -> Iterator[tuple[str, LoopProbe]]:
    probe = LoopProbe(create_app(engine))
    with serve_asgi(probe, **uvicorn_options()) as url:
        yield url, probe


def settled(measure: Callable[[], int], limit: int, within: float = 5.0) -> int:
    """The measure once it is at most `limit` (or whatever it is after `within` seconds)."""
    deadline = time.monotonic() + within
    value = measure()
    while value > limit and time.monotonic() < deadline:
        time.sleep(0.05)
        value = measure()
    return value
