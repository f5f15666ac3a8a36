"""Big pass-through answers are relayed as they arrive: byte for byte, never parsed or held whole."""

from __future__ import annotations

import base64
import json
import os

import httpx
import openai
import pytest

from allm_proxy import Engine
from allm_proxy.adapters.openai.relay import RELAY_MIN_BYTES
from tests.support.asgi_server import running_proxy
from tests.upstreams.openai_upstream import FakeOpenAI, garbage, raw, truncated_body


def big_answer() -> bytes:
    image = os.urandom(RELAY_MIN_BYTES)  # incompressible, like a real PNG
    body = {
        "created": 1,
        "background": "opaque",
        "data": [{"b64_json": base64.b64encode(image).decode()}],
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
        "usage": {
            "input_tokens": 1,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 1},
            "output_tokens": 2,
            "total_tokens": 3,
        },
    }
    return json.dumps(body).encode()


@pytest.fixture
def upstream():
    fake = FakeOpenAI()
    with fake.serving():
        yield fake


def proxy_for(upstream: FakeOpenAI):
    engine = Engine(
        "openai", image_adapter_opts={"base_url": upstream.base_url + "/v1"}, env={"OPENAI_API_KEY": "sk-test-relay"}
    )
    return running_proxy(engine)


def test_big_answer_reaches_the_client_byte_for_byte_with_its_length(upstream: FakeOpenAI) -> None:
    body = big_answer()
    upstream.script(raw(body, headers={"x-request-id": "req_up_big"}))
    with proxy_for(upstream) as url:
        answer = httpx.post(
            f"{url}/v1/images/generations",
            json={"model": "gpt-image-1.5", "prompt": "big"},
            headers={"authorization": "Bearer sk-test-client"},
        )
    assert answer.status_code == 200
    assert answer.content == body
    assert answer.headers["content-length"] == str(len(body))
    assert answer.headers["x-request-id"] == "req_up_big"


def test_big_answer_through_the_sdk_parses(upstream: FakeOpenAI) -> None:
    body = big_answer()
    upstream.script(raw(body))
    with proxy_for(upstream) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-client", max_retries=0)
        result = client.images.generate(model="gpt-image-1.5", prompt="big")
    assert result.data and result.data[0].b64_json == json.loads(body)["data"][0]["b64_json"]
    assert result.usage is not None and result.usage.total_tokens == 3


def test_big_answer_is_still_converted_when_the_client_wants_a_url(upstream: FakeOpenAI) -> None:
    body = big_answer()
    upstream.script(raw(body))
    with proxy_for(upstream) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-client", max_retries=0)
        result = client.images.generate(model="gpt-image-1.5", prompt="big", response_format="url")
        assert result.data and result.data[0].url
        fetched = httpx.get(result.data[0].url).content
    assert fetched == base64.b64decode(json.loads(body)["data"][0]["b64_json"])


def test_big_answer_that_is_not_json_is_a_502_describing_it(upstream: FakeOpenAI) -> None:
    upstream.script(garbage(b"<html>" + b"x" * RELAY_MIN_BYTES + b"</html>"))
    with proxy_for(upstream) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-client", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.images.generate(model="gpt-image-1.5", prompt="big")
    assert info.value.status_code == 502 and "<html>" in info.value.message


def test_small_broken_answer_is_still_checked_whole(upstream: FakeOpenAI) -> None:
    upstream.script(truncated_body())
    with proxy_for(upstream) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-client", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.images.generate(model="gpt-image-1.5", prompt="small")
    assert info.value.status_code == 502
