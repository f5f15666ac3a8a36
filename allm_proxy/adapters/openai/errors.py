"""What the openai adapter reports when OpenAI fails: relayed error answers and its own 502/504s.

OpenAI's error answers are already what the client expects, so they are
relayed unchanged (status, body, and the headers the SDKs read for request
ids and retries). Failures with no usable answer (connection refused or
reset, timeouts, bodies that are not JSON) are the proxy's own 502/504s and
say what failed and where. Keys never appear in these messages: only the
host and port are named, and any stray copy of the key is masked.
"""

from __future__ import annotations

import json

import httpx

from ...errors import ProxyError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError

# The response headers the SDKs read (docs/spec/openai-images.md §8, §9).
RELAYED_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry", "x-request-id")
_SNIPPET = 120


def relayed_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name] for name in RELAYED_HEADERS if name in headers}


def status_error(response: httpx.Response, body: bytes, api_key: str | None) -> UpstreamStatusError:
    """An upstream error answer, as the client should see it.

    A body that is not OpenAI's envelope (a load balancer's HTML page, say)
    keeps its status but gets an envelope that describes it, so every error
    the client sees is the OpenAI shape. A body that echoes the key (a
    gateway showing the request's headers) has it masked: the key may be the
    proxy's own, which its clients must never see.
    """
    body = mask_bytes(body, api_key)
    headers = relayed_headers(response.headers)
    content_type = response.headers.get("content-type", "")
    if _is_envelope(body):
        return UpstreamStatusError.relay(
            response.status_code, body, headers=headers, content_type=content_type or "application/json"
        )
    message = (
        f"OpenAI answered HTTP {response.status_code} from {where(response.request.url)} with a body "
        f"that is not an OpenAI error: {describe_body(response, body, api_key)}"
    )
    envelope = {
        "error": {
            "message": message,
            "type": "server_error" if response.status_code >= 500 else "invalid_request_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    return UpstreamStatusError.relay(response.status_code, json.dumps(envelope).encode(), headers=headers)


def _is_envelope(body: bytes) -> bool:
    if not body.lstrip().startswith(b"{"):
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)


def describe_body(response: httpx.Response, body: bytes, api_key: str | None = None) -> str:
    """Status, content type, size and the first bytes of a body (key masked), for error messages."""
    content_type = response.headers.get("content-type") or "no content-type"
    # Masked before the cut, so that a key straddling the cut cannot leave a piece behind.
    snippet = mask_bytes(body[: _SNIPPET + 200], api_key)[:_SNIPPET].decode("utf-8", "replace")
    more = "..." if len(body) > _SNIPPET else ""
    return f"HTTP {response.status_code}, {content_type}, {len(body)} bytes: {snippet!r}{more}"


def unusable_body(response: httpx.Response, body: bytes, problem: str, api_key: str | None) -> UpstreamError:
    return UpstreamError(
        f"OpenAI at {where(response.request.url)} answered with a body the proxy cannot read "
        f"({mask(problem, api_key)}): {describe_body(response, body, api_key)}"
    )


def transport_error(exc: httpx.HTTPError, url: httpx.URL, api_key: str | None) -> ProxyError:
    """A request that got no usable answer: a timeout is 504, anything else 502."""
    if isinstance(exc, httpx.TimeoutException):
        kind = {
            httpx.ConnectTimeout: "connecting",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting for the answer")
        return UpstreamTimeoutError(
            f"OpenAI at {where(url)} timed out while {kind} ({type(exc).__name__}). "
            "Raise the proxy's --timeout if the provider is just slow."
        )
    # httpx leaves some messages empty (a reset is a bare ReadError); say what it means then.
    detail = mask(str(exc) or "the server closed or reset the connection", api_key)
    if isinstance(exc, httpx.ConnectError):
        what = "Could not connect to"
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        what = "The connection broke (closed or reset mid-answer) with"
    else:
        what = "The request failed with"
    return UpstreamError(f"{what} OpenAI at {where(url)}: {type(exc).__name__}: {detail}")


def where(url: httpx.URL) -> str:
    """`host:port` of a URL: enough to find the upstream, nothing that could hold a secret."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def mask(text: str, api_key: str | None) -> str:
    """`text` with every copy of the key replaced."""
    if api_key and len(api_key) >= 4:
        return text.replace(api_key, "sk-***")
    return text


def mask_bytes(data: bytes, api_key: str | None) -> bytes:
    if api_key and len(api_key) >= 4:
        return data.replace(api_key.encode("utf-8", "replace"), b"sk-***")
    return data
