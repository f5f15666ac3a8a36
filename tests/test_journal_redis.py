"""The journal in Redis: two proxies on one real Redis list, show, stream and clear one journal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from allm_proxy import Engine
from allm_proxy.config import JournalSettings
from allm_proxy.journal.record import Record
from allm_proxy.journal.redis_journal import MAX_PENDING_WRITES, RedisJournal
from allm_proxy.state import StateSettings, open_state
from tests.support.asgi_server import running_proxy
from tests.support.images import png_bytes
from tests.support.redis_server import RedisServer, redis_server
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # a real redis-server per test

T = TypeVar("T")
PREFIX = "allm-jr:"
CLIENT_KEY = "sk-test-jr-key1"
UNTIL_SECONDS = 20.0  # a bound on waiting for another proxy's write or a feed event, never a timing check


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def shared_engine(url: str, *, journal_max: int = 1000, **kwargs: Any) -> Engine:
    state = open_state(StateSettings(url=url, prefix=PREFIX, journal_max=journal_max))
    return Engine(state=state, **kwargs)


def until(check: Callable[[], T | None], what: str) -> T:
    """`check()` once it answers something truthy (another proxy writes after its answer is sent)."""
    deadline = time.monotonic() + UNTIL_SECONDS
    for _ in range(2000):
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"never saw {what}")


def listed(base: str, **params: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/allm/requests", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def generate(base: str, prompt: str, **extra: Any) -> httpx.Response:
    body = {"model": "dall-e-2", "prompt": prompt, "size": "256x256", "response_format": "b64_json", **extra}
    answer = httpx.post(f"{base}/v1/images/generations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


class FeedReader:
    """Reads `/allm/requests/stream` in a thread: `open` once subscribed, `entries` as they come."""

    def __init__(self, base: str, wanted: int) -> None:
        self.base = base
        self.wanted = wanted
        self.open = threading.Event()
        self.entries: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with httpx.stream("GET", f"{self.base}/allm/requests/stream", timeout=UNTIL_SECONDS) as answer:
            event = None
            for line in answer.iter_lines():
                if line.startswith(": keepalive"):
                    self.open.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "entry":
                    self.entries.append(json.loads(line[6:]))
                    if len(self.entries) >= self.wanted:
                        return

    def wait(self) -> list[dict[str, Any]]:
        self.thread.join(UNTIL_SECONDS)
        return self.entries


def test_entries_made_through_one_proxy_are_listed_fetched_and_streamed_through_the_other(
    redis: RedisServer,
) -> None:
    upload = png_bytes((40, 30))
    with running_proxy(shared_engine(redis.url)) as first, running_proxy(shared_engine(redis.url)) as second:
        feed = FeedReader(second, wanted=2)
        assert feed.open.wait(UNTIL_SECONDS), "the feed never opened"
        made = generate(first, "a kestrel")
        answered = base64.b64decode(made.json()["data"][0]["b64_json"])
        edit = httpx.post(
            f"{first}/v1/images/edits",
            data={"model": "gpt-image-1", "prompt": "a hat", "size": "1024x1024"},
            files={"image": ("in.png", upload, "image/png")},
            headers={"x-allm-session": "edits"},
            timeout=30,
        )
        assert edit.status_code == 200, edit.text
        ids = [made.headers["x-request-id"], edit.headers["x-request-id"]]

        entries = until(lambda: both if len(both := listed(second)) == 2 else None, "both entries through the other")
        assert [e["id"] for e in entries] == ids
        assert [e["operation"] for e in entries] == ["generate", "edit"]
        assert entries[0]["params"]["prompt"] == "a kestrel" and entries[0]["time"]
        image = entries[0]["images"][0]
        assert image["sha256"] == hashlib.sha256(answered).hexdigest() and image["bytes_dropped"] is False
        assert (image["width"], image["height"], image["mime_type"]) == (256, 256, "image/png")
        assert entries[1]["inputs"][0]["sha256"] == hashlib.sha256(upload).hexdigest()
        assert [e["id"] for e in listed(second, session="edits")] == [ids[1]]
        assert [e["id"] for e in listed(second, operation="generate")] == [ids[0]]

        fetched = httpx.get(f"{second}/allm/requests/{ids[0]}/images/0")
        assert fetched.status_code == 200 and fetched.content == answered
        assert fetched.headers["content-type"] == "image/png"
        assert httpx.get(f"{second}/allm/requests/{ids[1]}/inputs/0").content == upload
        assert httpx.get(f"{first}/allm/requests/{ids[1]}").json()["id"] == ids[1]  # described once, for both

        streamed = feed.wait()
        assert [e["id"] for e in streamed] == ids
        assert streamed[0]["images"][0]["sha256"] == image["sha256"]


def test_a_relayed_answer_is_parsed_by_whichever_proxy_reads_it_first(redis: RedisServer) -> None:
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        options = {"base_url": upstream_url + "/v1", "api_key": "sk-test-jr-up1"}
        engines = [shared_engine(redis.url, image_adapter="openai", image_adapter_opts=options) for _ in range(2)]
        with running_proxy(engines[0]) as first, running_proxy(engines[1]) as second:
            answer = httpx.post(
                f"{first}/v1/images/generations",
                json={"model": "gpt-image-1", "prompt": "a heron", "size": "1024x1024"},
                headers={"x-allm-api-key": CLIENT_KEY},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            picture = base64.b64decode(answer.json()["data"][0]["b64_json"])
            entry_id = answer.headers["x-request-id"]
            entry = until(lambda: httpx.get(f"{second}/allm/requests/{entry_id}").json().get("images"), "the entry")
            assert entry[0]["sha256"] == hashlib.sha256(picture).hexdigest()
            assert httpx.get(f"{second}/allm/requests/{entry_id}").json()["usage"] == answer.json()["usage"]
            assert httpx.get(f"{first}/allm/requests/{entry_id}/images/0").content == picture

            # No key anywhere in Redis: not the client's, not the upstream's.
            async def everything() -> bytes:
                store = open_state(StateSettings(url=redis.url))
                assert isinstance(store.journal_max, int)

                async def dump(client: Any) -> bytes:
                    keys = await client.keys("*")
                    values = [await client.dump(k) for k in keys]
                    return b"".join(keys) + b"".join(v for v in values if v)

                try:
                    return await store.call("dumping", dump)  # type: ignore[attr-defined]
                finally:
                    await store.aclose()

            stored = asyncio.run(everything())
            assert PREFIX.encode() + b"journal:ids" in stored  # the dump did see the journal
            assert CLIENT_KEY.encode() not in stored and b"sk-test-jr-up1" not in stored


def test_clearing_through_one_proxy_clears_for_the_other(redis: RedisServer) -> None:
    with running_proxy(shared_engine(redis.url)) as first, running_proxy(shared_engine(redis.url)) as second:
        for n in range(3):
            session = "keep" if n == 0 else "drop"
            httpx.post(
                f"{first}/v1/images/generations",
                json={"model": "dall-e-2", "prompt": f"p{n}", "size": "256x256", "response_format": "b64_json"},
                headers={"x-allm-session": session},
                timeout=30,
            ).raise_for_status()
        until(lambda: len(listed(second)) == 3, "three entries")
        cleared = httpx.delete(f"{second}/allm/requests", params={"session": "drop"})
        assert cleared.json() == {"object": "list", "deleted": 2}
        kept = listed(first)
        assert [e["session"] for e in kept] == ["keep"]
        assert httpx.get(f"{first}/allm/requests/{kept[0]['id']}/images/0").status_code == 200
        assert httpx.delete(f"{second}/allm/requests").json()["deleted"] == 1
        assert listed(first) == []


def test_the_cap_keeps_the_newest_entries_and_the_byte_budget_drops_the_oldest_bytes(redis: RedisServer) -> None:
    picture_bytes = len(base64.b64decode(generate_b64("kestrel")))
    budget = JournalSettings(max_image_mb=picture_bytes * 2.5 / 2**20)  # room for two answers' bytes
    engine = shared_engine(redis.url, journal_max=4, journal=budget)
    with running_proxy(engine) as base, running_proxy(shared_engine(redis.url, journal_max=4)) as other:
        # One prompt: the fake answers it with the same picture each time, so the budget fits two exactly.
        ids = [generate(base, "kestrel").headers["x-request-id"] for _ in range(6)]
        entries = listed(other)
        assert [e["id"] for e in entries] == ids[-4:]  # the cap: the newest four
        assert [e["images"][0]["bytes_dropped"] for e in entries] == [True, True, False, False]
        assert all(e["images"][0]["bytes"] > 0 for e in entries)  # the entries stay, described
        gone = httpx.get(f"{other}/allm/requests/{ids[2]}/images/0")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "journal_bytes_gone"
        assert httpx.get(f"{other}/allm/requests/{ids[0]}").json()["error"]["code"] == "journal_entry_not_found"
        journal = engine.journal
        assert isinstance(journal, RedisJournal)
        held = asyncio.run(_held(journal))
        assert 0 < held <= budget.max_image_mb * 2**20


def generate_b64(prompt: str) -> str:
    """The fake's 256x256 answer to `prompt`, made in process (the size the budget above is cut to)."""
    from allm_proxy import generate_image

    with Engine(journal=False) as engine:
        image = generate_image(engine, prompt, size="256x256", model="dall-e-2").images[0]
        return base64.b64encode(image.to_binary()).decode()


async def _held(journal: RedisJournal) -> int:
    async def read(client: Any) -> Any:
        return await client.get(journal.state.key("journal:held"))

    try:
        return int(await journal.state.call("reading", read))
    finally:
        await journal.state.aclose()


def metrics_of(base: str) -> str:
    answer = httpx.get(f"{base}/metrics", timeout=10)
    assert answer.status_code == 200
    return answer.text


def test_a_redis_that_stops_gives_503_on_the_journal_routes_and_image_requests_still_answer(
    redis: RedisServer,
) -> None:
    engine = shared_engine(redis.url)
    with running_proxy(engine) as base:
        first = generate(base, "before").headers["x-request-id"]
        assert [e["id"] for e in listed(base)] == [first]
        redis.stop()
        for method, path in (
            ("GET", "/allm/requests"),
            ("GET", f"/allm/requests/{first}"),
            ("GET", f"/allm/requests/{first}/images/0"),
            ("DELETE", "/allm/requests"),
            ("GET", "/allm/requests/stream"),
        ):
            answer = httpx.request(method, base + path, timeout=30)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "state_unavailable", path
        generate(base, "while Redis is down")  # the image request answers; its entry is lost
        journal = engine.journal
        assert isinstance(journal, RedisJournal)
        until(lambda: journal.lost >= 1, "the lost entry counted")
        lost = re.search(r'^allm_journal_entries_lost_total\{reason="unavailable"\} (\S+)$', metrics_of(base), re.M)
        assert lost is not None and float(lost.group(1)) == journal.lost  # a team's scraper sees the loss
        redis.start()  # an empty Redis: the journal starts again
        after = generate(base, "after").headers["x-request-id"]
        assert [e["id"] for e in listed(base)] == [after]
    assert journal.on_lost == []  # the app that counted the losses let go of the engine's journal


async def test_entries_waiting_on_a_redis_that_never_answers_are_lost_and_told_why() -> None:
    """Past MAX_PENDING_WRITES waiting appends an entry is lost at once ("backlog"); the waiting ones
    are lost when Redis's timeout passes ("unavailable"); `on_lost` hears each (the metrics do)."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # accepts connections and never answers
    state = open_state(StateSettings(url=f"redis://127.0.0.1:{hung.getsockname()[1]}", prefix=PREFIX))
    assert state.shared
    journal = RedisJournal(state)  # type: ignore[arg-type]
    told: list[str] = []
    journal.on_lost.append(told.append)
    try:
        for i in range(MAX_PENDING_WRITES + 1):
            await journal.append(Record({"id": f"req_lost_{i}"}))
        assert told == ["backlog"] and journal.lost == 1
        async with asyncio.timeout(20):
            while len(told) < MAX_PENDING_WRITES + 1:
                await asyncio.sleep(0.05)
        assert told == ["backlog", *["unavailable"] * MAX_PENDING_WRITES]
        assert journal.lost == MAX_PENDING_WRITES + 1
    finally:
        await state.aclose()
        hung.close()
