"""The fake provider's generated images, driven through the Engine: what OpenAI clients rely on."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image as PILImage
from PIL import ImageStat

from allm_proxy import Call, Engine, ImageRequest, InputFile, edit_image, generate_image, image_variations
from allm_proxy.adapters.fake import FakeImages
from allm_proxy.adapters.fake import adapter as fake_adapter
from allm_proxy.adapters.fake.jobs import ImageCache
from allm_proxy.adapters.fake.meta import image_tokens
from allm_proxy.types import EventStream, ImageEvent, ImageResponse, RawBody
from tests.support.images import ellipse_mask, gradient_png

# gpt-image-2 takes any WxH in multiples of 16: small images keep the suite fast.
SMALL = {"model": "gpt-image-2", "size": "256x256"}


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine() as eng:
        yield eng


def decode(data: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(data))
    img.load()
    return img


def pixels(img: PILImage.Image) -> list[tuple[int, ...]]:
    raw, bands = img.tobytes(), len(img.getbands())
    return [tuple(raw[i : i + bands]) for i in range(0, len(raw), bands)]


def mean_abs_diff(a: PILImage.Image, b: PILImage.Image) -> float:
    pa, pb = a.convert("RGB").tobytes(), b.convert("RGB").tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / len(pa)


async def run(request: ImageRequest, session: str = "default", **engine_opts: Any) -> ImageResponse | EventStream:
    engine = Engine(**engine_opts)
    try:
        result = await engine.run(request, Call(session=session))
        assert isinstance(result, ImageResponse | EventStream)
        return result
    finally:
        await engine.aclose()


async def collect(request: ImageRequest) -> list[ImageEvent]:
    engine = Engine()
    try:
        stream = await engine.run(request)
        assert not isinstance(stream, ImageResponse | RawBody)
        return [event async for event in stream]
    finally:
        await engine.aclose()


# -- generation ------------------------------------------------------------------------


def test_same_request_gives_same_bytes_across_engines() -> None:
    with Engine() as first, Engine() as second:
        a = generate_image(first, "a watercolor kestrel", **SMALL).images[0].data
        b = generate_image(second, "a watercolor kestrel", **SMALL).images[0].data
    assert a == b


def test_different_prompts_give_different_images(engine: Engine) -> None:
    a = generate_image(engine, "a watercolor kestrel", **SMALL).images[0].data
    b = generate_image(engine, "a bowl of ramen", **SMALL).images[0].data
    assert mean_abs_diff(decode(a), decode(b)) > 5


def test_each_image_of_n_is_different(engine: Engine) -> None:
    images = [i.data for i in generate_image(engine, "three kestrels", n=3, **SMALL).images]
    assert len(images) == 3
    assert len(set(images)) == 3


def test_requested_size_is_honoured_and_changes_the_picture(engine: Engine) -> None:
    wide = generate_image(engine, "a kestrel", model="gpt-image-2", size="512x256").images[0].data
    tall = generate_image(engine, "a kestrel", model="gpt-image-2", size="256x512").images[0].data
    assert decode(wide).size == (512, 256)
    assert decode(tall).size == (256, 512)


@pytest.mark.parametrize("size", [None, "auto"])
def test_absent_or_auto_size_gives_the_family_default(engine: Engine, size: str | None) -> None:
    response = generate_image(engine, "a kestrel", model="gpt-image-1.5", size=size)
    assert decode(response.images[0].data).size == (1024, 1024)
    assert response.size == "1024x1024"


@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_format_is_honoured(engine: Engine, output_format: str, pil_format: str) -> None:
    response = generate_image(engine, "a kestrel", output_format=output_format, **SMALL)
    image = response.images[0]
    assert decode(image.data).format == pil_format
    assert image.mime_type == f"image/{output_format}"
    assert response.output_format == output_format


def test_output_compression_shrinks_jpeg(engine: Engine) -> None:
    best = generate_image(engine, "a kestrel", output_format="jpeg", output_compression=100, **SMALL)
    small = generate_image(engine, "a kestrel", output_format="jpeg", output_compression=10, **SMALL)
    assert len(small.images[0].data) < len(best.images[0].data) / 2


def test_transparent_background_gives_an_image_with_clear_pixels(engine: Engine) -> None:
    response = generate_image(engine, "a kestrel", background="transparent", **SMALL)
    img = decode(response.images[0].data)
    assert img.mode == "RGBA"
    low, high = img.getchannel("A").getextrema()
    assert (low, high) == (0, 255)
    assert response.background == "transparent"


@pytest.mark.parametrize("background", [None, "auto", "opaque"])
def test_other_backgrounds_are_opaque_and_echo_opaque(engine: Engine, background: str | None) -> None:
    response = generate_image(engine, "a kestrel", background=background, **SMALL)
    assert decode(response.images[0].data).mode == "RGB"
    assert response.background == "opaque"


def test_prompt_text_is_drawn_on_the_image(engine: Engine) -> None:
    # The prompt panel sits in the bottom band; a different prompt changes that band.
    a = decode(generate_image(engine, "a kestrel", **SMALL).images[0].data)
    b = decode(generate_image(engine, "a kestrel!", **SMALL).images[0].data)
    band = (0, 200, 256, 256)
    assert mean_abs_diff(a.crop(band), b.crop(band)) > 1


# -- usage and echo fields --------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "quality", "tokens"),
    [
        ("1024x1024", "low", 272),
        ("1024x1024", "medium", 1056),
        ("1024x1024", "high", 4160),
        ("1536x1024", "low", 408),
        ("1024x1536", "medium", 1584),
        ("1536x1024", "high", 6240),
    ],
)
def test_usage_output_tokens_follow_openai_table(size: str, quality: str, tokens: int) -> None:
    response = asyncio.run(run(ImageRequest(operation="generate", prompt="a" * 41, size=size, quality=quality)))
    assert isinstance(response, ImageResponse) and response.usage is not None
    assert response.usage.output_tokens == tokens
    assert response.usage.input_text_tokens == 11  # ceil(41 / 4)
    assert response.usage.total_tokens == tokens + 11
    assert (response.quality, response.size) == (quality, size)


def test_usage_scales_output_tokens_by_area_and_n(engine: Engine) -> None:
    response = generate_image(engine, "a kestrel", model="gpt-image-2", size="512x512", quality="low", n=2)
    assert response.usage is not None
    assert response.usage.output_tokens == 2 * 68  # a quarter of 272, twice


def test_auto_quality_is_billed_and_echoed_as_high(engine: Engine) -> None:
    response = generate_image(engine, "a kestrel", quality="auto", **SMALL)
    assert response.quality == "high"
    assert response.usage is not None and response.usage.output_tokens == 4160 // 16


def test_edit_usage_counts_each_input_image(engine: Engine) -> None:
    one = edit_image(engine, gradient_png(), "make it dusk", model="gpt-image-2")
    two = edit_image(engine, [gradient_png(), gradient_png((128, 128))], "make it dusk", model="gpt-image-2")
    assert one.usage is not None and two.usage is not None
    assert one.usage.input_image_tokens == 65 + 85  # a 256px image is one 512px tile
    assert two.usage.input_image_tokens == 2 * one.usage.input_image_tokens
    assert two.usage.input_tokens == two.usage.input_image_tokens + two.usage.input_text_tokens


def test_dall_e_answers_have_no_usage_or_echo_fields(engine: Engine) -> None:
    response = generate_image(engine, "a kestrel", model="dall-e-2", size="256x256", response_format="b64_json")
    assert response.usage is None
    assert (response.background, response.output_format, response.quality, response.size) == (None,) * 4
    assert response.images[0].revised_prompt is None


def test_dall_e_3_rewrites_the_prompt(engine: Engine) -> None:
    first = generate_image(engine, "A lighthouse on a cliff.", model="dall-e-3", response_format="b64_json")
    again = generate_image(engine, "A lighthouse on a cliff.", model="dall-e-3", response_format="b64_json")
    revised = first.images[0].revised_prompt
    assert revised is not None and "a lighthouse on a cliff" in revised
    assert revised != "A lighthouse on a cliff."
    assert again.images[0].revised_prompt == revised


# -- edits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["png", "webp"])
def test_edit_with_mask_keeps_unmasked_pixels(engine: Engine, output_format: str) -> None:
    source = gradient_png()
    mask = ellipse_mask((256, 256), (64, 48, 200, 176))
    edited = (
        edit_image(engine, source, "a giant flamingo", mask=mask, model="gpt-image-2", output_format=output_format)
        .images[0]
        .data
    )
    out, original = decode(edited).convert("RGB"), decode(source).convert("RGB")
    keep = PILImage.open(io.BytesIO(mask)).getchannel("A")
    assert out.size == original.size
    kept = changed = editable = 0
    for got, want, alpha in zip(pixels(out), pixels(original), keep.tobytes(), strict=True):
        if alpha > 0:
            assert got == want
            kept += 1
        else:
            editable += 1
            changed += got != want
    assert kept > 0 and editable > 0
    assert changed > 0.9 * editable


def test_edit_with_fully_opaque_mask_changes_nothing(engine: Engine) -> None:
    source = gradient_png()
    mask = ellipse_mask((256, 256), (0, 0, 0, 0))
    edited = edit_image(engine, source, "anything", mask=mask, model="gpt-image-2").images[0].data
    assert decode(edited).convert("RGB").tobytes() == decode(source).convert("RGB").tobytes()


def test_edit_without_mask_changes_the_whole_image_recognisably(engine: Engine) -> None:
    source = decode(gradient_png())
    edited = decode(edit_image(engine, gradient_png(), "make it autumn", model="gpt-image-2").images[0].data)
    unrelated = decode(generate_image(engine, "make it autumn", **SMALL).images[0].data)
    assert mean_abs_diff(edited, source) > 10  # visibly edited ...
    assert mean_abs_diff(edited, source) < mean_abs_diff(unrelated, source)  # ... but still that picture
    top_left = (0, 0, 128, 128)
    assert mean_abs_diff(edited.crop(top_left), source.crop(top_left)) > 5


def test_edit_with_several_images_insets_the_others(engine: Engine) -> None:
    alone = decode(edit_image(engine, [gradient_png()], "together", model="gpt-image-2").images[0].data)
    with_other = decode(
        edit_image(engine, [gradient_png(), gradient_png((128, 96))], "together", model="gpt-image-2").images[0].data
    )
    top_left = (0, 0, 128, 128)
    bottom_right = (128, 128, 256, 256)
    assert alone.crop(top_left).tobytes() == with_other.crop(top_left).tobytes()
    assert mean_abs_diff(alone.crop(bottom_right), with_other.crop(bottom_right)) > 5


def test_edit_output_size_defaults_to_the_first_input(engine: Engine) -> None:
    response = edit_image(engine, [gradient_png((320, 192)), gradient_png()], "wider", model="gpt-image-2")
    assert decode(response.images[0].data).size == (320, 192)
    assert response.size == "320x192"


def test_edit_honours_a_requested_size(engine: Engine) -> None:
    response = edit_image(engine, gradient_png(), "bigger", model="gpt-image-2", size="512x512")
    assert decode(response.images[0].data).size == (512, 512)


def test_edit_keeps_the_input_alpha_unless_opaque_is_asked(engine: Engine) -> None:
    kept = edit_image(engine, gradient_png(alpha=True), "x", model="gpt-image-2")
    flat = edit_image(engine, gradient_png(alpha=True), "x", model="gpt-image-2", background="opaque")
    assert decode(kept.images[0].data).mode == "RGBA" and kept.background == "transparent"
    assert decode(flat.images[0].data).mode == "RGB" and flat.background == "opaque"


# -- variations -----------------------------------------------------------------------------


def test_variations_are_related_but_different(engine: Engine) -> None:
    source = decode(gradient_png())
    response = image_variations(engine, gradient_png(), model="dall-e-2", n=3, response_format="b64_json")
    images = [decode(i.data) for i in response.images]
    assert [i.size for i in images] == [(256, 256)] * 3
    want = ImageStat.Stat(source.convert("RGB")).mean
    for img in images:
        got = ImageStat.Stat(img.convert("RGB")).mean
        assert all(abs(g - w) < 25 for g, w in zip(got, want, strict=True)), (got, want)
        assert mean_abs_diff(img, source) > 3
    assert len({i.tobytes() for i in images}) == 3


def test_variation_honours_a_requested_size(engine: Engine) -> None:
    response = image_variations(engine, gradient_png(), model="dall-e-2", size="512x512", response_format="b64_json")
    assert decode(response.images[0].data).size == (512, 512)


# -- streaming ------------------------------------------------------------------------------


def test_stream_sends_partials_then_completed_with_requested_echo() -> None:
    request = ImageRequest(
        operation="generate", prompt="a kestrel", model="gpt-image-2", size="256x256", stream=True, partial_images=3
    )
    events = asyncio.run(collect(request))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:3]] == [0, 1, 2]
    assert events[-1].usage is not None and events[-1].usage.output_tokens == 4160 // 16
    for event in events:
        assert event.fields["size"] == "256x256"
        assert event.fields["quality"] == "auto"  # the requested value, not the resolved one
        assert event.fields["background"] == "auto"
        assert event.fields["output_format"] == "png"
        assert isinstance(event.fields["created_at"], int)


def test_stream_final_image_equals_the_unstreamed_image() -> None:
    common: dict[str, Any] = {"operation": "generate", "prompt": "a kestrel", "model": "gpt-image-2", "size": "256x256"}
    events = asyncio.run(collect(ImageRequest(**common, stream=True, partial_images=2)))
    plain = asyncio.run(run(ImageRequest(**common)))
    assert isinstance(plain, ImageResponse)
    assert events[-1].image is not None and events[-1].image.data == plain.images[0].data


def test_stream_partials_get_closer_to_the_final_image() -> None:
    request = ImageRequest(
        operation="generate", prompt="a kestrel", model="gpt-image-2", size="256x256", stream=True, partial_images=3
    )
    images = [decode(e.image.data) for e in asyncio.run(collect(request)) if e.image is not None]
    final = images[-1]
    distances = [mean_abs_diff(partial, final) for partial in images[:-1]]
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] > 0


def test_stream_without_partials_sends_only_completed() -> None:
    request = ImageRequest(operation="generate", prompt="a kestrel", model="gpt-image-2", size="256x256", stream=True)
    events = asyncio.run(collect(request))
    assert [e.type for e in events] == ["image_generation.completed"]


def test_stream_edit_uses_image_edit_events() -> None:
    request = ImageRequest(
        operation="edit",
        prompt="dusk",
        model="gpt-image-2",
        stream=True,
        partial_images=1,
        images=[InputFile(gradient_png())],
    )
    events = asyncio.run(collect(request))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[-1].usage is not None and events[-1].usage.input_image_tokens > 0


def test_stream_with_n_sends_each_image_in_turn() -> None:
    request = ImageRequest(
        operation="generate",
        prompt="a kestrel",
        model="gpt-image-2",
        size="256x256",
        stream=True,
        partial_images=1,
        n=2,
    )
    events = asyncio.run(collect(request))
    assert [e.kind for e in events] == ["partial_image", "completed", "partial_image", "completed"]
    assert events[1].image is not None and events[3].image is not None
    assert events[1].image.data != events[3].image.data


# -- cache and threads -------------------------------------------------------------------------


def test_repeated_request_is_served_from_the_cache(engine: Engine) -> None:
    first = generate_image(engine, "a kestrel", **SMALL).images[0].data
    second = generate_image(engine, "a kestrel", **SMALL).images[0].data
    assert second is first  # the very bytes object: nothing was drawn or encoded again


def test_cache_drops_least_recently_used_beyond_its_bounds() -> None:
    cache = ImageCache(max_entries=2, max_bytes=10)
    cache.put("a", (b"1111",))
    cache.put("b", (b"2222",))
    assert cache.get("a") == (b"1111",)  # now "b" is the least recently used
    cache.put("c", (b"3333",))
    assert cache.get("b") is None
    assert cache.get("a") == (b"1111",)  # and now "c" is
    cache.put("d", (b"444444",))
    assert cache.get("c") is None and len(cache) == 2
    cache.put("e", (b"55555",))  # over 10 bytes with anything else in
    assert [cache.get(k) for k in "ade"] == [None, None, (b"55555",)]


def test_drawing_runs_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    threads: list[threading.Thread] = []
    real = fake_adapter.frames  # type: ignore[attr-defined]  # the name the adapter module calls

    def spy(*args: Any) -> tuple[bytes, ...]:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(fake_adapter, "frames", spy)
    generate_image(engine, "a kestrel in a thread", **SMALL)
    loop_thread = engine._portal.thread if engine._portal else None
    assert threads and threads[0] is not loop_thread and threads[0] is not threading.main_thread()


# -- options ----------------------------------------------------------------------------------


def test_unknown_option_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown options for the fake provider: \\['scirpt'\\]"):
        FakeImages({"scirpt": []})


def test_two_script_sources_are_rejected() -> None:
    with pytest.raises(ValueError, match="one script"):
        FakeImages({"scripts": [], "script_path": "x.yaml"})


def test_usage_input_image_tokens_use_openai_tiling() -> None:
    assert image_tokens((512, 512)) == 65 + 85
    assert image_tokens((1024, 1024)) == 4 * 65 + 85  # shortest side down to 768: 2x2 tiles
    assert image_tokens((4096, 1024)) == 4 * 65 + 85  # fit in 2048 first: 2048x512


def test_fake_refuses_to_draw_absurd_pixel_counts() -> None:
    from allm_proxy import Engine, generate_image
    from allm_proxy.errors import InvalidRequestError

    with Engine() as engine, pytest.raises(InvalidRequestError) as info:
        generate_image(engine, "huge", model="some-new-model", size="8192x8192", n=3)
    assert info.value.param == "size" and "megapixels" in info.value.message
