"""Faults by the thousand leave nothing behind: open sockets and the server loop's tasks return to where
they were after 1,000 failing requests, and a client that hangs up mid-stream closes the upstream stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from allm_proxy import Engine
from tests.support.asgi_server import free_port
from tests.support.hardening import LoopProbe, captured_logs, probed_proxy, settled
from tests.upstreams import openai_upstream as up

pytestmark = pytest.mark.slow  # hardening: a thousand requests each, counting what leaks

CONCURRENCY = 8


def open_sockets() -> int:
    """Sockets this process holds: the proxy's, its upstream clients', the fake upstreams' and ours."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def hammer(url: str, total: int, body: Callable[[int], dict[str, Any]]) -> Counter[int]:
    """`total` generation requests, CONCURRENCY at a time; the statuses they got."""
    statuses: Counter[int] = Counter()

    async def run() -> None:
        queue = iter(range(total))
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def worker() -> None:
                for i in queue:
                    response = await client.post("/v1/images/generations", json=body(i))
                    assert response.json()["error"]["message"], response.text
                    statuses[response.status_code] += 1

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    asyncio.run(run())
    return statuses


def assert_nothing_leaks(url: str, probe: LoopProbe, total: int, body: Callable[[int], dict[str, Any]]) -> Counter:
    hammer(url, 2 * CONCURRENCY, body)  # warm up: pools, adapters, the loop's own tasks
    sockets, tasks = settled(open_sockets, 0, within=0.2), probe.tasks()
    with captured_logs() as logs:
        statuses = hammer(url, total, body)
    # What 1,000 failures may leave: nothing that grows with their number.
    assert settled(open_sockets, sockets) <= sockets
    assert settled(probe.tasks, tasks) <= tasks
    assert [p for p in logs.problems() if "Traceback" in p] == []
    return statuses


def test_a_thousand_requests_to_an_unreachable_provider_leak_nothing() -> None:
    closed_port = free_port()  # bound, then closed: connecting is refused
    engine = Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": f"http://127.0.0.1:{closed_port}/v1", "api_key": "sk-test-leaks"},
    )
    with probed_proxy(engine) as (url, probe):
        statuses = assert_nothing_leaks(url, probe, 1000, lambda i: {"prompt": f"leak {i}"})
    assert statuses == Counter({502: 1000})


def test_a_thousand_scripted_provider_errors_leak_nothing() -> None:
    kinds = [{"error": {"status": status, "message": f"scripted {status}"}} for status in (429, 500, 502, 504, 400)]
    engine = Engine(image_adapter_opts={"scripts": kinds * 204})  # 1,020: the warm-up's 16 and the 1,000
    with probed_proxy(engine) as (url, probe):
        statuses = assert_nothing_leaks(url, probe, 1000, lambda i: {"prompt": f"leak {i}"})
    assert sum(statuses.values()) == 1000 and set(statuses) == {429, 500, 502, 504, 400}


def test_broken_upstream_answers_leak_nothing() -> None:
    upstream = up.FakeOpenAI()
    faults = [
        up.reset(),
        up.garbage(),
        up.truncated_json(),
        up.truncated_body(),
        up.server_error(503),
        up.rate_limited(),
        up.hang(2.0),
    ]
    upstream.default_reply = up.reset()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": f"{upstream_url}/v1", "api_key": "sk-test-leaks"},
            request_options={"timeout": 0.3},
        )
        with probed_proxy(engine) as (url, probe):
            upstream.script(*faults * 3)  # the warm-up
            upstream.script(*faults * 43)
            statuses = assert_nothing_leaks(url, probe, 7 * 43, lambda i: {"prompt": f"fault {i}"})
    assert statuses[200] == 0 and set(statuses) >= {502, 503, 504, 429}


def test_clients_hanging_up_mid_stream_close_the_upstream_streams() -> None:
    upstream = up.FakeOpenAI(stream_delay=0.05)
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai", image_adapter_opts={"base_url": f"{upstream_url}/v1", "api_key": "sk-test-leaks"}
        )
        with probed_proxy(engine) as (url, probe), httpx.Client(base_url=url, timeout=10) as client:
            body = {"model": "gpt-image-1.5", "prompt": "a fox", "stream": True, "partial_images": 3}
            with client.stream("POST", "/v1/images/generations", json=body) as response:
                assert sum(1 for line in response.iter_lines() if line.startswith("event:")) == 4
            sockets, tasks = open_sockets(), probe.tasks()
            for _ in range(30):
                with client.stream("POST", "/v1/images/generations", json=body) as response:
                    next(line for line in response.iter_lines() if line.startswith("event:"))
                client.close()  # hang up mid-stream: the connection goes, not just the response
                client = httpx.Client(base_url=url, timeout=10)
            client.close()
            assert settled(lambda: 30 - upstream.streams_cancelled, 0) == 0
            assert settled(open_sockets, sockets) <= sockets
            assert settled(probe.tasks, tasks) <= tasks
