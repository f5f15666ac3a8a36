"""The one error tree of allm-proxy.

Every failure the proxy can report is a `ProxyError`. Each class fixes the
OpenAI error envelope it becomes (`status` and `type`, and a default `code`),
so the server maps errors to responses in exactly one place and the official
SDKs raise their usual typed exceptions. An instance chooses only its message,
`param`, `code` and headers.

    ProxyError                       status  type                    code
    +-- InvalidRequestError           400    invalid_request_error   (varies)
    |   +-- UnknownParameterError     400    invalid_request_error   unknown_parameter
    |   +-- UnsupportedOperationError 400    invalid_request_error   unsupported_operation
    |   +-- ContentPolicyError        400    invalid_request_error   content_policy_violation
    |   |   +-- ModerationBlockedError 400   image_generation_user_error moderation_blocked
    |   +-- FakeScriptExhausted       400    invalid_request_error   fake_script_exhausted
    |   +-- CassetteMissError         400    invalid_request_error   cassette_miss
    +-- AuthenticationError           401    invalid_request_error   invalid_api_key
    +-- PermissionDeniedError         403    permission_error        permission_denied
    |   +-- RegionNotSupportedError   403    invalid_request_error   unsupported_country_region_territory
    +-- NotFoundError                 404    invalid_request_error   not_found
    |   +-- ModelNotFoundError        404    invalid_request_error   model_not_found
    +-- MethodNotAllowedError         405    invalid_request_error   method_not_allowed
    +-- RequestTimeoutError           408    invalid_request_error   request_timeout
    +-- ConflictError                 409    invalid_request_error   conflict
    +-- PayloadTooLargeError          413    invalid_request_error   payload_too_large
    +-- UnsupportedMediaTypeError     415    invalid_request_error   unsupported_media_type
    +-- UnprocessableEntityError      422    invalid_request_error   unprocessable_entity
    +-- RateLimitError                429    requests                rate_limit_exceeded
    |   +-- InsufficientQuotaError    429    insufficient_quota      insufficient_quota
    +-- InternalProxyError            500    server_error            internal_error
    +-- ServerOverloadedError         503    server_error            server_overloaded
    +-- ProviderNotConfiguredError    503    server_error            provider_not_configured
    +-- StateUnavailableError         503    server_error            state_unavailable (shared state down)
    +-- UpstreamError                 502    server_error            upstream_error
        +-- NoImageGeneratedError     502    server_error            no_image_generated
        +-- UpstreamServerError       500    server_error            null (as OpenAI's own 500s)
        +-- ServiceUnavailableError   503    server_error            service_unavailable
        +-- UpstreamTimeoutError      504    server_error            timeout

    The proxy's own failures sit beside UpstreamError; everything under it is the provider's.

    UpstreamStatusError               a provider's error answer relayed as it came: an instance
                                      is also the class above for its status (a relayed 401 is
                                      an AuthenticationError), see `UpstreamStatusError.relay`.

`error_class(status, type)` is the class for any status (a relayed 418, a
scripted error): the one above when it fits, else a subclass made once per
(status, type) under the nearest class, so the invariant holds for every status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

_UNSET: Any = object()


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
        code: str | None = _UNSET,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # `code=None` given explicitly stays null even where the class has a default code.
        self.code: str | None = self.default_code if code is _UNSET else code
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()

    def media_type(self) -> str:
        return "application/json"

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
    # The miss as data (the request, the nearest recording, the matchers that
    # differ), set by the cassette layer, shown by the journal and the inspector page.
    details: dict[str, Any] | None = None


class ModerationBlockedError(ContentPolicyError):
    type = "image_generation_user_error"
    default_code = "moderation_blocked"


class AuthenticationError(ProxyError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ProxyError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class RegionNotSupportedError(PermissionDeniedError):
    type = "invalid_request_error"
    default_code = "unsupported_country_region_territory"


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


class RequestTimeoutError(ProxyError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class ConflictError(ProxyError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(ProxyError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class UnprocessableEntityError(ProxyError):
    status = 422
    type = "invalid_request_error"
    default_code = "unprocessable_entity"


class RateLimitError(ProxyError):
    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"


class InsufficientQuotaError(RateLimitError):
    """The account's quota or billing limit, which a retry in seconds does not fix."""

    type = "insufficient_quota"
    default_code = "insufficient_quota"


class UpstreamError(ProxyError):
    """The provider could not be reached or answered something unusable."""

    status = 502
    type = "server_error"
    default_code: ClassVar[str | None] = "upstream_error"


class NoImageGeneratedError(UpstreamError):
    default_code = "no_image_generated"


class ServiceUnavailableError(UpstreamError):
    """The provider says it is overloaded or down for now; the SDKs retry a 503."""

    status = 503
    default_code = "service_unavailable"


class ServerOverloadedError(ProxyError):
    """The proxy's own in-flight limit; the SDKs retry a 503."""

    status = 503
    type = "server_error"
    default_code = "server_overloaded"


class UpstreamTimeoutError(UpstreamError):
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


class ProviderNotConfiguredError(ProxyError):
    """`/readyz`: the provider's adapter cannot be built from the proxy's options."""

    status = 503
    type = "server_error"
    default_code = "provider_not_configured"


class InternalProxyError(ProxyError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


class UpstreamServerError(UpstreamError):
    """A provider's own 500, in the shape OpenAI's 500s have (code null)."""

    status = 500
    default_code = None


# The class each status gets when nothing more specific is known, most general first.
_BY_STATUS: dict[int, type[ProxyError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: UpstreamServerError,
    502: UpstreamError,
    503: ServiceUnavailableError,
    504: UpstreamTimeoutError,
}
_MADE: dict[tuple[int, str], type[ProxyError]] = {}


def error_class(status: int, error_type: str | None = None) -> type[ProxyError]:
    """The class whose envelope has `status` and `error_type` (the status's usual type when None)."""
    base = _BY_STATUS.get(status) or (InvalidRequestError if status < 500 else UpstreamError)
    wanted = error_type or base.type
    if base.status == status and base.type == wanted:
        return base
    for candidate in _subclasses(base):
        if candidate.status == status and candidate.type == wanted and candidate.__module__ == __name__:
            return candidate
    made = _MADE.get((status, wanted))
    if made is None:
        name = f"{base.__name__}{status}" + ("" if wanted == base.type else f"_{wanted}")
        made = _MADE[(status, wanted)] = type(name, (base,), {"status": status, "type": wanted, "__module__": __name__})
    return made


def _subclasses(cls: type[ProxyError]) -> list[type[ProxyError]]:
    found: list[type[ProxyError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


class UpstreamStatusError(ProxyError):
    """A provider's error answer, relayed to the client unchanged.

    Never raised as itself: `relay` builds an instance of a class that is both
    this and the class of the answer's status and type, so `except
    AuthenticationError` catches a relayed 401 from any provider. `raw_body`
    is what the provider sent (already an OpenAI envelope for the openai
    provider); `headers` carries the retry and request-id headers the SDK reads.
    """

    raw_body: bytes
    relayed_content_type: str

    @classmethod
    def relay(
        cls,
        status: int,
        raw_body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> UpstreamStatusError:
        message, error_type, param, code = _read_envelope(raw_body)
        base = error_class(status, error_type)
        relayed = _RELAYED.get(base)
        if relayed is None:
            relayed = _RELAYED[base] = type(f"Upstream{base.__name__}", (cls, base), {"__module__": __name__})
        error = relayed(message, param=param, code=code, headers=headers)
        error.raw_body = raw_body
        error.relayed_content_type = content_type
        return error

    def body(self) -> bytes:
        return self.raw_body

    def media_type(self) -> str:
        return self.relayed_content_type

    def response_headers(self) -> dict[str, str]:
        return dict(self.headers)


_RELAYED: dict[type[ProxyError], type[UpstreamStatusError]] = {}


def _read_envelope(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    try:
        inner = json.loads(raw)["error"]
        return (
            str(inner.get("message") or ""),
            str(inner["type"]) if inner.get("type") else None,
            inner.get("param"),
            inner.get("code"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return (raw[:200].decode("utf-8", "replace"), None, None, None)
