"""The one multipart parser: strict for client bodies, recorded for cassettes, the same parts either way."""

from __future__ import annotations

import base64

import pytest
from vcr.request import Request

from allm_proxy.cassettes.bodies import request_body_from_text, request_body_text
from allm_proxy.cassettes.matchers import body_form, build, request_key
from allm_proxy.cassettes.summary import summarize_request
from allm_proxy.types import ImageRequest
from allm_proxy.wire.multipart import (
    MAX_PARTS,
    MultipartError,
    Part,
    encode_multipart,
    parse_multipart,
    with_base64_parts,
)
from allm_proxy.wire.openai import parse_request
from tests.support.images import png_bytes

PNG = png_bytes((8, 8))


def form(boundary: str, *heads_and_data: tuple[str, bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) from raw part heads, written out by hand so no encoder tidies them."""
    body = b""
    for head, data in heads_and_data:
        body += b"--" + boundary.encode() + b"\r\n" + head.encode() + b"\r\n\r\n" + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + b"--" + boundary.encode() + b"--\r\n"


# Each edge case, and the (name, filename, bytes) parts every reader must find in it.
EDGE_CASES = {
    "unquoted name": (
        [
            ("Content-Disposition: form-data; name=prompt", b"add a hat"),
            ('Content-Disposition: form-data; name="image"; filename="in.png"\r\nContent-Type: image/png', PNG),
        ],
        [("prompt", None, b"add a hat"), ("image", "in.png", PNG)],
    ),
    "single quotes are part of the name": (
        [
            ('Content-Disposition: form-data; name="prompt"', b"a cat"),
            ("Content-Disposition: form-data; name='style'", b"vivid"),
            ('Content-Disposition: form-data; name="image"; filename="in.png"', PNG),
        ],
        [("prompt", None, b"a cat"), ("'style'", None, b"vivid"), ("image", "in.png", PNG)],
    ),
    "escaped quotes": (
        [
            ('Content-Disposition: form-data; name="prompt"', b"a cat"),
            ('Content-Disposition: form-data; name="say \\"hi\\""', b"hello"),
            ('Content-Disposition: form-data; name="image"; filename="my \\"best\\".png"', PNG),
        ],
        [("prompt", None, b"a cat"), ('say "hi"', None, b"hello"), ("image", 'my "best".png', PNG)],
    ),
    "filename* next to filename (RFC 7578: filename wins)": (
        [
            ('Content-Disposition: form-data; name="prompt"', b"a cat"),
            (
                'Content-Disposition: form-data; name="image"; filename="cafe.png"; '
                "filename*=UTF-8''caf%C3%A9.png\r\nContent-Type: image/png",
                PNG,
            ),
        ],
        [("prompt", None, b"a cat"), ("image", "cafe.png", PNG)],
    ),
    "filename* alone is no filename": (
        [
            ('Content-Disposition: form-data; name="prompt"', b"a cat"),
            ("Content-Disposition: form-data; name=\"notes\"; filename*=UTF-8''notes.txt", b"plain words"),
            ('Content-Disposition: form-data; name="image"; filename="in.png"', PNG),
        ],
        [("prompt", None, b"a cat"), ("notes", None, b"plain words"), ("image", "in.png", PNG)],
    ),
}


def server_parts(parsed: ImageRequest) -> set[tuple[str, str | None, bytes]]:
    """What the server's codec made of the body, as (name, filename, bytes)."""
    texts = {
        (name, None, str(getattr(parsed, name)).encode())
        for name in ("prompt", "model", "style")
        if getattr(parsed, name) is not None
    }
    texts |= {(name, None, str(value).encode()) for name, value in parsed.extra}
    files = [*parsed.images, *parsed.extra_files, *([parsed.mask] if parsed.mask else [])]
    return texts | {(f.field, f.filename, f.data) for f in files}


def cassette_parts(request: Request) -> set[tuple[str, str | None, bytes]]:
    """What the cassette summary (misses, `cassettes show`) made of the same body."""
    summary = summarize_request(request)
    return {(name, None, value.encode()) for name, value in summary.fields.items()} | {
        (p.name, p.filename, p.data) for p in summary.files
    }


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case_bodies_parse_the_same_in_the_server_and_in_the_cassette_layer(case: str) -> None:
    heads, expected = EDGE_CASES[case]
    content_type, body = form("b0undary", *heads)
    want = set(expected)

    assert server_parts(parse_request("edit", content_type, body)) == want
    recorded = Request("POST", "https://api.openai.com/v1/images/edits", body, {"content-type": content_type})
    assert cassette_parts(recorded) == want
    # The matcher compares the parts, never the raw bytes (which carry the boundary).
    kind, fields = body_form(recorded)
    assert kind == "multipart"
    assert {name for name, _, _ in fields} == {name for name, _, _ in expected}
    # And a text cassette stores it so that it reads back as the same parts.
    stored = request_body_from_text(request_body_text(content_type, body))
    assert stored is not None
    assert cassette_parts(Request("POST", recorded.uri, stored, {"content-type": content_type})) == want


def test_recorded_bodies_with_other_boundaries_and_an_unquoted_name_still_match() -> None:
    matchers = build(["method", "path", "body"])
    heads = [
        ("Content-Disposition: form-data; name=prompt", b"add a hat"),
        ("Content-Disposition: form-data; name=model", b"gpt-image-1"),
        ('Content-Disposition: form-data; name="image"; filename="in.png"\r\nContent-Type: image/png', PNG),
    ]
    requests = []
    for boundary in ("recorded-boundary-1111", "7f3a9c0d1e2b4a5c"):
        content_type, body = form(boundary, *heads)
        requests.append(Request("POST", "https://api.openai.com/v1/images/edits", body, {"content-type": content_type}))
    assert requests[0].body != requests[1].body
    assert request_key(requests[0], matchers) == request_key(requests[1], matchers)
    other_type, other = form("x", *heads[:1], ("Content-Disposition: form-data; name=model", b"dall-e-2"), heads[2])
    different = Request("POST", requests[0].uri, other, {"content-type": other_type})
    assert request_key(different, matchers) != request_key(requests[0], matchers)


def test_strict_mode_does_not_decode_a_transfer_encoding_but_recorded_mode_does() -> None:
    content_type, body = form(
        "b",
        (
            'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Transfer-Encoding: base64',
            base64.b64encode(PNG),
        ),
    )
    assert parse_multipart(content_type, body)[0].data == base64.b64encode(PNG)
    assert parse_multipart(content_type, body, recorded=True)[0].data == PNG


def test_strict_mode_caps_the_number_of_parts_and_recorded_mode_does_not() -> None:
    heads = [(f'Content-Disposition: form-data; name="f{i}"', b"x") for i in range(MAX_PARTS + 1)]
    content_type, body = form("b", *heads)
    with pytest.raises(MultipartError, match="too many form parts"):
        parse_multipart(content_type, body)
    assert len(parse_multipart(content_type, body, recorded=True)) == MAX_PARTS + 1


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n',
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
    ],
)
def test_a_truncated_body_or_a_part_without_a_name_is_refused_in_both_modes(body: bytes) -> None:
    for recorded in (False, True):
        with pytest.raises(MultipartError):
            parse_multipart("multipart/form-data; boundary=b", body, recorded=recorded)


def test_encoded_parts_parse_back_to_themselves() -> None:
    parts = [
        Part("prompt", "a cat \u2603".encode()),
        Part('odd "name"', b"v"),
        Part("image[]", PNG, filename="in.png", content_type="image/png"),
        Part("mask", PNG, filename="m.png"),
    ]
    body, content_type = encode_multipart(parts, boundary="fixed")
    assert content_type == "multipart/form-data; boundary=fixed"
    back = parse_multipart(content_type, body)
    assert [(p.name, p.filename, p.data) for p in back] == [
        ("prompt", None, "a cat \u2603".encode()),
        ("odd %22name%22", None, b"v"),
        ("image[]", "in.png", PNG),
        ("mask", "m.png", PNG),
    ]
    assert back[3].content_type == "application/octet-stream"


def test_base64_parts_keep_the_body_multipart_and_utf8_and_read_back_the_same_files() -> None:
    content_type, body = form(
        "b",
        ('Content-Disposition: form-data; name="prompt"', b"a cat"),
        ('Content-Disposition: form-data; name="image"; filename="in.png"\r\nContent-Type: image/png', PNG),
    )
    text = with_base64_parts(content_type, body)
    assert text is not None
    text.decode("utf-8")
    assert text.count(b"Content-Transfer-Encoding: base64") == 1  # the text part stays as it was
    assert [(p.name, p.data) for p in parse_multipart(content_type, text, recorded=True)] == [
        ("prompt", b"a cat"),
        ("image", PNG),
    ]
    assert with_base64_parts("application/json", b"{}") is None


def test_the_stream_parser_fed_byte_by_byte_reads_what_the_whole_body_parser_reads() -> None:
    from allm_proxy.wire.multipart import MultipartStream, boundary_of, encode_multipart, part_head

    body, content_type = encode_multipart(
        [Part("prompt", b"a cat"), Part("image", bytes(range(256)) * 8, filename="a.png", content_type="image/png")]
    )
    seen: list[tuple[str, bytes]] = []
    data = bytearray()

    def begin(headers: list[tuple[bytes, bytes]]) -> None:
        seen.append((part_head(headers).name, b""))
        data.clear()

    def end() -> None:
        seen[-1] = (seen[-1][0], bytes(data))

    stream = MultipartStream(boundary_of(content_type), on_begin=begin, on_data=data.extend, on_end=end)
    ended_at = None
    for at in range(len(body)):
        stream.feed(body[at : at + 1])
        if stream.ended and ended_at is None:
            ended_at = at
    stream.finish()
    assert ended_at == len(body) - 3  # the closing delimiter's last "-": only its CRLF follows
    assert seen == [(p.name, p.data) for p in parse_multipart(content_type, body)]
