"""One generateContent answer (docs/spec/gemini-images.md §4) as an image, its text and its usage.

Google answers safety blocks with HTTP 200, labels JPEG bytes `image/png`,
and sends interim "thought" images before the final one, so the parser trusts
only the bytes and the structure: the last non-thought image part is the
answer, and an answer without one says why (safety, or some other reason).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import NoImageGeneratedError, UpstreamError
from ...types import Usage, b64decode_lenient, sniff_mime
from .errors import SAFETY_FINISH_REASONS, safety_error


@dataclass
class GeminiResult:
    """What one successful call made: the image bytes, the model's words, the tokens."""

    data: bytes
    mime_type: str
    text: str | None
    usage: Usage | None
    finish_reason: str | None


def parse_generate_response(body: bytes, *, model: str, safety_code: str) -> GeminiResult:
    """The final image of a 200 answer, or the `ProxyError` that explains why there is none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        raise UpstreamError(
            f"Gemini answered HTTP 200 for `{model}` with a body that is not JSON: "
            f"{body[:200].decode('utf-8', 'replace')}"
        ) from None
    if not isinstance(parsed, Mapping):
        raise UpstreamError(f"Gemini answered HTTP 200 for `{model}` with JSON that is not an object.")
    feedback = _mapping(parsed.get("promptFeedback"))
    if feedback.get("blockReason"):
        raise safety_error(
            str(feedback["blockReason"]), _str_or_none(feedback.get("blockReasonMessage")), code=safety_code
        )
    candidates = parsed.get("candidates") or []
    candidate = _mapping(candidates[0]) if isinstance(candidates, list) and candidates else {}
    finish = _str_or_none(candidate.get("finishReason"))
    raw_parts = _mapping(candidate.get("content")).get("parts") or []
    parts = [_mapping(p) for p in raw_parts if isinstance(p, Mapping)]
    # Thought parts (Gemini-3 drafts) are the model thinking aloud, never the answer.
    answer_parts = [p for p in parts if not p.get("thought")]
    texts = [str(p["text"]) for p in answer_parts if isinstance(p.get("text"), str) and p["text"].strip()]
    text = "\n".join(t.strip() for t in texts) or None
    images = [p for p in answer_parts if _inline(p) is not None]
    if not images:
        reason = finish or "no finishReason"
        if finish in SAFETY_FINISH_REASONS:
            raise safety_error(finish, text, code=safety_code)
        said = f" The model said: {text!r}" if text else ""
        raise NoImageGeneratedError(f"Gemini (`{model}`) returned no image (finishReason {reason}).{said}")
    # One call answers with one image: when several final images come back, the last is the answer.
    data = _decode_image(_inline(images[-1]) or {}, model=model)
    usage_meta = parsed.get("usageMetadata")
    usage = usage_from_metadata(usage_meta) if isinstance(usage_meta, Mapping) else None
    return GeminiResult(
        data=data,
        mime_type=sniff_mime(data) or "application/octet-stream",
        text=text,
        usage=usage,
        finish_reason=finish,
    )


def usage_from_metadata(meta: Mapping[str, Any]) -> Usage:
    """`usageMetadata` in OpenAI's `ImagesUsage` terms (docs/spec/gemini-images.md §11 table); thoughts
    count as text output."""
    prompt = _modalities(meta.get("promptTokensDetails"))
    output = _modalities(meta.get("candidatesTokensDetails"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    input_tokens = _int(meta.get("promptTokenCount"))
    output_tokens = _int(meta.get("candidatesTokenCount")) + thoughts
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_int(meta.get("totalTokenCount")) or input_tokens + output_tokens,
        input_text_tokens=prompt.get("TEXT", 0),
        input_image_tokens=prompt.get("IMAGE", 0),
        output_image_tokens=output.get("IMAGE", 0),
        output_text_tokens=output.get("TEXT", 0) + thoughts,
    )


def sum_usage(usages: list[Usage | None]) -> Usage | None:
    """The sum over the calls that reported usage; None when none did."""
    present = [u for u in usages if u is not None]
    if not present:
        return None
    total = present[0]
    for usage in present[1:]:
        total = total + usage
    return total


def _inline(part: Mapping[str, Any]) -> Mapping[str, Any] | None:
    inline = part.get("inlineData") or part.get("inline_data")
    if not isinstance(inline, Mapping) or not isinstance(inline.get("data"), str):
        return None
    mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
    # The label may lie about the format, but an audio or text blob is not an image answer.
    return inline if mime.startswith("image/") or not mime else None


def _decode_image(inline: Mapping[str, Any], *, model: str) -> bytes:
    try:
        data = b64decode_lenient(str(inline.get("data", "")))
    except (ValueError, binascii.Error):
        raise UpstreamError(f"Gemini (`{model}`) sent an image whose base64 does not decode.") from None
    if sniff_mime(data) is None:
        raise UpstreamError(
            f"Gemini (`{model}`) sent image data that is not PNG, JPEG, WEBP or GIF (first bytes {data[:8]!r})."
        )
    return data


def _modalities(details: object) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in details if isinstance(details, list) else []:
        if isinstance(item, Mapping):
            key = str(item.get("modality", ""))
            out[key] = out.get(key, 0) + _int(item.get("tokenCount"))
    return out


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int:
    try:
        number: int = int(value)  # type: ignore[call-overload]
        return number
    except (TypeError, ValueError):
        return 0


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
