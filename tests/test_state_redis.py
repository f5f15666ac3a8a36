"""Two proxies on one real Redis behave as one: hosted URLs, replay order, a Redis that goes away."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from allm_proxy import Engine
from allm_proxy.cli import main
from allm_proxy.config import CassetteSettings, ProxyConfig
from allm_proxy.state import StateSettings, check_recording, open_state
from tests.conftest import running_proxy
from tests.support.cassette_helpers import OPENAI_KEY
from tests.support.redis_server import RedisServer, redis_server
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # a real redis-server per test

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of its own for the test, stopped by PID at the end."""
    with redis_server(tmp_path) as server:
        yield server


def shared_engine(url: str, **kwargs: object) -> Engine:
    return Engine(state=open_state(StateSettings(url=url, prefix="allm-test:")), **kwargs)  # type: ignore[arg-type]


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test-redis", max_retries=0)


def test_every_url_one_proxy_issues_is_served_by_the_other(redis: RedisServer) -> None:
    with running_proxy(shared_engine(redis.url)) as first, running_proxy(shared_engine(redis.url)) as second:
        proxies = [first, second]
        for i in range(40):
            issuer, other = proxies[i % 2], proxies[(i + 1) % 2]
            result = client(issuer).images.generate(
                model="dall-e-2", prompt=f"kestrel {i}", size="256x256", response_format="url"
            )
            url = result.data[0].url if result.data else None
            assert url is not None and url.startswith(f"{issuer}/v1/images/files/img_")
            fetched = httpx.get(url.replace(issuer, other))
            assert fetched.status_code == 200, fetched.text
            assert fetched.content.startswith(PNG) and fetched.headers["content-type"] == "image/png"


def test_without_shared_state_the_other_proxy_does_not_know_the_url() -> None:
    # The control: two in-memory proxies do not share URLs, so the test above means something.
    with running_proxy(Engine()) as first, running_proxy(Engine()) as second:
        result = client(first).images.generate(model="dall-e-2", prompt="k", size="256x256", response_format="url")
        url = result.data[0].url if result.data else ""
        assert url and httpx.get(url.replace(first, second)).status_code == 404


def record_ten_identical(cassette: Path) -> tuple[str, list[str]]:
    """Ten identical requests recorded in order (ten different answers); the upstream is gone afterwards."""
    upstream_url, recorded, _ = record_identical(cassette, 10)
    return upstream_url, recorded


def record_identical(
    cassette: Path, count: int, *others: Mapping[str, object]
) -> tuple[str, list[str], list[httpx.Response]]:
    """`count` identical requests recorded in order, then one of each of `others`; the upstream's URL (it
    is gone afterwards), the identical requests' images, and the answers to `others`."""
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
            cassettes=CassetteSettings(path=str(cassette), record_mode="once"),
        )
        with running_proxy(engine) as base:
            recorded = [generate_b64(base, "default") for _ in range(count)]
            answers = [httpx.post(f"{base}/v1/images/generations", json=body, timeout=30) for body in others]
            return upstream_url, recorded, answers


def generate_b64(base: str, session: str) -> str:
    answer = httpx.post(
        f"{base}/v1/images/generations",
        headers={"x-allm-session": session},
        json={"model": "gpt-image-1", "prompt": "the same kestrel", "size": "1024x1024"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"][0]["b64_json"])


def replay_engine(cassette: Path, upstream_url: str, state_url: str) -> Engine:
    return shared_engine(
        state_url,
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
        cassettes=CassetteSettings(path=str(cassette), record_mode="none"),
    )


def test_identical_requests_replay_in_recorded_order_across_two_proxies_per_session(
    tmp_path: Path, redis: RedisServer
) -> None:
    cassette = tmp_path / "ten.json"
    upstream_url, recorded = record_ten_identical(cassette)
    assert len(set(recorded)) == 10  # ten different answers to one request: order is observable
    with (
        running_proxy(replay_engine(cassette, upstream_url, redis.url)) as first,
        running_proxy(replay_engine(cassette, upstream_url, redis.url)) as second,
    ):
        proxies = [first, second]
        for session in ("run-a", "run-b"):
            replayed = [generate_b64(proxies[i % 2], session) for i in range(10)]
            assert replayed == recorded
        # Both sessions have used all ten: an eleventh identical request is a miss, on either proxy.
        extra = httpx.post(
            f"{second}/v1/images/generations",
            headers={"x-allm-session": "run-a"},
            json={"model": "gpt-image-1", "prompt": "the same kestrel", "size": "1024x1024"},
        )
        assert extra.status_code == 400 and extra.json()["error"]["code"] == "cassette_miss"


def test_a_redis_that_goes_away_gives_503s_and_the_proxy_recovers_when_it_returns(
    tmp_path: Path, redis: RedisServer
) -> None:
    cassette = tmp_path / "ten.json"
    upstream_url, recorded = record_ten_identical(cassette)
    with running_proxy(replay_engine(cassette, upstream_url, redis.url)) as base:
        assert generate_b64(base, "s") == recorded[0]
        assert httpx.get(f"{base}/readyz").status_code == 200
        redis.stop()
        for _ in range(3):
            answer = httpx.post(
                f"{base}/v1/images/generations",
                headers={"x-allm-session": "s"},
                json={"model": "gpt-image-1", "prompt": "the same kestrel", "size": "1024x1024"},
                timeout=30,
            )
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "state_unavailable" and "Redis" in error["message"]
            assert answer.headers["retry-after"] == "1"
        not_ready = httpx.get(f"{base}/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "state_unavailable"
        assert httpx.get(f"{base}/healthz").status_code == 200  # liveness is not readiness
        redis.start()  # the same port, an empty Redis (no persistence)
        assert httpx.get(f"{base}/readyz").status_code == 200
        # No wrong replay: the failed requests took no position; the empty Redis starts the session over.
        assert generate_b64(base, "s") == recorded[0]
        assert generate_b64(base, "s") == recorded[1]


def test_a_request_with_one_recording_and_repeats_allowed_needs_no_state_store(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Every position gives the one recording, so no cursor is counted: it replays with Redis gone,
    while a request with three recordings, whose position matters, still gets the 503."""
    cassette = tmp_path / "mixed.json"
    single = {"model": "dall-e-2", "prompt": "one kestrel", "size": "256x256", "response_format": "b64_json"}
    upstream_url, threefold, (once,) = record_identical(cassette, 3, single)
    assert once.status_code == 200 and len(set(threefold)) == 3
    repeating = shared_engine(
        redis.url,
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
        cassettes=CassetteSettings(path=str(cassette), record_mode="none", allow_playback_repeats=True),
    )
    with running_proxy(repeating) as base:
        assert generate_b64(base, "s") == threefold[0]
        redis.stop()
        for _ in range(3):
            again = httpx.post(f"{base}/v1/images/generations", json=single, timeout=30)
            assert again.status_code == 200, again.text
            assert again.json()["data"][0]["b64_json"] == once.json()["data"][0]["b64_json"]
        ordered = httpx.post(
            f"{base}/v1/images/generations",
            headers={"x-allm-session": "s"},
            json={"model": "gpt-image-1", "prompt": "the same kestrel", "size": "1024x1024"},
            timeout=30,
        )
        assert ordered.status_code == 503 and ordered.json()["error"]["code"] == "state_unavailable"


def test_shared_fake_script_cursors_walk_one_list_across_proxies(tmp_path: Path, redis: RedisServer) -> None:
    from tests.conftest import png_bytes

    replies = [{"bytes": png_bytes((8 + i, 8))} for i in range(4)]
    engines = [shared_engine(redis.url, image_adapter_opts={"script": list(replies)}) for _ in range(2)]
    with running_proxy(engines[0]) as first, running_proxy(engines[1]) as second:
        widths = []
        for i in range(4):
            answer = httpx.post(
                f"{(first, second)[i % 2]}/v1/images/generations", json={"prompt": "p", "response_format": "b64_json"}
            )
            assert answer.status_code == 200, answer.text
            widths.append(int.from_bytes(base64.b64decode(answer.json()["data"][0]["b64_json"])[16:20], "big"))
        assert widths == [8, 9, 10, 11]
        exhausted = httpx.post(f"{first}/v1/images/generations", json={"prompt": "p"})
        assert exhausted.json()["error"]["code"] == "fake_script_exhausted"


async def test_the_journal_is_capped_and_counters_expire(redis: RedisServer) -> None:
    store = open_state(StateSettings(url=redis.url, prefix="allm-journal:", journal_max=5))
    await store.journal_clear()
    for i in range(8):
        await store.journal_append(json.dumps({"n": i}))
    assert [json.loads(e)["n"] for e in await store.journal_list()] == [3, 4, 5, 6, 7]
    assert [await store.incr("fault:x:times", ttl=60) for _ in range(3)] == [1, 2, 3]
    await store.set("short", b"v", ttl=0.05)
    assert await store.get("short") == b"v"
    import asyncio

    await asyncio.sleep(0.2)
    assert await store.get("short") is None
    await store.aclose()


async def test_counting_within_a_generation_matches_the_store_in_memory(redis: RedisServer) -> None:
    from allm_proxy.state import MemoryState

    shared = open_state(StateSettings(url=redis.url, prefix="allm-gen:"))
    for store in (shared, MemoryState()):
        counts = [await store.incr_in_generation("gen", "cursor", ttl=60) for _ in range(3)]
        await store.incr("gen")  # a rewind: every counter of the generation starts again
        after = [await store.incr_in_generation("gen", "cursor", ttl=60) for _ in range(2)]
        assert (counts, after) == ([1, 2, 3], [1, 2])
    await shared.aclose()


def test_a_state_url_that_does_not_parse_is_a_usage_error_showing_the_form() -> None:
    result = CliRunner().invoke(main, ["serve", "--state-url", "localhost:6379"])
    assert result.exit_code == 2
    assert "redis://HOST:PORT/DB" in result.output


def test_recording_with_state_on_another_host_is_refused() -> None:
    settings = StateSettings(url="redis://10.1.2.3:6379/0")
    with pytest.raises(ValueError, match="one host"):
        check_recording(settings, "once", True)
    check_recording(settings, "none", True)  # replay across hosts is fine
    check_recording(StateSettings(url="redis://127.0.0.1:6379/0"), "new_episodes", True)
    config = ProxyConfig(state=settings, cassettes=CassetteSettings(path="c.json", record_mode="new_episodes"))
    with pytest.raises(ValueError, match="--record-mode none"):
        Engine.from_config(config)
