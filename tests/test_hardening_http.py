"""Hostile clients at the connection level: slow heads and bodies, oversized uploads, floods of requests.

Each is cut off within a bound, gets an envelope where an answer is possible, and leaves the server serving.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import CassetteSettings, ServerLimits
from tests.support.asgi_server import guarded_proxy, port_of
from tests.support.hardening import (
    captured_logs,
    envelope_of,
    read_response,
)

pytestmark = pytest.mark.slow  # hardening: raw sockets and slow clients against the guarded server

LIMITS = ServerLimits(header_timeout=1.0, body_timeout=1.0, keep_alive=5, max_inflight=1)
HEAD = b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    with guarded_proxy(Engine(), ProxyConfig(max_body_bytes=1024 * 1024), LIMITS) as url:
        yield url


def connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)


def trickle(sock: socket.socket, data: bytes, interval: float, give_up: float) -> float:
    """Send `data` a byte at a time until the server answers or closes; seconds until it did."""
    started = time.monotonic()
    for byte in data:
        if select.select([sock], [], [], interval)[0]:
            return time.monotonic() - started  # an answer or EOF is waiting
        try:
            sock.send(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        if time.monotonic() - started > give_up:
            break
    raise AssertionError(f"the server still listened after {give_up} s")


def server_closed(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_slow_loris_head_is_cut_off_with_a_408(proxy_url: str) -> None:
    with connect(proxy_url) as sock, captured_logs() as logs:
        elapsed = trickle(sock, HEAD * 50, interval=0.05, give_up=8)
        status, headers, body = read_response(sock, timeout=2)
    assert LIMITS.header_timeout <= elapsed < LIMITS.header_timeout + 1.5
    assert status == 408 and headers["connection"] == "close"
    error = envelope_of(body)
    assert error["code"] == "request_timeout" and "headers did not arrive" in error["message"]
    assert logs.problems() == []


def test_a_connection_that_sends_nothing_is_closed(proxy_url: str) -> None:
    with connect(proxy_url) as sock:
        started = time.monotonic()
        assert server_closed(sock, within=LIMITS.header_timeout + 2)
        assert time.monotonic() - started < LIMITS.header_timeout + 1.5


def test_slow_loris_on_a_keep_alive_connection_is_cut_off_too(proxy_url: str) -> None:
    with connect(proxy_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock, timeout=5)[0] == 200
        elapsed = trickle(sock, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"z" * 500, interval=0.05, give_up=8)
    assert elapsed < LIMITS.header_timeout + 1.5


def test_slow_body_gets_a_408_within_the_body_timeout(proxy_url: str) -> None:
    with connect(proxy_url) as sock, captured_logs() as logs:
        sock.sendall(HEAD + b"Content-Length: 4000\r\n\r\n")
        elapsed = trickle(sock, b'{"prompt": "' + b"a" * 3990, interval=0.05, give_up=8)
        status, headers, body = read_response(sock, timeout=2)
    assert LIMITS.body_timeout <= elapsed < LIMITS.body_timeout + 1.5
    assert status == 408 and headers["connection"] == "close"
    assert envelope_of(body)["code"] == "request_timeout"
    assert logs.problems() == []


def test_upload_over_the_limit_is_refused_while_streaming_without_filling_memory(proxy_url: str) -> None:
    chunk = b"y" * 65536
    sent = 0
    with connect(proxy_url) as sock:
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < 256 * 1024 * 1024:  # 256 MB if nothing stopped us
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break
            sent += len(chunk)
        status, headers, body = read_response(sock, timeout=5)
    assert status == 413 and headers["connection"] == "close"
    assert envelope_of(body)["code"] == "payload_too_large"
    # What got through is the 1 MB limit plus what the kernel's socket buffers hold, nowhere near 256 MB.
    assert sent < 32 * 1024 * 1024, sent


def test_an_early_answer_closes_the_connection_instead_of_draining_the_body() -> None:
    with guarded_proxy(Engine(), ProxyConfig(access_token="sk-test-access"), LIMITS) as url, connect(url) as sock:
        sock.sendall(HEAD + b"Authorization: Bearer wrong\r\nContent-Length: 900000\r\n\r\n" + b"{" * 1000)
        status, headers, _ = read_response(sock, timeout=5)
        assert status == 401 and headers["connection"] == "close"
        assert server_closed(sock, within=2)


def test_requests_over_the_in_flight_limit_get_a_503_that_sdks_retry(proxy_url: str) -> None:
    body = json.dumps({"prompt": "held", "size": "1024x1024"}).encode()
    with connect(proxy_url) as held:
        # One request in flight (its body half sent), the limit in LIMITS.
        held.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
        time.sleep(0.2)
        response = httpx.post(f"{proxy_url}/v1/images/generations", json={"prompt": "x"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "x-should-retry" not in response.headers
        assert response.json()["error"]["code"] == "server_overloaded"
        held.sendall(body[5:])
        status, _, _ = read_response(held, timeout=30)
    assert status == 200
    assert httpx.get(f"{proxy_url}/healthz").status_code == 200


def test_many_slow_clients_at_once_do_not_stop_others_being_served(proxy_url: str) -> None:
    sockets = [connect(proxy_url) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        served = [httpx.get(f"{proxy_url}/healthz", timeout=5).status_code for _ in range(5)]
        assert served == [200] * 5
        results: list[bool] = []
        threads = [threading.Thread(target=lambda s=s: results.append(server_closed(s, 4))) for s in sockets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(results) and len(results) == 50
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("kept_answers", [False, True])
def test_a_client_that_leaves_before_its_json_body_is_in_is_a_499_not_an_error(
    tmp_path: Path, kept_answers: bool
) -> None:
    """Nobody is left to answer: the access log and the journal say 499, and nothing is logged as
    an unexpected error (with kept answers the body is read at the door, without, at the endpoint)."""
    if kept_answers:
        cassette = tmp_path / "c.json"
        cassette.write_text('{"version": 1, "interactions": []}')
        settings = CassetteSettings(path=str(cassette), record_mode="none", allow_playback_repeats=True)
        engine = Engine(image_adapter="openai", image_adapter_opts={"api_key": "sk-test-leaves"}, cassettes=settings)
    else:
        engine = Engine()
    with guarded_proxy(engine, ProxyConfig(), LIMITS) as url, captured_logs() as logs:
        assert (httpx.get(url + "/healthz").status_code == 200) and (
            engine.cassette_library is not None
        ) == kept_answers
        with connect(url) as sock:
            sock.sendall(HEAD + b"Content-Length: 4000\r\n\r\n" + b'{"prompt": "a')
            time.sleep(0.2)
        lines = logs.access_lines(containing="generations")
        entries = httpx.get(url + "/allm/requests").json()["data"]
    assert lines and "status=499" in lines[0], lines
    assert [e["status"] for e in entries] == [499]
    assert logs.problems() == []
