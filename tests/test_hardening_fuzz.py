"""Schema-driven fuzzing of the proxy's own routes (schemathesis over `GET /openapi.json`).

Valid and invalid requests alike must never get a 5xx, every answer must match the document (errors are
OpenAI envelopes), and the document must agree with the wire codec. The provider under the fuzzer is the
fake with a script of 1x1 images, so examples are cheap and what is fuzzed is the proxy's own parsing,
validation and rendering (rendering big fake images is the fake's business, and slow).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from allm_proxy import Engine
from allm_proxy.openapi import openapi_document
from allm_proxy.server import create_app
from allm_proxy.types import KNOWN_FIELDS
from tests.support.images import image_bytes, png_bytes

pytestmark = pytest.mark.slow  # hardening: schemathesis and hypothesis fuzzing

PIXEL = png_bytes((1, 1), (1, 2, 3, 255))


# Every request of every session (the fuzzer sends X-ALLM-Session too) gets the scripted 1x1 image.
app = create_app(Engine(image_adapter_opts={"scripts": [{"b64_json": base64.b64encode(PIXEL).decode()}] * 5000}))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx_and_every_answer_matches_the_document(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        assert response.json()["error"]["message"]
    elif response.headers["content-type"][0].startswith("text/event-stream"):  # schemathesis: header -> list
        events = [block.split("\n") for block in response.text.strip().split("\n\n")]
        for event_line, data_line in events:
            data = json.loads(data_line.removeprefix("data: "))
            assert event_line == f"event: {data['type']}"


def _encoded(size: tuple[int, int], mode: str, fmt: str) -> bytes:
    return image_bytes(size, (9, 99, 199, 128), mode, fmt)


IMAGES = [
    _encoded((16, 16), "RGBA", "PNG"),
    _encoded((16, 16), "RGB", "PNG"),
    _encoded((16, 16), "P", "PNG"),
    _encoded((16, 8), "RGB", "JPEG"),
    _encoded((16, 16), "RGBA", "WEBP"),
    _encoded((16, 16), "LA", "PNG"),
    b"junk",
    _encoded((16, 16), "RGBA", "PNG")[:60],
]
FIELD_VALUES = {  # mostly values some model takes, and a few no model does
    "model": st.sampled_from(
        ["gpt-image-1.5", "gpt-image-2", "dall-e-2", "dall-e-3", "gemini-3-pro-image", "some-future-model"]
    ),
    "n": st.sampled_from(["1", "1", "2", "0", "11", "two", " 3 "]),
    "size": st.sampled_from(["auto", "16x16", "1024x1024", "256x256", "0x0", "99999x1", "x", "16x8"]),
    "quality": st.sampled_from(["auto", "low", "standard", "hd", "max", ""]),
    "response_format": st.sampled_from(["url", "b64_json", "png"]),
    "background": st.sampled_from(["transparent", "opaque", "auto", "none"]),
    "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
    "output_compression": st.integers(-1, 101).map(str),
    "input_fidelity": st.sampled_from(["high", "low", "max"]),
    "stream": st.sampled_from(["false", "false", "true", "maybe"]),
    "partial_images": st.integers(-1, 4).map(str),
    "user": st.text(max_size=10),
    "extra_field": st.text(max_size=10),
}
FileParts = list[tuple[str, tuple[str, bytes, str]]]


@st.composite
def multipart_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], FileParts]:
    path = draw(st.sampled_from(["/v1/images/edits", "/v1/images/variations"]))
    names = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=3, unique=True))
    fields = {name: draw(FIELD_VALUES[name]) for name in names}
    if draw(st.integers(0, 9)):
        fields["prompt"] = draw(st.text(min_size=1, max_size=20))
    name = draw(st.sampled_from(["image", "image[]"]))
    files = [
        (name, (f"{i}.png", image, "application/octet-stream"))
        for i, image in enumerate(draw(st.lists(st.sampled_from(IMAGES), min_size=0, max_size=3)))
    ]
    if draw(st.booleans()):
        files.append(("mask", ("mask.png", draw(st.sampled_from(IMAGES)), "image/png")))
    files.append(("note", ("note.txt", b"a file part the codec keeps for pass-through", "text/plain")))
    return path, fields, files


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(multipart_requests())
def test_uploads_of_real_and_broken_images_with_any_fields_never_get_a_5xx(
    request: tuple[str, dict[str, str], FileParts],
) -> None:
    path, fields, files = request
    response = CLIENT.post(path, data=fields, files=files)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    OUTCOMES[response.status_code == 200] += 1


CLIENT = TestClient(app)
OUTCOMES: Counter[bool] = Counter()


def test_the_upload_fuzzing_reached_successful_edits_too() -> None:
    # Runs after the property above (file order): the strategy is not all noise.
    assert OUTCOMES[True] > 0 and OUTCOMES[False] > 0


def test_the_document_is_served_and_lists_every_route() -> None:
    transport = httpx.ASGITransport(app=app)

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return await client.get("/openapi.json")

    served = asyncio.run(fetch()).json()
    assert served == openapi_document()
    assert set(served["paths"]) == {
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/images/files/{file_id}",
        "/v1/models",
        "/v1/models/{model}",
        "/healthz",
    }


def test_the_document_types_exactly_the_fields_the_codec_types() -> None:
    schemas = openapi_document()["components"]["schemas"]
    generation = set(schemas["CreateImageRequest"]["properties"])
    edit = set(schemas["CreateImageEditRequest"]["properties"]) - {"image", "mask"}
    variation = set(schemas["CreateImageVariationRequest"]["properties"]) - {"image"}
    assert generation | edit == set(KNOWN_FIELDS)
    # OpenAI's own shapes: what each request requires, and the error envelope's four keys.
    assert schemas["CreateImageRequest"]["required"] == ["prompt"]
    assert set(schemas["CreateImageEditRequest"]["required"]) == {"image", "prompt"}
    assert schemas["CreateImageVariationRequest"]["required"] == ["image"]
    assert variation == {"model", "n", "response_format", "size", "user"}
    assert schemas["Error"]["required"] == ["message", "type", "param", "code"]
    assert schemas["ImagesResponse"]["required"] == ["created"]


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits", "/v1/images/variations"])
def test_every_image_route_documents_its_error_statuses(path: str) -> None:
    responses = openapi_document()["paths"][path]["post"]["responses"]
    for status in ("400", "401", "408", "413", "415", "502", "503", "default"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
