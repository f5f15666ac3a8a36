"""`allm-proxy serve --workers 2` on a real Redis: two worker processes behave as one proxy.

Every test starts the real process tree (a supervisor and two spawned workers) on a free
loopback port and stops it by PID; the access log names the worker that answered each request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from vcr.persisters.filesystem import FilesystemPersister
from vcr.serializers import jsonserializer

from allm_proxy.cli import main
from allm_proxy.config import ProxyConfig
from allm_proxy.server.workers import balances_reuseport, bind_slots, uvicorn_config
from tests.support.cassette_helpers import OPENAI_KEY
from tests.support.redis_server import RedisServer, redis_server
from tests.support.serve_process import ServeProcess, listening_sockets, recording_args, serve_process
from tests.test_state_redis import record_ten_identical
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # serve process trees with workers and a real redis-server

PNG = b"\x89PNG\r\n\x1a\n"
WORKERS = 2


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


MAX_BURSTS = 5


def bursts_until_both_workers_answer(
    proxy: ServeProcess, burst: Callable[[int], None], method: str, path_prefix: str
) -> int:
    """Run `burst(k)` until the access log shows both workers answering (at most MAX_BURSTS); how many ran.

    Each worker has its own listening socket and the kernel picks one per connection by a hash of its
    addresses: a short burst can still land on one worker by chance, so another burst is the bounded remedy.
    """
    for k in range(MAX_BURSTS):
        burst(k)
        if len(proxy.answered_by(method, path_prefix)) == WORKERS:
            return k + 1
    raise AssertionError(f"one worker answered all of {MAX_BURSTS} bursts:\n{proxy.log()}")


def generate(base: str, body: Mapping[str, object], headers: dict[str, str] | None = None) -> httpx.Response:
    # httpx.post opens a fresh connection each time, so either worker may accept it.
    return httpx.post(f"{base}/v1/images/generations", json=body, headers=headers or {}, timeout=60)


def test_each_worker_slot_listens_on_its_own_socket_on_one_port() -> None:
    uv = uvicorn_config(replace(ProxyConfig(), port=0, workers=3))
    slots = bind_slots(uv, 3)
    try:
        assert len(slots) == 3 if balances_reuseport() else len(slots) == 1
        assert len({sock.getsockname()[1] for sock in slots}) == 1
        assert len({sock.fileno() for sock in slots}) == len(slots)
    finally:
        for sock in slots:
            sock.close()


def test_each_worker_accepts_on_its_own_socket_and_connections_opened_at_once_reach_both(
    tmp_path: Path, redis: RedisServer
) -> None:
    """What the benchmark's load generator does: 16 keep-alive connections at once, then requests on
    them. With one socket shared by all workers, one worker often accepted all 16; a socket per worker
    lets the kernel spread them (all 16 on one worker has odds of 2 in 65,536)."""
    if not balances_reuseport():
        pytest.skip("SO_REUSEPORT balances connections on Linux only")
    body = {"model": "dall-e-2", "prompt": "a kestrel", "size": "256x256", "response_format": "url"}
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:
        assert listening_sockets(proxy.port) == WORKERS  # serve_process waited for both to listen
        clients = [httpx.Client(base_url=proxy.base, timeout=60) for _ in range(16)]
        try:
            barrier = threading.Barrier(len(clients))

            def connect_then_ask(client: httpx.Client) -> int:
                barrier.wait(timeout=30)
                return client.post("/v1/images/generations", json=body).status_code

            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                assert list(pool.map(connect_then_ask, clients)) == [200] * len(clients)
        finally:
            for client in clients:
                client.close()
        answered = proxy.answered_by("POST", "/v1/images/generations", total=16)
        assert sum(answered.values()) == 16 and len(answered) == WORKERS, proxy.log()
        assert proxy.stop() == 0


def test_a_worker_that_dies_is_replaced_on_its_own_socket(tmp_path: Path, redis: RedisServer) -> None:
    body = {"model": "dall-e-2", "prompt": "a kestrel", "size": "256x256", "response_format": "url"}
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:
        before = proxy.worker_pids()
        assert len(before) == WORKERS
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = proxy.worker_pids()
            if len(now) == WORKERS and victim not in now and listening_sockets(proxy.port) == WORKERS:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no replacement worker listening within 60 s:\n{proxy.log()}")
        # Fresh connections hash over both sockets: within a bounded number, the replacement answers some.
        replacement = (now - before).pop()
        for _ in range(200):
            assert generate(proxy.base, body).status_code == 200
            if replacement in proxy.answered_by("POST", "/v1/images/generations"):
                break
        else:
            raise AssertionError(f"the replacement worker never answered:\n{proxy.log()}")
        assert proxy.stop() == 0


def test_workers_without_a_state_url_is_a_usage_error_that_shows_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "--state-url redis://127.0.0.1:6379/0" in result.output
    assert "hosted image files and replay cursors" in result.output
    config = tmp_path / "allm.toml"
    config.write_text("[server]\nworkers = 3\n")
    from_file = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert from_file.exit_code == 2 and "--workers 3 needs shared state" in from_file.output
    from_env = CliRunner().invoke(main, ["serve"], env={"ALLM_PROXY_WORKERS": "2"})
    assert from_env.exit_code == 2 and "--state-url" in from_env.output


def test_a_state_url_that_does_not_parse_stays_a_usage_error_with_workers() -> None:
    result = CliRunner().invoke(main, ["serve", "--workers", "2", "--state-url", "localhost:6379"])
    assert result.exit_code == 2 and "redis://HOST:PORT/DB" in result.output


def test_every_url_either_worker_issues_is_served_whichever_worker_answers(tmp_path: Path, redis: RedisServer) -> None:
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:

        def issue_and_fetch(i: int) -> tuple[int, bytes, str]:
            answer = generate(
                proxy.base, {"model": "dall-e-2", "prompt": f"kestrel {i}", "size": "256x256", "response_format": "url"}
            )
            assert answer.status_code == 200, answer.text
            fetched = httpx.get(answer.json()["data"][0]["url"], timeout=30)
            return fetched.status_code, fetched.content[:8], fetched.headers.get("content-type", "")

        def burst(k: int) -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent, so both workers are kept busy
                assert list(pool.map(issue_and_fetch, range(40))) == [(200, PNG, "image/png")] * 40

        bursts = bursts_until_both_workers_answer(proxy, burst, "GET", "/v1/images/files/")
        workers = proxy.worker_pids()
        issuers = proxy.answered_by("POST", "/v1/images/generations", total=40 * bursts)
        servers = proxy.answered_by("GET", "/v1/images/files/", total=40 * bursts)
        assert sum(issuers.values()) == sum(servers.values()) == 40 * bursts
        assert set(servers) == workers and set(issuers) <= workers and len(workers) == WORKERS, proxy.log()
        assert proxy.stop() == 0


def test_identical_requests_replay_in_recorded_order_across_both_workers_per_session(
    tmp_path: Path, redis: RedisServer
) -> None:
    cassette = tmp_path / "ten.json"
    upstream_url, recorded = record_ten_identical(cassette)
    assert len(set(recorded)) == 10  # ten different answers to one request: order is observable
    request = {"model": "gpt-image-1", "prompt": "the same kestrel", "size": "1024x1024"}
    with serve_process(
        tmp_path,
        "--state-url",
        redis.url,
        *recording_args(upstream_url, cassette, "none"),
        workers=WORKERS,
        env={"OPENAI_API_KEY": OPENAI_KEY},
    ) as proxy:
        for session in ("run-a", "run-b"):
            replayed = []
            for _ in range(10):
                answer = generate(proxy.base, request, {"x-allm-session": session})
                assert answer.status_code == 200, answer.text
                replayed.append(answer.json()["data"][0]["b64_json"])
            assert replayed == recorded
        extra = generate(proxy.base, request, {"x-allm-session": "run-a"})
        assert extra.status_code == 400 and extra.json()["error"]["code"] == "cassette_miss"
        assert sum(proxy.answered_by("POST", "/v1/images/generations").values()) == 20
        assert proxy.stop() == 0


def test_a_burst_of_50_recorded_by_two_workers_lands_whole_in_a_cassette_plain_vcrpy_reads(
    tmp_path: Path, redis: RedisServer
) -> None:
    cassette = tmp_path / "burst.json"
    upstream = FakeOpenAI()
    with (
        upstream.serving() as upstream_url,
        serve_process(
            tmp_path,
            "--state-url",
            redis.url,
            *recording_args(upstream_url, cassette, "new_episodes"),
            workers=WORKERS,
            env={"OPENAI_API_KEY": OPENAI_KEY},
        ) as proxy,
    ):

        def burst(k: int) -> None:
            def send(i: int) -> int:
                return generate(
                    proxy.base,
                    {
                        "model": "dall-e-2",
                        "prompt": f"prompt {k}-{i}",
                        "size": "256x256",
                        "response_format": "b64_json",
                    },
                ).status_code

            with ThreadPoolExecutor(max_workers=16) as pool:
                assert list(pool.map(send, range(50))) == [200] * 50

        # both workers recorded (almost always in the first burst of 50)
        bursts = bursts_until_both_workers_answer(proxy, burst, "POST", "/v1/images/generations")
        assert proxy.stop() == 0  # SIGTERM: every worker flushes its recordings
    requests, responses = FilesystemPersister.load_cassette(str(cassette), jsonserializer)  # plain vcrpy
    assert len(requests) == len(responses) == 50 * bursts
    assert sorted(json.loads(r.body)["prompt"] for r in requests) == sorted(
        f"prompt {k}-{i}" for k in range(bursts) for i in range(50)
    )
    assert OPENAI_KEY not in cassette.read_text()


def _requests_total(text: str, operation: str) -> float:
    pattern = re.compile(r"^allm_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    return sum(float(value) for labels, value in pattern.findall(text) if f'operation="{operation}"' in labels)


def test_metrics_under_two_workers_count_every_request_whichever_worker_answers(
    tmp_path: Path, redis: RedisServer
) -> None:
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:
        metrics_dirs = {Path(_environ(pid)["PROMETHEUS_MULTIPROC_DIR"]) for pid in proxy.worker_pids()}
        assert len(metrics_dirs) == 1  # one directory, shared by every worker

        def burst(k: int) -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(
                    pool.map(
                        lambda i: generate(proxy.base, {"prompt": f"p{i}", "size": "256x256"}).status_code, range(30)
                    )
                )
            assert statuses == [200] * 30

        made = 30 * bursts_until_both_workers_answer(proxy, burst, "POST", "/v1/images/generations")
        scrapes: list[httpx.Response] = []

        def scrape(k: int) -> None:
            scrapes.extend(httpx.get(f"{proxy.base}/metrics", timeout=10) for _ in range(6))  # fresh connections

        bursts_until_both_workers_answer(proxy, scrape, "GET", "/metrics")
        assert {_requests_total(s.text, "generate") for s in scrapes} == {float(made)}
        assert all(re.search(r"^allm_inflight_requests 0\.0$", s.text, re.MULTILINE) for s in scrapes)
        assert proxy.stop() == 0
    assert not any(d.exists() for d in metrics_dirs)  # removed at exit


def test_the_journal_under_two_workers_lists_every_entry_whichever_worker_answers(
    tmp_path: Path, redis: RedisServer
) -> None:
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:
        made: list[str] = []

        def burst(k: int) -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(
                    pool.map(lambda i: generate(proxy.base, {"prompt": f"p{k}-{i}", "size": "256x256"}), range(20))
                )
            assert [a.status_code for a in answers] == [200] * 20
            made.extend(a.headers["x-request-id"] for a in answers)

        bursts_until_both_workers_answer(proxy, burst, "POST", "/v1/images/generations")
        # Each worker writes its entries just after answering: wait (bounded) for the last of them.
        deadline = time.monotonic() + 20
        while len(httpx.get(f"{proxy.base}/allm/requests", timeout=30).json()["data"]) < len(made):
            assert time.monotonic() < deadline, "entries never reached the shared journal"
            time.sleep(0.05)
        listings: list[httpx.Response] = []

        def read(k: int) -> None:
            listings.extend(httpx.get(f"{proxy.base}/allm/requests", timeout=30) for _ in range(6))  # fresh connections

        bursts_until_both_workers_answer(proxy, read, "GET", "/allm/requests")
        for listing in listings:
            assert sorted(e["id"] for e in listing.json()["data"]) == sorted(made)
        assert proxy.stop() == 0


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def test_sigterm_lets_a_slow_request_in_flight_finish_and_exits_0(tmp_path: Path, redis: RedisServer) -> None:
    with serve_process(tmp_path, "--state-url", redis.url, workers=WORKERS) as proxy:
        workers = proxy.worker_pids()
        outcome: dict[str, httpx.Response] = {}
        body = {"prompt": "slow", "size": "256x256", "response_format": "b64_json"}
        slow = threading.Thread(
            target=lambda: outcome.setdefault(
                "answer", generate(proxy.base, body, {"x-allm-fault": "latency; ms=1500"})
            )
        )
        slow.start()
        time.sleep(0.5)  # the request is in a worker, waiting out its latency
        assert proxy.stop(signal.SIGTERM) == 0
        slow.join(timeout=30)
        answer = outcome["answer"]
        assert answer.status_code == 200 and answer.json()["data"][0]["b64_json"]
        assert proxy.worker_pids() == set() and not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "Traceback" not in proxy.log(), proxy.log()
