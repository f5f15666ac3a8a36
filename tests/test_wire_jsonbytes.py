"""`wire.jsonbytes.loads_sparing_base64` means what `loads` means, with the base64 left as bytes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allm_proxy.types import Image
from allm_proxy.wire.jsonbytes import loads, loads_sparing_base64
from allm_proxy.wire.responses import response_from_json


def as_text(value: Any) -> Any:
    """The document with every view made text, to compare with what `loads` gives."""
    if isinstance(value, memoryview):
        return str(value, "ascii")
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_text(v) for v in value]
    return value


b64_text = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
tricky_text = st.sampled_from(['"b64_json": "x"', "a\\b", 'q"uote', "\n", "", "b64_json", "\u00e9"])
leaf = st.none() | st.booleans() | st.integers() | b64_text | tricky_text | st.text(max_size=8)
keys = st.sampled_from(["b64_json", "url", "revised_prompt", "data", '"b64_json"', "x"])
documents = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4))
layouts = st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 2}, {"separators": (" , ", " :  ")}])


@settings(max_examples=300, deadline=None)
@given(document=documents, layout=layouts, cut=st.integers(min_value=0, max_value=400))
def test_means_what_loads_means_for_any_document_and_any_truncation(document: Any, layout: dict, cut: int) -> None:
    data = json.dumps(document, **layout).encode()
    for sample in (data, data[: len(data) * cut // 400]):
        try:
            expected: Any = loads(sample)
        except ValueError:
            with pytest.raises(ValueError):
                loads_sparing_base64(sample)
            continue
        assert as_text(loads_sparing_base64(sample)) == expected


def test_base64_values_come_back_as_views_and_escaped_ones_as_text() -> None:
    data = b'{"data": [{"b64_json": "QUJD"}, {"b64_json": "QU\\/D"}], "created": 1}'
    document = loads_sparing_base64(data)
    first, second = (item["b64_json"] for item in document["data"])
    assert isinstance(first, memoryview) and bytes(first) == b"QUJD"
    assert second == "QU/D"  # a JSON escape: the parser's reading


def test_an_image_from_a_view_gives_the_same_text_bytes_and_pixels_as_from_text() -> None:
    body = json.dumps({"created": 7, "data": [{"b64_json": base64.b64encode(b"\x89PNG-ish").decode()}]}).encode()
    from_view = response_from_json(loads_sparing_base64(body), body, model=None).images[0]
    from_text = Image(b64_json=loads(body)["data"][0]["b64_json"])
    assert from_view.b64_json() == from_text.b64_json()
    assert from_view.b64_bytes() == from_text.b64_bytes()
    assert from_view.data == from_text.data == b"\x89PNG-ish"
    assert from_view.b64_length() == from_text.b64_length() and from_view.b64_prefix(4) == from_text.b64_prefix(4)
