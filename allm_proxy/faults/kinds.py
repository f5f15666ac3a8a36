"""The fault kinds: what each answers, as the errors of allm_proxy/errors.py where it is an error.

kind            answer
rate_limit      429 rate_limit_exceeded, with retry-after and retry-after-ms (`ms`, default 1000)
quota           429 insufficient_quota
server_error    500 server_error
overloaded      503 overloaded
bad_key         401 invalid_api_key
content_policy  400 content_policy_violation
timeout         holds until the client gives up or `ms` passes (default: the upstream timeout), then 504
latency         waits `ms` (default 1000), then the normal answer
slow            the normal answer, its body sent in small pieces over `ms` (default 1000)
reset           the connection is closed with no answer
truncate        a 200 whose body stops half-way (non-streaming requests)
stream_cut      the stream ends after `after` events, never `completed` (streaming requests)
stream_error    an `event: error` after `after` events (streaming requests)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import errors

MS_KINDS = ("rate_limit", "timeout", "latency", "slow")
STREAM_KINDS = ("stream_cut", "stream_error")
# Kinds whose answer never comes from the provider: the request stops at the fault.
REPLACING = frozenset(
    {
        "rate_limit",
        "quota",
        "server_error",
        "overloaded",
        "bad_key",
        "content_policy",
        "timeout",
        "reset",
        "truncate",
        *STREAM_KINDS,
    }
)
DEFAULT_MS = 1000


def _rate_limit(note: str, ms: int | None) -> errors.ProxyError:
    wait = DEFAULT_MS if ms is None else ms
    return errors.RateLimitError(
        f"Rate limit reached for images per min. Please try again in {wait / 1000:g}s. {note}",
        headers={"retry-after": str(math.ceil(wait / 1000)), "retry-after-ms": str(wait)},
    )


_ERRORS: dict[str, Callable[[str, int | None], errors.ProxyError]] = {
    "rate_limit": _rate_limit,
    "quota": lambda note, ms: errors.InsufficientQuotaError(
        "You exceeded your current quota, please check your plan and billing details. " + note
    ),
    "server_error": lambda note, ms: errors.UpstreamServerError(
        "The server had an error while processing your request. Sorry about that! " + note
    ),
    "overloaded": lambda note, ms: errors.ServiceUnavailableError(
        "The server is overloaded or not ready yet; retry in a moment. " + note, code="overloaded"
    ),
    "bad_key": lambda note, ms: errors.AuthenticationError(
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys. " + note
    ),
    "content_policy": lambda note, ms: errors.ContentPolicyError(
        "Your request was rejected as a result of our safety system. " + note
    ),
}
ERROR_KINDS = tuple(_ERRORS)
KINDS = (*ERROR_KINDS, "timeout", "latency", "slow", "reset", "truncate", *STREAM_KINDS)


def note(kind: str, origin: str) -> str:
    """The sentence every faulted answer carries, so nobody debugs a provider that never failed."""
    return f"(Injected by allm-proxy: fault '{kind}' from {origin}.)"


def error_for(kind: str, origin: str, ms: int | None = None) -> errors.ProxyError:
    """The error an error kind answers with."""
    return _ERRORS[kind](note(kind, origin), ms)


def timeout_error(origin: str, waited_ms: float) -> errors.UpstreamTimeoutError:
    return errors.UpstreamTimeoutError(
        f"The provider did not answer within {waited_ms / 1000:g} s. {note('timeout', origin)}"
    )


def stream_error(origin: str) -> errors.UpstreamError:
    return errors.UpstreamError(
        f"The image stream failed on the provider's side. {note('stream_error', origin)}", code="stream_error"
    )


class ConnectionResetFault(errors.UpstreamError):
    """Raised by the `reset` fault. The server answers it by dropping the connection; in-process
    callers see it as the 502 a proxy would report for a provider that hung up."""

    default_code = "connection_reset"
