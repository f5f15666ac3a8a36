"""The pass-through fast path: a JSON generation's bytes go upstream as the client sent them.

The property: for random generation bodies, valid and invalid, the fast path
and the full path (parse, then render again) send the same upstream request
(method, URL, the headers that matter, a body equal once parsed) and give the
client the same answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allm_proxy import Engine
from allm_proxy.config import ModelAlias
from allm_proxy.server import endpoints
from allm_proxy.server.app import create_app
from allm_proxy.types import ImageRequest, Operation
from allm_proxy.wire.requests import parse_request, render_body

from .conftest import png_bytes

UPSTREAM = "http://upstream.test/v1"
KEY = "sk-test-fastpath-x"
_HOSTED_ID = re.compile(rb"img_[A-Za-z0-9_-]{20,64}")
_PNG = png_bytes((8, 8))


def _answer(request: httpx.Request) -> httpx.Response:
    """The fake OpenAI: image URLs for generations, the PNG for a URL fetch."""
    if request.method == "GET":
        return httpx.Response(200, content=_PNG, headers={"content-type": "image/png"})
    return httpx.Response(
        200,
        json={"created": 1, "data": [{"url": "http://upstream.test/files/a.png"}]},
        headers={"x-request-id": "req_upstream"},
    )


async def _send(
    body: bytes, *, full_path: bool, monkeypatch: pytest.MonkeyPatch, aliases: dict[str, ModelAlias] | None = None
) -> tuple[list[httpx.Request], int, bytes]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _answer(request)

    engine = Engine(
        "openai",
        image_adapter_opts={"base_url": UPSTREAM, "api_key": KEY},
        env={},
        transport=httpx.MockTransport(handler),
        journal=False,
        aliases=aliases,
    )

    def parse_full(operation: Operation, content_type: str | None, raw: bytes) -> ImageRequest:
        return dataclasses.replace(parse_request(operation, content_type, raw), verbatim=None)

    with monkeypatch.context() as patched:
        if full_path:
            patched.setattr(endpoints, "parse_request", parse_full)
        app = create_app(engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.test") as client:
            answer = await client.post(
                "/v1/images/generations", content=body, headers={"content-type": "application/json"}
            )
        await engine.aclose()
    return seen, answer.status_code, _HOSTED_ID.sub(b"img_ID", answer.content)


def _upstream_view(request: httpx.Request) -> tuple[Any, ...]:
    content: Any = request.content
    if request.method == "POST":
        content = json.dumps(json.loads(content), sort_keys=True)  # parsed-equal, order aside
    return (
        request.method,
        str(request.url),
        request.headers.get("content-type"),
        request.headers.get("authorization"),
        content,
    )


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(_TEXT.filter(bool), st.none(), st.integers()),
    "model": st.sampled_from(["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1.5", "not-a-model", None, 3]),
    "n": st.one_of(st.integers(-1, 11), st.sampled_from([1.0, 2.0, 1.5, "2", True, None])),
    "size": st.sampled_from(["256x256", "512x512", "1024x1024", "1024x1536", "auto", "7x7", None, 256]),
    "response_format": st.sampled_from(["url", "b64_json", "png", None]),
    "quality": st.sampled_from(["standard", "hd", "low", "high", "auto", None]),
    "style": st.sampled_from(["vivid", "natural", None]),
    "background": st.sampled_from(["transparent", "opaque", "auto", None]),
    "user": st.one_of(_TEXT, st.none()),
    "stream": st.sampled_from([False, None, "no"]),
    "extra_field": st.one_of(
        st.none(),
        st.integers(),
        _TEXT,
        st.lists(st.integers(), max_size=3),
        st.dictionaries(_TEXT, st.booleans(), max_size=2),
    ),
}


@st.composite
def generation_bodies(draw: st.DrawFn) -> bytes:
    """A generation body as some client might write it: any fields, any order, any JSON spelling."""
    names = draw(st.lists(st.sampled_from(sorted(_VALUES)), unique=True, max_size=len(_VALUES)))
    if draw(st.booleans()) and "prompt" not in names:
        names.insert(0, "prompt")
    payload = {name: draw(_VALUES[name]) for name in names}
    if "prompt" in payload and payload["prompt"] is None and draw(st.booleans()):
        payload["prompt"] = "a kestrel"
    spelling = draw(st.sampled_from(["compact", "spaced", "indented", "ascii"]))
    text = {
        "compact": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        "spaced": json.dumps(payload, ensure_ascii=False),
        "indented": json.dumps(payload, indent=2, ensure_ascii=False),
        "ascii": json.dumps(payload),
    }[spelling]
    return text.encode()


_BROKEN = st.sampled_from([b"", b"{", b"[]", b'"prompt"', b"\xff\xfe", b'{"prompt": "a"}{}', b"null"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(generation_bodies(), _BROKEN))
def test_fast_and_full_path_send_the_same_upstream_request_and_answer_alike(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = asyncio.run(_send(body, full_path=False, monkeypatch=monkeypatch))
    full = asyncio.run(_send(body, full_path=True, monkeypatch=monkeypatch))
    fast_seen, fast_status, fast_answer = fast
    full_seen, full_status, full_answer = full
    assert [_upstream_view(r) for r in fast_seen] == [_upstream_view(r) for r in full_seen]
    assert (fast_status, fast_answer) == (full_status, full_answer)


def test_a_plain_generation_goes_upstream_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spaces, key order and escapes a re-encoding would change: the fast path keeps every byte.
    body = b'{ "size" : "256x256", "prompt": "a caf\\u00e9 kestrel",  "model": "dall-e-2", "n": 2 }'
    seen, status, _ = asyncio.run(_send(body, full_path=False, monkeypatch=monkeypatch))
    assert status == 200
    assert seen[0].content == body
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_an_aliased_model_is_rendered_again_with_the_provider_model(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"prompt": "a kestrel", "model": "house-style", "size": "256x256"}'
    aliases = {"house-style": ModelAlias(name="house-style", provider="openai", model="dall-e-2")}
    seen, status, _ = asyncio.run(_send(body, full_path=False, monkeypatch=monkeypatch, aliases=aliases))
    assert status == 200
    assert json.loads(seen[0].content)["model"] == "dall-e-2"


@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "a", "n": 2.0}',  # rendering sends 2
        b'{"prompt": "a", "size": null}',  # rendering leaves a null typed field out
    ],
)
def test_bodies_rendering_would_change_are_not_forwarded_verbatim(body: bytes) -> None:
    request = parse_request("generate", "application/json", body)
    assert request.verbatim is None
    assert render_body(request, request.model).content != body


def test_edits_and_multipart_never_take_the_fast_path() -> None:
    request = parse_request("edit", "application/json", b'{"prompt": "a", "images": []}')
    assert request.verbatim is None
