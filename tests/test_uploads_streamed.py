"""Pass-through edits and variations stream to the upstream while they arrive (server/uploads.py).

Each test sends through the proxy (provider openai) in front of the fake OpenAI upstream, which
records the sha256 of every part it received, when the body began and ended, and every body that
was cut short (`FakeOpenAI.aborted`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import vcr

from allm_proxy import Engine
from allm_proxy.config import CassetteSettings, ProxyConfig
from allm_proxy.errors import ProxyError
from allm_proxy.server import create_app
from allm_proxy.validation import validate_request
from allm_proxy.wire.requests import parse_request
from tests.support.asgi_server import port_of, running_proxy, serve_asgi
from tests.support.hardening import probed_proxy, settled
from tests.support.images import half_transparent_mask, noise_jpeg, padded_png, png_bytes
from tests.upstreams.openai_upstream import FakeOpenAI, Received, ok, rate_limited

KEY = "sk-test-stream"
MB = 1024 * 1024
BOUNDARY = "openai-streamtest0123456789"


@contextmanager
def proxy_for(upstream_url: str, **engine_args: Any) -> Iterator[tuple[str, Engine]]:
    engine = Engine(
        image_adapter="openai", image_adapter_opts={"base_url": upstream_url + "/v1"}, env={}, **engine_args
    )
    with running_proxy(engine) as url:
        yield url, engine


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)


FormPart = tuple[str, bytes, str | None, str | None]


def form(parts: list[FormPart]) -> tuple[bytes, str]:
    """A multipart body of (name, content, filename, content type) parts, in this order, as a client writes it."""
    chunks = []
    for name, content, filename, content_type in parts:
        head = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename}"'
        if content_type is not None:
            head += f"\r\nContent-Type: {content_type}"
        chunks += [f"--{BOUNDARY}\r\n{head}\r\n\r\n".encode(), content, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={BOUNDARY}"


def hashes(parts: list[FormPart]) -> list[tuple[str, str | None, str | None, str]]:
    return [(name, filename, ctype, hashlib.sha256(content).hexdigest()) for name, content, filename, ctype in parts]


def journal_inputs(url: str) -> list[dict[str, Any]]:
    entry = httpx.get(url + "/allm/requests").json()["data"][-1]
    return list(entry["inputs"])


def aborted_soon(upstream: FakeOpenAI, count: int = 1) -> list[Any]:
    """The upstream's cut-short bodies, once `count` are there (bounded wait: the close travels a socket)."""
    deadline = time.monotonic() + 10
    while len(upstream.aborted) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(upstream.aborted)


def full_path_envelope(engine: Engine, operation: str, body: bytes, content_type: str) -> dict[str, Any]:
    """The error today's whole-body path gives for this body: parse it whole, validate it whole."""
    request = parse_request(operation, content_type, body)  # type: ignore[arg-type]
    route = engine.route(request)
    with pytest.raises(ProxyError) as caught:
        validate_request(request, route.family, requested_model=route.label)
    return caught.value.envelope()


def post(url: str, path: str, body: bytes, content_type: str) -> httpx.Response:
    headers = {"content-type": content_type, "authorization": f"Bearer {KEY}"}
    return httpx.post(url + "/v1/images/" + path, content=body, headers=headers, timeout=60)


# -- byte-identical parts, in both SDKs' orders -------------------------------------------------------


def test_python_sdk_edit_streams_through_with_every_part_byte_identical(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    image, mask = padded_png((64, 64), 3 * MB), half_transparent_mask((64, 64))
    call: Callable[[openai.OpenAI], Any] = lambda client: client.images.edit(  # noqa: E731
        model="gpt-image-1",
        image=("in.png", image, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="add a hat",
        size="1024x1024",
    )
    call(sdk(upstream_url))
    direct = upstream.last
    with proxy_for(upstream_url) as (url, _):
        answer = call(sdk(url))
        inputs = journal_inputs(url)
    through = upstream.last
    assert answer.data and answer.data[0].b64_json
    assert through.part_hashes == direct.part_hashes  # the SDK's order, every part's bytes
    assert through.headers["content-length"] == direct.headers["content-length"]
    # The proxy says it streamed them, and kept only what is cheap: sizes and digests, no bytes.
    assert [(i["part"], i["streamed"], i["bytes"], i["sha256"]) for i in inputs] == [
        ("image", True, len(image), hashlib.sha256(image).hexdigest()),
        ("mask", True, len(mask), hashlib.sha256(mask).hexdigest()),
    ]
    assert (inputs[0]["width"], inputs[0]["height"], inputs[0]["bytes_dropped"]) == (64, 64, True)


def test_node_order_file_before_model_streams_byte_identical(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    parts = [
        ("image", padded_png((32, 32), 2 * MB), "in.png", "application/octet-stream"),  # what Node sends for a stream
        ("prompt", b"add a hat", None, None),
        ("model", b"gpt-image-1", None, None),
        ("mask", half_transparent_mask((32, 32)), "mask.png", "application/octet-stream"),
        ("n", b"1", None, None),
    ]
    body, content_type = form(parts)
    with proxy_for(upstream_url) as (url, _):
        answer = post(url, "edits", body, content_type)
        inputs = journal_inputs(url)
    assert answer.status_code == 200, answer.text
    assert upstream.last.part_hashes == hashes(parts)  # the client's order, every part's bytes
    assert upstream.last.body == body  # nothing changed, the boundary included
    assert [i["streamed"] for i in inputs] == [True, True]


def test_a_request_the_proxy_changes_is_rendered_as_before(upstream: FakeOpenAI) -> None:
    """An alias changes the model: the client's bytes no longer say the request, so it is rendered."""
    upstream_url = upstream.base_url
    parts: list[FormPart] = [("prompt", b"p", None, None), ("model", b"house-model", None, None)]
    parts.append(("image", png_bytes((16, 16)), "in.png", "image/png"))
    body, content_type = form(parts)
    with proxy_for(upstream_url, aliases={"house-model": {"provider": "openai", "model": "gpt-image-1"}}) as (url, _):
        answer = post(url, "edits", body, content_type)
        inputs = journal_inputs(url)
    assert answer.status_code == 200, answer.text
    assert upstream.last.fields["model"] == "gpt-image-1"
    assert upstream.last.part_hashes[-1] == hashes(parts)[-1]
    assert "streamed" not in inputs[0] and upstream.aborted == []


def test_a_late_field_that_changes_the_request_takes_the_full_path(upstream: FakeOpenAI) -> None:
    """`response_format` after the files: the proxy drops it for gpt-image models (they refuse it and
    the proxy hosts URLs itself), so the streamed attempt is cut and the rendered request goes."""
    upstream_url = upstream.base_url
    parts = [
        ("model", b"gpt-image-1", None, None),
        ("prompt", b"add a hat", None, None),
        ("image", padded_png((32, 32), MB), "in.png", "image/png"),
        ("response_format", b"b64_json", None, None),
    ]
    body, content_type = form(parts)
    with proxy_for(upstream_url) as (url, _):
        answer = post(url, "edits", body, content_type)
    assert answer.status_code == 200, answer.text
    assert "response_format" not in upstream.last.fields
    assert len(upstream.requests) == 1 and len(aborted_soon(upstream)) == 1


def test_a_retried_attempt_sends_the_streamed_body_again_from_the_spool(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    upstream.script(rate_limited(retry_after_ms=10), ok())
    parts: list[FormPart] = [("prompt", b"p", None, None), ("model", b"gpt-image-1", None, None)]
    parts.append(("image", padded_png((32, 32), 2 * MB), "in.png", "image/png"))
    body, content_type = form(parts)
    with proxy_for(upstream_url, providers={"openai": {"max_retries": 1}}) as (url, _):
        answer = post(url, "edits", body, content_type)
        inputs = journal_inputs(url)
    assert answer.status_code == 200, answer.text
    assert [r.body for r in upstream.requests] == [body, body] and inputs[0]["streamed"] is True


async def test_the_upstream_gets_the_body_before_the_client_has_sent_it_all(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    body, content_type = form(
        [
            ("prompt", b"p", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", padded_png((32, 32), 2 * MB), "in.png", "image/png"),
        ]
    )
    seen_before_the_end: list[bool] = []

    async def slowly() -> AsyncIterator[bytes]:
        yield body[: len(body) - 1000]
        deadline = time.monotonic() + 5
        while upstream.bodies_begun == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen_before_the_end.append(upstream.bodies_begun == 1 and upstream.requests == [])
        yield body[len(body) - 1000 :]

    with proxy_for(upstream_url) as (url, _):
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                url + "/v1/images/edits",
                content=slowly(),
                headers={"content-type": content_type, "authorization": f"Bearer {KEY}"},
            )
    assert answer.status_code == 200, answer.text
    assert seen_before_the_end == [True]
    assert upstream.last.body == body


# -- refusals: the same 400, and the upstream never sees a complete body --------------------------------


def test_a_bad_mask_in_a_40_mb_upload_is_refused_before_the_upstream_has_the_whole_body(
    upstream: FakeOpenAI,
) -> None:
    upstream_url = upstream.base_url
    body, content_type = form(
        [
            ("prompt", b"add a hat", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", padded_png((64, 64), 40 * MB), "big.png", "image/png"),
            ("mask", half_transparent_mask((32, 32)), "mask.png", "image/png"),
        ]
    )
    with proxy_for(upstream_url) as (url, engine):
        answer = post(url, "edits", body, content_type)
        expected = full_path_envelope(engine, "edit", body, content_type)
    assert answer.status_code == 400
    assert answer.json() == expected and expected["error"]["code"] == "invalid_mask"
    cut = aborted_soon(upstream)
    assert upstream.requests == []  # never a complete request
    assert len(cut) == 1 and 0 < cut[0].received < len(body) == cut[0].declared


def test_the_closing_boundary_waits_for_checks_that_take_a_while(upstream: FakeOpenAI) -> None:
    """A JPEG is checked by decoding it, from the spool, after its last byte came: all that time
    the upstream has every byte but the closing boundary, and never gets that one when the mask is bad."""
    upstream_url = upstream.base_url
    image = noise_jpeg((2048, 2048))
    body, content_type = form(
        [
            ("prompt", b"p", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", image, "in.jpg", "image/jpeg"),
            ("mask", half_transparent_mask((32, 32)), "mask.png", "image/png"),
        ]
    )
    with proxy_for(upstream_url) as (url, engine):
        answer = post(url, "edits", body, content_type)
        expected = full_path_envelope(engine, "edit", body, content_type)
    assert answer.status_code == 400 and answer.json() == expected
    assert len(aborted_soon(upstream)) == 1 and upstream.requests == []


@pytest.mark.parametrize(
    ("image", "code"),
    [(padded_png((64, 32), MB), "invalid_image_format"), (padded_png((64, 64), 5 * MB), "image_too_large")],
    ids=["not-square", "over-4-mb"],
)
def test_dall_e_2_variation_refusals_match_the_full_path_and_the_upstream_never_gets_the_whole_body(
    upstream: FakeOpenAI, image: bytes, code: str
) -> None:
    upstream_url = upstream.base_url
    body, content_type = form([("model", b"dall-e-2", None, None), ("image", image, "in.png", "image/png")])
    with proxy_for(upstream_url) as (url, engine):
        answer = post(url, "variations", body, content_type)
        expected = full_path_envelope(engine, "variation", body, content_type)
    assert answer.status_code == 400
    assert answer.json() == expected and expected["error"]["code"] == code
    assert len(aborted_soon(upstream)) == 1 and upstream.requests == []


def test_a_corrupt_png_gets_the_full_paths_answer(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    image = bytearray(padded_png((32, 32), MB))
    image[len(image) // 2] ^= 0xFF  # inside the padding chunk: only its CRC shows it
    body, content_type = form(
        [
            ("prompt", b"p", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", bytes(image), "a.png", "image/png"),
        ]
    )
    with proxy_for(upstream_url) as (url, engine):
        answer = post(url, "edits", body, content_type)
        expected = full_path_envelope(engine, "edit", body, content_type)
    assert answer.status_code == 400 and answer.json() == expected
    assert expected["error"]["code"] == "invalid_image"
    assert len(aborted_soon(upstream)) == 1 and upstream.requests == []


def test_a_body_over_the_limit_is_the_same_413_and_cuts_the_upstream(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    body, content_type = form(
        [
            ("prompt", b"p", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", padded_png((32, 32), 3 * MB), "a.png", "image/png"),
        ]
    )

    async def no_length() -> AsyncIterator[bytes]:  # chunked: the limit is found while reading
        for at in range(0, len(body), 256 * 1024):
            yield body[at : at + 256 * 1024]

    async def send(url: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            headers = {"content-type": content_type, "authorization": f"Bearer {KEY}"}
            return await client.post(url + "/v1/images/edits", content=no_length(), headers=headers)

    engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": upstream_url + "/v1"}, env={})
    config = ProxyConfig(provider="openai", max_body_bytes=2 * MB)
    with serve_asgi(create_app(engine, config)) as url:
        answer = asyncio.run(send(url))
    assert answer.status_code == 413
    message = answer.json()["error"]["message"]
    assert message.startswith("The request body (") and "exceeds this proxy's limit of 2.0 MB" in message
    assert len(aborted_soon(upstream)) == 1 and upstream.requests == []


# -- a client that leaves ------------------------------------------------------------------------------


def test_a_client_that_stops_mid_upload_cancels_the_upstream_request(upstream: FakeOpenAI) -> None:
    upstream_url = upstream.base_url
    body, content_type = form(
        [
            ("prompt", b"p", None, None),
            ("model", b"gpt-image-1", None, None),
            ("image", padded_png((32, 32), 4 * MB), "a.png", "image/png"),
        ]
    )
    engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": upstream_url + "/v1"}, env={})
    with probed_proxy(engine) as (url, probe):
        assert httpx.get(url + "/healthz").status_code == 200
        tasks = probe.tasks()
        head = (
            f"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
            sock.sendall(head + body[: len(body) // 2])
            deadline = time.monotonic() + 5
            while upstream.bodies_begun == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert upstream.bodies_begun == 1  # the upload was on its way upstream when the client left
        cut = aborted_soon(upstream)
        assert len(cut) == 1 and cut[0].received < len(body) and upstream.requests == []
        assert settled(probe.tasks, tasks) <= tasks  # nothing of the abandoned request is left running
        entry = httpx.get(url + "/allm/requests").json()["data"][-1]
    assert entry["status"] == 499


# -- cassettes: whole bodies, spooled; the recordings replay --------------------------------------------


def test_recorded_edits_and_variations_replay_without_the_upstream_and_load_in_plain_vcrpy(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream_url = upstream.base_url
    cassette = tmp_path / "uploads.yaml"
    image = padded_png((64, 64), 2 * MB)

    def calls(client: openai.OpenAI) -> list[str]:
        edited = client.images.edit(model="gpt-image-1", image=("in.png", image, "image/png"), prompt="add a hat")
        varied = client.images.create_variation(
            model="dall-e-2", image=("in.png", image, "image/png"), response_format="b64_json"
        )
        assert edited.data and varied.data
        return [edited.data[0].b64_json or "", varied.data[0].b64_json or ""]

    record = CassetteSettings(path=str(cassette), record_mode="once")
    with proxy_for(upstream_url, cassettes=record) as (url, engine):
        recorded = calls(sdk(url))
        inputs = journal_inputs(url)
    engine.close()
    assert "streamed" not in inputs[0]  # the cassette layer needs the whole body
    assert len(upstream.requests) == 2 and upstream.aborted == []
    replay = CassetteSettings(path=str(cassette), record_mode="none")
    with proxy_for(upstream_url, cassettes=replay) as (url, _):
        replayed = calls(sdk(url))
    assert len(upstream.requests) == 2  # the cassette answered: nothing more reached the upstream
    assert replayed == recorded and all(base64.b64decode(b) for b in recorded)
    with vcr.use_cassette(str(cassette), record_mode="none") as plain:
        assert [r.path for r in plain.requests] == ["/v1/images/edits", "/v1/images/variations"]
        assert all(json.loads(plain.responses_of(r)[0]["body"]["string"])["data"] for r in plain.requests)


def test_received_keeps_part_hashes(upstream: FakeOpenAI) -> None:
    """The fake's own bookkeeping, which the tests above lean on."""
    upstream_url = upstream.base_url
    parts: list[FormPart] = [("prompt", b"p", None, None), ("model", b"gpt-image-1", None, None)]
    parts.append(("image", png_bytes((8, 8)), "a.png", "image/png"))
    body, content_type = form(parts)
    assert post(upstream_url, "edits", body, content_type).status_code == 200
    received: Received = upstream.last
    assert received.part_hashes == hashes(parts)
    assert 0 < received.first_byte_at <= received.completed_at
