"""Secrets: keys never reach a log (at DEBUG, uvicorn's and httpx's loggers included), an error message or
/v1/models; the access token works and is never passed on; a public bind without one is warned about;
hosted image URLs cannot be guessed and expire."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from allm_proxy import Engine, ProxyConfig
from allm_proxy.files import HostedFiles
from allm_proxy.server import bind_warning
from tests.support.asgi_server import free_port, guarded_proxy
from tests.support.hardening import captured_logs
from tests.support.images import png_bytes
from tests.upstreams import gemini_upstream as gem
from tests.upstreams import openai_upstream as up

pytestmark = pytest.mark.slow  # hardening: every failure path, searched for keys

PROVIDER_KEY = "sk-test-prov-7f3a9c"
HEADER_KEY = "sk-test-hdr-4d8e2a6"
BEARER_KEY = "sk-test-brr-9a1c3e5"
ACCESS_TOKEN = "sk-test-acc-2b4d6f8"
SECRETS = (PROVIDER_KEY, HEADER_KEY, BEARER_KEY, ACCESS_TOKEN, gem.VALID_KEY)


def leaks(text: str) -> list[str]:
    """The secrets (or a 12-character piece of one) in `text`."""
    return [s for s in SECRETS if any(s[i : i + 12] in text for i in range(0, len(s) - 11, 4))]


def calls(url: str, *, bearer: str = BEARER_KEY) -> Iterator[httpx.Response]:
    """One of each kind of request, good and bad, with every way of passing a key."""
    headers = {"authorization": f"Bearer {bearer}", "x-allm-api-key": HEADER_KEY}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        yield client.post("/v1/images/generations", json={"prompt": "a kestrel", "size": "1024x1024"})
        yield client.post("/v1/images/generations", json={"prompt": "a kestrel", "n": 99})
        yield client.post("/v1/images/edits", files={"image": ("a.png", png_bytes())}, data={"prompt": "a moon"})
        yield client.get("/v1/models")
        yield client.get("/v1/models/gpt-image-1.5")
        yield client.get("/healthz")
        yield client.get("/v1/nowhere")
        yield client.post("/v1/images/generations", json={"prompt": "no key"}, headers={"x-allm-api-key": ""})


def test_no_key_in_logs_or_answers_of_the_fake_provider() -> None:
    with captured_logs() as logs, guarded_proxy(Engine(), ProxyConfig(access_token=ACCESS_TOKEN)) as url:
        answers = list(calls(url, bearer=ACCESS_TOKEN)) + list(calls(url, bearer="sk-test-wrong-00000"))
    assert [r.status_code for r in answers[:3]] == [200, 400, 200]
    assert {r.status_code for r in answers[8:] if r.url.path not in ("/healthz", "/v1/nowhere")} == {401}
    assert leaks(logs.text()) == []
    assert [leaks(r.text) for r in answers if r.headers["content-type"].startswith("application/json")] == [[]] * len(
        answers
    )
    assert all(leaks(str(r.headers)) == [] for r in answers)


def test_no_key_in_logs_or_answers_of_the_openai_provider_good_and_failing() -> None:
    upstream = up.FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": f"{upstream_url}/v1", "api_key": PROVIDER_KEY},
            request_options={"timeout": 0.5},
        )
        unreachable = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": PROVIDER_KEY},
        )
        with captured_logs() as logs, guarded_proxy(engine) as url, guarded_proxy(unreachable) as dead_url:
            answers = list(calls(url))
            for reply in (
                up.unauthorized(),
                up.server_error(),
                up.reset(),
                up.hang(2),
                up.truncated_json(),
                up.garbage(),
            ):
                upstream.script(reply)
                answers += list(calls(url))[:1]
            answers += list(calls(dead_url))[:1]
    statuses = [r.status_code for r in answers]
    assert statuses[0] == 200 and {401, 500, 502, 504} <= set(statuses)
    # The provider saw the key the request chose (the header beats the configured key) ...
    assert upstream.requests[0].headers["authorization"] == f"Bearer {HEADER_KEY}"
    # ... and nobody else did.
    assert leaks(logs.text()) == []
    assert [leaks(r.text) for r in answers] == [[]] * len(answers)


def test_a_provider_echoing_the_key_back_does_not_put_it_in_the_error_message() -> None:
    upstream = up.FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": f"{upstream_url}/v1"})
        with captured_logs() as logs, guarded_proxy(engine) as url:
            # A gateway in front of the provider that shows the request's headers in its error page.
            upstream.script(up.garbage(f"<html>Authorization: Bearer {HEADER_KEY}</html>".encode(), status=502))
            answer = httpx.post(
                f"{url}/v1/images/generations", json={"prompt": "x"}, headers={"x-allm-api-key": HEADER_KEY}
            )
    assert answer.status_code == 502
    assert leaks(answer.text) == [] and leaks(logs.text()) == []


def test_no_key_in_logs_or_answers_of_the_gemini_provider() -> None:
    upstream = gem.FakeGemini(api_keys=(gem.VALID_KEY, HEADER_KEY))
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="gemini", image_adapter_opts={"base_url": upstream_url}, env={"GEMINI_API_KEY": gem.VALID_KEY}
        )
        with captured_logs() as logs, guarded_proxy(engine) as url:
            answers = list(calls(url))
            upstream.script(gem.api_key_invalid())
            answers += list(calls(url))[:1]
    assert answers[0].status_code == 200 and answers[-1].status_code >= 400
    assert leaks(logs.text()) == []
    assert [leaks(r.text) for r in answers] == [[]] * len(answers)


@pytest.fixture(scope="module")
def guarded_url() -> Iterator[str]:
    with guarded_proxy(Engine(), ProxyConfig(access_token=ACCESS_TOKEN)) as url:
        yield url


@pytest.mark.parametrize(
    "presented",
    [
        ACCESS_TOKEN[:-1] + "X",  # same length, last character differs
        ACCESS_TOKEN[:-1],  # a prefix
        ACCESS_TOKEN + "0",  # longer
        "",  # nothing
        ACCESS_TOKEN.upper(),
        "sk-test-\u00e9\u00e8",  # not ASCII (sent as Latin-1 bytes)
    ],
)
def test_a_wrong_access_token_is_401_in_every_shape(guarded_url: str, presented: str) -> None:
    for headers in ({"authorization": f"Bearer {presented}".strip()}, {"x-allm-access-token": presented}):
        encoded = {k: v.encode("latin-1") for k, v in headers.items()}
        # Bytes on purpose: a token outside ASCII must reach the server as the client sent it.
        response = httpx.post(f"{guarded_url}/v1/images/generations", json={"prompt": "x"}, headers=encoded)  # type: ignore[arg-type]
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert ACCESS_TOKEN not in response.text and (not presented or presented not in response.text)


def test_the_right_access_token_works_either_way_and_is_never_passed_on() -> None:
    upstream = up.FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": f"{upstream_url}/v1"})
        with guarded_proxy(engine, ProxyConfig(access_token=ACCESS_TOKEN)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=ACCESS_TOKEN, max_retries=0)
            # Without a provider key the token is not taken for one: the client is told how to give a key.
            with pytest.raises(openai.AuthenticationError) as caught:
                client.images.generate(model="gpt-image-1.5", prompt="x")
            assert "X-ALLM-Api-Key" in caught.value.message
            assert upstream.requests == []
            keyed = client.with_options(default_headers={"X-ALLM-Api-Key": HEADER_KEY})
            keyed_result = keyed.images.generate(model="gpt-image-1.5", prompt="x")
            assert keyed_result.data and keyed_result.data[0].b64_json
            other = httpx.post(
                f"{url}/v1/images/generations",
                json={"model": "gpt-image-1.5", "prompt": "y"},
                headers={"x-allm-access-token": ACCESS_TOKEN, "x-allm-api-key": HEADER_KEY},
            )
            assert other.status_code == 200
    assert [r.headers["authorization"] for r in upstream.requests] == [f"Bearer {HEADER_KEY}"] * 2
    assert all(ACCESS_TOKEN not in str(r.headers) for r in upstream.requests)


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("127.0.0.1", None, False),
        ("127.0.0.2", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("[::1]", None, False),
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.168.1.20", None, True),
        ("proxy.internal", None, True),  # a name could resolve anywhere
        ("0.0.0.0", ACCESS_TOKEN, False),
    ],
)
def test_binding_beyond_loopback_without_a_token_is_warned_about(host: str, token: str | None, warned: bool) -> None:
    warning = bind_warning(host, token)
    assert (warning is not None) == warned
    if warning:
        assert host in warning and "--access-token" in warning


async def test_hosted_file_ids_are_unguessable() -> None:
    files = HostedFiles()
    ids = [await files.put(b"x", "image/png") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(r"img_[A-Za-z0-9_-]{43,}", i) for i in ids)  # 32 random bytes: 256 bits


def test_hosted_urls_serve_only_their_exact_id_and_expire() -> None:
    config = ProxyConfig(file_ttl=0.5)
    with guarded_proxy(Engine.from_config(config), config) as url:
        answer = httpx.post(
            f"{url}/v1/images/generations", json={"model": "dall-e-2", "prompt": "a lighthouse", "size": "256x256"}
        ).json()
        image_url = answer["data"][0]["url"]
        file_id = image_url.rsplit("/", 1)[1]
        fetched = httpx.get(image_url)
        assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
        assert int(fetched.headers["cache-control"].rsplit("=", 1)[1]) <= 1
        for guess in (
            file_id[:-1],
            file_id[:-1] + ("A" if file_id[-1] != "A" else "B"),
            file_id + "A",
            "img_" + "A" * 43,
            "..%2F..%2Fetc%2Fpasswd",
            file_id.upper(),
        ):
            assert httpx.get(f"{url}/v1/images/files/{guess}").status_code == 404
        time.sleep(0.6)
        expired = httpx.get(image_url)
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "file_not_found"
    assert "expire" in expired.json()["error"]["message"]
