"""End to end: the openai SDK -> the proxy (provider openai) -> a fake OpenAI; then replay with it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from allm_proxy import Engine
from allm_proxy.cassettes import report
from allm_proxy.config import CassetteSettings
from tests.support.asgi_server import running_proxy
from tests.support.cassette_helpers import OPENAI_KEY
from tests.support.images import png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI, stream_ending_in_done


def proxy_engine(upstream_url: str, cassette: Path, record_mode: str) -> Engine:
    return Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY},
        cassettes=CassetteSettings(path=str(cassette), record_mode=record_mode),
    )


def calls(client: openai.OpenAI) -> dict[str, Any]:
    generated = client.images.generate(model="gpt-image-1", prompt="a kestrel at dawn", size="1024x1024", n=2)
    edited = client.images.edit(
        model="gpt-image-1", image=("in.png", png_bytes((16, 16), mode="RGB"), "image/png"), prompt="add a tiny hat"
    )
    events = [
        e.type for e in client.images.generate(model="gpt-image-1", prompt="a heron", stream=True, partial_images=2)
    ]
    return {
        "generated": [d.b64_json for d in generated.data or []],
        "edited": [d.b64_json for d in edited.data or []],
        "events": events,
    }


def test_sdk_calls_recorded_through_the_proxy_replay_alike_with_the_upstream_down(tmp_path: Path) -> None:
    cassette = tmp_path / "e2e.json"
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url, running_proxy(proxy_engine(upstream_url, cassette, "once")) as url:
        recorded = calls(openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0))
    assert len(upstream.requests) == 3
    assert OPENAI_KEY not in cassette.read_text()

    with running_proxy(proxy_engine(upstream_url, cassette, "none")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0)
        assert calls(client) == recorded
        with pytest.raises(openai.BadRequestError) as miss:
            client.images.generate(model="gpt-image-1", prompt="something never recorded")
    assert miss.value.code == "cassette_miss"
    assert "prompt='a kestrel at dawn'" in miss.value.message
    assert len(upstream.requests) == 3


def stream_events(client: openai.OpenAI) -> list[tuple[str, str | None]]:
    stream = client.images.generate(model="gpt-image-1", prompt="a heron", stream=True, partial_images=1)
    return [(e.type, e.b64_json) for e in stream]


def test_a_stream_ending_in_done_is_recorded_and_replays_the_same_events(tmp_path: Path) -> None:
    cassette = tmp_path / "done.json"
    upstream = FakeOpenAI()
    upstream.script(stream_ending_in_done())
    with upstream.serving() as upstream_url, running_proxy(proxy_engine(upstream_url, cassette, "once")) as url:
        recorded = stream_events(openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0))
    assert [kind for kind, _ in recorded] == ["image_generation.partial_image", "image_generation.completed"]
    assert cassette.exists(), "the stream was not recorded"
    assert "data: [DONE]" in cassette.read_text()

    with running_proxy(proxy_engine(upstream_url, cassette, "none")) as url:
        replayed = stream_events(openai.OpenAI(base_url=url + "/v1", api_key="sk-test-client", max_retries=0))
    assert replayed == recorded
    assert len(upstream.requests) == 1


def test_materialized_url_fetch_records_into_and_replays_from_the_chosen_cassette(tmp_path: Path) -> None:
    """Defect 2: the image-URL fetch of --materialize-urls belongs to the cassette the client chose."""

    def engine(upstream_url: str, record_mode: str) -> Engine:
        return Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY, "materialize_urls": True},
            cassettes=CassetteSettings(directory=str(tmp_path), record_mode=record_mode),
        )

    def generate(url: str) -> bytes:
        client = openai.OpenAI(
            base_url=url + "/v1",
            api_key="sk-test-client",
            max_retries=0,
            default_headers={"X-ALLM-Cassette": "suite/test-a"},
        )
        result = client.images.generate(model="dall-e-2", prompt="a lighthouse", size="256x256")
        assert result.data is not None and result.data[0].url is not None
        assert result.data[0].url.startswith(url)  # the proxy hosts the bytes it fetched from the provider
        return httpx.get(result.data[0].url).content

    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        with running_proxy(engine(upstream_url, "once")) as url:
            recorded = generate(url)
        served = [r.path for r in upstream.requests]
        with running_proxy(engine(upstream_url, "none")) as url:
            replayed = generate(url)
    assert recorded == replayed and recorded.startswith(b"\x89PNG")
    methods = [entry.request.method for entry in report.read(tmp_path / "suite" / "test-a.json")]
    assert methods == ["POST", "GET"]  # the POST and the image fetch, both in suite/test-a
    assert len(upstream.requests) == len(served)  # replay reached the upstream for neither
