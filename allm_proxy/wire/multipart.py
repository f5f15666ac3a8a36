"""Parse a multipart/form-data body into its parts, in wire order.

A pure function over bytes (python-multipart does the tokenising), so the
codec can be tested without a server and fuzzed without sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 1000


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass
class Part:
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


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {kind.decode('latin-1')!r}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    return boundary


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """All parts of the body, text and files, in the order they were sent."""
    boundary = boundary_of(content_type)
    parts: list[Part] = []
    chunks: list[bytes] = []
    headers: dict[bytes, bytes] = {}
    field_name: list[bytes] = []
    field_value: list[bytes] = []
    state = {"ended": False}

    def on_part_begin() -> None:
        chunks.clear()
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(field_name).lower()] = b"".join(field_value)
        field_name.clear()
        field_value.clear()

    def on_part_end() -> None:
        if len(parts) >= MAX_PARTS:
            raise MultipartError(f"too many form parts (more than {MAX_PARTS})")
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartError("a part has no Content-Disposition: form-data; name=...")
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type")
        parts.append(
            Part(
                name=options[b"name"].decode("utf-8", "replace"),
                data=b"".join(chunks),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=content_type.decode("latin-1") if content_type else None,
            )
        )

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(f"malformed multipart body: {exc}") from None
    if not state["ended"]:
        raise MultipartError("the multipart body ends before its closing boundary (truncated upload?)")
    return parts
