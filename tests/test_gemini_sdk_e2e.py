"""The official openai SDK against the proxy on the gemini provider, in front of the fake Gemini API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import ImageGenCompletedEvent
from PIL import Image as PILImage

from allm_proxy import Engine
from tests.support.asgi_server import running_proxy
from tests.support.images import half_transparent_mask, noise_png
from tests.upstreams import gemini_upstream as g
from tests.upstreams.gemini_upstream import FakeGemini

KEY = "test-gemini-key"
ALIASES = {
    "dall-e-2": {"provider": "gemini", "model": "gemini-3.1-flash-image"},
    "dall-e-3": {"provider": "gemini", "model": "gemini-3-pro-image"},
    "gpt-image-1.5": {"provider": "gemini", "model": "gemini-3-pro-image"},
    "gpt-image-2": {"provider": "gemini", "model": "gemini-nano-banana-2.1"},
}


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    """The fake Gemini API, and two proxies in front of it: variations rejected (default) and emulated."""
    upstream = FakeGemini()
    with upstream.serving() as upstream_url:

        def engine(**opts: Any) -> Engine:
            return Engine(
                image_adapter="gemini",
                image_adapter_opts={"base_url": upstream_url, **opts},
                aliases=ALIASES,
                env={"GEMINI_API_KEY": KEY},
            )

        with running_proxy(engine()) as plain, running_proxy(engine(variations="emulate")) as emulating:
            yield {"upstream": upstream, "plain": plain, "emulating": emulating}


@pytest.fixture
def upstream(stack: dict[str, Any]) -> Iterator[FakeGemini]:
    fake: FakeGemini = stack["upstream"]
    fake.reset()
    yield fake
    assert fake.problems == [], "the proxy sent a request Google would refuse"


@pytest.fixture
def client(stack: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["plain"] + "/v1", api_key="sk-test-x", max_retries=0)


@pytest.fixture
def emulating_client(stack: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["emulating"] + "/v1", api_key="sk-test-x", max_retries=0)


def decode(b64: str | None) -> PILImage.Image:
    assert b64 is not None
    img = PILImage.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


# -- sizes: the spec 11 table, per OpenAI family, through the SDK --------------------------------------------

# (client model -> gemini model, size, quality, aspectRatio, imageSize)
SDK_TABLE = [
    ("dall-e-2", "gemini-3.1-flash-image", "256x256", None, "1:1", "512"),
    ("dall-e-2", "gemini-3.1-flash-image", "512x512", None, "1:1", "512"),
    ("dall-e-2", "gemini-3.1-flash-image", "1024x1024", None, "1:1", "1K"),
    ("dall-e-3", "gemini-3-pro-image", "1024x1024", "standard", "1:1", "1K"),
    ("dall-e-3", "gemini-3-pro-image", "1792x1024", "standard", "16:9", "1K"),
    ("dall-e-3", "gemini-3-pro-image", "1792x1024", "hd", "16:9", "2K"),
    ("dall-e-3", "gemini-3-pro-image", "1024x1792", "hd", "9:16", "2K"),
    ("gpt-image-1.5", "gemini-3-pro-image", "1024x1024", "auto", "1:1", "1K"),
    ("gpt-image-1.5", "gemini-3-pro-image", "1536x1024", "medium", "3:2", "1K"),
    ("gpt-image-1.5", "gemini-3-pro-image", "1536x1024", "high", "3:2", "2K"),
    ("gpt-image-1.5", "gemini-3-pro-image", "1024x1536", "high", "2:3", "2K"),
    ("gpt-image-2", "gemini-nano-banana-2.1", "2048x1152", None, "16:9", "2K"),
    ("gpt-image-2", "gemini-nano-banana-2.1", "1024x3072", None, "1:4", "2K"),
    ("gemini-3-pro-image", "gemini-3-pro-image", "3840x2160", None, "16:9", "4K"),
    ("gemini-2.5-flash-image", "gemini-2.5-flash-image", "1536x1024", "high", "3:2", None),
]


@pytest.mark.parametrize(
    ("model", "target", "size", "quality", "ratio", "tier"), SDK_TABLE, ids=[f"{r[0]}-{r[2]}-{r[3]}" for r in SDK_TABLE]
)
def test_every_openai_size_maps_to_the_tabulated_ratio_and_tier(
    client: openai.OpenAI,
    upstream: FakeGemini,
    model: str,
    target: str,
    size: str,
    quality: str | None,
    ratio: str,
    tier: str | None,
) -> None:
    extra: dict[str, Any] = {"quality": quality} if quality else {}
    if model.startswith("dall-e"):
        extra["response_format"] = "b64_json"
    result = client.images.generate(model=model, prompt="a kestrel", size=size, **extra)
    [sent] = upstream.requests
    assert sent.path == f"/v1beta/models/{target}:generateContent"
    assert sent.image_config == ({"aspectRatio": ratio, "imageSize": tier} if tier else {"aspectRatio": ratio})
    real = upstream.output_size(target, ratio, tier or "1K")
    assert result.data is not None and decode(result.data[0].b64_json).size == real
    if not model.startswith("dall-e"):  # the GPT-image echo fields report the real pixels
        assert result.size == "{}x{}".format(*real)


def test_dall_e_3_code_runs_unchanged_on_gemini_with_a_hosted_url(client: openai.OpenAI, upstream: FakeGemini) -> None:
    result = client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1792x1024", quality="hd")
    assert result.data is not None and result.data[0].url is not None
    fetched = httpx.get(result.data[0].url)
    assert fetched.status_code == 200
    img = PILImage.open(io.BytesIO(fetched.content))
    assert img.size == upstream.output_size("gemini-3-pro-image", "16:9", "2K")
    assert upstream.requests[0].image_config == {"aspectRatio": "16:9", "imageSize": "2K"}


def test_gpt_image_answer_has_echo_fields_and_usage(client: openai.OpenAI, upstream: FakeGemini) -> None:
    upstream.script(g.image("jpeg", label="image/png", thoughts=1))
    result = client.images.generate(model="gemini-3-pro-image", prompt="a fox", size="1024x1024")
    assert (result.background, result.output_format, result.quality) == ("opaque", "jpeg", "high")
    assert result.usage is not None and result.usage.output_tokens == 1120 + 180
    assert result.usage.input_tokens_details.text_tokens == result.usage.input_tokens
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens


def test_n_3_makes_three_upstream_calls(client: openai.OpenAI, upstream: FakeGemini) -> None:
    result = client.images.generate(model="gpt-image-1.5", prompt="three foxes", n=3, size="1024x1024")
    assert len(upstream.requests) == 3
    assert result.data is not None and len(result.data) == 3
    assert result.usage is not None and result.usage.output_tokens_details is not None
    assert result.usage.output_tokens_details.image_tokens == 3 * 1120


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_output_format_is_transcoded(client: openai.OpenAI, upstream: FakeGemini, fmt: str, magic: bytes) -> None:
    upstream.script(g.image("jpeg", label="image/png"))
    result = client.images.generate(
        model="gpt-image-1.5",
        prompt="x",
        output_format=fmt,  # type: ignore[call-overload]
        output_compression=70,
    )
    assert result.data is not None and base64.b64decode(result.data[0].b64_json or "").startswith(magic)
    assert result.output_format == fmt


def test_edit_with_mask_keeps_every_unmasked_pixel(client: openai.OpenAI, upstream: FakeGemini) -> None:
    size = (40, 24)
    original = noise_png(size)
    upstream.script(g.image("jpeg"))
    result = client.images.edit(
        model="gpt-image-1.5",
        prompt="paint the right half",
        size="1024x1024",
        image=("photo.png", original, "image/png"),
        mask=("mask.png", half_transparent_mask(size), "image/png"),
    )
    assert result.data is not None
    out = decode(result.data[0].b64_json).convert("RGB")
    src = PILImage.open(io.BytesIO(original)).convert("RGB")
    assert out.size == size and result.size == "40x24"
    for y in range(size[1]):
        for x in range(size[0] // 2):
            assert out.getpixel((x, y)) == src.getpixel((x, y)), (x, y)
    changed = sum(
        out.getpixel((x, y)) != src.getpixel((x, y)) for y in range(size[1]) for x in range(size[0] // 2, size[0])
    )
    assert changed > 0.9 * (size[0] // 2) * size[1]
    assert upstream.requests[0].image_config == {"aspectRatio": "1:1", "imageSize": "1K"}


def test_edit_with_several_images_sends_them_all(client: openai.OpenAI, upstream: FakeGemini) -> None:
    images = [("a.png", noise_png((16, 16)), "image/png"), ("b.png", noise_png((20, 10)), "image/png")]
    client.images.edit(model="gemini-3-pro-image", prompt="combine", image=images)
    assert upstream.requests[0].images == [images[0][1], images[1][1]]
    assert upstream.requests[0].image_config == {}


# -- errors: spec 11 table rows ---------------------------------------------------------------------------------

ERROR_ROWS = [
    (
        "api_key_invalid",
        g.api_key_invalid(),
        openai.AuthenticationError,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "API key not valid",
    ),
    (
        "no_key",
        g.no_key(),
        openai.AuthenticationError,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "unregistered callers",
    ),
    (
        "leaked_key",
        g.leaked_key(),
        openai.AuthenticationError,
        401,
        "invalid_request_error",
        "invalid_api_key",
        "leaked",
    ),
    (
        "permission",
        g.permission_denied(),
        openai.PermissionDeniedError,
        403,
        "permission_error",
        "permission_denied",
        "does not have permission",
    ),
    (
        "location",
        g.location_unsupported(),
        openai.PermissionDeniedError,
        403,
        "invalid_request_error",
        "unsupported_country_region_territory",
        "User location",
    ),
    (
        "billing",
        g.billing_required(),
        openai.BadRequestError,
        400,
        "invalid_request_error",
        "failed_precondition",
        "enable billing",
    ),
    (
        "invalid_argument",
        g.invalid_argument(),
        openai.BadRequestError,
        400,
        "invalid_request_error",
        "invalid_value",
        "invalid argument",
    ),
    (
        "not_found",
        g.model_not_found(),
        openai.NotFoundError,
        404,
        "invalid_request_error",
        "model_not_found",
        "is not found",
    ),
    (
        "quota_day",
        g.quota_exceeded("day"),
        openai.RateLimitError,
        429,
        "insufficient_quota",
        "insufficient_quota",
        "exceeded your current quota",
    ),
    (
        "quota_minute",
        g.quota_exceeded("minute", "7.2s"),
        openai.RateLimitError,
        429,
        "requests",
        "rate_limit_exceeded",
        "exceeded your current quota",
    ),
    ("internal", g.internal(), openai.InternalServerError, 500, "server_error", None, "internal error"),
    (
        "unavailable",
        g.unavailable(),
        openai.InternalServerError,
        503,
        "server_error",
        "service_unavailable",
        "overloaded",
    ),
    ("deadline", g.deadline_exceeded(), openai.InternalServerError, 504, "server_error", "timeout", "Deadline expired"),
    ("not_json", g.not_json(), openai.InternalServerError, 502, "server_error", "upstream_error", "Bad Gateway"),
]


@pytest.mark.parametrize(
    ("name", "reply", "exc", "status", "etype", "code", "text"), ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS]
)
def test_google_errors_arrive_as_the_openai_exception_the_table_names(
    client: openai.OpenAI,
    upstream: FakeGemini,
    name: str,
    reply: g.Reply,
    exc: type[openai.APIStatusError],
    status: int,
    etype: str,
    code: str | None,
    text: str,
) -> None:
    upstream.script(reply)
    with pytest.raises(exc) as caught:
        client.images.generate(model="gpt-image-1.5", prompt="a kestrel")
    err = caught.value
    assert err.status_code == status and err.code == code and err.type == etype
    assert text.lower() in err.message.lower()  # Google's own words reach the client
    assert isinstance(err.body, dict) and set(err.body) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("per", "delay", "retry_after"), [("minute", "7.2s", "8"), ("day", "23s", "23")])
def test_quota_errors_carry_retry_after_from_retry_info(
    client: openai.OpenAI, upstream: FakeGemini, per: str, delay: str, retry_after: str
) -> None:
    upstream.script(g.quota_exceeded(per, delay))
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-1.5", prompt="a kestrel")
    assert caught.value.response.headers["retry-after"] == retry_after


def test_a_real_bad_key_and_a_missing_key_reach_the_client_as_401(stack: dict[str, Any], upstream: FakeGemini) -> None:
    client = openai.OpenAI(
        base_url=stack["plain"] + "/v1",
        api_key="sk-test-x",
        max_retries=0,
        default_headers={"X-ALLM-Api-Key": "not-the-right-key"},
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model="gpt-image-1.5", prompt="a kestrel")
    assert caught.value.code == "invalid_api_key"
    assert upstream.requests[0].headers["x-goog-api-key"] == "not-the-right-key"
    upstream.requests[0].problems.clear()  # refusing the key was the point


@pytest.mark.parametrize(
    "reply",
    [
        g.prompt_blocked("PROHIBITED_CONTENT"),
        g.finish_blocked("IMAGE_SAFETY"),
        g.finish_blocked("SAFETY", text="I can't create that."),
    ],
    ids=["prompt_blocked", "image_safety", "safety_with_text"],
)
def test_safety_blocks_are_content_policy_violations(
    client: openai.OpenAI, upstream: FakeGemini, reply: g.Reply
) -> None:
    upstream.script(reply)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="dall-e-3", prompt="something forbidden")
    assert caught.value.code == "content_policy_violation" and caught.value.status_code == 400
    assert reply.reason in caught.value.message


def test_no_image_for_another_reason_is_a_502_naming_the_finish_reason(
    client: openai.OpenAI, upstream: FakeGemini
) -> None:
    upstream.script(g.no_image("NO_IMAGE", text="Here is a poem instead."))
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="gpt-image-1.5", prompt="a kestrel")
    assert caught.value.status_code == 502 and caught.value.code == "no_image_generated"
    assert "NO_IMAGE" in caught.value.message and "Here is a poem instead." in caught.value.message


# -- streaming and variations ---------------------------------------------------------------------------------------


def test_streaming_gives_a_parseable_completed_event(client: openai.OpenAI, upstream: FakeGemini) -> None:
    stream = client.images.generate(
        model="gpt-image-1.5", prompt="a kestrel", size="1536x1024", stream=True, partial_images=2
    )
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.completed"]
    [done] = events
    assert decode(done.b64_json).size == upstream.output_size("gemini-3-pro-image", "3:2", "1K")
    assert done.size == "{}x{}".format(*upstream.output_size("gemini-3-pro-image", "3:2", "1K"))
    assert isinstance(done, ImageGenCompletedEvent)
    assert done.output_format == "png" and done.usage.output_tokens == 1120


def test_streaming_an_edit_gives_image_edit_completed(client: openai.OpenAI, upstream: FakeGemini) -> None:
    stream = client.images.edit(
        model="gpt-image-1.5", prompt="dusk", image=("a.png", noise_png((16, 16)), "image/png"), stream=True
    )
    assert [e.type for e in stream] == ["image_edit.completed"]


def test_variations_are_a_clear_400_by_default(client: openai.OpenAI, upstream: FakeGemini) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.create_variation(model="dall-e-2", image=("a.png", noise_png((16, 16)), "image/png"))
    assert caught.value.code == "unsupported_operation"
    assert "Gemini has no image variations" in caught.value.message and "emulate" in caught.value.message
    assert upstream.requests == []


def test_variations_are_emulated_with_the_option(emulating_client: openai.OpenAI, upstream: FakeGemini) -> None:
    result = emulating_client.images.create_variation(
        model="dall-e-2",
        n=2,
        size="256x256",
        response_format="b64_json",
        image=("a.png", noise_png((16, 16)), "image/png"),
    )
    assert result.data is not None and len(result.data) == 2
    assert len(upstream.requests) == 2 and "variation" in upstream.requests[0].text.lower()
    assert upstream.requests[0].image_config == {"aspectRatio": "1:1", "imageSize": "512"}
    assert decode(result.data[0].b64_json).size == upstream.output_size("gemini-3.1-flash-image", "1:1", "512")
