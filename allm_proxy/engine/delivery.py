"""Delivery: the answer in the form the client asked for (base64 or URL), planned once per call.

GPT-image and Gemini models return base64 only; a client that wants URLs gets
ones the proxy hosts (`/v1/images/files/{id}`, or `data:` URLs in-process).
A provider URL is fetched when the client wants base64, when a stream needs
the bytes, or when `materialize_urls` keeps the bytes in answers and recordings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, cast

import httpx

from .. import errors
from ..call import Delivery, Route
from ..files import HostedFiles
from ..types import Image, ImageEvent, ImageRequest, ImageResponse, ImageStream


def plan(request: ImageRequest, route: Route, provider_options: Mapping[str, Any], *, can_relay: bool) -> Delivery:
    """How the answer reaches the client; `relay` only when the provider's answer needs no conversion."""
    wanted = request.response_format or _default_format(request, route)
    materialize = bool(provider_options.get("materialize_urls"))
    # The validator has checked response_format: "url", "b64_json", or not given.
    fmt = cast(Literal["url", "b64_json"] | None, wanted)
    return Delivery(
        format=fmt,
        relay=can_relay and not materialize and _needs_no_conversion(request, route, wanted),
        materialize_urls=materialize,
    )


def _default_format(request: ImageRequest, route: Route) -> str | None:
    """The delivery a client that gave no response_format gets; None leaves it to the provider."""
    if route.model is None:
        return None  # the provider chooses the model, and so the answer's form
    return "b64_json" if route.family.b64_only or request.stream else "url"


def _needs_no_conversion(request: ImageRequest, route: Route, wanted: str | None) -> bool:
    if wanted is None:
        return True  # the client takes whatever form the provider chose
    if route.family.b64_only:
        return wanted == "b64_json"  # base64 is all these models return
    # DALL-E answers follow response_format; an unknown model is trusted only when told.
    return not route.family.permissive or request.response_format is not None


def upstream_form(request: ImageRequest, route: Route) -> ImageRequest:
    """The request as the provider gets it: the routed model, and no response_format a b64-only model
    would refuse (the proxy serves URLs for it)."""
    sent = dataclasses.replace(request, model=route.model)
    if route.family.b64_only and request.response_format is not None:
        sent.response_format = None
    if sent.model != request.model or sent.response_format != request.response_format:
        # The client's bytes no longer say what goes upstream (the server streams an upload only
        # when this keeps both: see `Engine.streams_upload`).
        sent.verbatim = sent.upload = None
    return sent


class Deliverer:
    """Fetches provider URLs and hosts image bytes, with the engine's HTTP client and file store."""

    def __init__(self, files: HostedFiles) -> None:
        self.files = files

    async def deliver(
        self, response: ImageResponse, delivery: Delivery, http: httpx.AsyncClient, public_base_url: str | None
    ) -> None:
        """Make `response` what the client asked for; the provider's raw JSON goes when anything changes."""
        delivered: list[Image] = []
        changed = False
        for image in response.images:
            if not image.has_bytes and image.url and (delivery.format == "b64_json" or delivery.materialize_urls):
                await self.fetch(image, http)
                changed = True
            if delivery.format == "url" and image.has_bytes:
                image = await self.host(image, public_base_url)
                changed = True
            delivered.append(image)
        response.images = delivered
        if changed:
            response.raw_json = None

    async def events(self, stream: ImageStream, http: httpx.AsyncClient) -> AsyncIterator[ImageEvent]:
        """A provider stream whose images all carry bytes: SSE events carry base64 only, so an image
        that is a URL (a scripted reply, a provider URL) is fetched here."""
        try:
            async for event in stream:
                if event.image is not None and not event.image.has_bytes and event.image.url:
                    await self.fetch(event.image, http)
                yield event
        finally:
            await stream.aclose()

    async def fetch(self, image: Image, http: httpx.AsyncClient) -> None:
        assert image.url is not None
        try:
            fetched = await http.get(image.url, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise errors.UpstreamError(f"Could not fetch the provider's image URL: {exc}") from exc
        if fetched.status_code != 200:
            raise errors.UpstreamError(f"Fetching the provider's image URL answered HTTP {fetched.status_code}.")
        image._data = fetched.content  # the URL's bytes become the image's own
        image.mime_type = image.mime_type or fetched.headers.get("content-type")

    async def host(self, image: Image, base_url: str | None) -> Image:
        """A URL for the image's bytes: served by the proxy (from the state store, so any worker can),
        or a `data:` URL in-process."""
        mime = image.mime_type or "image/png"
        if base_url is None:
            url = f"data:{mime};base64,{image.b64_json()}"
        else:
            url = f"{base_url.rstrip('/')}/images/files/{await self.files.put(image.data, mime)}"
        return Image(url, mime_type=mime, revised_prompt=image.revised_prompt, extra=image.extra)
