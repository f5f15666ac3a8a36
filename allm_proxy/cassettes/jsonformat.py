"""The JSON cassette format: vcrpy's format 1, laid out one interaction per line.

A file is one JSON document that plain vcrpy reads with ``serializer="json"``::

    {"version": 1, "allm_layout": "one-interaction-per-line", "interactions": [
    {"request": {...}, "response": {"status": ..., "headers": ..., "body": {"string": "..."}}},
    {"request": {...}, "response": {...}}
    ]}

Why the layout: a cassette of dozens of 1024x1024 images is hundreds of MB of
base64, and `json.loads` of the whole file costs most of a second and three
copies of it in memory. Read line by line into one reused buffer, each
response body (always the last value of its line) is cut out and unescaped
straight from the bytes, so loading runs near memory speed and holds one copy
of the bodies (measured: 50 bodies of 3.2 MB in 0.16-0.22 s, peak 1.05x the
bodies). Files not in this layout (written by vcrpy, edited by hand; no
``allm_layout`` key) are read with plain `json.loads`.

Text cannot hold bytes: a binary response body is stored as base64 with
``"allm_encoding": "base64"`` next to its ``string`` (plain vcrpy replays that
text as is), binary request bodies as `bodies.request_body_text` describes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vcr.request import Request

from .bodies import as_bytes, request_body_from_text, request_body_text, response_body_text

VERSION = 1
# Marks files in our layout (vcrpy ignores unknown top-level keys); only those take the fast path.
LAYOUT = "one-interaction-per-line"
_BODY_KEY = b'"string": "'
# A string that cannot be a real body, put where the cut-out body was so the
# rest of the line parses and we can check the body sat where we expected.
_SENTINEL = "\u0000allm-body\u0000"
_SENTINEL_JSON = json.dumps(_SENTINEL).encode()
_SIMPLE_ESCAPES = {
    b'"': b'"',
    b"\\": b"\\",
    b"/": b"/",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
}
_MAX_PIECEWISE_ESCAPES = 4096
_MAX_HEADER = 1 << 20

Loaded = tuple[list[Request], list[dict[str, Any]], dict[str, Any]]


class CassetteFormatError(ValueError):
    """The file is not a cassette this version can read."""


def dump_interaction(request: Request, response: dict[str, Any]) -> str:
    """One interaction as one line of JSON, its response body last."""
    req = request._to_dict()
    content_type = request.headers.get("content-type")
    req["body"] = None if req["body"] is None else request_body_text(content_type, as_bytes(req["body"]))
    body = dict(response.get("body") or {})
    raw = body.pop("string", None)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    head_response = {k: v for k, v in response.items() if k != "body"}
    if raw is None:
        head_response["body"] = {**body, "string": None}
        return json.dumps({"request": req, "response": head_response}, ensure_ascii=False)
    text, encoding = response_body_text(raw)
    if encoding is not None:
        body["allm_encoding"] = encoding
    head_response["body"] = {**body, "string": ""}
    head = json.dumps({"request": req, "response": head_response}, ensure_ascii=False)
    # head ends with '""}}}': put the body in place of the empty string.
    return head[:-5] + json.dumps(text, ensure_ascii=False) + "}}}"


def document(lines: list[str], metadata: dict[str, Any] | None = None) -> Iterator[str]:
    """The whole file, as chunks to write."""
    header: dict[str, Any] = {"version": VERSION, "allm_layout": LAYOUT}
    if metadata:
        header["metadata"] = metadata
    yield json.dumps(header, ensure_ascii=False)[:-1] + ', "interactions": [\n'
    last = len(lines) - 1
    for i, line in enumerate(lines):
        yield line
        yield ",\n" if i < last else "\n"
    yield "]}\n"


def load(path: Path) -> Loaded:
    """Requests, responses (bodies as bytes) and metadata of a JSON cassette."""
    with path.open("rb", buffering=0) as f:
        head = f.read(_MAX_HEADER)
        newline = head.find(b"\n")
        header = _header(head[:newline]) if newline >= 0 else None
        if header is not None:
            f.seek(newline + 1)
            loaded = _load_lines(_Lines(f), header)
            if loaded is not None:
                return loaded
        f.seek(0)
        text = f.read()
    return _load_document(text)


class _Lines:
    """The lines of a file as (buffer, start, end), read into one reused buffer.

    Reading lines of megabytes with `readline` costs a copy per line plus fresh
    pages for each; here the file's bytes are copied once, into the buffer, and
    a body once more, out of it. A yielded line is valid until the next call.
    """

    def __init__(self, f: Any, block: int = 8 << 20) -> None:
        self._f = f
        self._buf = bytearray(block)
        self._start = 0
        self._filled = 0

    def next(self) -> tuple[bytearray, int, int] | None:
        buf = self._buf
        scanned = self._start
        while True:
            newline = buf.find(b"\n", scanned, self._filled)
            if newline >= 0:
                start, self._start = self._start, newline + 1
                return buf, start, newline + 1
            if self._start > 0:  # keep the partial line, drop what was read
                kept = self._filled - self._start
                buf[:kept] = buf[self._start : self._filled]
                self._filled, self._start = kept, 0
            if self._filled == len(buf):
                buf.extend(bytes(len(buf)))
            scanned = self._filled
            with memoryview(buf) as free:
                read = self._f.readinto(free[self._filled :])
            if not read:
                if self._filled > self._start:
                    start, self._start = self._start, self._filled
                    return buf, start, self._filled
                return None
            self._filled += read


def _header(first: bytes) -> dict[str, Any] | None:
    first = first.rstrip()
    if not first.endswith(b'"interactions": ['):
        return None
    try:
        header = json.loads(first + b"]}")
    except ValueError:
        return None
    return header if isinstance(header, dict) and header.get("allm_layout") == LAYOUT else None


def _load_lines(lines: _Lines, header: dict[str, Any]) -> Loaded | None:
    """Our own layout; None when the file turns out not to follow it."""
    _check_version(header)
    requests: list[Request] = []
    responses: list[dict[str, Any]] = []
    while (line := lines.next()) is not None:
        buf, start, end = line
        if buf.startswith(b"]}", start, end):
            return requests, responses, dict(header.get("metadata") or {})
        for trailer in (b"\n", b"\r", b","):
            if buf.endswith(trailer, 0, end):
                end -= 1
        interaction = _parse_line(buf, start, end)
        if interaction is None:
            return None
        requests.append(request_from_dict(interaction["request"]))
        responses.append(response_from_dict(interaction["response"]))
    return None  # no closing line: not our layout (or not a whole file)


def _parse_line(buf: bytearray, start: int, end: int) -> dict[str, Any] | None:
    try:
        if buf[end - 4 : end] == b'"}}}':
            # The first `"string": "` of the line is the response body's: the request
            # body is a plain string and header values are lists, and inside a JSON
            # string literal the pattern cannot occur (its quotes would be escaped).
            key = buf.find(_BODY_KEY, start, end)
            if key >= 0:
                value_start = key + len(_BODY_KEY)
                skeleton = json.loads(bytes(buf[start : value_start - 1]) + _SENTINEL_JSON + b"}}}")
                body = skeleton["response"]["body"]
                if body.get("string") == _SENTINEL:
                    body["string"] = _unescape(buf, value_start, end - 4)
                    return dict(skeleton)
        parsed = json.loads(bytes(buf[start:end]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return parsed if isinstance(parsed, dict) and "request" in parsed and "response" in parsed else None


def _unescape(data: bytearray, begin: int, end: int) -> bytes:
    """The bytes that the inside of a JSON string literal, data[begin:end], stands for.

    One pass over the bytes, copying them once; a body is never decoded to str
    and encoded back. Bodies with many or \\u escapes take json's own decoder.
    """
    with memoryview(data) as view:
        pieces: list[bytes | memoryview] = []
        pos = begin
        for _ in range(_MAX_PIECEWISE_ESCAPES):
            i = data.find(b"\\", pos, end)
            if i < 0:
                pieces.append(view[pos:end])
                out = b"".join(pieces)
                for piece in pieces:
                    if isinstance(piece, memoryview):
                        piece.release()
                return out
            escape = _SIMPLE_ESCAPES.get(bytes(data[i + 1 : i + 2]))
            if escape is None:
                break
            pieces += (view[pos:i], escape)
            pos = i + 2
        for piece in pieces:
            if isinstance(piece, memoryview):
                piece.release()
    text: str = json.loads(b'"' + bytes(data[begin:end]) + b'"')
    return text.encode("utf-8")


def _load_document(text: bytes) -> Loaded:
    """Any JSON cassette (vcrpy's own layout included), parsed whole."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CassetteFormatError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise CassetteFormatError("not a vcrpy cassette (no 'interactions' list)")
    _check_version(data)
    requests = [request_from_dict(i["request"]) for i in data["interactions"]]
    responses = [response_from_dict(i["response"]) for i in data["interactions"]]
    return requests, responses, dict(data.get("metadata") or {})


def _check_version(data: dict[str, Any]) -> None:
    if data.get("version") != VERSION:
        raise CassetteFormatError(
            f"cassette format version {data.get('version')!r} is not supported (this reads version {VERSION})"
        )


def request_from_dict(raw: dict[str, Any]) -> Request:
    raw = dict(raw)
    raw["body"] = request_body_from_text(raw.get("body"))
    return Request._from_dict(raw)


def response_from_dict(raw: dict[str, Any]) -> dict[str, Any]:
    body = dict(raw.get("body") or {})
    value = body.get("string")
    if body.pop("allm_encoding", None) == "base64" and value is not None:
        value = base64.b64decode(value)
    elif isinstance(value, str):
        value = value.encode("utf-8")
    body["string"] = value
    return {**raw, "body": body}
