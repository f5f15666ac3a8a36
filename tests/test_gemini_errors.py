"""Google's error answers and safety blocks as OpenAI errors (adapters/gemini/errors.py), without a network."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from allm_proxy import errors
from allm_proxy.adapters.gemini.errors import (
    error_from_response,
    most_telling,
    safety_error,
    transport_error,
)


def envelope(status: int, google_status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details is not None:
        body["details"] = details
    return json.dumps({"error": body}).encode()


def mapped(status: int, body: bytes) -> errors.ProxyError:
    return error_from_response(status, body, model="gemini-3-pro-image")


def test_blocked_key_reason_on_a_403_is_an_invalid_key() -> None:
    err = mapped(
        403,
        envelope(
            403,
            "PERMISSION_DENIED",
            "Requests to this API are blocked.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_SERVICE_BLOCKED"}],
        ),
    )
    assert (err.status, err.code) == (401, "invalid_api_key")


def test_expired_key_message_without_details_is_an_invalid_key() -> None:
    err = mapped(400, envelope(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key."))
    assert isinstance(err, errors.AuthenticationError) and err.message == "API key expired. Please renew the API key."


def test_an_envelope_wrapped_in_a_list_is_still_read() -> None:
    body = b"[" + envelope(503, "UNAVAILABLE", "The model is overloaded.") + b"]"
    err = mapped(503, body)
    assert (err.status, err.code, err.message) == (503, "service_unavailable", "The model is overloaded.")


def test_quota_without_quota_failure_falls_back_to_the_message() -> None:
    billing = mapped(
        429,
        envelope(
            429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."
        ),
    )
    plain = mapped(429, envelope(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))
    assert (billing.type, billing.code) == ("insufficient_quota", "insufficient_quota")
    assert (plain.type, plain.code) == ("requests", "rate_limit_exceeded")
    assert "retry-after" not in plain.headers


def test_per_day_quota_tells_the_sdk_not_to_retry() -> None:
    err = mapped(
        429,
        envelope(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"},
            ],
        ),
    )
    assert err.response_headers() == {"retry-after": "1", "x-should-retry": "false"}


def test_internal_is_a_500_with_a_null_code_and_other_5xx_are_502() -> None:
    internal = mapped(500, envelope(500, "INTERNAL", "An internal error has occurred."))
    other = mapped(501, envelope(501, "UNIMPLEMENTED", "Not implemented."))
    assert (internal.status, internal.code, internal.type) == (500, None, "server_error")
    assert internal.envelope()["error"]["code"] is None
    assert (other.status, other.code) == (502, "upstream_error")


def test_an_unknown_4xx_keeps_its_status_as_an_invalid_request() -> None:
    err = mapped(413, envelope(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit."))
    assert (err.status, err.type, err.code) == (413, "invalid_request_error", "invalid_value")


@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b'{"unexpected": true}'])
def test_bodies_that_are_not_googles_envelope_are_a_502(body: bytes) -> None:
    err = mapped(400, body)
    assert (err.status, err.code) == (502, "upstream_error")


def test_transport_errors_are_504_for_timeouts_and_502_otherwise() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/x")
    timeout = transport_error(httpx.ReadTimeout("slow", request=request), model="m")
    refused = transport_error(httpx.ConnectError("refused", request=request), model="m")
    assert (timeout.status, timeout.code) == (504, "timeout")
    assert (refused.status, refused.code) == (502, "upstream_error")


def test_safety_code_moderation_blocked_uses_gpt_images_type() -> None:
    err = safety_error("IMAGE_SAFETY", None, code="moderation_blocked")
    assert (err.status, err.type, err.code) == (400, "image_generation_user_error", "moderation_blocked")
    assert "IMAGE_SAFETY" in err.message


def test_most_telling_prefers_safety_then_429_then_5xx() -> None:
    safety = safety_error("SAFETY", None, code="content_policy_violation")
    limited = errors.RateLimitError("slow down")
    down = errors.ServiceUnavailableError("down")
    bad = errors.InvalidRequestError("bad")
    assert most_telling([bad, down, limited, safety]) is safety
    assert most_telling([bad, down, limited]) is limited
    assert most_telling([bad, down]) is down
    assert most_telling([bad]) is bad
