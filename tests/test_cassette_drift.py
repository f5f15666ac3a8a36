"""Answer shapes and their differences (cassettes/drift.py), and re-sending recorded requests (cassettes/live.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
from vcr.request import Request

from allm_proxy.cassettes.bodies import request_body_from_text, request_body_text
from allm_proxy.cassettes.drift import differences, shape_of
from allm_proxy.cassettes.filters import SecretFilter
from allm_proxy.cassettes.live import Endpoint, plan, provider_of, resend_all, target_url
from allm_proxy.cassettes.report import Entry
from allm_proxy.wire.multipart import without_base64_parts
from tests.support.images import image_bytes, png_bytes

KEY = "sk-test-unit-4567"


def picture(size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> str:
    return base64.b64encode(image_bytes(size, (1, 2, 3), "RGB", fmt)).decode()


def answer(body: Any, status: int = 200, content_type: str = "application/json") -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {
        "status": {"code": status, "message": "OK"},
        "headers": {"Content-Type": [content_type]},
        "body": {"string": raw},
    }


def stream(*events: dict[str, Any]) -> dict[str, Any]:
    text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return answer(text.encode(), content_type="text/event-stream")


def drift(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return differences(shape_of(old), shape_of(new))


def test_a_shape_has_every_key_path_with_its_type_and_base64_images_typed_image() -> None:
    shape = shape_of(
        answer(
            {
                "created": 1,
                "data": [{"b64_json": picture(), "revised_prompt": "x"}],
                "usage": {"total_tokens": 3.5, "cached": None, "ok": True},
            }
        )
    )
    assert shape.paths == {
        "created": "integer",
        "data": "array",
        "data[0]": "object",
        "data[0].b64_json": "image",
        "data[0].revised_prompt": "string",
        "usage": "object",
        "usage.total_tokens": "number",
        "usage.cached": "null",
        "usage.ok": "boolean",
    }
    assert [(i.format, i.size) for i in shape.images] == [("png", "8x8")]


def test_values_do_not_matter_only_the_shape() -> None:
    old = answer({"created": 1, "data": [{"b64_json": picture(), "revised_prompt": "a cat"}]})
    new = answer({"created": 999, "data": [{"b64_json": picture(), "revised_prompt": "a dog, revised"}]})
    assert drift(old, new) == []


def test_a_renamed_field_is_one_gone_and_one_new() -> None:
    old = answer({"data": [{"url": "https://x/1.png"}]})
    new = answer({"data": [{"b64_json": picture()}]})
    assert drift(old, new) == ["data[0].url: gone", "data[0].b64_json: new field", "images 0 -> 1"]


def test_a_changed_type_is_named_and_what_lies_below_a_gone_path_is_not() -> None:
    old = answer({"created": 1, "data": [{"b64_json": picture()}, {"b64_json": picture()}]})
    new = answer({"created": "1", "data": [{"b64_json": picture()}]})
    assert drift(old, new) == ["created: integer -> string", "data[1]: gone", "images 2 -> 1"]


def test_image_format_and_size_changes_are_named_per_image() -> None:
    old = answer({"data": [{"b64_json": picture((1024, 1024))}]})
    new = answer({"data": [{"b64_json": picture((1536, 1024), "JPEG")}]})
    assert drift(old, new) == ["image 0 format png -> jpeg", "image 0 size 1024x1024 -> 1536x1024"]


def test_a_status_change_names_the_new_error_code_and_nothing_else() -> None:
    old = answer({"data": [{"b64_json": picture()}]})
    new = answer(
        {"error": {"message": "gone", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}},
        status=404,
    )
    assert drift(old, new) == ["status 200 -> 404 model_not_found"]
    assert drift(new, old) == ["status 404 model_not_found -> 200"]


def test_errors_compare_by_type_and_code_not_message() -> None:
    def envelope(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
        return answer({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=400)

    assert drift(envelope("Bad size.", "invalid_size"), envelope("Size not allowed!", "invalid_size")) == []
    assert drift(envelope("x", "invalid_size"), envelope("x", "invalid_value", "server_error")) == [
        "error type invalid_request_error -> server_error",
        "error code invalid_size -> invalid_value",
    ]


def test_a_google_error_is_labelled_by_its_status_name() -> None:
    old = answer({"candidates": []})
    new = answer({"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}, status=404)
    assert drift(old, new) == ["status 200 -> 404 NOT_FOUND"]


def test_stream_event_types_are_compared_in_order() -> None:
    partial = {"type": "image_generation.partial_image", "b64_json": picture(), "partial_image_index": 0}
    completed = {"type": "image_generation.completed", "b64_json": picture()}
    assert shape_of(stream(partial, completed)).events == (
        "image_generation.partial_image",
        "image_generation.completed",
    )
    assert drift(stream(partial, completed), stream(partial, completed)) == []
    changed = drift(stream(partial, completed), stream(completed))
    assert changed[0] == (
        "events [image_generation.partial_image, image_generation.completed] -> [image_generation.completed]"
    )
    assert "images 2 -> 1" in changed


def test_a_body_that_is_no_longer_json_shows_as_a_content_type_change() -> None:
    old = answer({"data": []})
    new = answer(b"<html>maintenance</html>", content_type="text/html")
    assert drift(old, new) == ["content-type application/json -> text/html", "data: gone"]


# -- live.py ----------------------------------------------------------------------------------------


def request(
    uri: str, body: bytes = b'{"model": "gpt-image-1", "prompt": "a"}', content_type: str = "application/json"
) -> Request:
    return Request("POST", uri, body, {"content-type": content_type})


def test_the_provider_follows_from_the_recorded_path() -> None:
    assert provider_of(request("https://api.openai.com/v1/images/edits")) == "openai"
    assert provider_of(request("http://127.0.0.1:9/v1beta/models/gemini-3-pro-image:generateContent")) == "gemini"
    assert provider_of(request("http://h/v1beta/models/m:streamGenerateContent?alt=sse")) == "gemini"
    assert provider_of(request("https://files.example/img-1.png")) is None


def test_a_base_url_replaces_the_recorded_host_and_api_root_keeping_path_and_query() -> None:
    openai_call = request("http://127.0.0.1:5/v1/images/generations")
    gemini_call = request("http://127.0.0.1:6/v1beta/models/m:streamGenerateContent?alt=sse")
    assert (
        target_url(openai_call, "openai", "https://gw.example/openai/v1/")
        == "https://gw.example/openai/v1/images/generations"
    )
    assert (
        target_url(gemini_call, "gemini", "https://g.example")
        == "https://g.example/v1beta/models/m:streamGenerateContent?alt=sse"
    )
    assert target_url(openai_call, "openai", None) == "http://127.0.0.1:5/v1/images/generations"


def test_uploads_stored_as_base64_parts_are_sent_as_their_bytes() -> None:
    image = png_bytes((4, 4))
    content_type = "multipart/form-data; boundary=xyz"
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhat\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--xyz--\r\n"
    )
    stored = request_body_from_text(request_body_text(content_type, body))
    assert stored != body  # the JSON format keeps the upload as base64
    assert without_base64_parts(content_type, stored or b"") == body
    assert without_base64_parts(content_type, body) == body


def test_interactions_of_no_known_provider_are_planned_out() -> None:
    entries = [
        Entry(0, request("http://h/v1/images/generations"), answer({})),
        Entry(1, Request("GET", "http://h/v1/files/img-1.png", None, {}), answer({})),
    ]
    planned, others = plan(Path("c.json"), entries)
    assert [(p.entry.index, p.provider, p.model) for p in planned] == [(0, "openai", "gpt-image-1")]
    assert [e.index for e in others] == [1]


class KeyEchoingUpstream(httpx.AsyncBaseTransport):
    """Answers 401 with the key in the message (as OpenAI does) and sets a cookie; keeps what it got."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        echo = {
            "error": {
                "message": f"Incorrect API key provided: {KEY}",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        return httpx.Response(
            401,
            headers={"content-type": "application/json", "set-cookie": "sid=secret-c-1"},
            stream=httpx.ByteStream(json.dumps(echo).encode()),
        )


async def test_resending_adds_the_key_reports_progress_and_keeps_no_secret() -> None:
    upstream = KeyEchoingUpstream()
    seen = upstream.seen

    entries = [Entry(i, request(f"http://127.0.0.1:9/v1/images/generations?n={i}"), answer({})) for i in range(3)]
    planned, _ = plan(Path("c.json"), entries)
    progress: list[tuple[int, int]] = []
    sent = await resend_all(
        planned,
        {"openai": Endpoint("http://up.example/v1", KEY)},
        SecretFilter(),
        transport=upstream,
        progress=lambda k, n: progress.append((k, n)),
    )
    assert sorted(progress) == [(1, 3), (2, 3), (3, 3)]
    assert [str(r.url) for r in seen] == [f"http://up.example/v1/images/generations?n={i}" for i in range(3)]
    assert {r.headers["authorization"] for r in seen} == {f"Bearer {KEY}"}
    for item in sent:
        assert item.response is not None
        assert KEY.encode() not in item.response["body"]["string"]
        assert "set-cookie" not in {k.lower() for k in item.response["headers"]}
