"""A fake Gemini API (generateContent) that checks requests as Google does and answers in Google's shapes.

Everything here follows spec/gemini-images.md: the path, the `x-goog-api-key`
header, the body (both camelCase and the snake_case proto3 JSON also takes),
`imageConfig` values per model, candidateCount > 1 refused; answers with real
PNG/JPEG images whose pixel sizes are Google's (section 2) divided by `scale`
(so the ratio and the tier stay visible), thought images before the final one,
text parts, usageMetadata with modality details, safety blocks as HTTP 200,
and the error envelopes of section 8. It keeps its own copy of what each model
supports (never the proxy's table), so a mistake in the proxy's table shows.

    upstream = FakeGemini()
    with upstream.serving() as base_url:            # http://127.0.0.1:PORT
        upstream.script(image(fmt="jpeg", label="image/png"), quota_exceeded("minute"))
        ...
        upstream.requests[0].image_config            # {"aspectRatio": "16:9", "imageSize": "2K"}

Replies are consumed in order, one per valid request; without a script every
valid request gets `image()`. A request Google would refuse gets Google's 400
(or 403/404) instead, and the reason is kept in `Received.problems`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image as PILImage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.images import encoded, solid
from tests.upstreams.base import FakeUpstream

VALID_KEY = "test-gemini-key"
STANDARD_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTENDED_RATIOS = (*STANDARD_RATIOS, "1:4", "4:1", "1:8", "8:1")
TIER_SCALE = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
INPUT_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
MODALITIES = ("TEXT", "IMAGE", "AUDIO", "VIDEO")
THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH")
HARM_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
THRESHOLDS = ("BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")
MAX_INLINE_BYTES = 20 * 1024 * 1024

# 1K output pixels per ratio (section 2; the 14-ratio extras are approximate).
_GEMINI3_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (384, 3072),
    "8:1": (3072, 384),
}
_FLASH25_1K = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}


@dataclass(frozen=True)
class ModelSpec:
    """What Google's model accepts and how big and costly its images are."""

    ratios: tuple[str, ...]
    tiers: tuple[str, ...]
    pixels_1k: Mapping[str, tuple[int, int]]
    image_tokens: Mapping[str, int]
    input_image_tokens: int = 560
    thinks: bool = True
    max_images: int | None = 14


MODELS: dict[str, ModelSpec] = {
    "gemini-nano-banana-2.1": ModelSpec(
        EXTENDED_RATIOS, ("1K", "2K", "4K"), _GEMINI3_1K, {"1K": 1120, "2K": 1120, "4K": 2000}
    ),
    "gemini-3-pro-image": ModelSpec(
        STANDARD_RATIOS, ("1K", "2K", "4K"), _GEMINI3_1K, {"1K": 1120, "2K": 1120, "4K": 2000}
    ),
    "gemini-3.1-flash-lite-image": ModelSpec(EXTENDED_RATIOS, ("1K",), _GEMINI3_1K, {"1K": 1120}),
    "gemini-3.1-flash-image": ModelSpec(
        EXTENDED_RATIOS, ("512", "1K", "2K", "4K"), _GEMINI3_1K, {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}
    ),
    # No imageSize (fixed 1K, sending one is an error); "works best with <= 3 images" is not a hard limit.
    "gemini-2.5-flash-image": ModelSpec(
        STANDARD_RATIOS, (), _FLASH25_1K, {"1K": 1290}, input_image_tokens=258, thinks=False, max_images=None
    ),
}

# -- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build them with the functions below, not by hand."""

    kind: str  # image | prompt_blocked | finish_blocked | no_image | error | raw
    fmt: str = "png"
    label: str | None = None
    thoughts: int = 0
    text: str | None = None
    reason: str = ""
    status: int = 200
    envelope: Mapping[str, Any] | None = None
    raw: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    delay: float = 0.0


def image(
    fmt: str = "png", *, label: str | None = None, thoughts: int = 0, text: str | None = None, delay: float = 0.0
) -> Reply:
    """A successful answer: `thoughts` thought images first, then `text`, then the final image in `fmt`,
    labelled `label` (default: its real type; Google has been seen labelling JPEG bytes image/png)."""
    return Reply("image", fmt=fmt, label=label, thoughts=thoughts, text=text, delay=min(delay, 10.0))


def prompt_blocked(reason: str = "PROHIBITED_CONTENT", message: str | None = None) -> Reply:
    """HTTP 200, no candidates, `promptFeedback.blockReason`."""
    return Reply("prompt_blocked", reason=reason, text=message)


def finish_blocked(reason: str = "IMAGE_SAFETY", text: str | None = None) -> Reply:
    """HTTP 200, a candidate with `content: {}` (or only `text`) and a safety finishReason."""
    return Reply("finish_blocked", reason=reason, text=text)


def no_image(reason: str = "NO_IMAGE", text: str | None = "I can only describe that in words.") -> Reply:
    """HTTP 200, a candidate without an image for a reason that is not safety."""
    return Reply("no_image", reason=reason, text=text)


def google_error(status: int, google_status: str, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    body: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details:
        body["details"] = details
    return Reply("error", status=status, envelope={"error": body})


def api_key_invalid() -> Reply:
    message = "API key not valid. Please pass a valid API key."
    return google_error(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        ],
    )


def no_key() -> Reply:
    return google_error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def leaked_key() -> Reply:
    return google_error(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.")


def permission_denied() -> Reply:
    return google_error(403, "PERMISSION_DENIED", "The caller does not have permission")


def location_unsupported() -> Reply:
    return google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")


def billing_required() -> Reply:
    return google_error(
        400,
        "FAILED_PRECONDITION",
        "Gemini API free tier is not available in your country. "
        "Please enable billing on your project in Google AI Studio.",
    )


def invalid_argument(message: str = "Request contains an invalid argument.") -> Reply:
    return google_error(400, "INVALID_ARGUMENT", message)


def model_not_found(model: str = "gemini-0-retired-image") -> Reply:
    return google_error(404, "NOT_FOUND", _not_found_message(model, "v1beta"))


def quota_exceeded(per: str = "minute", retry_delay: str = "23s") -> Reply:
    """429 RESOURCE_EXHAUSTED with QuotaFailure (per-minute or per-day quotaId), Help and RetryInfo."""
    quota_id = (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
        if per == "day"
        else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    )
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        "* Quota exceeded for metric: generativelanguage.googleapis.com/generate_requests, "
        "limit: 10\n"
        f"Please retry in {retry_delay}."
    )
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_requests",
                        "quotaId": quota_id,
                        "quotaDimensions": {"model": "gemini-3-pro-image", "location": "global"},
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ],
    )


def internal() -> Reply:
    return google_error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def unavailable() -> Reply:
    return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def deadline_exceeded() -> Reply:
    return google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")


def not_json(status: int = 502) -> Reply:
    """What a broken gateway in front of Google sends: HTML."""
    return Reply(
        "raw", status=status, raw=b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
    )


def _not_found_message(model: str, version: str) -> str:
    return (
        f"models/{model} is not found for API version {version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )


# -- what the fake got ----------------------------------------------------------------------


@dataclass
class Received:
    """One request as it arrived, and what the fake found wrong with it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    model: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def parts(self) -> list[dict[str, Any]]:
        contents = (self.body or {}).get("contents") or [{}]
        return list(contents[-1].get("parts") or [])

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict((self.body or {}).get("generationConfig") or {})

    @property
    def image_config(self) -> dict[str, Any]:
        return dict(self.generation_config.get("imageConfig") or {})

    @property
    def text(self) -> str:
        return "\n".join(p["text"] for p in self.parts if "text" in p)

    @property
    def images(self) -> list[bytes]:
        return [_b64(p["inlineData"]["data"]) for p in self.parts if "inlineData" in p]

    @property
    def image_mime_types(self) -> list[str]:
        return [p["inlineData"]["mimeType"] for p in self.parts if "inlineData" in p]


class _Refused(Exception):
    """A request Google would refuse: the status, Google's envelope, and the detailed reason."""

    def __init__(self, reply: Reply, problem: str) -> None:
        super().__init__(problem)
        self.reply = reply
        self.problem = problem


# -- the app ------------------------------------------------------------------------------------


class FakeGemini(FakeUpstream[Reply, Received]):
    """The fake API: `app` (Starlette), `script()` replies, `requests` received, `serving()` on 127.0.0.1."""

    def __init__(
        self, *, api_keys: tuple[str, ...] = (VALID_KEY,), scale: int = 8, models: Mapping[str, ModelSpec] | None = None
    ) -> None:
        route = Route("/{version}/models/{target:path}", self._handle, methods=["POST"])
        super().__init__(Starlette(routes=[route]))
        self.api_keys = api_keys
        self.scale = scale
        self.models = dict(models or MODELS)

    @property
    def problems(self) -> list[str]:
        """Everything the fake refused since the last reset (tests of valid traffic assert it is empty)."""
        return [p for r in self.requests for p in r.problems]

    def output_size(self, model: str, ratio: str = "1:1", tier: str = "1K") -> tuple[int, int]:
        """The pixel size this fake makes for `model` at `ratio` and `tier`."""
        spec = self.models[model]
        w, h = spec.pixels_1k[ratio]
        factor = TIER_SCALE[tier] / self.scale
        return max(1, round(w * factor)), max(1, round(h * factor))

    # -- handling -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        received = Received(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
        )
        number = self._arrive(received)
        try:
            model, spec = self._check(request, received)
        except _Refused as refused:
            received.problems.append(refused.problem)
            return _render(refused.reply)
        # Only a request Google would accept takes a scripted reply.
        reply = self._take(image())
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.kind in ("error", "raw"):
            return _render(reply)
        return _json(200, self._answer(reply, received, model, spec, number))

    def _check(self, request: Request, received: Received) -> tuple[str, ModelSpec]:
        version = request.path_params["version"]
        model, _, method = request.path_params["target"].rpartition(":")
        if version not in ("v1", "v1beta") or method != "generateContent" or not model:
            raise _Refused(
                google_error(404, "NOT_FOUND", f"Method not found: {request.url.path}"),
                f"unknown path {request.url.path}",
            )
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise _Refused(no_key(), "no x-goog-api-key header")
        if key not in self.api_keys:
            raise _Refused(api_key_invalid(), "unknown API key")
        try:
            body = json.loads(received.raw)
        except ValueError:
            raise _Refused(
                invalid_argument("Invalid JSON payload received. Unexpected token."), "body is not JSON"
            ) from None
        if model not in self.models:
            raise _Refused(google_error(404, "NOT_FOUND", _not_found_message(model, version)), f"unknown model {model}")
        received.model = model
        spec = self.models[model]
        received.body = _normalize(body, "")
        try:
            _check_body(received.body, model, spec)
        except (AttributeError, TypeError, KeyError) as exc:
            # A field of the wrong JSON type (a string where an object belongs, ...).
            raise _Refused(invalid_argument("Invalid JSON payload received."), f"malformed body: {exc!r}") from None
        return model, spec

    def _answer(self, reply: Reply, received: Received, model: str, spec: ModelSpec, number: int) -> dict[str, Any]:
        base: dict[str, Any] = {"modelVersion": model, "responseId": f"fakeResp{number:06d}"}
        prompt_tokens = self._prompt_usage(received, spec)
        if reply.kind == "prompt_blocked":
            feedback: dict[str, Any] = {
                "blockReason": reply.reason,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            }
            if reply.text:
                feedback["blockReasonMessage"] = reply.text
            return {"promptFeedback": feedback, "usageMetadata": _usage(prompt_tokens, {}, 0), **base}
        if reply.kind in ("finish_blocked", "no_image"):
            content: dict[str, Any] = {}
            if reply.text:
                content = {"role": "model", "parts": [{"text": reply.text}]}
            text_tokens = {"TEXT": _text_tokens(reply.text)} if reply.text else {}
            candidate = {"content": content, "finishReason": reply.reason, "index": 0}
            return {"candidates": [candidate], "usageMetadata": _usage(prompt_tokens, text_tokens, 0), **base}
        asked = received.generation_config.get("responseModalities") or ["TEXT", "IMAGE"]
        modalities = [m.upper() for m in asked]
        parts: list[dict[str, Any]] = []
        out_tokens: dict[str, int] = {}
        thoughts_tokens = 0
        if spec.thinks:
            for i in range(reply.thoughts):
                parts.append({"text": f"**Sketching draft {i + 1}**", "thought": True})
                parts.append(
                    {
                        "inlineData": {
                            "mimeType": "image/png",
                            "data": _b64encode(_picture((24, 24), f"thought{i}", "png")),
                        },
                        "thought": True,
                    }
                )
                thoughts_tokens += 180
        if reply.text or "IMAGE" not in modalities:
            words = reply.text or "I can only answer in text here."
            parts.append({"text": words})
            out_tokens["TEXT"] = _text_tokens(words)
        if "IMAGE" in modalities:
            ratio = received.image_config.get("aspectRatio") or self._input_ratio(received, spec)
            tier = received.image_config.get("imageSize") or "1K"
            size = self.output_size(model, ratio, tier)
            data = _picture(size, received.text + str(len(received.images)), reply.fmt)
            final: dict[str, Any] = {
                "inlineData": {"mimeType": reply.label or f"image/{reply.fmt}", "data": _b64encode(data)}
            }
            if spec.thinks:
                final["thoughtSignature"] = _b64encode(hashlib.sha256(data).digest())
            parts.append(final)
            out_tokens["IMAGE"] = spec.image_tokens.get(tier, spec.image_tokens.get("1K", 1120))
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        usage = _usage(prompt_tokens, out_tokens, thoughts_tokens)
        return {"candidates": [candidate], "usageMetadata": usage, **base}

    def _prompt_usage(self, received: Received, spec: ModelSpec) -> dict[str, int]:
        usage = {"TEXT": _text_tokens(received.text)}
        if received.images:
            usage["IMAGE"] = spec.input_image_tokens * len(received.images)
        return usage

    def _input_ratio(self, received: Received, spec: ModelSpec) -> str:
        # Without aspectRatio Google follows the (first) input image, else makes a square.
        if not received.images:
            return "1:1"
        with PILImage.open(io.BytesIO(received.images[0])) as img:
            w, h = img.size
        return min(spec.ratios, key=lambda r: abs(math.log(w / h) - math.log(_ratio(r))))


# -- request checks ----------------------------------------------------------------------------

_KNOWN: dict[str, tuple[str, ...]] = {
    "": ("contents", "generationConfig", "safetySettings", "systemInstruction", "tools", "toolConfig", "cachedContent"),
    "contents": ("role", "parts"),
    "parts": ("text", "inlineData", "fileData", "thought", "thoughtSignature"),
    "inlineData": ("mimeType", "data"),
    "generationConfig": (
        "responseModalities",
        "imageConfig",
        "candidateCount",
        "seed",
        "thinkingConfig",
        "temperature",
        "topP",
        "topK",
        "maxOutputTokens",
        "stopSequences",
        "responseMimeType",
        "presencePenalty",
        "frequencyPenalty",
    ),
    "imageConfig": ("aspectRatio", "imageSize"),
    "thinkingConfig": ("includeThoughts", "thinkingLevel", "thinkingBudget"),
    "safetySettings": ("category", "threshold"),
    "systemInstruction": ("role", "parts"),
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _normalize(value: Any, where: str) -> Any:
    """proto3 JSON: camelCase or the original snake_case names, never both; unknown names refused."""
    if isinstance(value, list):
        return [_normalize(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    known = _KNOWN.get(where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key)
        if name in out:
            message = f'Invalid JSON payload received. Duplicate field "{_snake(name)}".'
            raise _Refused(invalid_argument(message), f"both spellings of {name} at '{where}'")
        if known is not None and name not in known:
            at = f" at '{_snake(where)}'" if where else ""
            raise _Refused(
                invalid_argument(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'),
                f"unknown field {key!r} at '{where}'",
            )
        out[name] = _normalize(item, name)
    return out


def _check_body(body: Any, model: str, spec: ModelSpec) -> None:
    def refuse(problem: str, message: str = "Request contains an invalid argument.") -> None:
        raise _Refused(invalid_argument(message), problem)

    if not isinstance(body, dict):
        refuse("body is not a JSON object", "Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        refuse("contents missing or empty", "* GenerateContentRequest.contents: contents is not specified\n")
    inline_bytes = 0
    images = 0
    for content in contents:
        if content.get("role", "user") not in ("user", "model"):
            refuse(f"role {content.get('role')!r}", "Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            refuse(
                "a content without parts",
                "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n",
            )
        for part in parts:
            inline = _check_part(part, refuse)
            inline_bytes += inline
            images += 1 if "inlineData" in part else 0
    if inline_bytes > MAX_INLINE_BYTES:
        refuse(f"inline data of {inline_bytes} bytes", "Request payload size exceeds the limit: 20971520 bytes.")
    if spec.max_images is not None and images > spec.max_images:
        refuse(f"{images} input images, the model takes {spec.max_images}")
    if contents[-1].get("role", "user") != "user":
        refuse("the last turn is not the user's")
    _check_generation_config(body.get("generationConfig") or {}, model, spec, refuse)
    for setting in body.get("safetySettings") or []:
        if setting.get("category") not in HARM_CATEGORIES or setting.get("threshold") not in THRESHOLDS:
            refuse(f"safety setting {setting}")


def _check_part(part: Any, refuse: Any) -> int:
    """One part: exactly one of text, inlineData, fileData; the inline bytes it carries."""
    data_fields = [k for k in ("text", "inlineData", "fileData") if k in part]
    if len(data_fields) != 1:
        refuse(f"a part with {data_fields or 'no data'}")
    if "text" in part and not isinstance(part["text"], str):
        refuse("a text part whose text is not a string")
    return _check_inline(part["inlineData"], refuse) if "inlineData" in part else 0


def _check_inline(inline: Any, refuse: Any) -> int:
    mime, data = inline.get("mimeType"), inline.get("data")
    if not isinstance(mime, str) or not isinstance(data, str):
        refuse("inlineData without mimeType and data")
    if mime not in INPUT_MIME_TYPES:
        refuse(f"input mimeType {mime}", f"Unsupported MIME type: {mime}")
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", data):
        refuse(
            "inlineData.data is not base64",
            "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed.",
        )
    decoded = _b64(data)
    sniffed = _sniff(decoded)
    # Stricter than Google, on purpose: the proxy must label inputs with their real type.
    if sniffed is not None and sniffed != mime:
        refuse(f"inlineData labelled {mime} holds {sniffed} bytes", "Unable to process input image.")
    if sniffed is None and mime in ("image/png", "image/jpeg", "image/webp"):
        refuse("inlineData is not an image", "Unable to process input image. Please retry or report in ...")
    return len(decoded)


def _check_generation_config(config: Any, model: str, spec: ModelSpec, refuse: Any) -> None:
    modalities = config.get("responseModalities")
    if modalities is not None:
        if not isinstance(modalities, list) or not modalities:
            refuse("responseModalities is not a non-empty list")
        for modality in modalities:
            if str(modality).upper() not in MODALITIES:
                refuse(
                    f"modality {modality!r}",
                    f"Invalid value at 'generation_config.response_modalities[0]' ({modality!r})",
                )
    count = config.get("candidateCount")
    if count is not None and (not isinstance(count, int) or count > 1):
        refuse(f"candidateCount {count}", f"Multiple candidates is not enabled for models/{model}")
    image_config = config.get("imageConfig") or {}
    ratio = image_config.get("aspectRatio")
    if ratio is not None and ratio not in spec.ratios:
        refuse(f"aspectRatio {ratio!r} for {model}")
    tier = image_config.get("imageSize")
    if tier is not None and tier not in spec.tiers:
        refuse(f"imageSize {tier!r} for {model} (tiers: {spec.tiers or 'none'})")
    thinking = config.get("thinkingConfig") or {}
    if "thinkingLevel" in thinking and thinking["thinkingLevel"] not in THINKING_LEVELS:
        refuse(f"thinkingLevel {thinking['thinkingLevel']!r}")


# -- rendering -------------------------------------------------------------------------------------


def _render(reply: Reply) -> Response:
    if reply.kind == "raw":
        return Response(reply.raw, status_code=reply.status, media_type=reply.content_type)
    return _json(reply.status, dict(reply.envelope or {}))


def _json(status: int, body: Mapping[str, Any]) -> Response:
    return Response(json.dumps(body, indent=2), status_code=status, media_type="application/json; charset=UTF-8")


def _usage(prompt: Mapping[str, int], output: Mapping[str, int], thoughts: int) -> dict[str, Any]:
    prompt_total = sum(prompt.values())
    output_total = sum(output.values())
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_total,
        "totalTokenCount": prompt_total + output_total + thoughts,
        "promptTokensDetails": [{"modality": m, "tokenCount": n} for m, n in prompt.items()],
    }
    if output:
        usage["candidatesTokenCount"] = output_total
        usage["candidatesTokensDetails"] = [{"modality": m, "tokenCount": n} for m, n in output.items()]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _text_tokens(text: str | None) -> int:
    return max(1, len(text or "") // 4)


def _picture(size: tuple[int, int], seed: str, fmt: str) -> bytes:
    """A deterministic picture: two colours from the seed, blended along a gradient."""
    digest = hashlib.sha256(seed.encode()).digest()
    w, h = size
    img = solid(size, tuple(digest[:3]), "RGB")
    ramp = PILImage.linear_gradient("L").resize((w, h))
    img.putalpha(ramp)
    flat = solid(size, tuple(255 - b for b in digest[:3]), "RGB")
    flat.paste(img, mask=img.getchannel("A"))
    return encoded(flat, fmt.upper(), **_SAVE_OPTIONS.get(fmt, {}))


_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"jpeg": {"quality": 90}, "webp": {"lossless": True}}


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64(text: str) -> bytes:
    cleaned = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _ratio(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return float(w) / float(h)
