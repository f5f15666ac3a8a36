"""The official openai SDK against a real server on the fake provider: sync, async, streaming."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image as PILImage

from tests.support.images import half_transparent_mask, png_bytes


@pytest.fixture
def client(fake_proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-sdk", max_retries=0)


@pytest.fixture
def aclient(fake_proxy_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{fake_proxy_url}/v1", api_key="sk-test-sdk", max_retries=0)


def decode(b64: str | None) -> PILImage.Image:
    assert b64 is not None
    return PILImage.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_three_images_with_usage_and_echo_fields(client: openai.OpenAI) -> None:
    result = client.images.generate(model="gpt-image-1.5", prompt="a red fox", n=3, size="1536x1024", quality="low")
    assert result.data is not None and len(result.data) == 3
    assert len({d.b64_json for d in result.data}) == 3
    assert all(decode(d.b64_json).size == (1536, 1024) for d in result.data)
    assert (result.size, result.quality, result.output_format, result.background) == (
        "1536x1024",
        "low",
        "png",
        "opaque",
    )
    assert result.usage is not None and result.usage.total_tokens == (
        result.usage.input_tokens + result.usage.output_tokens
    )


@pytest.mark.parametrize("size", ["256x256", "512x512", "1024x1024"])
def test_dall_e_2_sizes_as_urls_that_fetch_and_decode(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a kestrel", size=size)
    assert result.data is not None and result.data[0].url is not None and result.data[0].b64_json is None
    fetched = httpx.get(result.data[0].url)
    w, h = (int(v) for v in size.split("x"))
    assert PILImage.open(io.BytesIO(fetched.content)).size == (w, h)
    assert result.usage is None  # DALL-E answers carry no usage


def test_dall_e_3_has_revised_prompt(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="dall-e-3",
        prompt="a lighthouse",
        size="1792x1024",
        response_format="b64_json",
        quality="hd",
        style="natural",
    )
    assert result.data is not None and result.data[0].revised_prompt
    assert decode(result.data[0].b64_json).size == (1792, 1024)


def test_output_formats_are_honoured(client: openai.OpenAI) -> None:
    for fmt, pil_name in (("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")):
        result = client.images.generate(prompt="format", output_format=fmt, size="1024x1024")  # type: ignore[call-overload]
        assert result.data is not None and decode(result.data[0].b64_json).format == pil_name


def test_edit_with_mask_keeps_unmasked_pixels(client: openai.OpenAI) -> None:
    original = PILImage.linear_gradient("L").resize((64, 64)).convert("RGBA")
    buf = io.BytesIO()
    original.save(buf, format="PNG")
    result = client.images.edit(
        model="gpt-image-1.5",
        image=("in.png", buf.getvalue(), "image/png"),
        mask=("mask.png", half_transparent_mask((64, 64)), "image/png"),
        prompt="paint a sun on the right",
        size="auto",
    )
    assert result.data is not None
    edited = decode(result.data[0].b64_json).convert("RGBA")
    assert edited.size == (64, 64)
    left = (0, 0, 32, 64)
    assert edited.crop(left).tobytes() == original.crop(left).tobytes()
    assert edited.crop((32, 0, 64, 64)).tobytes() != original.crop((32, 0, 64, 64)).tobytes()


def test_edit_with_a_list_of_images(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=[png_bytes((64, 64)), png_bytes((64, 64), (200, 10, 10, 255))],
        model="gpt-image-1.5",
        prompt="combine",
        size="1024x1024",
    )
    assert result.data is not None and decode(result.data[0].b64_json).size == (1024, 1024)


def test_variations(client: openai.OpenAI) -> None:
    result = client.images.create_variation(
        image=("a.png", png_bytes((128, 128))), n=2, model="dall-e-2", size="256x256", response_format="b64_json"
    )
    assert result.data is not None and len(result.data) == 2
    assert decode(result.data[0].b64_json).size == (256, 256)


@pytest.mark.parametrize(
    ("kwargs", "exc", "param", "code"),
    [
        ({"prompt": "x", "n": 11}, openai.BadRequestError, "n", "integer_above_max_value"),
        ({"prompt": "x", "size": "7x7"}, openai.BadRequestError, "size", "invalid_size"),
        ({"prompt": "x", "model": "dall-e-3", "n": 2}, openai.BadRequestError, "n", "integer_above_max_value"),
        (
            {"prompt": "x", "model": "dall-e-2", "output_format": "png"},
            openai.BadRequestError,
            "output_format",
            "unknown_parameter",
        ),
        ({"prompt": "x" * 1001, "model": "dall-e-2"}, openai.BadRequestError, "prompt", "string_above_max_length"),
    ],
)
def test_bad_input_raises_the_sdk_exception_with_code_and_param(
    client: openai.OpenAI, kwargs: dict, exc: type[openai.APIStatusError], param: str, code: str
) -> None:
    with pytest.raises(exc) as info:
        client.images.generate(**kwargs)
    assert info.value.param == param and info.value.code == code
    assert info.value.request_id


def test_edit_with_a_mask_of_another_size_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=png_bytes((64, 64)), mask=("m.png", png_bytes((32, 32))), prompt="x")
    assert info.value.param == "mask" and "same dimensions" in info.value.message


def test_stream_generation_sends_partials_then_completed(client: openai.OpenAI) -> None:
    events = list(client.images.generate(prompt="streamed fox", stream=True, partial_images=2, size="1024x1024"))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    assert events[-1].usage.total_tokens > 0  # type: ignore[union-attr]
    assert decode(events[-1].b64_json).size == (1024, 1024)


def test_stream_edit_uses_image_edit_events(client: openai.OpenAI) -> None:
    events = list(client.images.edit(image=png_bytes((64, 64)), prompt="x", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]


async def test_async_client_generate_edit_and_stream(aclient: openai.AsyncOpenAI) -> None:
    result = await aclient.images.generate(model="gpt-image-1.5", prompt="async fox", size="1024x1024")
    assert result.data is not None and result.data[0].b64_json
    edited = await aclient.images.edit(image=png_bytes((64, 64)), prompt="async edit")
    assert edited.data is not None
    stream = await aclient.images.generate(prompt="async stream", stream=True, partial_images=1)
    types = [event.type async for event in stream]
    assert types == ["image_generation.partial_image", "image_generation.completed"]
    await aclient.close()


def test_same_request_gives_same_bytes(client: openai.OpenAI) -> None:
    first = client.images.generate(prompt="deterministic", size="1024x1024")
    second = client.images.generate(prompt="deterministic", size="1024x1024")
    assert first.data and second.data and first.data[0].b64_json == second.data[0].b64_json
