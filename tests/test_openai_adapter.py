"""The openai adapter through the Engine, against the fake OpenAI upstream: what goes up, what comes back."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from allm_proxy import Call, Engine
from allm_proxy.adapters.base import AdapterSetup
from allm_proxy.adapters.openai import OpenAIImages
from allm_proxy.call import Route
from allm_proxy.capabilities import ModelCatalog
from allm_proxy.engine import edit_image
from allm_proxy.errors import (
    AuthenticationError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from allm_proxy.types import ImageEvent, ImageRequest, ImageResponse, InputFile, RawBody
from allm_proxy.wire.requests import form_values
from tests.support.asgi_server import free_port
from tests.support.images import half_transparent_mask, png_bytes
from tests.upstreams.base import ASGI_BASE_URL
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
)

T = TypeVar("T")
KEY = "sk-test-adp-012345"


BASE_URL = ASGI_BASE_URL + "/v1"


@pytest.fixture(scope="module")
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def upstream(fake: FakeOpenAI) -> FakeOpenAI:
    """The module's fake, reached in-process (no socket), its recordings and script cleared."""
    fake.reset()
    return fake


@pytest.fixture
def networked(served: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    """The module's fake on a real socket, for timeouts, resets and streams: (the fake, its /v1 URL)."""
    served[0].reset()
    return served[0], served[1] + "/v1"


def make_engine(upstream: FakeOpenAI | str, **opts: Any) -> Engine:
    """The openai adapter in front of `upstream` in-process, or of a base URL over the network."""
    request_options = opts.pop("request_options", None)
    if isinstance(upstream, str):
        base_url, transport = upstream, None
    else:
        base_url, transport = BASE_URL, upstream.asgi_transport()
    return Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": base_url, **opts},
        request_options=request_options,
        env={"OPENAI_API_KEY": KEY},
        transport=transport,
    )


def run(engine: Engine, request: ImageRequest, options: Call | None = None) -> ImageResponse:
    async def go() -> ImageResponse:
        try:
            result = await engine.run(request, options or Call())
            assert isinstance(result, ImageResponse)
            return result
        finally:
            await engine.aclose()

    return asyncio.run(go())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def gen(**fields: Any) -> ImageRequest:
    fields.setdefault("prompt", "a cat")
    fields.setdefault("model", "gpt-image-1")
    return ImageRequest(operation="generate", **fields)


# -- what goes upstream -----------------------------------------------------------------------------


def test_generation_sends_every_field_including_unknown_ones_as_json(upstream: FakeOpenAI) -> None:
    request = gen(
        n=2,
        size="1536x1024",
        quality="high",
        background="transparent",
        output_format="webp",
        output_compression=80,
        moderation="low",
        user="user-1",
        extra=[("flag", True), ("nested", {"a": [1, 2]}), ("nothing", None)],
    )
    run(make_engine(upstream), request)
    sent = upstream.last
    assert sent.path == "/v1/images/generations" and sent.media_type == "application/json"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a cat",
        "n": 2,
        "size": "1536x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "webp",
        "output_compression": 80,
        "moderation": "low",
        "user": "user-1",
        "flag": True,
        "nested": {"a": [1, 2]},
        "nothing": None,
    }
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_forwarded_organization_and_project_headers_reach_openai(upstream: FakeOpenAI) -> None:
    options = Call(forward_headers={"openai-organization": "org-test", "openai-project": "proj_test"})
    run(make_engine(upstream), gen(), options)
    assert upstream.last.headers["openai-organization"] == "org-test"
    assert upstream.last.headers["openai-project"] == "proj_test"


def test_edit_resends_files_with_their_part_names_filenames_types_and_bytes(upstream: FakeOpenAI) -> None:
    first, second = png_bytes((64, 64)), png_bytes((64, 64), (255, 0, 0, 255))
    markup = png_bytes((64, 64), (0, 0, 0, 0))
    request = ImageRequest(
        operation="edit",
        prompt="merge",
        model="gpt-image-1",
        n=2,
        stream=False,
        encoding="multipart",
        images=[
            InputFile(first, "a.png", "image/png", "image[]"),
            InputFile(second, "upload", "application/octet-stream", "image[]"),
        ],
        extra=[("zeta", "1"), ("arr[]", "x"), ("arr[]", "y"), ("svg[model]", "m")],
        extra_files=[InputFile(markup, "markup.png", "image/png", "markup")],
    )
    run(make_engine(upstream), request)
    parts = [(*p.summary()[:3], p.data if p.is_file else p.text) for p in upstream.last.parts]
    assert parts == [
        ("prompt", None, None, "merge"),
        ("model", None, None, "gpt-image-1"),
        ("n", None, None, "2"),
        ("stream", None, None, "false"),
        ("zeta", None, None, "1"),
        ("arr[]", None, None, "x"),
        ("arr[]", None, None, "y"),
        ("svg[model]", None, None, "m"),
        ("image[]", "a.png", "image/png", first),
        ("image[]", "upload", "application/octet-stream", second),
        ("markup", "markup.png", "image/png", markup),
    ]


def test_dall_e_2_edit_sends_a_single_image_part_and_the_mask_last(upstream: FakeOpenAI) -> None:
    image, mask = png_bytes((64, 64)), half_transparent_mask((64, 64))
    request = ImageRequest(
        operation="edit",
        prompt="a hat",
        model="dall-e-2",
        size="256x256",
        response_format="b64_json",
        encoding="multipart",
        images=[InputFile(image, "a.png", "image/png", "image")],
        mask=InputFile(mask, "mask.png", "image/png", "mask"),
    )
    run(make_engine(upstream), request)
    files = [(p.name, p.filename, p.data) for p in upstream.last.files()]
    assert files == [("image", "a.png", image), ("mask", "mask.png", mask)]
    assert upstream.last.fields["response_format"] == "b64_json"


def test_variation_goes_to_the_variations_route_as_multipart(upstream: FakeOpenAI) -> None:
    request = ImageRequest(
        operation="variation",
        model="dall-e-2",
        n=2,
        size="256x256",
        encoding="multipart",
        images=[InputFile(png_bytes((64, 64)), "a.png", "image/png", "image")],
    )
    response = run(make_engine(upstream), request)
    assert upstream.last.path == "/v1/images/variations"
    assert upstream.last.fields == {"model": "dall-e-2", "n": "2", "size": "256x256"}
    assert [i.url for i in response.images] == [f"{upstream.base_url}/v1/files/img-1-{i}.png" for i in (0, 1)]


def test_json_edit_form_stays_json_with_data_url_images(upstream: FakeOpenAI) -> None:
    image = png_bytes((32, 32))
    request = ImageRequest(
        operation="edit",
        prompt="x",
        model="gpt-image-1",
        encoding="json",
        images=[InputFile(image, None, "image/png", "image[]")],
    )
    run(make_engine(upstream), request)
    sent = upstream.last.json
    assert upstream.last.media_type == "application/json"
    assert sent["images"] == [{"image_url": "data:image/png;base64," + base64.b64encode(image).decode()}]


def test_library_edit_flattens_python_extras_the_way_the_sdk_does(upstream: FakeOpenAI) -> None:
    with make_engine(upstream) as engine:
        edit_image(
            engine,
            png_bytes((32, 32)),
            "x",
            model="gpt-image-1",
            extra={"flag": True, "num": 3, "nested": {"a": 1}, "arr": ["x", "y"]},
        )
    texts = [(p.name, p.text) for p in upstream.last.parts if not p.is_file]
    assert texts[-5:] == [("flag", "true"), ("num", "3"), ("nested[a]", "1"), ("arr[]", "x"), ("arr[]", "y")]
    (upload,) = upstream.last.files()
    assert (upload.name, upload.filename, upload.content_type) == ("image", "upload", "image/png")


def test_form_values_leave_out_none_and_bracket_nested_values() -> None:
    assert list(form_values("svg", {"model": "m", "reasoning": {"effort": "low"}, "skip": None})) == [
        ("svg[model]", "m"),
        ("svg[reasoning][effort]", "low"),
    ]
    assert list(form_values("stream", False)) == [("stream", "false")]


def test_alias_sends_the_provider_model(upstream: FakeOpenAI) -> None:
    engine = Engine(
        image_adapter="openai",
        image_adapter_opts={"base_url": BASE_URL},
        aliases={"my-model": {"provider": "openai", "model": "gpt-image-1.5"}},
        env={"OPENAI_API_KEY": KEY},
        transport=upstream.asgi_transport(),
    )
    run(engine, gen(model="my-model"))
    assert upstream.last.json["model"] == "gpt-image-1.5"


# -- what comes back --------------------------------------------------------------------------------


def test_answer_keeps_the_body_bytes_and_the_base64_text_undecoded(upstream: FakeOpenAI) -> None:
    b64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(3000)).decode()
    usage = {
        "input_tokens": 5,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 5},
        "output_tokens": 9,
        "total_tokens": 14,
    }
    body = json.dumps(
        {
            "created": 7,
            "background": "opaque",
            "data": [{"b64_json": b64, "note": "kept"}],
            "output_format": "webp",
            "quality": "high",
            "size": "1024x1024",
            "usage": usage,
            "safety_identifier": "sid-1",
        }
    ).encode()
    upstream.script(raw(body, headers={"x-request-id": "req_up_fixed"}))
    response = run(make_engine(upstream), gen())
    assert response.raw_json == body
    image = response.images[0]
    assert image._b64 is not None and image._data is None  # nothing decoded on the way through
    assert image.b64_json() == b64 and image.mime_type == "image/webp" and image.extra == {"note": "kept"}
    echo = (response.created, response.background, response.output_format, response.quality, response.size)
    assert echo == (7, "opaque", "webp", "high", "1024x1024")
    assert response.usage is not None and response.usage.total_tokens == 14
    assert response.extra == {"safety_identifier": "sid-1"}
    assert response.headers == {"x-request-id": "req_up_fixed"}


def test_dall_e_3_answer_has_url_and_revised_prompt(upstream: FakeOpenAI) -> None:
    response = run(make_engine(upstream), gen(model="dall-e-3", size="1792x1024", style="natural"))
    (image,) = response.images
    assert image.url is not None and image.url.startswith(upstream.base_url) and not image.has_bytes
    assert image.revised_prompt == "A revised prompt: a cat"
    assert response.usage is None


# -- upstream errors, relayed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (bad_request(code="invalid_value", param="size"), 400, "invalid_value"),
        (model_not_found("gpt-image-0"), 404, "model_not_found"),
        (rate_limited(retry_after_ms=10, retry_after="1", should_retry="true"), 429, "rate_limit_exceeded"),
        (server_error(503, headers={"x-should-retry": "false"}), 503, None),
    ],
)
def test_upstream_error_answers_are_relayed_unchanged(
    upstream: FakeOpenAI, reply: Any, status: int, code: str | None
) -> None:
    upstream.script(reply)
    with pytest.raises(UpstreamStatusError) as caught:
        run(make_engine(upstream), gen())
    err = caught.value
    assert (err.status, err.code) == (status, code)
    assert err.body() == reply.body
    assert err.response_headers() == {"x-request-id": "req_up_1", **reply.headers}


def test_upstream_401_for_a_wrong_key_is_relayed(upstream: FakeOpenAI) -> None:
    upstream.valid_keys = {"sk-test-other"}
    try:
        with pytest.raises(UpstreamStatusError) as caught:
            run(make_engine(upstream), gen())
    finally:
        upstream.valid_keys = None
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
    assert KEY not in caught.value.message


def test_error_body_that_is_not_an_envelope_keeps_its_status_and_gets_one(upstream: FakeOpenAI) -> None:
    upstream.script(garbage(b"<html>bad gateway</html>", status=502, content_type="text/html"))
    with pytest.raises(UpstreamStatusError) as caught:
        run(make_engine(upstream), gen())
    inner = json.loads(caught.value.body())["error"]
    assert caught.value.status == 502
    assert "text/html" in inner["message"] and "bad gateway" in inner["message"]


@pytest.mark.parametrize(
    "reply",
    [
        garbage(f"<html>Authorization: Bearer {KEY}</html>".encode(), status=502, content_type="text/html"),
        raw(
            f'{{"error": {{"message": "bad key {KEY}", "type": "x", "param": null, "code": null}}}}'.encode(),
            status=401,
        ),
        garbage(f"<html>{'x' * 100}Bearer {KEY}</html>".encode()),
        raw(
            f'data: {{"type": "error", "error": {{"message": "key {KEY}"}}}}\n\n'.encode(),
            content_type="text/event-stream",
        ),
    ],
    ids=["html-error", "envelope", "html-200-key-across-the-cut", "stream-error-event"],
)
def test_a_key_echoed_by_the_upstream_is_masked(upstream: FakeOpenAI, reply: Any) -> None:
    # The key may be the proxy's own, which a client must never learn from an error.
    upstream.script(reply)
    if reply.content_type == "text/event-stream":
        (event,) = collect(make_engine(upstream), gen(stream=True))
        told = repr(event.error)
    else:
        with pytest.raises((UpstreamStatusError, UpstreamError)) as caught:
            run(make_engine(upstream), gen())
        told = caught.value.message + caught.value.body().decode()
    assert KEY[8:20] not in told and "sk-***" in told


def test_no_key_anywhere_is_a_401_that_says_how_to_set_one(upstream: FakeOpenAI) -> None:
    engine = Engine(
        image_adapter="openai", image_adapter_opts={"base_url": BASE_URL}, env={}, transport=upstream.asgi_transport()
    )
    with pytest.raises(AuthenticationError) as caught:
        run(engine, gen())
    assert "OPENAI_API_KEY" in caught.value.message and caught.value.code == "invalid_api_key"


# -- the proxy's own upstream failures ---------------------------------------------------------------


def test_connection_refused_is_a_502_naming_host_and_port_not_the_key() -> None:
    port = free_port()
    with pytest.raises(UpstreamError) as caught:
        run(make_engine(f"http://127.0.0.1:{port}/v1"), gen())
    assert caught.value.status == 502
    assert f"127.0.0.1:{port}" in caught.value.message and "connect" in caught.value.message.lower()
    assert KEY not in caught.value.message


@pytest.mark.slow  # timing
def test_upstream_that_hangs_past_the_timeout_is_a_504(networked: tuple[FakeOpenAI, str]) -> None:
    upstream, base_url = networked
    upstream.script(hang(10))
    with pytest.raises(UpstreamTimeoutError) as caught:
        run(make_engine(base_url, request_options={"timeout": 0.3}), gen())
    assert caught.value.status == 504 and "127.0.0.1" in caught.value.message


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (reset(), "connection broke"),
        (truncated_body(), "connection broke"),
        (truncated_json(), "cut short"),
        (garbage(), "<html>"),
    ],
)
def test_broken_answers_are_a_502_describing_what_arrived(
    networked: tuple[FakeOpenAI, str], reply: Any, words: str
) -> None:
    upstream, base_url = networked  # a reset and a cut body need a real connection
    upstream.script(reply)
    with pytest.raises(UpstreamError) as caught:
        run(make_engine(base_url), gen())
    assert caught.value.status == 502 and words in caught.value.message
    assert KEY not in caught.value.message


def test_key_never_reaches_the_logs(networked: tuple[FakeOpenAI, str], caplog: pytest.LogCaptureFixture) -> None:
    upstream, base_url = networked
    with caplog.at_level(logging.DEBUG):
        run(make_engine(base_url), gen())
        upstream.script(reset())
        with pytest.raises(UpstreamError):
            run(make_engine(base_url), gen())
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)


# -- retries (off unless asked) ----------------------------------------------------------------------


def test_no_retries_by_default(upstream: FakeOpenAI) -> None:
    upstream.script(rate_limited())
    with pytest.raises(UpstreamStatusError):
        run(make_engine(upstream), gen())
    assert len(upstream.requests) == 1


def test_max_retries_retries_429_and_5xx_then_succeeds(upstream: FakeOpenAI) -> None:
    upstream.script(rate_limited(retry_after_ms=5), server_error(500, headers={"retry-after-ms": "5"}))
    response = run(make_engine(upstream, max_retries=2), gen())
    assert len(upstream.requests) == 3 and response.headers["x-request-id"] == "req_up_3"


def test_max_retries_respects_x_should_retry_false(upstream: FakeOpenAI) -> None:
    upstream.script(server_error(503, headers={"x-should-retry": "false"}))
    with pytest.raises(UpstreamStatusError):
        run(make_engine(upstream, max_retries=2), gen())
    assert len(upstream.requests) == 1


def test_unknown_or_bad_options_are_errors_naming_the_valid_ones(upstream: FakeOpenAI) -> None:
    for opts, words in (({"base-url": "x"}, "known: api_key"), ({"max_retries": -1}, "max_retries")):
        engine = make_engine(upstream, **opts)
        with pytest.raises(ValueError, match=words):
            run(engine, gen())


# -- streaming ---------------------------------------------------------------------------------------


def collect(
    engine: Engine, request: ImageRequest, *, stop_after: int | None = None, until: Any = None
) -> list[ImageEvent]:
    """The events of a streamed call; with `until`, waits for it before the engine closes its client."""

    async def go() -> list[ImageEvent]:
        events: list[ImageEvent] = []
        try:
            stream = await engine.run(request, Call())
            assert not isinstance(stream, ImageResponse | RawBody)
            try:
                async for event in stream:
                    events.append(event)
                    if stop_after is not None and len(events) >= stop_after:
                        break
            finally:
                await stream.aclose()
            if until is not None:
                await async_wait_for(until)
        finally:
            await engine.aclose()
        return events

    return asyncio.run(go())


def test_stream_relays_partial_and_completed_events_with_all_fields(upstream: FakeOpenAI) -> None:
    events = collect(make_engine(upstream), gen(stream=True, partial_images=2, size="1024x1536"))
    assert [(e.type, e.partial_image_index) for e in events] == [
        ("image_generation.partial_image", 0),
        ("image_generation.partial_image", 1),
        ("image_generation.completed", None),
    ]
    assert all(e.image is not None and e.image.has_bytes for e in events)
    assert list(events[0].fields) == ["created_at", "size", "quality", "background", "output_format"]
    assert events[0].fields["size"] == "1024x1536" and events[-1].usage is not None
    assert upstream.last.json["stream"] is True


def test_edit_stream_events_carry_the_image_edit_prefix(upstream: FakeOpenAI) -> None:
    image = InputFile(png_bytes((32, 32)), "a.png", "image/png")
    request = ImageRequest(
        operation="edit",
        prompt="x",
        model="gpt-image-1",
        stream=True,
        partial_images=1,
        encoding="multipart",
        images=[image],
    )
    events = collect(make_engine(upstream), request)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert upstream.last.fields["stream"] == "true"


def test_stream_handles_comments_done_and_data_without_space(upstream: FakeOpenAI) -> None:
    body = (
        b': ping\n\nevent: image_generation.completed\ndata:{"type":"image_generation.completed",'
        b'"b64_json":"QUJD","safety_identifier":"s"}\n\ndata: [DONE]\n\ndata: {"type": "never"}\n\n'
    )
    upstream.script(raw(body, content_type="text/event-stream"))
    events = collect(make_engine(upstream), gen(stream=True))
    assert len(events) == 1 and events[0].kind == "completed"
    assert events[0].image is not None and events[0].image.data == b"ABC"
    assert events[0].fields == {"safety_identifier": "s"}


def test_stream_error_event_ends_the_stream_as_an_error_event(upstream: FakeOpenAI) -> None:
    body = (
        b'data: {"type":"error","error":{"message":"blocked","type":"image_generation_user_error",'
        b'"param":null,"code":"moderation_blocked"}}\n\ndata: {"type":"image_generation.completed"}\n\n'
    )
    upstream.script(raw(body, content_type="text/event-stream"))
    events = collect(make_engine(upstream), gen(stream=True))
    assert [e.kind for e in events] == ["error"]
    assert events[0].error is not None and events[0].error["code"] == "moderation_blocked"


def test_stream_cut_short_inside_an_event_is_a_502(upstream: FakeOpenAI) -> None:
    cut = b'data: {"type":"image_generation.completed","b64_json":"QU'
    upstream.script(raw(cut, content_type="text/event-stream"))
    with pytest.raises(UpstreamError, match="not JSON"):
        collect(make_engine(upstream), gen(stream=True))


def test_stream_error_status_before_the_stream_is_relayed(upstream: FakeOpenAI) -> None:
    upstream.script(rate_limited(retry_after_ms=20))
    with pytest.raises(UpstreamStatusError) as caught:
        collect(make_engine(upstream), gen(stream=True))
    assert caught.value.status == 429 and caught.value.response_headers()["retry-after-ms"] == "20"


def test_json_answer_to_a_stream_request_becomes_completed_events(upstream: FakeOpenAI) -> None:
    answer = {"created": 3, "data": [{"b64_json": "QUJD"}], "size": "1024x1024"}
    upstream.script(raw(json.dumps(answer).encode()))
    events = collect(make_engine(upstream), gen(stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]
    assert events[0].fields == {"created_at": 3, "size": "1024x1024"}


def test_closing_a_stream_early_cancels_the_upstream_request(networked: tuple[FakeOpenAI, str]) -> None:
    upstream, base_url = networked
    upstream.script(slow_stream(0.2))
    # Waiting while the engine's HTTP client is still open: only the stream's own close can cancel.
    events = collect(
        make_engine(base_url),
        gen(stream=True, partial_images=3),
        stop_after=1,
        until=lambda: upstream.streams_cancelled == 1,
    )
    assert len(events) == 1 and upstream.streams_finished == 0


def test_closing_an_unread_stream_releases_the_upstream(networked: tuple[FakeOpenAI, str]) -> None:
    upstream, base_url = networked
    upstream.script(slow_stream(0.2))

    async def go() -> None:
        # The adapter itself, on a client the test owns and keeps open: only aclose() ends the upstream call.
        async with httpx.AsyncClient() as http:
            setup = AdapterSetup(http=http, options={"base_url": base_url}, catalog=ModelCatalog())
            adapter = OpenAIImages(setup)
            ctx = Call(
                route=Route(
                    provider="openai",
                    model="gpt-image-1",
                    requested_model="gpt-image-1",
                    family=ModelCatalog().for_provider("gpt-image-1", "openai"),
                ),
                api_key=KEY,
            )
            stream = await adapter.generate(gen(stream=True, partial_images=3), ctx)
            assert not isinstance(stream, ImageResponse | RawBody)
            await stream.aclose()
            await async_wait_for(lambda: upstream.streams_cancelled == 1)

    run_async(go())


async def async_wait_for(condition: Any, timeout: float = 5.0) -> None:
    """Poll a condition the upstream's thread sets; bounded in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_cookie_one_answer_sets_is_never_sent_for_the_next_client() -> None:
    """One upstream client serves every client of the proxy: a cookie it kept (a CDN's, say) would ride
    along on other people's requests, so neither httpx's jar nor aiohttp's keeps any."""
    from tests.support.asgi_server import running_proxy
    from tests.support.cassette_helpers import OPENAI_KEY
    from tests.upstreams.openai_upstream import error

    upstream = FakeOpenAI()
    upstream.script(error(429, "slow down", headers={"set-cookie": "__cf_bm=abc123; Path=/; HttpOnly"}))
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": upstream_url + "/v1", "api_key": OPENAI_KEY, "max_retries": 0},
        )
        with running_proxy(engine) as base:
            body = {"model": "dall-e-2", "prompt": "a heron", "size": "256x256"}
            first = httpx.post(f"{base}/v1/images/generations", json=body, timeout=30)
            second = httpx.post(f"{base}/v1/images/generations", json=body, timeout=30)
    assert first.status_code == 429 and second.status_code == 200
    assert len(upstream.requests) == 2
    assert "cookie" not in upstream.requests[1].headers
