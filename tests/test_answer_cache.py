"""The answer cache: a repeat of a replay that always answers alike is answered from the first answer's
bytes, exactly as the full path answers it, and journaled, counted and logged like any request; and
nothing is kept where a repeat could get another answer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from allm_proxy import Engine, ProxyConfig
from allm_proxy.config import CassetteSettings, load_config
from allm_proxy.server import create_app, file_bytes, uvicorn_options
from allm_proxy.server.file_bytes import FileBytes
from tests.support.asgi_server import port_of, running_proxy, serve_asgi
from tests.support.cassette_helpers import OPENAI_KEY, UPSTREAM, Upstream
from tests.support.sendfile_spy import Sendfiles

GENERATE = {"model": "gpt-image-1", "prompt": "a kestrel at dawn", "size": "1024x1024"}
# Headers every run of the same request sends differently.
PER_REQUEST = ("x-request-id", "date")


def engine_for(
    upstream: Upstream, record_mode: str, *, repeats: bool = True, cache_mb: float = 64.0, **where: Any
) -> Engine:
    return Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": UPSTREAM, "api_key": OPENAI_KEY},
        cassettes=CassetteSettings(
            record_mode=record_mode, allow_playback_repeats=repeats, answer_cache_mb=cache_mb, **where
        ),
        transport=upstream.asgi_transport(),
    )


@asynccontextmanager
async def proxy(engine: Engine) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(engine, ProxyConfig())
    transport = httpx.ASGITransport(app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        yield client, app


async def record(upstream: Upstream, cassette: Path, *bodies: dict[str, Any]) -> None:
    async with proxy(engine_for(upstream, "once", path=str(cassette), repeats=False)) as (client, _):
        for body in bodies:
            assert (await client.post("/v1/images/generations", json=body)).status_code == 200


def answer_of(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in PER_REQUEST]
    return response.status_code, headers, response.content


async def answers(engine: Engine, bodies: list[dict[str, Any]], **headers: str) -> tuple[list[Any], Any]:
    async with proxy(engine) as (client, app):
        out = [answer_of(await client.post("/v1/images/generations", json=b, headers=headers)) for b in bodies]
        entries = (await client.get("/allm/requests")).json()["data"]
        metrics = (await client.get("/metrics")).text
        return out, (app.state.answers, entries, metrics)


async def test_repeats_are_answered_byte_for_byte_as_the_full_path_answers_them(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    small = {"model": "dall-e-2", "prompt": "a heron", "size": "256x256", "response_format": "b64_json"}
    await record(upstream, cassette, GENERATE, small)
    bodies = [GENERATE, small, GENERATE, small, GENERATE]

    cached, (cache, entries, metrics) = await answers(engine_for(upstream, "none", path=str(cassette)), bodies)
    uncached, (no_cache, _, _) = await answers(engine_for(upstream, "none", path=str(cassette), cache_mb=0), bodies)

    assert no_cache is None  # answer_cache_mb = 0 turns it off
    assert cached == uncached
    assert cache.hits == 3 and len(cache) == 2
    assert upstream.calls == 2  # only the recording reached the upstream
    # Every request has its journal entry with its image, and is counted, kept answer or not.
    assert len(entries) == 5
    assert all(e["status"] == 200 and e["source"] == "cassette" and e["images"] for e in entries)
    assert [e["upstream"][0]["cassette"] for e in entries] == ["hit"] * 5
    assert [bool(e["upstream"][0].get("kept")) for e in entries] == [False, False, True, True, True]
    counted = 'model="gpt-image-1",operation="generate",provider="openai",source="cassette",status="200"} 3.0'
    assert "allm_requests_total{" + counted in metrics


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files (memfd) are Linux's")
def test_a_served_kept_answer_is_sent_from_its_memory_file_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the connection layer `serve` uses, repeats get the kept answer from its memory file
    (`file_bytes`, by sendfile), the same bytes as the first answer; the file counts in the budget."""
    monkeypatch.setattr(file_bytes, "MIN_BYTES", 1)  # the test upstream's images are small
    sendfiles = Sendfiles(monkeypatch)
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    asyncio.run(record(upstream, cassette, GENERATE))
    engine = engine_for(upstream, "none", path=str(cassette))
    app = create_app(engine, ProxyConfig())
    with serve_asgi(app, **uvicorn_options(ProxyConfig().limits)) as url, httpx.Client(base_url=url) as client:
        got = [client.post("/v1/images/generations", json=GENERATE) for _ in range(3)]
    assert [r.status_code for r in got] == [200] * 3
    assert got[0].content == got[1].content == got[2].content and got[0].json()["data"][0]["b64_json"]
    assert [count for count, _ in sendfiles.calls] == [len(got[0].content)] * 2  # the repeats; the first by writev
    (kept,) = app.state.answers._answers.values()
    assert isinstance(kept.body, FileBytes) and kept.size >= 2 * len(kept.body)


async def test_a_kept_answer_has_a_journal_entry_like_the_first_and_its_image(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    async with proxy(engine_for(upstream, "none", path=str(cassette))) as (client, app):
        first, again = [(await client.post("/v1/images/generations", json=GENERATE)) for _ in range(2)]
        assert app.state.answers.hits == 1
        listed = (await client.get("/allm/requests")).json()["data"]
        entries = [(await client.get(f"/allm/requests/{e['id']}")).json() for e in reversed(listed)]
        images = [(await client.get(f"/allm/requests/{e['id']}/images/0")).content for e in reversed(listed)]
    assert first.content == again.content and len(entries) == 2
    assert [e["upstream_request_id"] for e in entries] == ["req_1", "req_1"]  # the recorded x-request-id
    volatile = ("id", "time", "ms", "upstream")
    assert {k: v for k, v in entries[0].items() if k not in volatile} == {
        k: v for k, v in entries[1].items() if k not in volatile
    }
    assert images[0] == images[1] and images[0].startswith(b"\x89PNG")


async def test_a_request_with_several_recordings_follows_them_in_order(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE, GENERATE)  # two recordings of one request: a cursor decides
    got, (cache, _, _) = await answers(engine_for(upstream, "none", path=str(cassette)), [GENERATE] * 4)
    assert [json.loads(body)["created"] for _, _, body in got] == [1, 2, 2, 2]
    assert len(cache) == 0 and cache.hits == 0


@pytest.mark.parametrize(
    ("why", "body", "headers"),
    [
        ("a fault header", GENERATE, {"x-allm-fault": "latency; ms=1"}),
        ("a hosted image URL, new each time", {**GENERATE, "model": "dall-e-2", "response_format": "url"}, {}),
    ],
)
async def test_no_answer_is_kept_where_a_repeat_could_differ(
    tmp_path: Path, why: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, body)
    got, (cache, entries, _) = await answers(engine_for(upstream, "none", path=str(cassette)), [body] * 3, **headers)
    assert cache.hits == 0 and len(cache) == 0, why
    assert [status for status, _, _ in got] == [200] * 3 and len(entries) == 3


async def test_no_answer_is_kept_while_faults_are_set(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    async with proxy(engine_for(upstream, "none", path=str(cassette))) as (client, app):
        set_faults = await client.post("/allm/faults", json={"faults": ["server_error; times=2"]})
        assert set_faults.status_code == 200
        statuses = [(await client.post("/v1/images/generations", json=GENERATE)).status_code for _ in range(5)]
        assert app.state.answers.hits == 0
    assert [s >= 500 for s in statuses] == [True, True, False, False, False]


async def test_choosing_another_cassette_drops_the_kept_answers(tmp_path: Path) -> None:
    root = tmp_path / "cassettes"
    first, second = Upstream(), Upstream(serial_offset=100)
    for name, upstream in (("a", first), ("b", second)):
        async with proxy(engine_for(upstream, "once", directory=str(root))) as (client, _):
            sent = await client.post("/v1/images/generations", json=GENERATE, headers={"x-allm-cassette": name})
            assert sent.status_code == 200

    async with proxy(engine_for(Upstream(), "none", directory=str(root))) as (client, app):

        async def serial(**headers: str) -> int:
            return int((await client.post("/v1/images/generations", json=GENERATE, headers=headers)).json()["created"])

        assert [await serial(**{"x-allm-cassette": "a"}) for _ in range(2)] == [1, 1]
        assert [await serial(**{"x-allm-cassette": "b"}) for _ in range(2)] == [101, 101]  # the header is in the key
        assert (await client.post("/allm/cassette", json={"name": "a"})).status_code == 200
        assert [await serial() for _ in range(2)] == [1, 1]
        assert (await client.post("/allm/cassette", json={"name": "b"})).status_code == 200
        assert [await serial() for _ in range(2)] == [101, 101]  # not the answer kept while `a` was chosen
        assert app.state.answers.hits == 4


async def test_an_answer_past_its_share_of_the_budget_is_not_kept(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    _, (cache, _, _) = await answers(engine_for(upstream, "none", path=str(cassette), cache_mb=0.0001), [GENERATE] * 3)
    assert len(cache) == 0 and cache.hits == 0


async def test_without_repeats_allowed_nothing_is_kept(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    got, (cache, _, _) = await answers(engine_for(upstream, "none", path=str(cassette), repeats=False), [GENERATE] * 2)
    assert [status for status, _, _ in got] == [200, 400]  # played once; the repeat is a cassette miss
    assert len(cache) == 0


def test_the_budget_is_set_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "allm.toml"
    config.write_text('[cassettes]\npath = "c.json"\nanswer_cache_mb = 8\n')
    assert load_config(config).cassettes.answer_cache_mb == 8
    config.write_text('[cassettes]\npath = "c.json"\nanswer_cache_mb = -1\n')
    with pytest.raises(ValueError, match="answer_cache_mb must not be negative"):
        load_config(config)


async def test_the_access_log_has_a_line_for_every_kept_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    with caplog.at_level(logging.INFO, logger="allm_proxy.access"):
        _, (cache, _, _) = await answers(engine_for(upstream, "none", path=str(cassette)), [GENERATE] * 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "allm_proxy.access"]
    lines = [line for line in lines if "generations" in line]
    assert cache.hits == 2 and len(lines) == 3
    assert all("model=gpt-image-1 provider=openai status=200" in line for line in lines)


async def test_a_body_the_door_cannot_read_gets_the_answer_it_gets_without_kept_answers(tmp_path: Path) -> None:
    """`KeptAnswerMiddleware` reads the body before routing; when that fails (too large, not JSON),
    the endpoint raises the same error where it reads the body, and the one error funnel answers it."""
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    got = []
    for cache_mb in (64.0, 0.0):
        engine = engine_for(upstream, "none", path=str(cassette), cache_mb=cache_mb)
        app = create_app(engine, ProxyConfig(max_body_bytes=4096))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://p") as client,
        ):
            assert (app.state.answers is None) == (cache_mb == 0)
            too_large = await client.post("/v1/images/generations", json={**GENERATE, "prompt": "x" * 5000})
            not_json = await client.post(
                "/v1/images/generations", content=b"{nope", headers={"content-type": "application/json"}
            )
            fine = await client.post("/v1/images/generations", json=GENERATE)
        got.append(
            [
                (r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None)
                for r in (too_large, not_json, fine)
            ]
        )
    assert got[0] == got[1]
    assert got[0][0] == (413, "payload_too_large") and got[0][1][0] == 400 and got[0][2] == (200, None)


async def test_a_kept_answer_is_sent_before_routing_and_a_miss_reaches_the_endpoint_once(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    await record(upstream, cassette, GENERATE)
    engine = engine_for(upstream, "none", path=str(cassette))
    app = create_app(engine, ProxyConfig())
    routed: list[str] = []
    router = app.router

    async def counting_router(scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await router(scope, receive, send)

    app.router = counting_router  # type: ignore[assignment]  # what the door passes on reaches routing
    async with (
        router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://p") as client,
    ):
        answers = [await client.post("/v1/images/generations", json=GENERATE) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3 and answers[0].content == answers[2].content
    assert routed == ["/v1/images/generations"]  # the first ran the endpoint; the repeats were kept
    assert app.state.answers.hits == 2


def test_a_fault_set_while_a_replayed_body_arrives_still_acts_on_the_connection(tmp_path: Path) -> None:
    """The door reads the body with the client's own `receive` and leaves it that way for the rest
    of the request: a `reset` switched on mid-body (as POST /allm/faults would) resets the connection
    instead of failing for want of it (a 500)."""
    cassette = tmp_path / "c.json"
    upstream = Upstream()
    asyncio.run(record(upstream, cassette, GENERATE))
    engine = engine_for(upstream, "none", path=str(cassette))
    body = json.dumps(GENERATE).encode()
    with running_proxy(engine, ProxyConfig()) as url, socket.create_connection(("127.0.0.1", port_of(url)), 10) as sock:
        head = b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(head + b"content-length: %d\r\n\r\n" % len(body))
        time.sleep(0.3)  # the request is at the door, waiting for its body
        engine.faults.set(["reset"])
        sock.sendall(body)
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
        assert got == b"", got[:200]
