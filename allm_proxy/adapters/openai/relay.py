"""Big OpenAI answers relayed to the client as they arrive.

A 3 MB base64 answer that the proxy has nothing to change in is neither
parsed nor held whole: the client gets the provider's bytes chunk by chunk,
so memory per request is one chunk and CPU per request does not grow with
parsing. Small answers are read whole, checked and parsed as before, which
keeps the 502s that describe a broken answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx

from ...types import RawBody
from .errors import transport_error, unusable_body

log = logging.getLogger("allm_proxy.adapters.openai")

# Below this a whole read costs little and lets the proxy check the answer first.
RELAY_MIN_BYTES = 256 * 1024


def relayable(response: httpx.Response) -> int | None:
    """The declared length when `response` can be relayed as it arrives, else None."""
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not declared.isdigit() or encoding != "identity" or media != "application/json":
        return None
    length = int(declared)
    return length if length >= RELAY_MIN_BYTES else None


async def relay(response: httpx.Response, length: int, *, api_key: str | None) -> RawBody:
    """A `RawBody` that streams `response` to the client; the first chunk is checked for JSON."""
    chunks = response.aiter_raw()
    try:
        first = await anext(chunks, b"")
    except httpx.HTTPError as exc:
        await response.aclose()
        raise transport_error(exc, response.request.url, api_key) from exc
    if not first.lstrip().startswith(b"{"):
        rest = first
        async for more in chunks:  # bounded by the declared length
            rest += more
            if len(rest) > 4096:
                break
        await response.aclose()
        raise unusable_body(response, rest, "not a JSON object", api_key)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except httpx.HTTPError as exc:
            # Headers are sent already: all that is left is to end the client's connection,
            # as the provider ended ours.
            log.warning("OpenAI's answer broke off while relaying it (%s)", type(exc).__name__)
            raise
        finally:
            await response.aclose()

    return RawBody(chunks=body(), length=length, content_type=response.headers["content-type"], close=response.aclose)
