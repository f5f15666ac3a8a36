"""The HTTP server: routes, limits, access token, hosted files and the error envelope."""

from __future__ import annotations

import json
import logging
import random
import re

import httpx
import openai
import pytest
from starlette.datastructures import Headers

from allm_proxy import Engine, ProxyConfig
from allm_proxy.call import new_request_id
from allm_proxy.config import ModelAlias
from allm_proxy.files import HostedFiles
from allm_proxy.server.middleware import bearer, call_headers
from tests.support.adapters import register_for_test
from tests.support.asgi_server import running_proxy


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_unknown_route_is_404_envelope(fake_proxy_url: str) -> None:
    assert_envelope(httpx.get(f"{fake_proxy_url}/v1/nope"), 404, "unknown_url")


def test_wrong_method_is_405_envelope(fake_proxy_url: str) -> None:
    assert_envelope(httpx.get(f"{fake_proxy_url}/v1/images/generations"), 405, "method_not_allowed")


def test_malformed_json_is_400_and_server_keeps_serving(fake_proxy_url: str) -> None:
    error = assert_envelope(
        httpx.post(
            f"{fake_proxy_url}/v1/images/generations", content=b"{nope", headers={"content-type": "application/json"}
        ),
        400,
    )
    assert "JSON" in error["message"]
    assert httpx.get(f"{fake_proxy_url}/healthz").json()["status"] == "ok"


def test_wrong_content_type_is_415(fake_proxy_url: str) -> None:
    assert_envelope(
        httpx.post(
            f"{fake_proxy_url}/v1/images/generations", content=b"prompt=x", headers={"content-type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )


def test_body_over_the_limit_is_413_before_it_is_read() -> None:
    config = ProxyConfig(max_body_bytes=1024)
    with running_proxy(Engine(), config) as url:
        error = assert_envelope(
            httpx.post(
                f"{url}/v1/images/edits",
                content=b"x" * 5000,
                headers={"content-type": "multipart/form-data; boundary=x"},
            ),
            413,
        )
        assert "--max-body-mb" in error["message"]


def test_chunked_body_over_the_limit_is_413() -> None:
    config = ProxyConfig(max_body_bytes=1024)

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b"y" * 512

    with running_proxy(Engine(), config) as url:
        assert_envelope(
            httpx.post(f"{url}/v1/images/generations", content=chunks(), headers={"content-type": "application/json"}),
            413,
            "payload_too_large",
        )


def test_paths_without_v1_prefix_work(fake_proxy_url: str) -> None:
    client = openai.OpenAI(base_url=fake_proxy_url, api_key="sk-test-x", max_retries=0)
    result = client.images.generate(prompt="no prefix", size="1024x1024", response_format="b64_json")
    assert result.data and result.data[0].b64_json


def test_models_list_shows_default_and_aliases() -> None:
    engine = Engine(aliases={"dall-e-3": ModelAlias("dall-e-3", "fake", "gpt-image-1.5")})
    with running_proxy(engine) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-x", max_retries=0)
        ids = [m.id for m in client.models.list().data]
        assert ids == ["dall-e-2", "gpt-image-1.5", "dall-e-3"]  # the documented defaults, then the aliases
        assert client.models.retrieve("dall-e-3").owned_by == "allm-proxy:fake"
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("no-such-model")
        assert info.value.code == "model_not_found"


def test_access_token_is_required_and_compared() -> None:
    config = ProxyConfig(access_token="proxy-token-123")
    with running_proxy(Engine(), config) as url:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.images.generate(prompt="x")
        assert info.value.code == "invalid_api_key" and "access token" in info.value.message
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="proxy-token-123", max_retries=0)
        assert right.images.generate(prompt="x").data


def test_hosted_file_urls_serve_the_bytes_and_unknown_ids_are_404(fake_proxy_url: str) -> None:
    client = openai.OpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-x", max_retries=0)
    result = client.images.generate(prompt="url please", model="dall-e-2", size="256x256")
    assert result.data
    url = result.data[0].url
    assert url is not None and url.startswith(f"{fake_proxy_url}/v1/images/files/img_")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    assert_envelope(httpx.get(f"{fake_proxy_url}/v1/images/files/img_doesnotexist000000000000"), 404)
    assert_envelope(httpx.get(f"{fake_proxy_url}/v1/images/files/..%2F..%2Fetc%2Fpasswd"), 404)


async def test_hosted_files_expire() -> None:
    files = HostedFiles(ttl=0.0)
    file_id = await files.put(b"data", "image/png")
    assert await files.get(file_id) is None


def test_every_response_has_a_request_id(fake_proxy_url: str) -> None:
    ok = httpx.get(f"{fake_proxy_url}/v1/models")
    assert ok.headers["x-request-id"].startswith("req_")
    assert json.loads(ok.content)["object"] == "list"
    ids = {httpx.get(f"{fake_proxy_url}/healthz").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids), ids


def test_request_ids_do_not_repeat_when_a_test_reseeds_random() -> None:
    """The pytest plugin serves in the test's process, where a test (or Hypothesis, for every
    example) reseeds the `random` module: request ids come from a generator of their own."""
    ids = set()
    for _ in range(20):
        random.seed(0)
        ids.add(new_request_id())
    assert len(ids) == 20


def test_a_call_takes_each_header_s_first_value_as_starlette_would() -> None:
    """`call_headers` reads the request's headers once; a repeated header counts by its first value."""
    raw = [
        (b"x-allm-session", b"first"),
        (b"content-type", b"application/json"),
        (b"x-allm-session", b"second"),
        (b"authorization", b"Bearer sk-test-one"),
        (b"openai-project", b"proj_test"),
        (b"x-allm-cassette", b"caf\xe9"),
    ]
    found = call_headers({"headers": raw})
    assert found == {
        "x-allm-session": "first",
        "authorization": "Bearer sk-test-one",
        "openai-project": "proj_test",
        "x-allm-cassette": "caf\xe9",
    }
    assert found == {name: Headers(raw=raw)[name] for name in found}
    assert bearer(found["authorization"]) == "sk-test-one" and bearer("Basic abc") is None


def test_client_that_leaves_cancels_the_provider_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    from allm_proxy import AdapterInfo, Call, ImageRequest, ImageResponse
    from allm_proxy.adapters import AdapterSetup

    cancelled = threading.Event()

    class Hanging:
        name = "hanging-test"

        def __init__(self, setup: AdapterSetup) -> None:
            pass

        async def generate(self, request: ImageRequest, ctx: Call) -> ImageResponse:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("not cancelled")

        edit = variation = generate

        async def aclose(self) -> None:
            pass

    register_for_test(
        monkeypatch, AdapterInfo(name="hanging-test", factory=Hanging, needs_key=False, default_model="gpt-image-1.5")
    )
    with running_proxy(Engine("hanging-test")) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/images/generations", json={"prompt": "x"}, timeout=0.5)
        assert cancelled.wait(5), "the provider call kept running after the client left"
        assert httpx.get(f"{url}/healthz").status_code == 200


async def test_an_unexpected_error_is_a_500_envelope_logged_with_its_bytes(caplog: pytest.LogCaptureFixture) -> None:
    """The last-resort envelope goes through the same bookkeeping as any answer: one x-request-id,
    and an access-log line (written after its bytes) with its status and size."""
    from allm_proxy.server.middleware import CallMiddleware

    async def broken(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("a bug")

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/images/generations", "headers": []}
    middleware = CallMiddleware(broken)
    with caplog.at_level(logging.INFO, logger="allm_proxy.access"):
        await middleware(scope, receive, send)  # type: ignore[arg-type]
        middleware.access.flush()  # lines go in batches (server/access_log.py)
    start, body = sent
    assert start["status"] == 500
    assert [name for name, _ in start["headers"] if name == b"x-request-id"] == [b"x-request-id"]  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if r.name == "allm_proxy.access"]
    assert len(lines) == 1 and "status=500 ms=" in lines[0] and lines[0].endswith(f"bytes={len(body['body'])}")  # type: ignore[arg-type]
