"""Request and response bodies as the cassette layer sees them: JSON data, form parts, bytes.

Pure functions over bytes. Matching compares bodies as data: JSON with
`json_data`, multipart with the wire's own parser in its recorded mode
(`wire.multipart.parse_multipart(..., recorded=True)`), so a body parses here
exactly as the server parsed it. The JSON serializer uses `request_body_text`
/ `request_body_from_text` to store binary bodies in a text-only file format.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..wire.multipart import with_base64_parts

# A non-multipart binary request body in a JSON cassette (rare: the image APIs send
# JSON or multipart) is stored as this prefix plus base64; the loader reverses it.
BINARY_PREFIX = "allm-base64:"


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


def json_data(content_type: str | None, body: bytes) -> Any:
    """The body as JSON data; ValueError when it is not JSON."""
    kind = (content_type or "").lower()
    if "json" not in kind and body.lstrip()[:1] not in (b"{", b"["):
        raise ValueError("not a JSON body")
    return json.loads(body)


def request_body_text(content_type: str | None, body: bytes | None) -> str | None:
    """A request body as text for a text-only cassette format.

    UTF-8 bodies are kept as they are; multipart bodies with binary files get
    base64 parts (the recorded mode of `parse_multipart` decodes them, so matching sees the same files);
    anything else becomes `BINARY_PREFIX` + base64.
    """
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    encoded = with_base64_parts(content_type, body)
    if encoded is not None:
        try:
            return encoded.decode("utf-8")
        except UnicodeDecodeError:
            pass  # a header that is not UTF-8 (a Latin-1 filename): store the whole body as base64
    return BINARY_PREFIX + base64.b64encode(body).decode("ascii")


def request_body_from_text(text: str | bytes | None) -> bytes | None:
    """Reverse of `request_body_text` (base64 multipart parts stay base64: they match as files)."""
    if text is None:
        return None
    if isinstance(text, bytes):
        return text
    if text.startswith(BINARY_PREFIX):
        return base64.b64decode(text[len(BINARY_PREFIX) :])
    return text.encode("utf-8")


def response_body_text(body: bytes) -> tuple[str, str | None]:
    """(text, encoding): UTF-8 bodies as they are, others base64 with encoding "base64"."""
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"
