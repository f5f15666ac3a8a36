"""The one error tree of allm-proxy.

Every failure the proxy can report is a `ProxyError`. Each knows the OpenAI
error envelope it becomes (`status`, `type`, `code`, `param`), so the server
maps errors to responses in exactly one place and the official SDKs raise
their usual typed exceptions.

    ProxyError                      status  type                    code
    +-- InvalidRequestError          400    invalid_request_error   (varies)
    |   +-- UnknownParameterError    400    invalid_request_error   unknown_parameter
    |   +-- UnsupportedOperation     400    invalid_request_error   unsupported_operation
    |   +-- ContentPolicyError       400    invalid_request_error   content_policy_violation
    |   +-- FakeScriptExhausted      400    invalid_request_error   fake_script_exhausted
    |   +-- CassetteMissError        400    invalid_request_error   cassette_miss
    +-- AuthenticationError          401    invalid_request_error   invalid_api_key
    +-- PermissionDeniedError        403    permission_error        permission_denied
    +-- NotFoundError                404    invalid_request_error   not_found
    |   +-- ModelNotFoundError       404    invalid_request_error   model_not_found
    +-- MethodNotAllowedError        405    invalid_request_error   method_not_allowed
    +-- PayloadTooLargeError         413    invalid_request_error   payload_too_large
    +-- UnsupportedMediaTypeError    415    invalid_request_error   unsupported_media_type
    +-- RateLimitError               429    requests                rate_limit_exceeded
    +-- UpstreamError                502    server_error            upstream_error
    |   +-- NoImageGeneratedError    502    server_error            no_image_generated
    +-- UpstreamTimeoutError         504    server_error            timeout
    +-- StateUnavailableError        503    server_error            state_unavailable
    +-- UpstreamStatusError          (the upstream's own status and body, relayed)
    +-- InternalProxyError           500    server_error            internal_error
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar


class ProxyError(Exception):
    """Base of every error allm-proxy reports; renders as an OpenAI error envelope."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})
        # Instance overrides let one class carry a provider's exact status/type
        # (e.g. a Gemini 503 becomes status 503 while staying an UpstreamError).
        if status is not None:
            self.status = status  # type: ignore[misc]
        if error_type is not None:
            self.type = error_type  # type: ignore[misc]

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()

    def response_headers(self) -> dict[str, str]:
        """Headers the response carries; 4xx that retrying cannot fix say so to the SDK."""
        headers = dict(self.headers)
        if 400 <= self.status < 500 and self.status not in (408, 409, 429):
            headers.setdefault("x-should-retry", "false")
        return headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"


class UnknownParameterError(InvalidRequestError):
    default_code = "unknown_parameter"


class UnsupportedOperationError(InvalidRequestError):
    default_code = "unsupported_operation"


class ContentPolicyError(InvalidRequestError):
    default_code = "content_policy_violation"


class FakeScriptExhausted(InvalidRequestError):
    default_code = "fake_script_exhausted"


class CassetteMissError(InvalidRequestError):
    default_code = "cassette_miss"


class AuthenticationError(ProxyError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ProxyError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class MethodNotAllowedError(ProxyError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(ProxyError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimitError(ProxyError):
    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    """The provider could not be reached or answered something unusable."""

    status = 502
    type = "server_error"
    default_code = "upstream_error"


class NoImageGeneratedError(UpstreamError):
    default_code = "no_image_generated"


class UpstreamTimeoutError(ProxyError):
    status = 504
    type = "server_error"
    default_code = "timeout"


class StateUnavailableError(ProxyError):
    """The shared state store (Redis) did not answer; retrying once it is back succeeds."""

    status = 503
    type = "server_error"
    default_code = "state_unavailable"

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        headers.setdefault("retry-after", "1")
        return headers


class InternalProxyError(ProxyError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


class UpstreamStatusError(ProxyError):
    """An error answer from the provider, relayed to the client unchanged.

    `raw_body` is what the provider sent (already an OpenAI envelope for the
    openai provider); `headers` carries the retry and request-id headers the
    SDK reads.
    """

    def __init__(
        self,
        status: int,
        raw_body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        message, error_type, param, code = _read_envelope(raw_body)
        super().__init__(message, param=param, code=code, headers=headers, status=status, error_type=error_type)
        self.raw_body = raw_body
        self.content_type = content_type

    def body(self) -> bytes:
        return self.raw_body

    def response_headers(self) -> dict[str, str]:
        return dict(self.headers)


def _read_envelope(raw: bytes) -> tuple[str, str, str | None, str | None]:
    try:
        inner = json.loads(raw)["error"]
        return (
            str(inner.get("message") or ""),
            str(inner.get("type") or "server_error"),
            inner.get("param"),
            inner.get("code"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return (raw[:200].decode("utf-8", "replace"), "server_error", None, None)
