"""The gemini adapter through the Engine, against the fake Gemini API (no SDK, no server)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image as PILImage

from allm_proxy import Call, errors
from allm_proxy.engine import Engine
from allm_proxy.types import ImageEvent, ImageRequest, ImageResponse, InputFile, RawBody
from tests.support.asgi_server import free_port
from tests.support.images import half_transparent_mask, noise_png
from tests.upstreams import gemini_upstream as g
from tests.upstreams.base import ASGI_BASE_URL
from tests.upstreams.gemini_upstream import FakeGemini

KEY = "test-gemini-key"


@pytest.fixture(scope="module")
def fake() -> FakeGemini:
    return FakeGemini()


def _checked(fake: FakeGemini) -> Iterator[FakeGemini]:
    fake.reset()
    yield fake
    assert fake.problems == [], "the proxy sent a request Google would refuse"


@pytest.fixture
def upstream(fake: FakeGemini) -> Iterator[FakeGemini]:
    """The module's fake, reached in-process (no socket); no request it received may be one Google refuses."""
    yield from _checked(fake)


@pytest.fixture
def networked() -> Iterator[tuple[FakeGemini, str]]:
    """A fake on a real socket, for timeouts: (the fake, its base URL)."""
    fake = FakeGemini()
    with fake.serving() as url:
        for checked in _checked(fake):
            yield checked, url


def make_engine(upstream: FakeGemini | str, **opts: Any) -> Engine:
    """The gemini adapter in front of `upstream` in-process, or of a base URL over the network."""
    aliases = opts.pop("aliases", None)
    timeout = opts.pop("timeout", 30.0)
    if isinstance(upstream, str):
        base_url, transport = upstream, None
    else:
        base_url, transport = ASGI_BASE_URL, upstream.asgi_transport()
    return Engine(
        image_adapter="gemini",
        image_adapter_opts={"base_url": base_url, **opts},
        aliases=aliases,
        env={"GEMINI_API_KEY": KEY},
        request_options={"timeout": timeout},
        transport=transport,
    )


def run(engine: Engine, request: ImageRequest, options: Call | None = None) -> Any:
    """One request on a fresh loop; a stream is drained into a list of events."""

    async def go() -> Any:
        try:
            result = await engine.run(request, options or Call())
            if isinstance(result, ImageResponse):
                return result
            assert not isinstance(result, RawBody)  # the library API never relays
            return [event async for event in result]
        finally:
            await engine.aclose()

    return asyncio.run(go())


def gen(**fields: Any) -> ImageRequest:
    fields.setdefault("model", "gemini-3-pro-image")
    fields.setdefault("prompt", "a kestrel on a fence post")
    return ImageRequest(operation="generate", **fields)


def pixels(data: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(data))
    img.load()
    return img


# -- generations --------------------------------------------------------------------------------


def test_generation_sends_one_generate_content_call_as_google_documents(upstream: FakeGemini) -> None:
    run(make_engine(upstream), gen(size="1536x1024"))
    [sent] = upstream.requests
    assert sent.path == "/v1beta/models/gemini-3-pro-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.headers["content-type"] == "application/json"
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "a kestrel on a fence post"}]}]
    assert sent.generation_config == {
        "responseModalities": ["IMAGE"],
        "imageConfig": {"aspectRatio": "3:2", "imageSize": "1K"},
    }


def test_response_size_reports_the_decoded_pixels_not_the_requested_size(upstream: FakeGemini) -> None:
    resp = run(make_engine(upstream), gen(size="1792x1024"))
    w, h = upstream.output_size("gemini-3-pro-image", "16:9", "1K")
    assert resp.size == f"{w}x{h}" and pixels(resp.images[0].data).size == (w, h)
    assert resp.size != "1792x1024"


def test_absent_and_auto_size_leave_the_image_config_out(upstream: FakeGemini) -> None:
    run(make_engine(upstream), gen())
    run(make_engine(upstream), gen(size="auto", model="gemini-3.1-flash-image"))
    assert [r.image_config for r in upstream.requests] == [{}, {}]


def test_gemini_25_flash_never_gets_an_image_size(upstream: FakeGemini) -> None:
    run(make_engine(upstream), gen(model="gemini-2.5-flash-image", size="1792x1024", quality="high"))
    assert upstream.requests[0].image_config == {"aspectRatio": "16:9"}


def test_a_size_no_tier_can_honour_is_a_400_before_any_upstream_call(upstream: FakeGemini) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        run(make_engine(upstream), gen(model="gemini-3.1-flash-lite-image", size="3000x3000"))
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "size", "invalid_size")
    assert "1K" in caught.value.message and "1536" in caught.value.message
    assert upstream.requests == []


def test_dall_e_3_alias_hd_wide_becomes_16_9_at_2k(upstream: FakeGemini) -> None:
    engine = make_engine(upstream, aliases={"dall-e-3": {"provider": "gemini", "model": "gemini-3-pro-image"}})
    resp = run(engine, gen(model="dall-e-3", size="1792x1024", quality="hd", style="vivid"))
    assert upstream.requests[0].path.endswith("/models/gemini-3-pro-image:generateContent")
    assert upstream.requests[0].image_config == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert resp.size == "{}x{}".format(*upstream.output_size("gemini-3-pro-image", "16:9", "2K"))


def test_unknown_gemini_model_id_is_sent_as_is_and_its_404_is_model_not_found(upstream: FakeGemini) -> None:
    with pytest.raises(errors.ModelNotFoundError) as caught:
        run(make_engine(upstream), gen(model="gemini-9-ultra-image", size="1024x1024"))
    assert upstream.requests[0].path == "/v1beta/models/gemini-9-ultra-image:generateContent"
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert "models/gemini-9-ultra-image is not found" in caught.value.message
    upstream.requests[0].problems.clear()  # the 404 was the point, not a proxy mistake


def test_api_version_and_per_call_key_reach_google(upstream: FakeGemini) -> None:
    engine = Engine(
        image_adapter="gemini",
        image_adapter_opts={"base_url": ASGI_BASE_URL + "/", "api_version": "v1"},
        env={"GEMINI_API_KEY": "some-other-key"},
        transport=upstream.asgi_transport(),
    )
    run(engine, gen(), Call(client_key=KEY))
    assert upstream.requests[0].path == "/v1/models/gemini-3-pro-image:generateContent"
    assert upstream.requests[0].headers["x-goog-api-key"] == KEY


# -- n ------------------------------------------------------------------------------------------------


def test_n_3_makes_three_calls_without_candidate_count_and_sums_usage(upstream: FakeGemini) -> None:
    resp = run(make_engine(upstream), gen(n=3, size="1024x1024"))
    assert len(upstream.requests) == 3 and len(resp.images) == 3
    assert all("candidateCount" not in r.generation_config for r in upstream.requests)
    one = run(make_engine(upstream), gen(n=1, size="1024x1024")).usage
    assert resp.usage.input_tokens == 3 * one.input_tokens
    assert resp.usage.output_image_tokens == 3 * 1120 and resp.usage.total_tokens == 3 * one.total_tokens


@pytest.mark.slow  # timing
def test_concurrency_is_bounded_by_max_concurrency(upstream: FakeGemini) -> None:
    upstream.script(*[g.image(delay=0.2) for _ in range(4)])
    started = asyncio.run(_timed(make_engine(upstream, max_concurrency=2), gen(n=4)))
    # Two at a time: two rounds of 0.2 s, not one.
    assert started >= 0.38


async def _timed(engine: Engine, request: ImageRequest) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await engine.run(request, Call())
    finally:
        await engine.aclose()
    return loop.time() - start


def test_partial_success_returns_the_images_that_came_back(upstream: FakeGemini) -> None:
    upstream.script(g.image(), g.finish_blocked(), g.unavailable())
    resp = run(make_engine(upstream), gen(n=3))
    assert len(upstream.requests) == 3 and len(resp.images) == 1


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ([g.unavailable(), g.quota_exceeded(), g.finish_blocked()], errors.ContentPolicyError),
        ([g.unavailable(), g.internal(), g.quota_exceeded()], errors.RateLimitError),
        ([g.invalid_argument(), g.unavailable(), g.invalid_argument()], errors.UpstreamError),
    ],
)
def test_all_calls_failing_raises_the_most_telling_error(
    upstream: FakeGemini, replies: list[g.Reply], expected: type[errors.ProxyError]
) -> None:
    upstream.script(*replies)
    with pytest.raises(expected):
        run(make_engine(upstream, max_concurrency=1), gen(n=3))


# -- answers ----------------------------------------------------------------------------------------


def test_jpeg_labelled_png_is_reported_as_jpeg(upstream: FakeGemini) -> None:
    upstream.script(g.image("jpeg", label="image/png"))
    resp = run(make_engine(upstream), gen())
    assert resp.output_format == "jpeg" and resp.images[0].mime_type == "image/jpeg"
    assert resp.images[0].data.startswith(b"\xff\xd8\xff")


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("webp", b"RIFF"), ("jpeg", b"\xff\xd8\xff")])
def test_output_format_is_honoured_by_transcoding(upstream: FakeGemini, fmt: str, magic: bytes) -> None:
    upstream.script(g.image("jpeg", label="image/png"))
    resp = run(make_engine(upstream), gen(output_format=fmt, output_compression=80))
    assert resp.images[0].data.startswith(magic) and resp.output_format == fmt
    assert resp.images[0].mime_type == f"image/{fmt}"


def test_thought_images_and_thought_text_are_skipped(upstream: FakeGemini) -> None:
    upstream.script(g.image(thoughts=2, text="Here is your kestrel."))
    resp = run(make_engine(upstream), gen(size="1024x1024"))
    [image] = resp.images
    assert pixels(image.data).size == upstream.output_size("gemini-3-pro-image")  # not the 24x24 drafts
    assert image.revised_prompt == "Here is your kestrel."
    # Thoughts are output the model produced: they count as text output tokens.
    caption_tokens = len("Here is your kestrel.") // 4
    assert resp.usage.output_text_tokens == 2 * 180 + caption_tokens
    assert resp.usage.output_tokens == 1120 + 2 * 180 + caption_tokens


def test_usage_maps_usage_metadata_as_tabulated(upstream: FakeGemini) -> None:
    upstream.script(g.image(thoughts=1))
    request = ImageRequest(
        operation="edit", model="gemini-3-pro-image", prompt="make it dusk", images=[InputFile(noise_png((32, 32)))]
    )
    resp = run(make_engine(upstream), request)
    usage = resp.usage
    prompt_text = len("make it dusk") // 4
    assert (usage.input_text_tokens, usage.input_image_tokens) == (max(1, prompt_text), 560)
    assert usage.input_tokens == usage.input_text_tokens + usage.input_image_tokens
    assert (usage.output_image_tokens, usage.output_text_tokens) == (1120, 180)
    assert usage.output_tokens == 1300 and usage.total_tokens == usage.input_tokens + 1300


def test_echo_fields_are_opaque_real_format_and_quality(upstream: FakeGemini) -> None:
    assert run(make_engine(upstream), gen(quality="low")).quality == "low"
    resp = run(make_engine(upstream), gen())
    assert (resp.background, resp.output_format, resp.quality) == ("opaque", "png", "high")


def test_background_transparent_is_refused(upstream: FakeGemini) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        run(make_engine(upstream), gen(background="transparent"))
    assert caught.value.param == "background" and upstream.requests == []


# -- edits -----------------------------------------------------------------------------------------------


def test_edit_sends_every_image_as_inline_data_with_its_sniffed_type(upstream: FakeGemini) -> None:
    png = noise_png((40, 30))
    buf = io.BytesIO()
    PILImage.open(io.BytesIO(png)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    request = ImageRequest(
        operation="edit",
        model="gemini-3-pro-image",
        prompt="put them together",
        images=[InputFile(png, content_type="image/jpeg"), InputFile(jpeg, filename="x.png")],
    )
    run(make_engine(upstream), request)
    [sent] = upstream.requests
    assert sent.image_mime_types == ["image/png", "image/jpeg"]
    assert sent.images == [png, jpeg]
    inline = [p["inlineData"]["data"] for p in sent.parts if "inlineData" in p]
    assert all(re.fullmatch(r"[A-Za-z0-9+/]*=*", d) for d in inline)  # standard base64
    assert sent.parts[-1] == {"text": "put them together"}
    assert sent.image_config == {}  # no size: the model keeps the input's ratio


def test_edit_with_size_maps_it(upstream: FakeGemini) -> None:
    request = ImageRequest(
        operation="edit",
        model="gemini-3-pro-image",
        prompt="wider",
        size="1536x1024",
        images=[InputFile(noise_png((32, 32)))],
    )
    run(make_engine(upstream), request)
    assert upstream.requests[0].image_config == {"aspectRatio": "3:2", "imageSize": "1K"}


def test_edit_with_mask_keeps_every_unmasked_pixel(upstream: FakeGemini) -> None:
    size = (48, 36)
    original = noise_png(size)
    upstream.script(g.image("jpeg"))  # lossy and a different size: the proxy must still keep pixels exact
    request = ImageRequest(
        operation="edit",
        model="gemini-3-pro-image",
        prompt="paint the right half blue",
        images=[InputFile(original)],
        mask=InputFile(half_transparent_mask(size), field="mask"),
    )
    resp = run(make_engine(upstream), request)
    out = pixels(resp.images[0].data).convert("RGB")
    src = pixels(original).convert("RGB")
    assert out.size == size and resp.size == "48x36" and resp.output_format == "png"
    kept = [(x, y) for y in range(size[1]) for x in range(size[0] // 2)]
    edited = [(x, y) for y in range(size[1]) for x in range(size[0] // 2, size[0])]
    assert all(out.getpixel(p) == src.getpixel(p) for p in kept)
    assert sum(out.getpixel(p) != src.getpixel(p) for p in edited) > 0.9 * len(edited)
    assert len(upstream.requests[0].images) == 1  # no hint unless asked


def test_mask_hint_sends_the_mask_as_a_black_and_white_image_with_an_instruction(upstream: FakeGemini) -> None:
    size = (20, 10)
    request = ImageRequest(
        operation="edit",
        model="gemini-3-pro-image",
        prompt="add a moon",
        images=[InputFile(noise_png(size))],
        mask=InputFile(half_transparent_mask(size), field="mask"),
    )
    run(make_engine(upstream, mask_hint=True), request)
    sent = upstream.requests[0]
    assert len(sent.images) == 2
    hint = pixels(sent.images[1]).convert("L")
    assert hint.getpixel((0, 0)) == 0 and hint.getpixel((19, 0)) == 255
    assert sent.text.startswith("add a moon") and "mask" in sent.text


# -- variations ----------------------------------------------------------------------------------------------


def variation(**fields: Any) -> ImageRequest:
    return ImageRequest(
        operation="variation", model="gemini-3-pro-image", images=[InputFile(noise_png((16, 16)))], **fields
    )


def test_variations_are_refused_by_default_with_how_to_enable_them(upstream: FakeGemini) -> None:
    with pytest.raises(errors.UnsupportedOperationError) as caught:
        run(make_engine(upstream), variation())
    assert caught.value.status == 400 and 'variations = "emulate"' in caught.value.message
    assert upstream.requests == []


def test_emulated_variations_are_edits_asking_for_a_variation(upstream: FakeGemini) -> None:
    resp = run(make_engine(upstream, variations="emulate"), variation(n=2))
    assert len(resp.images) == 2 and len(upstream.requests) == 2
    sent = upstream.requests[0]
    assert len(sent.images) == 1 and "variation" in sent.text.lower()


# -- streaming -------------------------------------------------------------------------------------------------


def test_stream_gives_one_completed_event_per_image(upstream: FakeGemini) -> None:
    events: list[ImageEvent] = run(make_engine(upstream), gen(stream=True, n=2, size="1024x1536", partial_images=2))
    assert [e.type for e in events] == ["image_generation.completed"] * 2
    w, h = upstream.output_size("gemini-3-pro-image", "2:3")
    for event in events:
        assert event.image is not None and pixels(event.image.data).size == (w, h)
        assert event.fields["size"] == f"{w}x{h}" and event.fields["output_format"] == "png"
        assert event.usage is not None and event.usage.output_image_tokens == 1120
        assert {"quality", "background", "created_at"} <= set(event.fields)


def test_streamed_edit_events_are_image_edit_completed(upstream: FakeGemini) -> None:
    request = ImageRequest(
        operation="edit", model="gemini-3-pro-image", prompt="x", stream=True, images=[InputFile(noise_png((16, 16)))]
    )
    events = run(make_engine(upstream), request)
    assert [e.type for e in events] == ["image_edit.completed"]


# -- transport failures ------------------------------------------------------------------------------------------


@pytest.mark.slow  # timing
def test_an_upstream_that_does_not_answer_in_time_is_a_504(networked: tuple[FakeGemini, str]) -> None:
    upstream, url = networked  # the ASGI transport has no timeouts
    upstream.script(g.image(delay=0.8))
    with pytest.raises(errors.UpstreamTimeoutError) as caught:
        run(make_engine(url, timeout=0.3), gen())
    assert caught.value.status == 504


def test_an_upstream_that_cannot_be_reached_is_a_502(upstream: FakeGemini) -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        run(make_engine(f"http://127.0.0.1:{free_port()}"), gen())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"


def test_options_with_bad_values_fail_naming_the_valid_ones(upstream: FakeGemini) -> None:
    with pytest.raises(ValueError, match="reject, emulate"):
        run(make_engine(upstream, variations="sometimes"), gen())


def test_inline_data_is_standard_base64_of_the_exact_bytes(upstream: FakeGemini) -> None:
    original = noise_png((8, 8))
    run(
        make_engine(upstream),
        ImageRequest(operation="edit", model="gemini-3-pro-image", prompt="x", images=[InputFile(original)]),
    )
    part = next(p for p in upstream.requests[0].parts if "inlineData" in p)
    assert part["inlineData"]["data"] == base64.b64encode(original).decode()
