"""The OpenAI wire codec: what the official SDK sends parses to the right ImageRequest."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allm_proxy.errors import InvalidRequestError, ProxyError, UnsupportedMediaTypeError
from allm_proxy.types import Image, ImageEvent, ImageResponse, Usage
from allm_proxy.wire.openai import parse_request, render_event, render_response
from tests.support.images import png_bytes

# What openai 3.54 sent in the spec's capture run (shared/spec/captures), kept beside the tests.
CAPTURES = json.loads((Path(__file__).parent / "fixtures" / "capture_openai_sdk.out.json").read_text())

OK_BODY = {"created": 1, "data": [{"b64_json": "aGk="}]}


def sdk_request(call: Any) -> httpx.Request:
    """The request the official SDK sends for `call(client)`, captured with a mock transport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, json=OK_BODY)

    client = openai.OpenAI(
        api_key="sk-test-codec",
        base_url="http://127.0.0.1:9/v1",
        # openai 3.x types its client as httpx2's; httpx's Client is what it accepts at run time.
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),  # type: ignore[arg-type]
    )
    call(client)
    return seen[0]


def parse_sdk(operation: Any, call: Any):
    request = sdk_request(call)
    return parse_request(operation, request.headers["content-type"], request.content)


@pytest.mark.parametrize(
    "scenario",
    [
        "generate_no_model",
        "generate_dalle2",
        "generate_dalle3",
        "generate_gpt_image_1",
        "generate_gpt_image_custom_size",
        "generate_explicit_none",
        "generate_stream",
        "generate_extra_body",
    ],
)
def test_captured_generation_bodies_parse_field_for_field(scenario: str) -> None:
    body = CAPTURES["scenarios"][scenario]["requests"][0]["json"]
    parsed = parse_request("generate", "application/json", json.dumps(body).encode())
    for key, value in body.items():
        if key in dict(parsed.extra):
            assert dict(parsed.extra)[key] == value
        else:
            assert getattr(parsed, key) == value, key


def test_explicit_null_means_not_given() -> None:
    parsed = parse_request("generate", "application/json", b'{"model":"gpt-image-1","prompt":"a cat","n":null}')
    assert parsed.n is None and parsed.count == 1


def test_multipart_edit_with_mask_as_the_sdk_sends_it() -> None:
    image, mask = png_bytes((32, 32)), png_bytes((32, 32), (0, 0, 0, 0))
    parsed = parse_sdk(
        "edit",
        lambda c: c.images.edit(
            model="dall-e-2",
            image=("a.png", image, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="add a hat",
            n=1,
            size="512x512",
            response_format="b64_json",
            user="user-1",
        ),
    )
    assert parsed.encoding == "multipart"
    assert (parsed.model, parsed.prompt, parsed.n, parsed.size) == ("dall-e-2", "add a hat", 1, "512x512")
    assert parsed.response_format == "b64_json" and parsed.user == "user-1"
    assert [(f.field, f.filename, f.data) for f in parsed.images] == [("image", "a.png", image)]
    assert parsed.mask is not None and parsed.mask.data == mask and parsed.mask.field == "mask"


def test_list_of_images_arrives_as_image_brackets_in_order() -> None:
    a, b = png_bytes((16, 16), (255, 0, 0, 255)), png_bytes((16, 16), (0, 255, 0, 255))
    parsed = parse_sdk(
        "edit",
        lambda c: c.images.edit(
            model="gpt-image-1",
            image=[("a.png", a), ("b.png", b)],
            prompt="merge",
            input_fidelity="high",
            quality="medium",
            background="opaque",
            output_format="jpeg",
            output_compression=50,
            size="1024x1536",
            n=2,
        ),
    )
    assert [(f.field, f.filename, f.data) for f in parsed.images] == [("image[]", "a.png", a), ("image[]", "b.png", b)]
    assert (parsed.n, parsed.output_compression, parsed.input_fidelity) == (2, 50, "high")


def test_raw_bytes_with_octet_stream_label_are_sniffed_as_png() -> None:
    data = png_bytes()
    parsed = parse_sdk("edit", lambda c: c.images.edit(image=data, prompt="x"))
    upload = parsed.images[0]
    assert upload.content_type == "application/octet-stream"
    assert upload.mime_type == "image/png"


def test_multipart_strings_become_typed_values_and_extras_are_kept_in_order() -> None:
    parsed = parse_sdk(
        "edit",
        lambda c: c.images.edit(
            image=io.BytesIO(png_bytes()),
            prompt="x",
            stream=True,
            partial_images=1,
            extra_body={"flag": True, "num": 3, "nested": {"a": 1}, "arr": ["x", "y"]},
        ),
    )
    assert parsed.stream is True and parsed.partial_images == 1
    assert parsed.extra == [("flag", "true"), ("num", "3"), ("nested[a]", "1"), ("arr[]", "x"), ("arr[]", "y")]


def test_variation_parses_image_and_fields() -> None:
    parsed = parse_sdk(
        "variation",
        lambda c: c.images.create_variation(
            image=("a.png", png_bytes()), n=2, model="dall-e-2", size="256x256", response_format="url"
        ),
    )
    assert (parsed.operation, parsed.n, parsed.size, parsed.prompt) == ("variation", 2, "256x256", None)
    assert len(parsed.images) == 1


def test_stream_false_in_multipart_is_false_not_missing() -> None:
    parsed = parse_sdk("edit", lambda c: c.images.edit(image=png_bytes(), prompt="x", stream=False))
    assert parsed.stream is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"prompt": 5}', "prompt"),
        (b'{"prompt": "x", "n": "many"}', "n"),
        (b'{"prompt": "x", "n": 1.5}', "n"),
        (b'{"prompt": "x", "stream": "yes"}', "stream"),
    ],
)
def test_wrong_types_are_400_naming_the_param(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request("generate", "application/json", body)
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize("body", [b"{bad json", b"[1, 2]", b"\xff\xfe\x00", b'"a string"'])
def test_malformed_json_is_a_400_that_says_what_is_expected(body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request("generate", "application/json", body)
    assert "JSON" in info.value.message


def test_unsupported_content_type_is_415() -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        parse_request("generate", "text/plain", b"prompt=a cat")
    assert info.value.status == 415 and "application/json" in info.value.message


def test_truncated_multipart_is_a_400() -> None:
    request = sdk_request(lambda c: c.images.edit(image=png_bytes(), prompt="x"))
    with pytest.raises(InvalidRequestError) as info:
        parse_request("edit", request.headers["content-type"], request.content[: len(request.content) // 2])
    assert "multipart" in info.value.message


def test_image_sent_as_text_field_is_rejected() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\nnot-a-file\r\n--{boundary}--\r\n'
    ).encode()
    with pytest.raises(InvalidRequestError) as info:
        parse_request("edit", f"multipart/form-data; boundary={boundary}", body)
    assert info.value.param == "image"


def test_render_gpt_response_has_echo_fields_and_usage() -> None:
    response = ImageResponse(
        images=[Image(b"\x89PNG\r\n\x1a\nxx")],
        created=7,
        background="opaque",
        output_format="png",
        quality="high",
        size="1024x1024",
        usage=Usage(input_tokens=3, output_tokens=5, total_tokens=8, input_text_tokens=3),
    )
    body = json.loads(render_response(response, gpt_style=True))
    assert body["created"] == 7 and body["size"] == "1024x1024" and body["usage"]["total_tokens"] == 8
    assert body["usage"]["input_tokens_details"] == {"image_tokens": 0, "text_tokens": 3}
    assert "b64_json" in body["data"][0]


def test_render_dalle_response_has_no_gpt_fields() -> None:
    response = ImageResponse(images=[Image("https://x.invalid/a.png", revised_prompt="r")], created=7, size="1024x1024")
    assert json.loads(render_response(response, gpt_style=False)) == {
        "created": 7,
        "data": [{"url": "https://x.invalid/a.png", "revised_prompt": "r"}],
    }


def test_render_event_framing_matches_spec() -> None:
    event = ImageEvent(
        kind="partial_image", image=Image(b"ab"), partial_image_index=1, fields={"size": "1024x1024", "created_at": 5}
    )
    raw = render_event(event)
    assert raw.startswith(b"event: image_generation.partial_image\ndata: {") and raw.endswith(b"}\n\n")
    data = json.loads(raw.split(b"data: ", 1)[1])
    assert data["type"] == "image_generation.partial_image" and data["partial_image_index"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["prompt", "n", "size", "model", "stream", "quality", "partial_images", "output_compression", "user", "x"]
)


@pytest.mark.slow  # fuzz (hypothesis)
@settings(max_examples=200, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_any_json_object_parses_or_is_a_4xx(body: dict[str, Any]) -> None:
    try:
        parse_request("generate", "application/json", json.dumps(body).encode())
    except ProxyError as err:
        assert 400 <= err.status < 500 and err.envelope()["error"]["message"]


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300),
    st.sampled_from(["application/json", "multipart/form-data; boundary=x", "multipart/form-data", "text/plain", ""]),
)
def test_any_bytes_parse_or_are_a_4xx(body: bytes, content_type: str) -> None:
    try:
        parse_request("edit", content_type, body)
    except ProxyError as err:
        assert 400 <= err.status < 500


def test_spliced_images_render_the_same_json_as_plain_encoding() -> None:
    images = [Image(bytes([i]) * (100 + i), revised_prompt=f'say "{i}"\n') for i in range(3)]
    response = ImageResponse(images=images, created=9, extra={"note": 'allm-b64-lookalike-0"'})
    body = json.loads(render_response(response, gpt_style=False))
    assert body["data"] == [{"b64_json": i.b64_json(), "revised_prompt": i.revised_prompt} for i in images]
    assert body["note"] == 'allm-b64-lookalike-0"'
    event = json.loads(render_event(ImageEvent(kind="completed", image=images[1])).split(b"data: ", 1)[1])
    assert event["b64_json"] == images[1].b64_json()


def test_provider_base64_with_line_breaks_cannot_break_sse_framing() -> None:
    odd = Image(b64_json='iVBO\nRw0K"x')  # an OpenAI-compatible upstream's sloppy text
    raw = render_event(ImageEvent(kind="completed", image=odd))
    assert raw.count(b"\n") == 3  # "event:" line, "data:" line, blank line
    assert json.loads(raw.split(b"data: ", 1)[1])["b64_json"] == 'iVBO\nRw0K"x'
