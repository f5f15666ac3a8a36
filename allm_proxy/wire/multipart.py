"""multipart/form-data, both ways: the one parser and the one encoder of the proxy.

Pure functions over bytes (python-multipart does the tokenising), so the
codec can be tested without a server and fuzzed without sockets. One parser
for every reader means a body reads the same everywhere: the server reading
a client's upload, and the cassette layer matching, summarising and checking
a recorded one. Parameters follow RFC 7578: `name` quoted or bare, `\\"`
unescaped, single quotes kept as part of the value, and the RFC 5987
`filename*=` form ignored (section 4.2 forbids it; `filename=` is what counts).

Two modes of the same parser:

- strict (`parse_multipart`), for client bodies: at most `MAX_PARTS` parts,
  a part's `Content-Transfer-Encoding` is not applied (RFC 7578 deprecates it).
- recorded (`parse_multipart(..., recorded=True)`), for bodies read back from
  a cassette: parts stored as `Content-Transfer-Encoding: base64` (how a
  text cassette keeps binary uploads, see `with_base64_parts`) are decoded,
  and there is no limit on parts.

Either raises `MultipartError` (a `ValueError`) for a body that is not
well-formed multipart/form-data.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 1000
_CTE = b"content-transfer-encoding"
T = TypeVar("T")


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass
class Part:
    """One part, its content decoded; `filename` None means a text field."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"the form field {self.name!r} is not valid UTF-8 text") from None


@dataclass
class _RawPart:
    """A part as it arrived: its header lines in order, its content untouched."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The value of header `name` (lower case); the last one when it repeats."""
        found = None
        for key, value in self.headers:
            if key.lower() == name:
                found = value
        return found


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "multipart/form-data"


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {kind.decode('latin-1')!r}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    return boundary


def parse_multipart(content_type: str | None, body: bytes | Iterable[bytes], *, recorded: bool = False) -> list[Part]:
    """All parts of the body (whole, or its pieces in order), text and files, in the order they were sent."""
    return _split(
        boundary_of(content_type or ""),
        body,
        lambda raw: _part(raw, recorded=recorded),
        limit=None if recorded else MAX_PARTS,
    )


def _part(raw: _RawPart, *, recorded: bool) -> Part:
    part = part_head(raw.headers)
    data = raw.data
    if recorded and (raw.header(_CTE) or b"").strip().lower() == b"base64":
        try:
            data = base64.b64decode(data)
        except (binascii.Error, ValueError) as exc:
            raise MultipartError(f"part {part.name!r} is not valid base64: {exc}") from None
    part.data = data
    return part


def part_head(headers: list[tuple[bytes, bytes]]) -> Part:
    """A part's name, filename and content type from its header lines (its `data` still empty)."""
    raw = _RawPart(headers)
    disposition, options = parse_options_header(raw.header(b"content-disposition") or b"")
    if disposition != b"form-data" or b"name" not in options:
        raise MultipartError("a part has no Content-Disposition: form-data; name=...")
    filename = options.get(b"filename")
    content_type = raw.header(b"content-type")
    return Part(
        name=options[b"name"].decode("utf-8", "replace"),
        data=b"",
        filename=filename.decode("utf-8", "replace") if filename is not None else None,
        content_type=content_type.decode("latin-1").strip() if content_type else None,
    )


class MultipartStream:
    """The parser driven as the body arrives: `feed` each chunk, then `finish`.

    It calls `on_begin(headers)` when a part's header lines are complete,
    `on_data(view)` for each piece of its content (a view into the fed chunk,
    valid during the call only: copy what you keep) and `on_end()` when the part
    ends. `feed` and `finish` raise `MultipartError`; so does whatever a callback
    raises as one. The whole-body functions of this module run on it too.
    """

    def __init__(
        self,
        boundary: bytes,
        *,
        on_begin: Callable[[list[tuple[bytes, bytes]]], None],
        on_data: Callable[[memoryview], None],
        on_end: Callable[[], None],
        limit: int | None = MAX_PARTS,
    ) -> None:
        self.ended = False
        self.parts = 0
        headers: list[tuple[bytes, bytes]] = []
        field_name: list[bytes] = []
        field_value: list[bytes] = []

        def on_part_begin() -> None:
            headers.clear()

        def on_header_field(data: bytes, start: int, end: int) -> None:
            field_name.append(data[start:end])

        def on_header_value(data: bytes, start: int, end: int) -> None:
            field_value.append(data[start:end])

        def on_header_end() -> None:
            headers.append((b"".join(field_name), b"".join(field_value)))
            field_name.clear()
            field_value.clear()

        def on_headers_finished() -> None:
            if limit is not None and self.parts >= limit:
                raise MultipartError(f"too many form parts (more than {limit})")
            self.parts += 1
            on_begin(list(headers))

        def on_part_data(data: bytes, start: int, end: int) -> None:
            on_data(memoryview(data)[start:end])

        def on_part_end() -> None:
            on_end()

        def on_stream_end() -> None:
            self.ended = True

        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_end": on_stream_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from None

    def finish(self) -> None:
        """The body is over: raise unless it ended with its closing boundary."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from None
        if not self.ended:
            raise MultipartError("the multipart body ends before its closing boundary (truncated upload?)")


def _split(
    boundary: bytes, body: bytes | Iterable[bytes], finish: Callable[[_RawPart], T], *, limit: int | None
) -> list[T]:
    """`finish(part)` of each part, called as soon as the part ends (a bad part fails at once)."""
    parts: list[T] = []
    current = _RawPart()
    chunks: list[bytes] = []

    def on_begin(headers: list[tuple[bytes, bytes]]) -> None:
        nonlocal current
        current = _RawPart(headers)
        chunks.clear()

    def on_end() -> None:
        current.data = b"".join(chunks)
        parts.append(finish(current))

    stream = MultipartStream(
        boundary, on_begin=on_begin, on_data=lambda view: chunks.append(bytes(view)), on_end=on_end, limit=limit
    )
    for piece in [body] if isinstance(body, bytes) else body:
        stream.feed(piece)
    stream.finish()
    return parts


# -- encoding -------------------------------------------------------------------------


def encode_multipart(parts: Iterable[Part], *, boundary: str | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) for `parts`, in order; a fresh random boundary unless one is given.

    Each file part gets a Content-Type: its own, else application/octet-stream.
    The bytes go in as they are: one copy, in the final join.
    """
    boundary = boundary or secrets.token_hex(16)
    delimiter = b"--" + boundary.encode("ascii") + b"\r\n"
    chunks: list[bytes] = []
    for part in parts:
        head = b'Content-Disposition: form-data; name="' + _quote(part.name) + b'"'
        if part.filename is not None:
            head += b'; filename="' + _quote(part.filename) + b'"'
            content_type = part.content_type or "application/octet-stream"
            head += b"\r\nContent-Type: " + content_type.encode("latin-1", "replace")
        chunks += [delimiter, head, b"\r\n\r\n", part.data, b"\r\n"]
    chunks.append(b"--" + boundary.encode("ascii") + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _quote(value: str) -> bytes:
    """Escape a name for a Content-Disposition parameter as browsers and httpx do."""
    escaped = value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode()


def with_base64_parts(content_type: str | None, body: bytes) -> bytes | None:
    """The same multipart body with each non-UTF-8 part re-sent as a base64 part; None if not multipart.

    For text-only cassette formats: the result is UTF-8 and still multipart
    (same boundary, same headers, in order), and `parse_multipart(...,
    recorded=True)` reads back the original bytes of every part.
    """

    def to_base64(headers: list[tuple[bytes, bytes]], data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return [*headers, (b"Content-Transfer-Encoding", b"base64")], base64.b64encode(data)
        return headers, data

    return _rewrite_parts(content_type, body, to_base64)


def without_base64_parts(content_type: str | None, body: bytes) -> bytes:
    """The inverse of `with_base64_parts`: the body as the client sent it, to send it again.

    A body with no base64 part (or no multipart body) comes back unchanged.
    """
    if b"base64" not in body:
        return body

    def from_base64(headers: list[tuple[bytes, bytes]], data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        kept = [(k, v) for k, v in headers if not (k.lower() == _CTE and v.strip().lower() == b"base64")]
        return (kept, base64.b64decode(data)) if len(kept) < len(headers) else (headers, data)

    rewritten = _rewrite_parts(content_type, body, from_base64)
    return body if rewritten is None else rewritten


PartRewrite = Callable[[list[tuple[bytes, bytes]], bytes], tuple[list[tuple[bytes, bytes]], bytes]]


def _rewrite_parts(content_type: str | None, body: bytes, rewrite: PartRewrite) -> bytes | None:
    """The body with each part's headers and data passed through `rewrite`; None if not multipart."""
    try:
        boundary = boundary_of(content_type or "")
        raw_parts = _split(boundary, body, lambda raw: raw, limit=None)
    except MultipartError:
        return None
    chunks: list[bytes] = []
    for raw in raw_parts:
        headers, data = rewrite(list(raw.headers), raw.data)
        chunks.append(b"--" + boundary + b"\r\n")
        chunks += [key + b": " + value + b"\r\n" for key, value in headers]
        chunks += [b"\r\n", data, b"\r\n"]
    chunks.append(b"--" + boundary + b"--\r\n")
    return b"".join(chunks)
