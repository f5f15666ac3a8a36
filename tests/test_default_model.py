"""A request that names no model gets what OpenAI documents (spec/openai-images.md sections 2 to 4).

On the fake provider and the library API: dall-e-2, unless a GPT-image-only parameter is used, then
gpt-image-1.5. On OpenAI pass-through: no model is sent and OpenAI decides. An explicit default wins.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image as PILImage

from allm_proxy import Engine, ImageRequest, generate_image
from allm_proxy.capabilities import OPENAI_DOCUMENTED_DEFAULT, uses_gpt_image_parameters
from tests.support.asgi_server import running_proxy
from tests.support.images import half_transparent_mask, png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI


def fetched_size(url: str | None) -> tuple[int, int]:
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return PILImage.open(io.BytesIO(response.content)).size


@pytest.fixture
def client(fake_proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-dflt", max_retries=0)


@pytest.mark.parametrize("size", ["256x256", "512x512", "1024x1024"])
def test_dall_e_era_sizes_work_with_no_model(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(prompt="a heron", size=size)
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].b64_json is None and result.usage is None  # dall-e-2: a URL, no usage
    assert fetched_size(result.data[0].url) == tuple(int(v) for v in size.split("x"))


def test_three_distinct_images_at_256_with_no_model(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a heron", size="256x256", n=3)
    assert result.data is not None and len(result.data) == 3
    urls = [d.url for d in result.data]
    bodies = {httpx.get(u).content for u in urls if u}
    assert len(bodies) == 3 and all(fetched_size(u) == (256, 256) for u in urls)


def test_b64_json_with_no_model_is_dall_e_2_base64(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a heron", size="512x512", response_format="b64_json")
    assert result.data is not None and result.data[0].b64_json and result.data[0].url is None


def test_masked_edit_of_a_256_square_png_with_no_model(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("a.png", png_bytes((256, 256))),
        prompt="add a hat",
        size="256x256",
        mask=("m.png", half_transparent_mask((256, 256))),
    )
    assert result.data is not None and fetched_size(result.data[0].url) == (256, 256)


def test_stream_with_no_model_or_size_gets_gpt_image_events(client: openai.OpenAI) -> None:
    stream = client.images.generate(prompt="a heron", stream=True, partial_images=1)
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    final = events[-1]
    assert final.type == "image_generation.completed" and final.usage is not None
    assert PILImage.open(io.BytesIO(base64.b64decode(final.b64_json))).size == (1024, 1024)


def test_stream_at_a_dall_e_size_is_gpt_images_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a heron", stream=True, size="256x256")
    assert info.value.code == "invalid_size" and "gpt-image-1.5" in info.value.message


def test_gpt_image_parameter_switches_to_gpt_image(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a heron", quality="low")
    assert result.data is not None and result.data[0].b64_json and result.usage is not None
    assert result.quality == "low" and result.size == "1024x1024"


async def test_async_client_with_no_model(fake_proxy_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-dflt", max_retries=0) as aclient:
        sizes = await asyncio.gather(
            *(aclient.images.generate(prompt="a heron", size=s) for s in ("256x256", "512x512", "1024x1024"))
        )
        edited = await aclient.images.edit(
            image=("a.png", png_bytes((256, 256))),
            prompt="a hat",
            mask=("m.png", half_transparent_mask((256, 256))),
            size="256x256",
            response_format="b64_json",
        )
        stream = await aclient.images.generate(prompt="a heron", stream=True)
        types = [event.type async for event in stream]
        with pytest.raises(openai.BadRequestError):
            await aclient.images.generate(prompt="a heron", stream=True, size="512x512")
    got = [await asyncio.to_thread(fetched_size, r.data[0].url) for r in sizes if r.data]
    assert got == [(256, 256), (512, 512), (1024, 1024)]
    assert edited.data is not None and edited.data[0].b64_json
    assert types == ["image_generation.completed"]


def test_library_api_follows_the_same_rule() -> None:
    with Engine() as engine:
        legacy = generate_image(engine, "a heron", size="512x512")
        gpt = generate_image(engine, "a heron", output_format="webp")
    assert legacy.model == "dall-e-2" and legacy.usage is None
    assert gpt.model == "gpt-image-1.5" and gpt.images[0].mime_type == "image/webp" and gpt.usage is not None


@pytest.mark.parametrize(
    ("fields", "gpt"),
    [
        ({}, False),
        ({"quality": "standard"}, False),
        ({"stream": False}, False),
        ({"quality": "hd"}, False),
        ({"stream": True}, True),
        ({"partial_images": 0}, True),
        ({"background": "auto"}, True),
        ({"output_format": "png"}, True),
        ({"output_compression": 50}, True),
        ({"moderation": "low"}, True),
        ({"input_fidelity": "high"}, True),
        ({"quality": "low"}, True),
        ({"quality": "auto"}, True),
    ],
)
def test_which_parameters_are_gpt_image_only(fields: dict[str, object], gpt: bool) -> None:
    request = ImageRequest(operation="generate", prompt="x", **fields)  # type: ignore[arg-type]
    assert uses_gpt_image_parameters(request) is gpt
    assert OPENAI_DOCUMENTED_DEFAULT.choose(request) == ("gpt-image-1.5" if gpt else "dall-e-2")


def test_variations_stay_dall_e_2() -> None:
    request = ImageRequest(operation="variation", output_format="png")
    assert OPENAI_DOCUMENTED_DEFAULT.choose(request) == "dall-e-2"


def test_an_explicit_default_model_wins() -> None:
    with running_proxy(Engine(image_default_model="gpt-image-1.5")) as url:
        response = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a heron", "size": "512x512"})
        health = httpx.get(f"{url}/healthz").json()
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_size"
    assert health["default_model"] == "gpt-image-1.5"


def test_healthz_says_what_a_request_without_a_model_gets(fake_proxy_url: str) -> None:
    health = httpx.get(f"{fake_proxy_url}/healthz").json()
    assert health["default_model"] == "auto (dall-e-2, or gpt-image-1.5 when GPT-image parameters are used)"


# -- OpenAI pass-through: no model is sent, and OpenAI decides -----------------------------------------


@pytest.fixture
def passthrough(upstream: FakeOpenAI, served: tuple[FakeOpenAI, str]) -> Iterator[str]:
    engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": served[1] + "/v1"}, env={})
    with running_proxy(engine) as url:
        yield url


def test_passthrough_sends_no_model_and_relays_the_answer(upstream: FakeOpenAI, passthrough: str) -> None:
    client = openai.OpenAI(base_url=f"{passthrough}/v1", api_key="sk-test-pass", max_retries=0)
    result = client.images.generate(prompt="a heron", size="512x512")
    assert "model" not in upstream.requests[0].fields
    assert upstream.requests[0].fields["size"] == "512x512"
    assert result.data is not None and result.data[0].url is not None  # upstream's dall-e-2 URL, relayed


def test_passthrough_lets_openai_judge_an_odd_size(upstream: FakeOpenAI, passthrough: str) -> None:
    client = openai.OpenAI(base_url=f"{passthrough}/v1", api_key="sk-test-pass", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a heron", size="13x7")
    assert len(upstream.requests) == 1 and "model" not in upstream.requests[0].fields
    assert info.value.code == "invalid_size" and "'13x7' is not one of" in info.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (json.dumps({"prompt": "a heron", "n": 0}).encode(), "n"),
        (json.dumps({"size": "512x512"}).encode(), "prompt"),
        (json.dumps({"prompt": "a heron", "size": "big"}).encode(), "size"),
        (b'{"prompt": "a heron", ', None),
    ],
)
def test_passthrough_still_refuses_what_no_model_accepts(
    upstream: FakeOpenAI, passthrough: str, body: bytes, param: str | None
) -> None:
    response = httpx.post(
        f"{passthrough}/v1/images/generations",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer sk-test-pass"},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert upstream.requests == []
