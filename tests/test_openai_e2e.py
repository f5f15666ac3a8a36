"""The official openai SDK -> the proxy (provider openai) -> the fake OpenAI upstream.

The same SDK call is made twice, once straight to the fake upstream and once
through the proxy, and the two requests the upstream received are compared:
the proxy must be invisible on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from allm_proxy import Engine
from tests.support.asgi_server import free_port, running_proxy
from tests.support.images import half_transparent_mask, png_bytes
from tests.upstreams.openai_upstream import (
    FakeOpenAI,
    bad_request,
    garbage,
    hang,
    model_not_found,
    rate_limited,
    raw,
    reset,
    server_error,
    slow_stream,
    truncated_body,
    truncated_json,
    unauthorized,
)

CLIENT_KEY = "sk-test-client-key"
ORG, PROJECT = "org-test", "proj_test"


@pytest.fixture
def upstream_url(served: tuple[FakeOpenAI, str]) -> str:
    return served[1]


@contextmanager
def proxy_for(upstream_url: str, *, env: dict[str, str] | None = None, **engine_args: Any) -> Iterator[str]:
    """A proxy on the openai provider in front of `upstream_url`; yields its base URL (no /v1)."""
    opts = {"base_url": upstream_url + "/v1", **engine_args.pop("opts", {})}
    engine = Engine(image_adapter="openai", image_adapter_opts=opts, env=env if env is not None else {}, **engine_args)
    with running_proxy(engine) as url:
        yield url


@pytest.fixture(scope="module")
def proxy(served: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """The usual proxy (no key of its own, default options), shared by the tests that need nothing else."""
    with proxy_for(served[1]) as url:
        yield url


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """`sdk(base_url, **kwargs)`: an OpenAI client for `base_url`, closed after the test."""
    made: list[openai.OpenAI] = []

    def make(base: str, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", CLIENT_KEY)
        kwargs.setdefault("max_retries", 0)
        made.append(openai.OpenAI(base_url=base + "/v1", organization=ORG, project=PROJECT, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- the proxy is invisible on the wire (spec section 10) --------------------------------------------

IMAGE_A, IMAGE_B = png_bytes((64, 64)), png_bytes((64, 64), (200, 30, 30, 255))
MASK = half_transparent_mask((64, 64))


def named(name: str, data: bytes) -> io.BytesIO:
    buf = io.BytesIO(data)
    buf.name = name
    return buf


def _stream(c: openai.OpenAI) -> None:
    events = list(c.images.generate(model="gpt-image-1", stream=True, prompt="a cat", partial_images=2))
    assert [e.type for e in events][-1] == "image_generation.completed"


SDK_CALLS: dict[str, Callable[[openai.OpenAI], Any]] = {
    "generate_no_model": lambda c: c.images.generate(prompt="a cat"),
    "generate_dalle2": lambda c: c.images.generate(
        model="dall-e-2", prompt="a cat", n=2, response_format="url", size="256x256", user="user-1"
    ),
    "generate_dalle3": lambda c: c.images.generate(
        model="dall-e-3", prompt="a cat", quality="hd", response_format="b64_json", size="1792x1024", style="natural"
    ),
    "generate_gpt_image_1_all_fields": lambda c: c.images.generate(
        model="gpt-image-1",
        prompt="a cat",
        background="transparent",
        moderation="low",
        n=2,
        output_compression=80,
        output_format="webp",
        quality="high",
        size="1536x1024",
        user="user-1",
    ),
    "generate_gpt_image_2_custom_size": lambda c: c.images.generate(
        model="gpt-image-2", prompt="a cat", size="1536x864"
    ),
    "generate_explicit_none": lambda c: c.images.generate(model="gpt-image-1", prompt="a cat", n=None, quality=None),
    "generate_stream": _stream,
    "generate_extra_body": lambda c: c.images.generate(
        model="gpt-image-1", prompt="a cat", extra_body={"flag": True, "num": 3, "nested": {"a": 1}, "arr": ["x", "y"]}
    ),
    "edit_dalle2_mask": lambda c: c.images.edit(
        model="dall-e-2",
        image=named("a.png", IMAGE_A),
        mask=named("mask.png", MASK),
        prompt="a hat",
        n=1,
        size="512x512",
        response_format="b64_json",
        user="user-1",
    ),
    "edit_gpt_image_1_two_images": lambda c: c.images.edit(
        model="gpt-image-1",
        image=[named("a.png", IMAGE_A), named("b.png", IMAGE_B)],
        prompt="merge",
        input_fidelity="high",
        quality="medium",
        background="opaque",
        output_format="jpeg",
        output_compression=50,
        size="1024x1536",
        n=2,
    ),
    "edit_list_of_one": lambda c: c.images.edit(model="gpt-image-1", image=[named("a.png", IMAGE_A)], prompt="x"),
    "edit_raw_bytes": lambda c: c.images.edit(model="gpt-image-1", image=IMAGE_A, prompt="x", size=None),
    "edit_bytesio_without_name": lambda c: c.images.edit(model="gpt-image-1", image=io.BytesIO(IMAGE_B), prompt="x"),
    "edit_tuple_with_type": lambda c: c.images.edit(
        model="gpt-image-1", image=("x.png", IMAGE_A, "image/png"), prompt="x"
    ),
    "edit_stream_and_extra_body": lambda c: list(
        c.images.edit(
            model="gpt-image-1",
            image=named("a.png", IMAGE_A),
            prompt="x",
            stream=True,
            partial_images=1,
            extra_body={"flag": True, "num": 3, "nested": {"a": 1}, "arr": ["x", "y"]},
        )
    ),
    "variation": lambda c: c.images.create_variation(
        image=named("a.png", IMAGE_A), n=2, model="dall-e-2", size="256x256", response_format="url", user="user-1"
    ),
}


@pytest.mark.parametrize("call", list(SDK_CALLS), ids=list(SDK_CALLS))
def test_sdk_call_reaches_openai_as_if_sent_directly(
    upstream: FakeOpenAI, upstream_url: str, proxy: str, sdk: Callable[..., openai.OpenAI], call: str
) -> None:
    SDK_CALLS[call](sdk(upstream_url))
    direct = upstream.last.wire_summary()
    SDK_CALLS[call](sdk(proxy))
    proxied = upstream.last.wire_summary()
    assert len(upstream.requests) == 2
    if isinstance(direct["json"], dict):
        # JSON null means "not given" (spec rule 4); the proxy sends nothing for it, which OpenAI reads alike.
        direct["json"] = {k: v for k, v in direct["json"].items() if v is not None}
    assert proxied == direct


# -- keys ------------------------------------------------------------------------------------------

Sdk = Callable[..., openai.OpenAI]


def test_x_allm_api_key_header_wins_over_everything(upstream: FakeOpenAI, upstream_url: str, sdk: Sdk) -> None:
    with proxy_for(upstream_url, env={"OPENAI_API_KEY": "sk-test-env"}) as proxy:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a", extra_headers={"X-ALLM-Api-Key": "sk-test-h1"})
        with_header = sdk(proxy, default_headers={"X-ALLM-Api-Key": "sk-test-h2"})
        with_header.images.generate(model="gpt-image-1", prompt="a")
    assert [r.bearer for r in upstream.requests] == ["sk-test-h1", "sk-test-h2"]
    assert all("x-allm-api-key" not in r.headers for r in upstream.requests)


def test_proxy_environment_key_replaces_the_clients_bearer(upstream: FakeOpenAI, upstream_url: str, sdk: Sdk) -> None:
    with proxy_for(upstream_url, env={"OPENAI_API_KEY": "sk-test-env"}) as proxy:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
    assert upstream.last.bearer == "sk-test-env"


def test_clients_bearer_passes_through_when_the_proxy_has_no_key(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
    assert upstream.last.bearer == CLIENT_KEY


def test_no_key_anywhere_is_a_401_invalid_api_key(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a", extra_headers={"Authorization": openai.Omit()})
    assert caught.value.code == "invalid_api_key" and "OPENAI_API_KEY" in caught.value.message
    assert upstream.requests == []


# -- upstream errors arrive as OpenAI's own would ----------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "exc_type", "code", "param"),
    [
        (bad_request(code="invalid_value", param="size"), openai.BadRequestError, "invalid_value", "size"),
        (unauthorized(), openai.AuthenticationError, "invalid_api_key", None),
        (model_not_found("gpt-image-0"), openai.NotFoundError, "model_not_found", "model"),
        (rate_limited(), openai.RateLimitError, "rate_limit_exceeded", None),
        (server_error(500), openai.InternalServerError, None, None),
    ],
    ids=["400", "401", "404", "429", "500"],
)
def test_upstream_errors_raise_the_sdk_exception_openai_would(
    upstream: FakeOpenAI,
    upstream_url: str,
    proxy: str,
    sdk: Sdk,
    reply: Any,
    exc_type: type[openai.APIStatusError],
    code: str | None,
    param: str | None,
) -> None:
    upstream.script(reply, reply)
    with pytest.raises(exc_type) as direct:
        sdk(upstream_url).images.generate(model="gpt-image-1", prompt="a")
    with pytest.raises(exc_type) as proxied:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
    for err, request_id in ((direct.value, "req_up_1"), (proxied.value, "req_up_2")):
        seen = (err.status_code, err.code, err.param, err.request_id)
        assert seen == (reply.status, code, param, request_id)
    assert proxied.value.body == direct.value.body and proxied.value.message == direct.value.message


def test_sdk_retries_a_429_through_the_proxy(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    upstream.script(rate_limited(retry_after_ms=10), rate_limited(retry_after_ms=10))
    result = sdk(proxy, max_retries=2).images.generate(model="gpt-image-1", prompt="a")
    assert len(upstream.requests) == 3 and result.data
    assert result._request_id == "req_up_3"


def test_x_should_retry_from_openai_steers_the_sdk(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    upstream.script(
        bad_request(headers={"x-should-retry": "true", "retry-after-ms": "10"}),
        server_error(503, headers={"x-should-retry": "false"}),
    )
    with pytest.raises(openai.InternalServerError):
        sdk(proxy, max_retries=2).images.generate(model="gpt-image-1", prompt="a")
    assert len(upstream.requests) == 2  # the 400 was retried, the 503 was not


# -- the proxy's own upstream failures ----------------------------------------------------------------


def test_openai_unreachable_is_a_502_naming_where(sdk: Sdk) -> None:
    port = free_port()
    with proxy_for(f"http://127.0.0.1:{port}") as proxy, pytest.raises(openai.InternalServerError) as caught:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
    assert caught.value.status_code == 502 and f"127.0.0.1:{port}" in caught.value.message
    assert CLIENT_KEY not in caught.value.message


@pytest.mark.slow  # timing
def test_openai_hanging_past_the_timeout_is_a_504(upstream: FakeOpenAI, upstream_url: str, sdk: Sdk) -> None:
    upstream.script(hang(10))
    with proxy_for(upstream_url, request_options={"timeout": 0.5}) as proxy:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
        elapsed = time.monotonic() - started
    assert caught.value.status_code == 504 and caught.value.code == "timeout"
    assert 0.4 < elapsed < 5


@pytest.mark.parametrize(
    "reply",
    [garbage(), truncated_json(), truncated_body(), reset()],
    ids=["garbage", "truncated_json", "truncated_body", "reset"],
)
def test_unusable_answers_are_a_502(upstream: FakeOpenAI, proxy: str, sdk: Sdk, reply: Any) -> None:
    upstream.script(reply)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(proxy).images.generate(model="gpt-image-1", prompt="a")
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    assert "127.0.0.1" in caught.value.message


# -- streaming ---------------------------------------------------------------------------------------


@pytest.mark.slow  # timing
def test_stream_events_arrive_in_order_as_they_happen(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    upstream.script(slow_stream(0.3))
    started = time.monotonic()
    arrivals: list[tuple[str, int | None, float]] = []
    for event in sdk(proxy).images.generate(model="gpt-image-1", prompt="a", stream=True, partial_images=2):
        arrivals.append((event.type, getattr(event, "partial_image_index", None), time.monotonic() - started))
    assert [(t, i) for t, i, _ in arrivals] == [
        ("image_generation.partial_image", 0),
        ("image_generation.partial_image", 1),
        ("image_generation.completed", None),
    ]
    first, last = arrivals[0][2], arrivals[-1][2]
    assert first < 0.75 and last - first > 0.45  # the first came while the upstream was still working


def test_async_client_streams_an_edit_through_the_proxy(upstream: FakeOpenAI, proxy: str) -> None:
    async def go() -> list[str]:
        async with openai.AsyncOpenAI(base_url=proxy + "/v1", api_key=CLIENT_KEY, max_retries=0) as aclient:
            stream = await aclient.images.edit(
                model="gpt-image-1", image=named("a.png", IMAGE_A), prompt="x", stream=True, partial_images=1
            )
            return [event.type async for event in stream]

    assert asyncio.run(go()) == ["image_edit.partial_image", "image_edit.completed"]
    assert upstream.last.fields["stream"] == "true"


def test_client_leaving_a_stream_cancels_the_upstream_request(upstream: FakeOpenAI, proxy: str, sdk: Sdk) -> None:
    upstream.script(slow_stream(0.3))
    stream = sdk(proxy).images.generate(model="gpt-image-1", prompt="a", stream=True, partial_images=3)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 5
    while upstream.streams_cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.streams_cancelled == 1 and upstream.streams_finished == 0


# -- url and b64 -------------------------------------------------------------------------------------


def test_gpt_image_url_answer_is_a_proxy_hosted_copy_of_the_same_bytes(
    upstream: FakeOpenAI, proxy: str, sdk: Sdk
) -> None:
    c = sdk(proxy)
    as_b64 = c.images.generate(model="gpt-image-1", prompt="a", response_format="b64_json")
    as_url = c.images.generate(model="gpt-image-1", prompt="a", response_format="url")
    assert as_b64.data and as_url.data and as_url.data[0].url
    assert as_url.data[0].url.startswith(proxy + "/v1/images/files/")
    assert "response_format" not in upstream.requests[1].fields  # OpenAI would refuse it for gpt-image
    assert base64.b64decode(as_b64.data[0].b64_json or "") == upstream.served_images[0]
    assert httpx.get(as_url.data[0].url).content == upstream.served_images[1]


def test_dall_e_urls_pass_through_unless_materialized(
    upstream: FakeOpenAI, upstream_url: str, proxy: str, sdk: Sdk
) -> None:
    plain = sdk(proxy).images.generate(model="dall-e-2", prompt="a", size="256x256")
    with proxy_for(upstream_url, opts={"materialize_urls": True}) as materializing:
        hosted = sdk(materializing).images.generate(model="dall-e-2", prompt="a", size="256x256")
        assert hosted.data and hosted.data[0].url
        assert hosted.data[0].url.startswith(materializing + "/v1/images/files/")
        hosted_bytes = httpx.get(hosted.data[0].url).content
    assert plain.data and plain.data[0].url and plain.data[0].url.startswith(upstream_url + "/v1/files/")
    assert httpx.get(plain.data[0].url).content == upstream.served_images[0]
    assert hosted_bytes == upstream.served_images[1]


def test_success_answer_is_relayed_byte_for_byte_with_the_request_id(upstream: FakeOpenAI, proxy: str) -> None:
    # Odd spacing, key order and an unknown field: any re-rendering would show.
    body = b'{ "data" : [ {"url": "https://example.invalid/a.png", "x": 1} ],\n "created": 5, "new": [] }'
    upstream.script(raw(body, headers={"x-request-id": "req_up_odd"}))
    answer = httpx.post(
        proxy + "/v1/images/generations",
        json={"model": "dall-e-3", "prompt": "a"},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert answer.status_code == 200 and answer.content == body
    assert answer.headers["x-request-id"] == "req_up_odd"


# -- aliases ------------------------------------------------------------------------------------------


def test_alias_rewrites_the_model_sent_upstream(upstream: FakeOpenAI, upstream_url: str, sdk: Sdk) -> None:
    aliases = {"my-model": {"provider": "openai", "model": "gpt-image-1.5"}}
    with proxy_for(upstream_url, aliases=aliases) as proxy:
        result = sdk(proxy).images.generate(model="my-model", prompt="a", size="1024x1536")
    assert upstream.last.fields["model"] == "gpt-image-1.5"
    assert result.size == "1024x1536"


def test_a_redirect_from_upstream_is_a_502_not_relayed(
    upstream: FakeOpenAI, proxy: str, sdk: Callable[..., openai.OpenAI]
) -> None:
    from tests.upstreams.openai_upstream import raw

    upstream.script(raw(b"", status=302, headers={"location": "https://login.example.invalid/"}))
    with pytest.raises(openai.InternalServerError) as info:
        sdk(proxy).images.generate(model="gpt-image-1.5", prompt="x")
    assert info.value.status_code == 502 and "302" in info.value.message


def test_variation_without_a_model_uses_dall_e_2_as_openai_does(fake_proxy_url: str) -> None:
    from tests.conftest import png_bytes

    client = openai.OpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-x", max_retries=0)
    result = client.images.create_variation(image=("a.png", png_bytes((64, 64))), response_format="b64_json")
    assert result.data and result.data[0].b64_json
