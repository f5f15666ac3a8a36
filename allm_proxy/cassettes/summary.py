"""What a recorded image call was, in words: model, prompt, input files, images returned.

Knows the OpenAI Images wire (JSON, multipart, SSE events) and Gemini's
generateContent (JSON and SSE); used by miss messages and the CLI.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..types import b64decode_lenient, sniff_mime
from ..wire import sse
from ..wire.jsonbytes import loads
from ..wire.multipart import Part, is_multipart, parse_multipart
from .bodies import as_bytes, json_data

if TYPE_CHECKING:
    from vcr.request import Request

PROMPT_EXCERPT = 60
_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")


@dataclass
class RequestSummary:
    method: str
    uri: str
    path: str
    model: str | None = None
    prompt: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Part] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        """The summary as JSON data (files by part name, size and sha256, no bytes)."""
        import hashlib

        files = [
            {
                "part": f.name,
                "filename": f.filename,
                "content_type": f.content_type,
                "bytes": len(f.data),
                "sha256": hashlib.sha256(f.data).hexdigest(),
            }
            for f in self.files
        ]
        return {
            "method": self.method,
            "uri": self.uri,
            "model": self.model,
            "prompt": self.prompt,
            "fields": dict(self.fields),
            "files": files,
        }

    def line(self) -> str:
        out = f"{self.method} {self.uri}"
        if self.model:
            out += f" model={self.model}"
        if self.prompt is not None:
            out += f" prompt={_excerpt(self.prompt)!r}"
        if self.files:
            out += f" files={len(self.files)}"
        return out


def summarize_request(request: Request) -> RequestSummary:
    summary = RequestSummary(method=request.method, uri=request.uri, path=request.path or "/")
    gemini = _GEMINI_MODEL.search(summary.path)
    if gemini:
        summary.model = gemini.group(1)
    body = as_bytes(request.body)
    content_type = request.headers.get("content-type")
    if not body:
        return summary
    if is_multipart(content_type):
        try:
            parts = parse_multipart(content_type, body, recorded=True)
        except ValueError:
            return summary
        for part in parts:
            if part.is_file:
                summary.files.append(part)
            else:
                summary.fields[part.name] = part.data.decode("utf-8", "replace")
        summary.model = summary.fields.get("model", summary.model)
        summary.prompt = summary.fields.get("prompt")
        return summary
    try:
        data = json_data(content_type, body)
    except ValueError:
        return summary
    if isinstance(data, dict):
        summary.model = str(data["model"]) if "model" in data else summary.model
        if isinstance(data.get("prompt"), str):
            summary.prompt = data["prompt"]
        summary.fields = {k: str(v) for k, v in data.items() if isinstance(v, str | int | float | bool)}
        texts, files = _gemini_parts(data)
        if texts and summary.prompt is None:
            summary.prompt = " ".join(texts)
        summary.files += files
    return summary


def _gemini_parts(data: dict[str, Any]) -> tuple[list[str], list[Part]]:
    texts: list[str] = []
    files: list[Part] = []
    contents = [c for c in data.get("contents") or [] if isinstance(c, dict)]
    for content in contents:
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                files.append(
                    Part(
                        name="inlineData",
                        data=_decode(inline["data"]),
                        filename="inline",
                        content_type=inline.get("mimeType") or inline.get("mime_type"),
                    )
                )
    return texts, files


def response_images(response: dict[str, Any]) -> list[bytes]:
    """Every image a recorded response carries (b64 JSON, SSE events, or an image body)."""
    body = response.get("body", {}).get("string") or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    content_type = content_type_of(response)
    if content_type.startswith("image/") or sniff_mime(body[:16]) is not None:
        return [body]
    if sse.is_event_stream(content_type):
        return [img for event in event_payloads(body) for img in _images_in(_json_or_none(event))]
    return _images_in(_json_or_none(body))


def content_type_of(response: dict[str, Any]) -> str:
    for name, values in (response.get("headers") or {}).items():
        if name.lower() == "content-type" and values:
            return str(values[0]).lower()
    return ""


def event_payloads(body: bytes) -> Iterator[bytes]:
    """The `data:` payload of each server-sent event of a recorded stream, `[DONE]` left out."""
    for event in sse.split(body):
        if event.data and not event.is_done:
            yield event.data


def _json_or_none(body: bytes) -> Any:
    try:
        # The codec's parser: the journal settles every relayed 3 MB answer with this
        return loads(body)
    except ValueError:
        return None


def _images_in(data: Any) -> list[bytes]:
    """b64 images anywhere in an OpenAI or Gemini answer."""
    out: list[bytes] = []
    stack = [data]
    for _ in range(100_000):  # bounded walk of one answer
        if not stack:
            break
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("b64_json"), str):
                out.append(_decode(item["b64_json"]))
            inline = item.get("inlineData") or item.get("inline_data")
            if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                out.append(_decode(inline["data"]))
            stack += [v for k, v in item.items() if k not in ("b64_json", "inlineData", "inline_data")]
        elif isinstance(item, list):
            stack += reversed(item)
    return out


def _decode(text: str) -> bytes:
    try:
        return b64decode_lenient(text)
    except (ValueError, binascii.Error):
        return base64.b64decode(text + "==", validate=False)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PROMPT_EXCERPT else text[: PROMPT_EXCERPT - 3] + "..."
