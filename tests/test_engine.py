"""The library API: generate_image / edit_image / image_variations and their async twins."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image as PILImage

from allm_proxy import (
    Engine,
    Image,
    aedit_image,
    agenerate_image,
    aimage_variations,
    edit_image,
    generate_image,
    image_variations,
)
from allm_proxy.errors import AuthenticationError, InvalidRequestError, UnsupportedOperationError
from tests.support.images import half_transparent_mask, png_bytes


@pytest.fixture
def engine():
    with Engine() as e:
        yield e


def dims(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as img:
        return img.size


def test_generate_image_sync_with_tuple_size(engine: Engine) -> None:
    resp = generate_image(engine, "a watercolor kestrel", model="gpt-image-1.5", size=(1536, 1024), n=2)
    assert len(resp.images) == 2
    assert all(dims(i.to_binary()) == (1536, 1024) for i in resp.images)
    assert resp.usage is not None and resp.usage.output_tokens > 0


def test_url_response_in_process_is_a_data_url_that_decodes(engine: Engine) -> None:
    resp = generate_image(engine, "a kestrel", model="dall-e-2", size="256x256", response_format="url")
    image = resp.images[0]
    assert isinstance(image.source, str) and image.source.startswith("data:image/png;base64,")
    assert dims(image.to_binary()) == (256, 256)


def test_edit_image_accepts_path_bytes_and_image(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes((64, 64)))
    mask = half_transparent_mask((64, 64))
    from_path = edit_image(engine, path, "add a moon", mask=mask, model="dall-e-2", response_format="b64_json")
    from_bytes = edit_image(
        engine, path.read_bytes(), "add a moon", mask=mask, model="dall-e-2", response_format="b64_json"
    )
    from_image = edit_image(
        engine, Image(path.read_bytes()), "add a moon", mask=Image(mask), model="dall-e-2", response_format="b64_json"
    )
    assert from_path.images[0].data == from_bytes.images[0].data == from_image.images[0].data


def test_variations_of_an_image(engine: Engine) -> None:
    resp = image_variations(engine, png_bytes((64, 64)), model="dall-e-2", n=2, response_format="b64_json")
    assert len(resp.images) == 2 and resp.images[0].data != resp.images[1].data


async def test_async_twins(engine: Engine) -> None:
    gen = await agenerate_image(engine, "async kestrel", size="1024x1024")
    edit = await aedit_image(
        engine,
        [png_bytes((64, 64)), png_bytes((64, 64), (255, 0, 0, 255))],
        "merge",
        model="gpt-image-1.5",
        size="1024x1024",
    )
    var = await aimage_variations(engine, png_bytes((64, 64)), model="dall-e-2", response_format="b64_json")
    assert gen.images and edit.images and var.images
    await engine.aclose()


def test_invalid_options_raise_the_envelope_error(engine: Engine) -> None:
    with pytest.raises(InvalidRequestError) as info:
        generate_image(engine, "x", size="7x7")
    assert info.value.param == "size" and "1024x1024" in info.value.message
    with pytest.raises(UnsupportedOperationError):
        edit_image(engine, png_bytes(), "x", model="dall-e-3")
    with pytest.raises(TypeError, match="unknown option"):
        generate_image(engine, "x", colour="red")


def test_missing_key_says_how_to_set_one() -> None:
    with Engine("openai", env={}) as engine, pytest.raises(AuthenticationError) as info:
        generate_image(engine, "x")
    message = info.value.message
    assert "OPENAI_API_KEY" in message and "X-ALLM-Api-Key" in message and info.value.status == 401


def test_unknown_adapter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="known adapters: fake, gemini, openai"):
        Engine("nope")


def test_sync_api_inside_a_running_loop_points_to_the_async_twin(engine: Engine) -> None:
    import asyncio

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="agenerate_image"):
            generate_image(engine, "x")

    asyncio.run(inside())


async def test_prepare_rejects_bad_provider_options_before_any_request() -> None:
    engine = Engine("openai", image_adapter_opts={"base_urll": "http://127.0.0.1:1/v1"}, env={})
    with pytest.raises(ValueError, match="base_urll"):
        await engine.prepare()
