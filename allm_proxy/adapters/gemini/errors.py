"""Google's error answers (and safety blocks) as the OpenAI errors docs/spec/gemini-images.md §11 tabulates.

Google's envelope is ``{"error": {"code", "message", "status", "details"}}``;
the proxy keeps Google's message text and picks the OpenAI status, type and
code a client written for OpenAI expects. Nothing the client or Google caused
becomes a 500, except Google's own 500.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ...errors import (
    AuthenticationError,
    ContentPolicyError,
    InsufficientQuotaError,
    InvalidRequestError,
    ModelNotFoundError,
    ModerationBlockedError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RegionNotSupportedError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeoutError,
    error_class,
)

SAFETY_CODES = ("content_policy_violation", "moderation_blocked")
# finishReason values that mean "blocked by a filter" (docs/spec/gemini-images.md §11), as opposed
# to "no image for another reason".
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)
_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    }
)
# Google's wording for a missing, wrong, expired or leaked key (all contain one of these).
_KEY_PHRASES = ("api key", "unregistered callers")
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def error_from_response(status: int, body: bytes, *, model: str) -> ProxyError:
    """The OpenAI error for a non-200 answer from generateContent."""
    envelope = _google_envelope(body)
    if envelope is None:
        snippet = body[:200].decode("utf-8", "replace").strip() or "(empty body)"
        return UpstreamError(f"Gemini answered HTTP {status} with a body that is not Google's JSON error: {snippet}")
    message = str(envelope.get("message") or f"Gemini answered HTTP {status}.")
    google_status = str(envelope.get("status") or "")
    details = [d for d in envelope.get("details") or [] if isinstance(d, Mapping)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    lowered = message.lower()

    if status == 400 and google_status == "FAILED_PRECONDITION":
        # "User location is not supported ..." is the region block; "free tier is not available in
        # your country, please enable billing" is fixed by billing, so it stays a 400.
        if "user location" in lowered or "location is not supported" in lowered:
            return RegionNotSupportedError(message)
        return InvalidRequestError(message, code="failed_precondition")
    if status in (400, 401, 403) and (reasons & _KEY_REASONS or any(p in lowered for p in _KEY_PHRASES)):
        return AuthenticationError(message)
    if status == 401:
        return AuthenticationError(message)
    if status == 403:
        return PermissionDeniedError(message)
    if status == 404:
        return ModelNotFoundError(message, param="model")
    if status == 429:
        return _quota_error(message, details)
    if status == 500:
        return UpstreamServerError(message)
    if status == 503:
        return ServiceUnavailableError(message)
    if status == 504:
        return UpstreamTimeoutError(message)
    if 400 <= status < 500:
        code = "invalid_value" if google_status == "INVALID_ARGUMENT" else (google_status.lower() or None)
        return error_class(status)(message, code=code)
    return UpstreamError(f"Gemini answered HTTP {status}: {message}")


def transport_error(exc: httpx.HTTPError, *, model: str) -> ProxyError:
    """A request that never got an answer: a timeout is 504, anything else 502."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"Gemini did not answer in time for model `{model}` ({type(exc).__name__}).")
    return UpstreamError(f"Could not reach Gemini for model `{model}`: {type(exc).__name__}: {exc}")


def safety_error(reason: str, detail: str | None, *, code: str) -> ContentPolicyError:
    """A prompt or image blocked by Google's filters, in OpenAI's words."""
    suffix = f" (gemini: {reason}{': ' + detail if detail else ''})"
    if code == "moderation_blocked":
        return ModerationBlockedError("Your request was rejected by the safety system." + suffix)
    return ContentPolicyError("Your request was rejected as a result of our safety system." + suffix, code=code)


def most_telling(failures: Sequence[ProxyError]) -> ProxyError:
    """Of the errors of n calls that all failed, the one the client learns most from.

    Safety first (retrying will not help), then rate limits (Retry-After), then
    Google's server errors, then the rest; the first of a rank wins.
    """

    def rank(error: ProxyError) -> int:
        if isinstance(error, ContentPolicyError):
            return 0
        if error.status == 429:
            return 1
        if error.status >= 500:
            return 2
        return 3

    return min(failures, key=rank)


def _google_envelope(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    # Google sometimes wraps the envelope in a one-element list (streaming endpoints, the compat API).
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], Mapping):
        parsed = parsed[0]
    if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), Mapping):
        return dict(parsed["error"])
    return None


def _quota_error(message: str, details: list[Mapping[str, Any]]) -> RateLimitError:
    quota_ids = [
        str(v.get("quotaId") or v.get("quotaMetric") or "")
        for d in details
        if str(d.get("@type", "")).endswith("google.rpc.QuotaFailure")
        for v in d.get("violations") or []
        if isinstance(v, Mapping)
    ]
    headers: dict[str, str] = {}
    delay = next(
        (
            _retry_seconds(d.get("retryDelay"))
            for d in details
            if str(d.get("@type", "")).endswith("google.rpc.RetryInfo")
        ),
        None,
    )
    if delay is not None:
        headers["retry-after"] = str(delay)
    # The quota that ran out decides; the message is the fallback, since Google's per-minute
    # answers also say "check your plan and billing details".
    per_day = any("PerDay" in q for q in quota_ids) if quota_ids else "check your plan and billing" in message
    if per_day:
        # A daily quota or billing limit does not come back in seconds: tell the SDK not to retry.
        headers["x-should-retry"] = "false"
        return InsufficientQuotaError(message, headers=headers)
    return RateLimitError(message, headers=headers)


def _retry_seconds(value: object) -> int | None:
    """`"23s"` / `"1.5s"` -> whole seconds, rounded up (Retry-After takes an integer)."""
    match = _RETRY_DELAY.match(str(value)) if value is not None else None
    if match is None:
        return None
    return max(1, math.ceil(float(match.group(1))))
