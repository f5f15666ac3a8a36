"""Bad input, row by row (docs/limits.md): each gets an OpenAI error envelope with the right status, the param
named and a message saying what to change, never a 5xx or a traceback, and the server keeps serving."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
import openai
import pytest

from allm_proxy import Engine
from allm_proxy.server.failures import printable
from tests.support.asgi_server import guarded_proxy, port_of
from tests.support.hardening import (
    assert_envelope,
    captured_logs,
    envelope_of,
    read_response,
)
from tests.support.images import noise_jpeg, png_bomb, png_bytes

pytestmark = pytest.mark.slow  # hardening: hostile inputs through the guarded server

GEN, EDIT, VAR = "/v1/images/generations", "/v1/images/edits", "/v1/images/variations"
JSON = "application/json"
BOUNDARY = "hardening-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, bytes | str] | tuple[str, bytes, str]) -> bytes:
    """A multipart body: (name, text) fields and (name, bytes, filename) files, in order."""
    out = b""
    for part in parts:
        name, value = part[0], part[1]
        data = value.encode() if isinstance(value, str) else value
        if len(part) == 3:
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{part[2]}"\r\n'
                "Content-Type: application/octet-stream\r\n"
            )
        else:
            head = f'Content-Disposition: form-data; name="{name}"\r\n'
        out += f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def gen(body: dict | bytes | str) -> bytes:
    return body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: bytes
    content_type: str | None
    status: int
    param: str | None
    hint: str  # a word of the message that tells the client what to change
    code: str | None = None
    method: str = "POST"


IMG = png_bytes((64, 64))
IMG_RGB = png_bytes((64, 64), mode="RGB")  # no alpha channel
TRUNCATED_PNG = IMG[: len(IMG) // 2]
TRUNCATED_JPEG = noise_jpeg((256, 256))[:2000]

CASES = [
    # -- the body is not a JSON object ------------------------------------------------------
    Case("malformed-json", GEN, b'{"prompt": "a cat",', JSON, 400, None, "JSON"),
    Case("non-utf8-json", GEN, b'{"prompt": "caf\xe9"}', JSON, 400, None, "UTF-8"),
    Case("json-array", GEN, b'["a cat"]', JSON, 400, None, "JSON object"),
    Case("json-string", GEN, b'"a cat"', JSON, 400, None, "JSON object"),
    Case("empty-body", GEN, b"", JSON, 400, None, "JSON"),
    Case("deeply-nested-json", GEN, b"[" * 100_000, JSON, 400, None, "JSON"),
    # -- fields -------------------------------------------------------------------------------
    Case(
        "missing-prompt",
        GEN,
        gen({"model": "gpt-image-1.5"}),
        JSON,
        400,
        "prompt",
        "prompt",
        "missing_required_parameter",
    ),
    Case("empty-prompt", GEN, gen({"prompt": ""}), JSON, 400, "prompt", "Describe"),
    Case("blank-prompt", GEN, gen({"prompt": "   "}), JSON, 400, "prompt", "Describe"),
    Case("prompt-not-a-string", GEN, gen({"prompt": 5}), JSON, 400, "prompt", "string", "invalid_type"),
    Case("prompt-lone-surrogate", GEN, gen('{"prompt": "a \\ud800 cat"}'), JSON, 400, "prompt", "UTF-8"),
    Case(
        "prompt-too-long-dall-e-2",
        GEN,
        gen({"model": "dall-e-2", "prompt": "x" * 1001}),
        JSON,
        400,
        "prompt",
        "1000",
        "string_above_max_length",
    ),
    Case("n-a-word", GEN, gen({"prompt": "x", "n": "many"}), JSON, 400, "n", "integer", "invalid_type"),
    Case("n-a-fraction", GEN, gen({"prompt": "x", "n": 1.5}), JSON, 400, "n", "integer", "invalid_type"),
    Case("n-infinite", GEN, gen('{"prompt": "x", "n": 1e999}'), JSON, 400, "n", "integer"),
    Case("n-nan", GEN, gen('{"prompt": "x", "n": NaN}'), JSON, 400, "n", "integer"),
    Case("n-zero", GEN, gen({"prompt": "x", "n": 0}), JSON, 400, "n", "minimum", "integer_below_min_value"),
    Case("n-eleven", GEN, gen({"prompt": "x", "n": 11}), JSON, 400, "n", "maximum", "integer_above_max_value"),
    Case("n-two-dall-e-3", GEN, gen({"model": "dall-e-3", "prompt": "x", "n": 2}), JSON, 400, "n", "one image"),
    Case(
        "size-no-model-allows",
        GEN,
        gen({"model": "dall-e-2", "prompt": "x", "size": "7x7"}),
        JSON,
        400,
        "size",
        "256x256",
        "invalid_size",
    ),
    Case("size-not-wxh", GEN, gen({"prompt": "x", "size": "huge"}), JSON, 400, "size", "WIDTHxHEIGHT"),
    Case(
        "size-too-big-gpt-image-2",
        GEN,
        gen({"model": "gpt-image-2", "prompt": "x", "size": "8192x8192"}),
        JSON,
        400,
        "size",
        "3840x2160",
    ),
    Case(
        "size-gigapixels-unknown-model",
        GEN,
        gen({"model": "some-future-model", "prompt": "x", "size": "60000x60000"}),
        JSON,
        400,
        "size",
        "megapixels",
    ),
    Case(
        "size-zero-unknown-model",
        GEN,
        gen({"model": "some-future-model", "prompt": "x", "size": "0x512"}),
        JSON,
        400,
        "size",
        "1 to 16384",
    ),
    Case(
        "style-on-gpt-image",
        GEN,
        gen({"model": "gpt-image-1.5", "prompt": "x", "style": "vivid"}),
        JSON,
        400,
        "style",
        "does not take",
        "unknown_parameter",
    ),
    Case(
        "stream-on-dall-e-3",
        GEN,
        gen({"model": "dall-e-3", "prompt": "x", "stream": True}),
        JSON,
        400,
        "stream",
        "does not take",
        "unknown_parameter",
    ),
    Case(
        "quality-unknown",
        GEN,
        gen({"model": "gpt-image-1.5", "prompt": "x", "quality": "ultra"}),
        JSON,
        400,
        "quality",
        "'high'",
    ),
    Case(
        "response-format-unknown",
        GEN,
        gen({"prompt": "x", "response_format": "png"}),
        JSON,
        400,
        "response_format",
        "b64_json",
    ),
    Case(
        "partial-images-out-of-range",
        GEN,
        gen({"prompt": "x", "partial_images": 5}),
        JSON,
        400,
        "partial_images",
        "between 0 and 3",
    ),
    Case(
        "transparent-jpeg",
        GEN,
        gen({"prompt": "x", "background": "transparent", "output_format": "jpeg"}),
        JSON,
        400,
        "background",
        "png",
    ),
    Case("stream-not-boolean", GEN, gen({"prompt": "x", "stream": "yes"}), JSON, 400, "stream", "boolean"),
    Case(
        "operation-the-model-lacks",
        EDIT,
        multipart(("model", "dall-e-3"), ("prompt", "x"), ("image", IMG, "a.png")),
        MULTIPART,
        400,
        "model",
        "supports",
        "unsupported_operation",
    ),
    # -- multipart and images -----------------------------------------------------------------
    Case(
        "edit-without-image",
        EDIT,
        multipart(("prompt", "add a moon")),
        MULTIPART,
        400,
        "image",
        "file part",
        "missing_required_parameter",
    ),
    Case("variation-without-image", VAR, multipart(("model", "dall-e-2")), MULTIPART, 400, "image", "file part"),
    Case(
        "image-as-text-field",
        EDIT,
        multipart(("prompt", "x"), ("image", "not a file")),
        MULTIPART,
        400,
        "image",
        "file part",
        "invalid_type",
    ),
    Case(
        "image-not-an-image",
        EDIT,
        multipart(("prompt", "x"), ("image", b"hello, world", "a.png")),
        MULTIPART,
        400,
        "image",
        "PNG, JPEG or WEBP",
        "invalid_image_format",
    ),
    Case(
        "image-a-gif",
        EDIT,
        multipart(("prompt", "x"), ("image", b"GIF89a" + b"\x00" * 20, "a.gif")),
        MULTIPART,
        400,
        "image",
        "PNG, JPEG or WEBP",
    ),
    Case(
        "image-truncated-png",
        EDIT,
        multipart(("prompt", "x"), ("image", TRUNCATED_PNG, "a.png")),
        MULTIPART,
        400,
        "image",
        "truncated",
        "invalid_image",
    ),
    Case(
        "image-truncated-jpeg",
        EDIT,
        multipart(("prompt", "x"), ("image", TRUNCATED_JPEG, "a.jpg")),
        MULTIPART,
        400,
        "image",
        "truncated",
        "invalid_image",
    ),
    Case(
        "image-png-bomb",
        EDIT,
        multipart(("prompt", "x"), ("image", png_bomb(12_000, 12_000), "bomb.png")),
        MULTIPART,
        400,
        "image",
        "pixels",
        "image_too_large",
    ),
    Case(
        "image-png-bomb-just-over",
        EDIT,
        multipart(("prompt", "x"), ("image", png_bomb(9_000, 9_000), "b.png")),
        MULTIPART,
        400,
        "image",
        "pixels",
        "image_too_large",
    ),
    Case(
        "mask-of-another-size",
        EDIT,
        multipart(("prompt", "x"), ("image", IMG, "a.png"), ("mask", png_bytes((32, 32)), "m.png")),
        MULTIPART,
        400,
        "mask",
        "same dimensions",
        "invalid_mask",
    ),
    Case(
        "mask-without-alpha",
        EDIT,
        multipart(("prompt", "x"), ("image", IMG, "a.png"), ("mask", IMG_RGB, "m.png")),
        MULTIPART,
        400,
        "mask",
        "alpha",
        "invalid_mask",
    ),
    Case(
        "mask-not-an-image",
        EDIT,
        multipart(("prompt", "x"), ("image", IMG, "a.png"), ("mask", b"zz", "m.png")),
        MULTIPART,
        400,
        "mask",
        "PNG",
    ),
    Case(
        "two-masks",
        EDIT,
        multipart(("prompt", "x"), ("image", IMG, "a.png"), ("mask", IMG, "m.png"), ("mask", IMG, "n.png")),
        MULTIPART,
        400,
        "mask",
        "one 'mask'",
    ),
    Case(
        "seventeen-images",
        EDIT,
        multipart(("model", "gpt-image-1.5"), ("prompt", "x"), *[("image[]", IMG, f"{i}.png") for i in range(17)]),
        MULTIPART,
        400,
        "image",
        "at most 16",
        "too_many_images",
    ),
    Case(
        "dall-e-2-non-square",
        EDIT,
        multipart(("model", "dall-e-2"), ("prompt", "x"), ("image", png_bytes((64, 32)), "a.png")),
        MULTIPART,
        400,
        "image",
        "square PNG",
    ),
    Case(
        "multipart-n-a-word",
        EDIT,
        multipart(("prompt", "x"), ("n", "many"), ("image", IMG, "a.png")),
        MULTIPART,
        400,
        "n",
        "integer",
        "invalid_type",
    ),
    Case(
        "multipart-stream-maybe",
        EDIT,
        multipart(("prompt", "x"), ("stream", "maybe"), ("image", IMG, "a.png")),
        MULTIPART,
        400,
        "stream",
        "'true' or 'false'",
    ),
    Case(
        "multipart-non-utf8-field",
        EDIT,
        multipart(("prompt", b"caf\xe9"), ("image", IMG, "a.png")),
        MULTIPART,
        400,
        "prompt",
        "UTF-8",
    ),
    Case("multipart-no-boundary", EDIT, multipart(("prompt", "x")), "multipart/form-data", 400, None, "boundary"),
    Case(
        "multipart-truncated",
        EDIT,
        multipart(("prompt", "x"), ("image", IMG, "a.png"))[:-40],
        MULTIPART,
        400,
        None,
        "truncated",
    ),
    # -- routes, methods, media types ---------------------------------------------------------
    Case(
        "wrong-content-type",
        GEN,
        b"prompt=a+cat",
        "text/plain",
        415,
        None,
        "application/json",
        "unsupported_media_type",
    ),
    Case(
        "form-urlencoded-edit", EDIT, b"prompt=x", "application/x-www-form-urlencoded", 415, None, "multipart/form-data"
    ),
    Case("json-variation", VAR, gen({"model": "dall-e-2"}), JSON, 415, None, "multipart/form-data"),
    Case("wrong-method-get", GEN, b"", None, 405, None, "not allowed", "method_not_allowed", method="GET"),
    Case("wrong-method-delete", "/v1/models", b"", None, 405, None, "not allowed", method="DELETE"),
    Case("unknown-path", "/v1/images/generate", b"{}", JSON, 404, None, "/v1/images/generations", "unknown_url"),
    Case(
        "unknown-path-with-newline",
        "/v1/%0Aforged%20log%20line",
        b"",
        None,
        404,
        None,
        "/v1/images/generations",
        method="GET",
    ),
    Case(
        "unknown-model-retrieve",
        "/v1/models/no-such-model",
        b"",
        None,
        404,
        "model",
        "Configured here",
        "model_not_found",
        method="GET",
    ),
]


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    with guarded_proxy(Engine()) as url:
        yield url


@pytest.fixture(scope="module")
def client(proxy_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_url, timeout=30) as http:
        yield http


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_an_envelope_naming_what_to_change(client: httpx.Client, case: Case) -> None:
    headers = {"content-type": case.content_type} if case.content_type else {}
    with captured_logs() as logs:
        response = client.request(case.method, case.path, content=case.body or None, headers=headers)
        # This request's line (the path as the log prints it), not a late one of the previous case's.
        lines = logs.access_lines(containing=f"{case.method} {printable(unquote(case.path))} ")
    error = assert_envelope(response, case.status, code=case.code)
    assert error["param"] == case.param, error
    assert case.hint in error["message"], error["message"]
    assert error["type"] == "invalid_request_error"
    if case.status == 405:
        assert response.headers["allow"]  # what the path does take
    if case.status not in (408, 409, 429):
        assert response.headers["x-should-retry"] == "false"  # so SDKs raise at once instead of retrying
    assert logs.problems() == []
    assert lines and "\n" not in "".join(lines), lines
    # ... and the server keeps serving.
    assert client.get("/healthz").json()["status"] == "ok"


def test_the_server_still_generates_after_every_bad_input(client: httpx.Client) -> None:
    for case in CASES:
        client.request(
            case.method,
            case.path,
            content=case.body or None,
            headers={"content-type": case.content_type} if case.content_type else {},
        )
    response = client.post(GEN, json={"model": "gpt-image-1.5", "prompt": "still here", "size": "1024x1024"})
    assert response.status_code == 200 and response.json()["data"][0]["b64_json"]


def test_declared_body_over_50_mb_is_413_before_a_byte_of_it_is_read(proxy_url: str) -> None:
    with socket.create_connection(("127.0.0.1", port_of(proxy_url)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nContent-Type: "
            + MULTIPART.encode()
            + b"\r\nContent-Length: 60000000\r\n\r\n"
        )
        status, headers, body = read_response(sock, timeout=5)
    assert status == 413 and headers["connection"] == "close"
    error = envelope_of(body)
    assert error["code"] == "payload_too_large" and "--max-body-mb" in error["message"]


def test_malformed_http_gets_a_400_envelope_not_plain_text(proxy_url: str) -> None:
    for raw in (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port_of(proxy_url)), timeout=5) as sock:
            sock.sendall(raw)
            status, headers, body = read_response(sock, timeout=5)
        assert status == 400 and headers["content-type"] == "application/json"
        assert envelope_of(body)["code"] == "invalid_http"


def test_headers_just_under_16_kb_are_served_and_just_over_get_the_400(proxy_url: str) -> None:
    statuses = []
    for size in (15 * 1024, 17 * 1024):
        with socket.create_connection(("127.0.0.1", port_of(proxy_url)), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            statuses.append(read_response(sock, timeout=5)[0])
    assert statuses == [200, 400]


def test_unknown_model_is_the_providers_404_model_not_found() -> None:
    from tests.upstreams.openai_upstream import FakeOpenAI

    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        engine = Engine(
            image_adapter="openai",
            image_adapter_opts={"base_url": f"{upstream_url}/v1", "api_key": "sk-test-hardening"},
        )
        with guarded_proxy(engine) as url, captured_logs() as logs:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test-client", max_retries=0)
            with pytest.raises(openai.NotFoundError) as caught:
                client.images.generate(model="no-such-model", prompt="a cat")
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message
    assert logs.problems() == []


def test_sdk_bad_inputs_raise_typed_exceptions_without_retrying(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-test-x", max_retries=2)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("a.png", b"not an image"), prompt="x")
    # The SDK labels a file named a.png image/png, so the bytes are tried as a PNG and fail to decode.
    assert caught.value.code == "invalid_image"
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="x", n=0)
    assert caught.value.code == "integer_below_min_value"
