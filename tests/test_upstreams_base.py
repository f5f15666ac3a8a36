"""Every fake upstream has the same verbs (tests/upstreams/base.py): script, pending, requests, reset, and
two ways in, with or without a socket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.upstreams import gemini_upstream, openai_upstream
from tests.upstreams.base import ASGI_BASE_URL, FakeUpstream
from tests.upstreams.gemini_upstream import VALID_KEY, FakeGemini
from tests.upstreams.openai_upstream import FakeOpenAI

# (path, JSON body, headers) of one valid call
Call = tuple[str, dict[str, Any], dict[str, str]]
OPENAI_CALL: Call = (
    "/v1/images/generations",
    {"model": "gpt-image-1", "prompt": "a heron"},
    {"authorization": "Bearer sk-test-base"},
)
GEMINI_CALL: Call = (
    "/v1beta/models/gemini-3-pro-image:generateContent",
    {"contents": [{"parts": [{"text": "a heron"}]}]},
    {"x-goog-api-key": VALID_KEY},
)
FAKES: list[Any] = [
    pytest.param(FakeOpenAI, OPENAI_CALL, openai_upstream.server_error(503), id="openai"),
    pytest.param(FakeGemini, GEMINI_CALL, gemini_upstream.unavailable(), id="gemini"),
]


@pytest.mark.parametrize(("make", "call", "failure"), FAKES)
def test_scripted_replies_are_used_in_order_then_the_default_and_reset_forgets_everything(
    make: Callable[[], FakeUpstream[Any, Any]], call: Call, failure: Any
) -> None:
    fake = make()
    path, body, headers = call
    fake.script(failure)
    assert fake.pending == 1
    with fake.serving() as url, httpx.Client(base_url=url, headers=headers) as client:
        assert fake.base_url == url
        assert client.post(path, json=body).status_code == 503
        assert fake.pending == 0
        assert client.post(path, json=body).status_code == 200
        assert len(fake.requests) == 2 and fake.last is fake.requests[-1]
        fake.script(failure)
        fake.reset()
        assert (fake.pending, fake.requests) == (0, [])
        assert client.post(path, json=body).status_code == 200
        assert len(fake.requests) == 1


@pytest.mark.parametrize(("make", "call", "failure"), FAKES)
async def test_the_asgi_transport_reaches_the_same_fake_without_a_socket(
    make: Callable[[], FakeUpstream[Any, Any]], call: Call, failure: Any
) -> None:
    fake = make()
    path, body, headers = call
    fake.script(failure)
    transport = fake.asgi_transport()
    assert fake.base_url == ASGI_BASE_URL  # URLs the fake hands out resolve through the same transport
    async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE_URL, headers=headers) as client:
        statuses = [(await client.post(path, json=body)).status_code for _ in range(2)]
    assert statuses == [503, 200]
    assert len(fake.requests) == 2 and fake.pending == 0
