"""Graceful shutdown of `allm-proxy serve`: SIGTERM stops new connections, finishes the requests in flight,
flushes recordings and exits 0, with no traceback on the way out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.asgi_server import free_port
from tests.support.hardening import read_response
from tests.upstreams import openai_upstream as up

pytestmark = pytest.mark.slow  # hardening: SIGTERM to a served subprocess

ALLM_PROXY = Path(sys.executable).parent / "allm-proxy"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`allm-proxy serve` on a free port, as a user starts it; killed if a test leaves it running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLM_PROXY_", "OPENAI_", "GEMINI_"))}
    env["PYTHONPATH"] = str(ROOT)  # the tree under test, whichever checkout the console script was built from
    proc = subprocess.Popen(
        [str(ALLM_PROXY), "serve", "--port", str(port), *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"allm-proxy did not start: {proc.communicate(timeout=5)}")
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_the_request_in_flight_and_exits_0() -> None:
    body = json.dumps({"model": "gpt-image-1.5", "prompt": "a kestrel at dusk", "size": "1024x1024"}).encode()
    with serving("--provider", "fake") as (proc, port), socket.create_connection(("127.0.0.1", port)) as sock:
        # A request in flight: its body is still on the way when the signal comes.
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10]
        )
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not refused(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused(port), "still accepting connections after SIGTERM"
        sock.sendall(body[10:])
        status, headers, answer = read_response(sock, timeout=30)
        assert status == 200, answer[:300]
        assert json.loads(answer)["data"][0]["b64_json"] and headers["x-request-id"]
        sock.settimeout(5)
        assert sock.recv(1) == b""  # no keep-alive on a server that is stopping
        _, err = proc.communicate(timeout=35)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err


def test_sigterm_mid_stream_completes_the_stream_and_flushes_the_recording(tmp_path: Path) -> None:
    pytest.importorskip("vcr")
    cassette = tmp_path / "shutdown.yaml"
    upstream = up.FakeOpenAI(stream_delay=0.3)
    with (
        upstream.serving() as upstream_url,
        serving(
            "--provider",
            "openai",
            "--openai-base-url",
            f"{upstream_url}/v1",
            "--cassette",
            str(cassette),
            "--record-mode",
            "once",
        ) as (proc, port),
    ):
        events: list[str] = []
        request = {"model": "gpt-image-1.5", "prompt": "a fox", "stream": True, "partial_images": 2}
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/images/generations",
            json=request,
            timeout=30,
            headers={"x-allm-api-key": "sk-test-shutdown"},
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    events.append(line.removeprefix("event: "))
                    if len(events) == 1:
                        proc.send_signal(signal.SIGTERM)  # mid-stream: two events still to come
        _, err = proc.communicate(timeout=35)
    assert events == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    recorded = cassette.read_text()
    assert "/v1/images/generations" in recorded and "sk-test-shutdown" not in recorded
