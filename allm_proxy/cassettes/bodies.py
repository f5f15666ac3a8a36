"""Request and response bodies as the cassette layer sees them: JSON data, form parts, bytes.

Pure functions over bytes. Matching uses `parse_form` and `json_data` to compare
bodies as data; the JSON serializer uses `as_text` / `from_text` to store binary
bodies in a text-only file format.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from ..wire.multipart import Part

# A non-multipart binary request body in a JSON cassette (rare: the image APIs send
# JSON or multipart) is stored as this prefix plus base64; the loader reverses it.
BINARY_PREFIX = "allm-base64:"
CTE_BASE64 = b"Content-Transfer-Encoding: base64"

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAM = re.compile(rb';\s*(name|filename)="([^"]*)"', re.IGNORECASE)


# One multipart part, its content already decoded (base64 parts included): the wire codec's type.
FormPart = Part


def as_bytes(body: Any) -> bytes:
    """A vcrpy body (None, str, bytes, a file-like, a list of chunks) as bytes."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if hasattr(body, "read"):
        return bytes(body.read())
    return b"".join(c if isinstance(c, bytes) else str(c).encode("utf-8") for c in body)


def boundary_of(content_type: str | None) -> bytes | None:
    if not content_type or "multipart/form-data" not in content_type.lower():
        return None
    match = _BOUNDARY.search(content_type)
    return match.group(1).encode("latin-1") if match else None


def _segments(boundary: bytes, body: bytes) -> tuple[list[bytes], bool]:
    """The raw segments between delimiters (first is the preamble) and whether the body closed."""
    pieces = body.split(b"--" + boundary)
    closed = len(pieces) > 1 and pieces[-1].startswith(b"--")
    return pieces, closed


def parse_form(content_type: str | None, body: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data body in wire order; ValueError if it is not one."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise ValueError("not multipart/form-data (no boundary)")
    pieces, closed = _segments(boundary, body)
    if not closed:
        raise ValueError("multipart body has no closing delimiter")
    parts: list[FormPart] = []
    for segment in pieces[1:-1]:
        head, sep, content = segment.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header block")
        content = content.removesuffix(b"\r\n")
        params = {k.decode().lower(): v.decode("utf-8", "replace") for k, v in _PARAM.findall(head)}
        if "name" not in params:
            raise ValueError("multipart part without a name")
        type_line = re.search(rb"(?im)^content-type:\s*([^\r\n]+)", head)
        if re.search(rb"(?im)^content-transfer-encoding:\s*base64\s*$", head):
            try:
                content = base64.b64decode(content)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"part {params['name']!r} is not valid base64: {exc}") from None
        parts.append(
            FormPart(
                name=params["name"],
                data=content,
                filename=params.get("filename"),
                content_type=type_line.group(1).decode("latin-1").strip() if type_line else None,
            )
        )
    return parts


def json_data(content_type: str | None, body: bytes) -> Any:
    """The body as JSON data; ValueError when it is not JSON."""
    kind = (content_type or "").lower()
    if "json" not in kind and body.lstrip()[:1] not in (b"{", b"["):
        raise ValueError("not a JSON body")
    return json.loads(body)


def _rewrite_parts(content_type: str | None, body: bytes,
                   rewrite: Callable[[bytes, bytes], tuple[bytes, bytes]]) -> bytes | None:
    """The multipart body with each part's (head, content) replaced by `rewrite`; None if it is not one."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    pieces, closed = _segments(boundary, body)
    if not closed:
        return None
    out = [pieces[0]]
    for segment in pieces[1:-1]:
        head, sep, content = segment.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        head, content = rewrite(head, content.removesuffix(b"\r\n"))
        out.append(b"\r\n" + head + sep + content + b"\r\n")
    out.append(pieces[-1])
    return (b"--" + boundary).join(out)


def _to_base64_part(head: bytes, content: bytes) -> tuple[bytes, bytes]:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return head + b"\r\n" + CTE_BASE64, base64.b64encode(content)
    return head, content


def _from_base64_part(head: bytes, content: bytes) -> tuple[bytes, bytes]:
    if head.endswith(b"\r\n" + CTE_BASE64):
        return head.removesuffix(b"\r\n" + CTE_BASE64), base64.b64decode(content)
    return head, content


def _text_multipart(content_type: str | None, body: bytes) -> str | None:
    """The multipart body with binary parts re-encoded as base64 parts (still valid multipart)."""
    rewritten = _rewrite_parts(content_type, body, _to_base64_part)
    try:
        return None if rewritten is None else rewritten.decode("utf-8")
    except UnicodeDecodeError:
        return None


def wire_multipart(content_type: str | None, body: bytes) -> bytes:
    """Reverse of `_text_multipart`: base64 parts it made go back to their bytes, to send a body again.

    Bodies without such parts come back unchanged (same boundary, same bytes).
    """
    if CTE_BASE64 not in body:
        return body
    rewritten = _rewrite_parts(content_type, body, _from_base64_part)
    return body if rewritten is None else rewritten


def request_body_text(content_type: str | None, body: bytes | None) -> str | None:
    """A request body as text for a text-only cassette format.

    UTF-8 bodies are kept as they are; multipart bodies with binary files get
    base64 parts (`parse_form` decodes them, so matching sees the same files);
    anything else becomes `BINARY_PREFIX` + base64.
    """
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = _text_multipart(content_type, body)
    if text is not None:
        return text
    return BINARY_PREFIX + base64.b64encode(body).decode("ascii")


def request_body_from_text(text: str | bytes | None) -> bytes | None:
    """Reverse of `request_body_text` (base64 multipart parts stay base64: they match as files)."""
    if text is None:
        return None
    if isinstance(text, bytes):
        return text
    if text.startswith(BINARY_PREFIX):
        return base64.b64decode(text[len(BINARY_PREFIX):])
    return text.encode("utf-8")


def response_body_text(body: bytes) -> tuple[str, str | None]:
    """(text, encoding): UTF-8 bodies as they are, others base64 with encoding "base64"."""
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"
