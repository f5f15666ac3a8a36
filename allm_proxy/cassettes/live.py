"""Send recorded requests again, to the real upstream, and keep the answers as a recording would.

Which provider a recorded request belongs to follows from its URL: OpenAI's
``.../images/generations|edits|variations``, Gemini's
``.../models/MODEL:generateContent`` (or ``:streamGenerateContent``). It goes
to that provider's configured base URL when there is one, else to the host it
was recorded from. Recordings carry no secrets, so the provider's key is added
here (``Authorization: Bearer`` for OpenAI, ``x-goog-api-key`` for Gemini);
answers pass the cassette layer's `SecretFilter` before anyone keeps them.

    sent = await resend_all(planned, {"openai": Endpoint("https://api.openai.com/v1", key)}, SecretFilter())
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from vcr.request import Request

from ..upstream import AiohttpTransport
from ..wire.multipart import without_base64_parts
from .bodies import as_bytes
from .filters import SecretFilter
from .report import Entry
from .summary import summarize_request
from .transport import _multi_headers, _reason

_OPENAI_PATH = re.compile(r"/images/(?:generations|edits|variations)$")
_GEMINI_PATH = re.compile(r"/[^/]+/models/[^/]+:(?:generateContent|streamGenerateContent)$")
# Set by whoever sends; a recorded value would be wrong (length) or refused (host of another base URL).
_NOT_RESENT = frozenset({"host", "content-length", "connection", "accept-encoding", "transfer-encoding"})
# What vcrpy's decode_response (used by SecretFilter.response) can undo.
_ACCEPT_ENCODING = "gzip, deflate"
AUTH_HEADERS = {"openai": "authorization", "gemini": "x-goog-api-key"}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Endpoint:
    """Where one provider's requests go (`base_url` None: the recorded host) and the key they carry."""

    base_url: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class Planned:
    """One recorded interaction to send again."""

    cassette: Path
    entry: Entry
    provider: str
    model: str | None


@dataclass
class Sent:
    """What came back for a `Planned`: the answer as a filtered vcrpy response dict, or why none came."""

    planned: Planned
    response: dict[str, Any] | None = None
    failure: str | None = None


def provider_of(request: Request) -> str | None:
    """ "openai" or "gemini" by the recorded URL's path; None for anything else (an image URL fetch, ...)."""
    path = request.path or ""
    if _GEMINI_PATH.search(path):
        return "gemini"
    if _OPENAI_PATH.search(path):
        return "openai"
    return None


def plan(cassette: Path, entries: Sequence[Entry]) -> tuple[list[Planned], list[Entry]]:
    """The interactions of one cassette that go to a provider, and the others (not sent)."""
    planned: list[Planned] = []
    others: list[Entry] = []
    for entry in entries:
        provider = provider_of(entry.request)
        if provider is None:
            others.append(entry)
        else:
            planned.append(Planned(cassette, entry, provider, summarize_request(entry.request).model))
    return planned, others


def target_url(request: Request, provider: str, base_url: str | None) -> str:
    """The recorded URL, moved under `base_url` when one is given (query kept)."""
    if base_url is None:
        return str(request.uri)
    path = request.path or ""
    match = (_GEMINI_PATH if provider == "gemini" else _OPENAI_PATH).search(path)
    assert match is not None, "only planned requests get here"
    query = request.parsed_uri.query
    return base_url.rstrip("/") + path[match.start() :] + (f"?{query}" if query else "")


async def resend_all(
    planned: Sequence[Planned],
    endpoints: Mapping[str, Endpoint],
    secret_filter: SecretFilter,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    concurrency: int = 4,
    timeout: float = 600.0,
    progress: Progress | None = None,
) -> list[Sent]:
    """Send every planned request (at most `concurrency` at once); answers in the planned order."""
    slots = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(client: httpx.AsyncClient, item: Planned) -> Sent:
        nonlocal done
        async with slots:
            sent = await _resend(client, item, endpoints.get(item.provider, Endpoint()), secret_filter)
        done += 1
        if progress is not None:
            progress(done, len(planned))
        return sent

    async with httpx.AsyncClient(
        transport=transport or AiohttpTransport(),
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
    ) as client:
        return list(await asyncio.gather(*(one(client, item) for item in planned)))


async def _resend(client: httpx.AsyncClient, item: Planned, endpoint: Endpoint, secret_filter: SecretFilter) -> Sent:
    request = item.entry.request
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in _NOT_RESENT and k.lower() not in secret_filter.headers
    }
    headers["accept-encoding"] = _ACCEPT_ENCODING
    secrets: list[str] = []
    if endpoint.api_key:
        header = AUTH_HEADERS[item.provider]
        headers[header] = f"Bearer {endpoint.api_key}" if item.provider == "openai" else endpoint.api_key
        secrets.append(endpoint.api_key)
    # A JSON cassette stores binary uploads as base64 parts: send the bytes the client sent.
    body = without_base64_parts(request.headers.get("content-type"), as_bytes(request.body))
    url = target_url(request, item.provider, endpoint.base_url)
    try:
        response = await client.send(
            client.build_request(request.method, url, content=body or None, headers=headers), stream=True
        )
        try:
            # The bytes as sent (still compressed): SecretFilter.response decodes them as a recording does.
            content = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        # Never the request itself in the message: its headers hold the key.
        return Sent(item, failure=f"could not reach {httpx.URL(url).host}: {type(exc).__name__}: {exc}")
    raw = {
        "status": {"code": response.status_code, "message": _reason(response)},
        "headers": _multi_headers(response.headers),
        "body": {"string": content},
    }
    return Sent(item, response=secret_filter.response(raw, secrets))
