"""The cassette transport: record, replay, order, sessions, modes, misses, streams, secrets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from allm_proxy import errors
from allm_proxy.cassettes import CassetteLibrary
from allm_proxy.config import CassetteSettings
from tests.support.asgi_server import serve_asgi
from tests.support.cassette_helpers import (
    SECRETS,
    DeadUpstream,
    Upstream,
    library_for,
    send,
    written_files,
)
from tests.support.images import png_bytes


async def generate(
    library: CassetteLibrary, inner: httpx.AsyncBaseTransport, prompt: str = "a red fox", **kwargs: Any
) -> httpx.Response:
    return await send(
        library, inner, "POST", "/images/generations", json={"model": "gpt-image-1", "prompt": prompt}, **kwargs
    )


async def test_recorded_answer_replays_byte_identical_with_the_upstream_stopped(tmp_path: Path) -> None:
    cassette = tmp_path / "demo.json"
    live = await generate(library_for(cassette), Upstream().asgi_transport())
    dead = DeadUpstream()
    replayed = await generate(library_for(cassette, "none"), dead)
    assert dead.attempts == 0
    assert replayed.status_code == live.status_code == 200
    assert replayed.content == live.content
    assert replayed.headers["x-request-id"] == live.headers["x-request-id"]


async def test_yaml_cassettes_record_and_replay_too(tmp_path: Path) -> None:
    cassette = tmp_path / "demo.yaml"
    live = await generate(library_for(cassette), Upstream().asgi_transport())
    replayed = await generate(library_for(cassette, "none"), DeadUpstream())
    assert replayed.content == live.content
    assert cassette.read_text().startswith("interactions:\n- request:")


async def test_identical_requests_replay_in_recorded_order(tmp_path: Path) -> None:
    cassette = tmp_path / "order.json"
    recording, upstream = library_for(cassette), Upstream()
    recorded = [(await generate(recording, upstream.asgi_transport())).json()["created"] for _ in range(3)]
    assert recorded == [1, 2, 3]
    replaying = library_for(cassette, "none")
    replayed = [(await generate(replaying, DeadUpstream())).json()["created"] for _ in range(3)]
    assert replayed == recorded


async def test_each_session_gets_its_own_replay_cursor(tmp_path: Path) -> None:
    cassette = tmp_path / "sessions.json"
    recording, upstream = library_for(cassette), Upstream()
    for _ in range(2):
        await generate(recording, upstream.asgi_transport())
    replaying, dead = library_for(cassette, "none"), DeadUpstream()
    a1 = (await generate(replaying, dead, session="a")).json()["created"]
    b1 = (await generate(replaying, dead, session="b")).json()["created"]
    a2 = (await generate(replaying, dead, session="a")).json()["created"]
    b2 = (await generate(replaying, dead, session="b")).json()["created"]
    assert (a1, a2) == (b1, b2) == (1, 2)


async def test_json_bodies_match_as_data_whatever_the_key_order_and_whitespace(tmp_path: Path) -> None:
    cassette = tmp_path / "json.json"
    await send(
        library_for(cassette),
        Upstream().asgi_transport(),
        "POST",
        "/images/generations",
        content=b'{"model": "gpt-image-1", "prompt": "a fox", "n": 1}',
        headers={"content-type": "application/json"},
    )
    replayed = await send(
        library_for(cassette, "none"),
        DeadUpstream(),
        "POST",
        "/images/generations",
        content=b'{\n  "n":1,"prompt":"a fox",\n"model":"gpt-image-1"}',
        headers={"content-type": "application/json"},
    )
    assert replayed.json()["created"] == 1


async def test_edit_recorded_with_one_multipart_boundary_replays_with_another(tmp_path: Path) -> None:
    cassette = tmp_path / "edit.json"
    image = png_bytes((16, 16), mode="RGB")

    async def edit(library: CassetteLibrary, inner: httpx.AsyncBaseTransport, boundary: str) -> httpx.Response:
        body = httpx.Request(
            "POST",
            "http://x",
            files={"image": ("in.png", image, "image/png")},
            data={"prompt": "add a hat", "model": "gpt-image-1"},
        )
        random_boundary = body.headers["content-type"].split("boundary=")[1]
        content = body.read().replace(random_boundary.encode(), boundary.encode())
        return await send(
            library,
            inner,
            "POST",
            "/images/edits",
            content=content,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )

    live = await edit(library_for(cassette), Upstream().asgi_transport(), "boundary-recorded-1111")
    replayed = await edit(library_for(cassette, "none"), DeadUpstream(), "another-boundary-2222")
    assert replayed.content == live.content
    # The binary upload is kept as a base64 part, so the JSON cassette stays text.
    assert "Content-Transfer-Encoding: base64" in cassette.read_text()


async def test_edit_with_a_different_image_is_a_miss(tmp_path: Path) -> None:
    cassette = tmp_path / "edit.json"

    async def edit(library: CassetteLibrary, inner: httpx.AsyncBaseTransport, image: bytes) -> httpx.Response:
        return await send(
            library,
            inner,
            "POST",
            "/images/edits",
            data={"prompt": "add a hat"},
            files={"image": ("in.png", image, "image/png")},
        )

    await edit(library_for(cassette), Upstream().asgi_transport(), png_bytes((8, 8), (1, 2, 3), "RGB"))
    with pytest.raises(errors.CassetteMissError) as miss:
        await edit(library_for(cassette, "none"), DeadUpstream(), png_bytes((8, 8), (9, 9, 9), "RGB"))
    assert "image: file sha256:" in miss.value.message


async def test_miss_names_the_request_the_cassette_and_the_nearest_recording(tmp_path: Path) -> None:
    cassette = tmp_path / "miss.json"
    recording, upstream = library_for(cassette), Upstream()
    await generate(recording, upstream.asgi_transport(), "a red cat")
    await send(recording, upstream.asgi_transport(), "POST", "/echo-key", json={"x": 1})
    dead = DeadUpstream()
    with pytest.raises(errors.CassetteMissError) as caught:
        await generate(library_for(cassette, "none"), dead, "a red fox")
    err = caught.value
    assert dead.attempts == 0
    assert (err.status, err.code, err.response_headers()["x-should-retry"]) == (400, "cassette_miss", "false")
    message = err.message
    assert "POST http://127.0.0.1:9/v1/images/generations model=gpt-image-1 prompt='a red fox'" in message
    assert str(cassette) in message and "record mode none" in message
    assert "Nearest recorded request: #0" in message and "prompt='a red cat'" in message
    assert "matchers that differ: body (prompt: 'a red fox' != recorded 'a red cat')" in message


async def test_replaying_more_times_than_recorded_is_a_miss_that_says_so(tmp_path: Path) -> None:
    cassette = tmp_path / "once.json"
    await generate(library_for(cassette), Upstream().asgi_transport())
    replaying = library_for(cassette, "none")
    await generate(replaying, DeadUpstream())
    with pytest.raises(errors.CassetteMissError, match="has already replayed every one"):
        await generate(replaying, DeadUpstream())


async def test_allow_playback_repeats_keeps_answering_with_the_last_recording(tmp_path: Path) -> None:
    cassette = tmp_path / "repeat.json"
    recording, upstream = library_for(cassette), Upstream()
    for _ in range(2):
        await generate(recording, upstream.asgi_transport())
    replaying = library_for(cassette, "none", allow_playback_repeats=True)
    serials = [(await generate(replaying, DeadUpstream())).json()["created"] for _ in range(4)]
    assert serials == [1, 2, 2, 2]


async def test_once_mode_replays_an_existing_cassette_and_refuses_to_add_to_it(tmp_path: Path) -> None:
    cassette = tmp_path / "once.json"
    await generate(library_for(cassette), Upstream().asgi_transport(), "first")
    again, upstream = library_for(cassette, "once"), Upstream()
    assert (await generate(again, upstream.asgi_transport(), "first")).json()["created"] == 1
    with pytest.raises(errors.CassetteMissError, match="delete it to record it again"):
        await generate(again, upstream.asgi_transport(), "second")
    assert upstream.calls == 0


async def test_new_episodes_replays_what_matches_and_records_the_rest(tmp_path: Path) -> None:
    cassette = tmp_path / "episodes.json"
    await generate(library_for(cassette), Upstream().asgi_transport(), "first")
    upstream = Upstream()
    library = library_for(cassette, "new_episodes")
    assert (await generate(library, upstream.asgi_transport(), "first")).json()["prompt"] == "first"
    assert (await generate(library, upstream.asgi_transport(), "second")).json()["prompt"] == "second"
    assert upstream.calls == 1
    replaying = library_for(cassette, "none")
    prompts = [(await generate(replaying, DeadUpstream(), p)).json()["prompt"] for p in ("first", "second")]
    assert prompts == ["first", "second"]


async def test_all_mode_rerecords_and_replaces_the_interactions_it_matches(tmp_path: Path) -> None:
    cassette = tmp_path / "all.json"
    first = Upstream()
    await generate(library_for(cassette), first.asgi_transport(), "kept")
    await generate(library_for(cassette, "new_episodes"), first.asgi_transport(), "replaced")
    second = Upstream(serial_offset=100)
    await generate(library_for(cassette, "all"), second.asgi_transport(), "replaced")
    lines = cassette.read_text().splitlines()[1:-1]
    bodies = [json.loads(json.loads(line.rstrip(","))["response"]["body"]["string"]) for line in lines]
    assert [(b["prompt"], b["created"]) for b in bodies] == [("kept", 1), ("replaced", 101)]


async def test_none_mode_never_reaches_the_upstream_even_for_unknown_requests(tmp_path: Path) -> None:
    dead = DeadUpstream()
    library = library_for(tmp_path / "absent.json", "none")
    with pytest.raises(errors.CassetteMissError, match="is not in cassette"):
        await generate(library, dead)
    assert dead.attempts == 0
    assert not (tmp_path / "absent.json").exists()


async def test_no_secret_reaches_any_written_cassette(tmp_path: Path) -> None:
    library, upstream = library_for(tmp_path / "secrets.json"), Upstream()
    await generate(library, upstream.asgi_transport())
    await send(
        library,
        upstream.asgi_transport(),
        "POST",
        "/echo-key",
        json={"x": 1},
        headers={"openai-organization": "org-test-cassette-secret", "cookie": "sid=test-cookie-cassette-77"},
    )
    gemini = CassetteLibrary(CassetteSettings(path=str(tmp_path / "gemini.yaml"), record_mode="once"))
    await send(
        gemini,
        upstream.asgi_transport(),
        "POST",
        "/models/gemini-3-pro-image:generateContent",
        base="http://127.0.0.1:9/v1beta",
        params={"key": "test-gemini-key-cassette-42"},
        headers={"x-goog-api-key": "test-gemini-key-cassette-42"},
        json={"contents": []},
    )
    files = list(written_files(tmp_path))
    assert len(files) == 2
    for path in files:
        text = path.read_text()
        for secret in SECRETS:
            assert secret not in text, f"{secret} written to {path.name}"
    assert "Incorrect API key provided: <redacted>" in (tmp_path / "secrets.json").read_text()


async def test_configured_headers_query_and_body_fields_are_filtered_too(tmp_path: Path) -> None:
    cassette = tmp_path / "filtered.json"
    library = library_for(
        cassette, filter_headers=("x-team-token",), filter_query=("sig",), filter_body_fields=("user",)
    )
    await send(
        library,
        Upstream().asgi_transport(),
        "POST",
        "/images/generations",
        params={"sig": "s1gnature-value"},
        json={"model": "gpt-image-1", "prompt": "p", "user": "person@example.com"},
        headers={"x-team-token": "team-token-value-9"},
    )
    text = cassette.read_text()
    for value in ("s1gnature-value", "person@example.com", "team-token-value-9", "x-team-token"):
        assert value not in text
    replaying = library_for(cassette, "none", filter_body_fields=("user",))
    replayed = await send(
        replaying,
        DeadUpstream(),
        "POST",
        "/images/generations",
        json={"model": "gpt-image-1", "prompt": "p", "user": "other"},
    )
    assert replayed.json()["prompt"] == "p"


async def test_concurrent_recordings_are_all_kept(tmp_path: Path) -> None:
    cassette = tmp_path / "burst.json"
    library, upstream = library_for(cassette), Upstream()
    await asyncio.gather(*(generate(library, upstream.asgi_transport(), f"prompt {i}") for i in range(20)))
    replaying = library_for(cassette, "none")
    prompts = [(await generate(replaying, DeadUpstream(), f"prompt {i}")).json()["prompt"] for i in range(20)]
    assert prompts == [f"prompt {i}" for i in range(20)]


def test_recordings_from_many_threads_and_event_loops_are_all_kept(tmp_path: Path) -> None:
    cassette = tmp_path / "threads.json"
    library, upstream = library_for(cassette), Upstream()

    def worker(n: int) -> None:
        asyncio.run(generate(library, upstream.asgi_transport(), f"thread {n}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    lines = cassette.read_text().splitlines()[1:-1]
    assert len(lines) == 8
    assert library.tape(cassette.resolve()).stats.recorded == 8


async def test_streams_replay_event_by_event(tmp_path: Path) -> None:
    cassette = tmp_path / "stream.json"
    upstream = Upstream()
    with serve_asgi(upstream.app) as url:
        live = await send(library_for(cassette), httpx.AsyncHTTPTransport(), "POST", "/stream", base=url + "/v1")
    replaying = library_for(cassette, "none")
    events: list[bytes] = []
    token_client = httpx.AsyncClient(transport=replaying.transport(DeadUpstream()))
    async with token_client, token_client.stream("POST", url + "/v1/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [chunk async for chunk in response.aiter_raw()]
    assert len(events) == 3 and all(e.endswith(b"\n\n") for e in events)
    assert b"".join(events) == live.content


@pytest.mark.slow  # timing
async def test_recorded_timing_reproduces_the_stream_pacing(tmp_path: Path) -> None:
    cassette = tmp_path / "paced.json"
    with serve_asgi(Upstream(event_delay=0.15).app) as url:
        await send(library_for(cassette), httpx.AsyncHTTPTransport(), "POST", "/stream", base=url + "/v1")
    assert '"allm_stream": {"chunks": [[' in cassette.read_text()

    async def replay_seconds(timing: str) -> float:
        library = library_for(cassette, "none", replay_timing=timing)
        started = time.monotonic()
        await send(library, DeadUpstream(), "POST", "/stream", base=url + "/v1")
        return time.monotonic() - started

    assert await replay_seconds("recorded") >= 0.25
    assert await replay_seconds("instant") < 0.2
