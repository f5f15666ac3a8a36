"""Cassettes for people: a line per interaction, one interaction in full, its images, what is wrong.

The work behind ``allm-proxy cassettes list|show|verify``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image as PILImage
from vcr.request import Request

from ..pricing import PriceTable
from ..types import sniff_mime
from ..wire import sse
from ..wire.multipart import is_multipart, parse_multipart
from .bodies import as_bytes, json_data
from .filters import SECRET_HEADERS, SECRET_QUERY
from .formats import FORMATS, format_for
from .summary import content_type_of, event_payloads, response_images, summarize_request

LONG_STRING = 120
# Shapes of provider keys that must never be on disk (OpenAI sk-..., Google AIza...).
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"
    r"|Bearer\s+(?!<redacted>)[A-Za-z0-9._-]{16,}"
)
# Image data (base64 runs far longer than any key) is left out of the key search:
# random base64 contains key-like substrings.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_=-]{400,}")


@dataclass
class Entry:
    index: int
    request: Request
    response: dict[str, Any]


def read(path: Path) -> list[Entry]:
    requests, responses, _ = format_for(path).load(path)
    return [Entry(i, q, r) for i, (q, r) in enumerate(zip(requests, responses, strict=True))]


def image_label(data: bytes) -> str:
    """'1024x1024 png', read from the header only."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return f"{image.width}x{image.height} {(image.format or '?').lower()}"
    except Exception:  # any unreadable image is just labelled so
        return f"unreadable image ({len(data)} bytes)"


def line(entry: Entry) -> str:
    summary = summarize_request(entry.request)
    images = response_images(entry.response)
    labels = ", ".join(image_label(i) for i in images)
    status = entry.response.get("status", {}).get("code")
    text = f"#{entry.index} {summary.method} {summary.path}"
    if summary.model:
        text += f" model={summary.model}"
    if summary.prompt is not None:
        text += f" prompt={_excerpt(summary.prompt)!r}"
    return text + f" -> {status} images={len(images)}" + (f" ({labels})" if labels else "")


def show(entry: Entry) -> str:
    """One interaction in full, long strings (base64 images) shortened."""
    request, response = entry.request, entry.response
    out = [f"#{entry.index} {request.method} {request.uri}", "request headers:"]
    out += [f"  {k}: {v}" for k, v in request.headers.items()]
    summary = summarize_request(request)
    out.append("request body:")
    out += _indent(_body_text(request.headers.get("content-type"), as_bytes(request.body)))
    for n, part in enumerate(summary.files):
        out.append(
            f"  file {n}: {part.name} {part.filename or ''} {len(part.data)} bytes "
            f"sha256:{hashlib.sha256(part.data).hexdigest()[:16]} {image_label(part.data)}"
        )
    status = response.get("status", {})
    out.append(f"response: {status.get('code')} {status.get('message') or ''}".rstrip())
    out += [f"  {k}: {', '.join(map(str, v))}" for k, v in (response.get("headers") or {}).items()]
    out.append("response body:")
    out += _indent(_body_text(content_type_of(response), as_bytes(response.get("body", {}).get("string"))))
    for n, image in enumerate(response_images(response)):
        out.append(f"  image {n}: {image_label(image)}, {len(image)} bytes")
    return "\n".join(out)


def extract(entry: Entry, directory: Path) -> list[Path]:
    """Write the interaction's input files and returned images to `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    inputs = [p.data for p in summarize_request(entry.request).files]
    for role, images in (("input", inputs), ("output", response_images(entry.response))):
        for n, data in enumerate(images):
            mime = sniff_mime(data)
            suffix = mime.split("/")[-1] if mime else "bin"
            path = directory / f"{entry.index}-{role}-{n}.{suffix}"
            path.write_bytes(data)
            written.append(path)
    return written


def cassette_files(path: Path) -> list[Path]:
    """`path` itself, or every cassette under a directory (temp files of interrupted writes left out)."""
    if path.is_dir():
        # Temp files of interrupted writes end in .allm-tmp, so the suffix test leaves them out.
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS and p.is_file())
    return [path]


def verify(path: Path) -> list[str]:
    """Everything wrong with one cassette: parse errors, secrets, bodies that do not decode, bad images."""
    try:
        entries = read(path)
    except Exception as exc:  # any failure to read is the problem to report
        return [f"{path}: does not parse: {exc}"]
    problems: list[str] = []
    text = _BASE64_RUN.sub("", path.read_text(encoding="utf-8", errors="replace"))
    for match in _KEY_SHAPES.finditer(text):
        problems.append(f"{path}: something shaped like a key is stored: {match.group(0)[:10]}...")
    for entry in entries:
        where = f"{path} #{entry.index}"
        problems += [f"{where}: {p}" for p in _secrets(entry)]
        problems += [f"{where}: {p}" for p in _bodies(entry)]
        inputs = [p.data for p in summarize_request(entry.request).files]
        for role, images in (("input", inputs), ("response", response_images(entry.response))):
            for n, image in enumerate(images):
                problem = _image_problem(image)
                if problem:
                    problems.append(f"{where}: {role} image {n} {problem}")
    return problems


def _secrets(entry: Entry) -> list[str]:
    found = [f"request header {k} is stored" for k in entry.request.headers if k.lower() in SECRET_HEADERS]
    found += [
        f"response header {k} is stored" for k in entry.response.get("headers") or {} if k.lower() in SECRET_HEADERS
    ]
    query = parse_qsl(entry.request.parsed_uri.query, keep_blank_values=True)
    found += [f"query parameter {k}= is stored" for k, _ in query if k in SECRET_QUERY]
    return found


def _bodies(entry: Entry) -> list[str]:
    problems: list[str] = []
    request_type = entry.request.headers.get("content-type")
    request_body = as_bytes(entry.request.body)
    problem = _body_problem(request_type, request_body)
    if problem:
        problems.append(f"request body {problem}")
    response_type = content_type_of(entry.response)
    body = as_bytes(entry.response.get("body", {}).get("string"))
    if sse.is_event_stream(response_type):
        for n, event in enumerate(event_payloads(body)):
            if event.lstrip()[:1] in (b"{", b"[") and _body_problem("application/json", event):
                problems.append(f"response event {n} is not valid JSON")
    else:
        problem = _body_problem(response_type, body)
        if problem:
            problems.append(f"response body {problem}")
    return problems


def _body_problem(content_type: str | None, body: bytes) -> str | None:
    if not body:
        return None
    kind = (content_type or "").lower()
    try:
        if is_multipart(content_type):
            parse_multipart(content_type, body, recorded=True)
        elif "json" in kind:
            json_data(content_type, body)
    except ValueError as exc:
        return f"does not decode ({exc})"
    return None


def _image_problem(data: bytes) -> str | None:
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types for broken images
        return f"does not open ({type(exc).__name__}: {exc})"
    return None


def _body_text(content_type: str | None, body: bytes) -> str:
    if not body:
        return "(empty)"
    kind = (content_type or "").lower()
    if is_multipart(content_type):
        try:
            parts = parse_multipart(content_type, body, recorded=True)
        except ValueError:
            return f"({len(body)} bytes, not well-formed multipart)"
        return "\n".join(
            f"{p.name}: "
            + (
                f"<file {p.filename!r}, {len(p.data)} bytes>"
                if p.is_file
                else _shorten(p.data.decode("utf-8", "replace"))
            )
            for p in parts
        )
    try:
        return json.dumps(_shorten_strings(json_data(content_type, body)), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    if sse.is_event_stream(kind):
        return "\n".join(_shorten(e.decode("utf-8", "replace")) for e in event_payloads(body))
    try:
        return _shorten(body.decode("utf-8"))
    except UnicodeDecodeError:
        return f"({len(body)} bytes of binary, {sniff_mime(body) or 'unknown type'})"


def _shorten_strings(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _shorten_strings(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_shorten_strings(v) for v in data]
    return _shorten(data) if isinstance(data, str) else data


def _shorten(text: str) -> str:
    return text if len(text) <= LONG_STRING else f"{text[:40]}...<{len(text)} chars>"


def _indent(text: str) -> list[str]:
    return ["  " + row for row in text.splitlines()]


def _excerpt(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cost(entry: Entry, prices: PriceTable) -> float | None:
    """What one recorded answer cost (what replaying it saves), from its usage or images; None: no price.

    `prices` is a `pricing.PriceTable`. OpenAI answers carry ``usage``; Gemini answers ``usageMetadata``.
    """
    from ..adapters.gemini.response import usage_from_metadata
    from ..types import Usage

    if entry.response.get("status", {}).get("code") != 200:
        return None
    summary = summarize_request(entry.request)
    body = as_bytes(entry.response.get("body", {}).get("string"))
    try:
        data = json_data(content_type_of(entry.response), body)
    except ValueError:
        return None  # a stream or an image: no usage to read
    usage = None
    if isinstance(data, dict) and isinstance(data.get("usage"), dict):
        usage = Usage.from_dict(data["usage"])
    elif isinstance(data, dict) and isinstance(data.get("usageMetadata"), dict):
        usage = usage_from_metadata(data["usageMetadata"])
    fields = summary.fields
    quality = (data.get("quality") if isinstance(data, dict) else None) or fields.get("quality")
    size = (data.get("size") if isinstance(data, dict) else None) or fields.get("size")
    return prices.cost(
        summary.model,
        usage=usage,
        images=len(response_images(entry.response)),
        quality=str(quality) if quality else None,
        size=str(size) if size else None,
    )


def total_cost(entries: list[Entry], prices: PriceTable) -> float | None:
    """The sum over the entries that have a price; None when none has."""
    costs = [c for c in (cost(e, prices) for e in entries) if c is not None]
    return sum(costs) if costs else None
