"""A property of the cassette matcher: two requests get equal lookup keys exactly when every matcher's
check passes, so the O(1) replay lookup and the miss explanation can never disagree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vcr.request import Request

from allm_proxy.cassettes.matchers import MATCHERS, build, request_key

pytestmark = pytest.mark.slow  # property tests of the matcher (hypothesis)

ALL = build(list(MATCHERS))
DEFAULT = build(["method", "scheme", "host", "port", "path", "query", "body"])

# Small value spaces, so that equal requests are drawn often, written in many different ways.
values = st.sampled_from(["a kestrel", "a heron", 1, 2, "256x256", None, True])
json_bodies = st.dictionaries(st.sampled_from(["prompt", "n", "size", "model"]), values, max_size=3)
fields = st.lists(
    st.tuples(st.sampled_from(["prompt", "n", "model"]), st.sampled_from(["x", "y", "2"])),
    max_size=3,
    unique_by=lambda f: f[0],
)
files = st.lists(
    st.tuples(st.sampled_from(["image", "mask"]), st.sampled_from([b"\x89PNG-a", b"\x89PNG-b"])),
    max_size=2,
    unique_by=lambda f: f[0],
)


@st.composite
def json_request(draw: st.DrawFn) -> tuple[str, bytes]:
    data = draw(json_bodies)
    keys = draw(st.permutations(list(data)))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return "application/json", json.dumps({k: data[k] for k in keys}, separators=separators).encode()


@st.composite
def multipart_request(draw: st.DrawFn) -> tuple[str, bytes]:
    boundary = draw(st.sampled_from(["b1", "xyzzy", "----b0undary"]))
    quote = draw(st.sampled_from(['"', ""]))  # quoted and unquoted names parse alike
    parts = [
        f"--{boundary}\r\nContent-Disposition: form-data; name={quote}{name}{quote}\r\n\r\n{value}\r\n".encode()
        for name, value in draw(fields)
    ]
    parts += [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for name, data in draw(files)
    ]
    order = draw(st.permutations(parts))
    return f"multipart/form-data; boundary={boundary}", b"".join(order) + f"--{boundary}--\r\n".encode()


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["POST", "post", "GET"]))
    host = draw(st.sampled_from(["api.test", "other.test"]))
    path = draw(st.sampled_from(["/v1/images/generations", "/v1/images/edits"]))
    query = draw(st.sampled_from(["", "?key=1", "?a=1&b=2"]))
    content_type, body = draw(st.one_of(json_request(), multipart_request(), st.just(("text/plain", b""))))
    headers: dict[str, Any] = {"content-type": content_type}
    headers.update(draw(st.dictionaries(st.sampled_from(["x-team", "user-agent"]), st.sampled_from(["1", "2"]))))
    return Request(method, f"https://{host}{path}{query}", body, headers)


def checks_pass(r1: Request, r2: Request, matchers: Any) -> bool:
    try:
        for matcher in matchers:
            matcher.check(r1, r2)
    except AssertionError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(requests(), requests())
def test_equal_keys_exactly_when_every_matcher_passes(r1: Request, r2: Request) -> None:
    for matchers in (ALL, DEFAULT):
        assert (request_key(r1, matchers) == request_key(r2, matchers)) == checks_pass(r1, r2, matchers)


@settings(max_examples=100, deadline=None)
@given(requests())
def test_a_request_matches_itself_and_a_rewritten_copy(r1: Request) -> None:
    copy = Request(r1.method, r1.uri, r1.body, dict(r1.headers))
    assert request_key(r1, DEFAULT) == request_key(copy, DEFAULT) and checks_pass(r1, copy, DEFAULT)
