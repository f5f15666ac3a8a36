"""FakeImages: deterministic generated images, scripted replies; no key, no network.

Without a script every request gets generated images: a seeded landscape
that shows the prompt, honouring size, n, output_format, compression,
background, masks and streaming, with GPT-style usage and echo fields where
the model family has them. With a script (`script`, `scripts` or
`script_path` in the provider options) the replies come from it, in order,
per session; see `script.FakeScript`.

    engine = Engine(image_adapter="fake", image_adapter_opts={"script_path": "replies.yaml"})
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from ...call import Call
from ...capabilities import ModelFamily
from ...imaging import FORMAT_MIME, decoded_size, format_of
from ...state.cursors import ScriptCursors
from ...types import EventStream, Image, ImageEvent, ImageRequest, ImageResponse, ImageStream, Usage, parse_size
from .jobs import ImageCache, Job, frames, frames_of, plan
from .meta import image_tokens, output_tokens, resolved_quality, revised_prompt, text_tokens
from .options import SCRIPT_KEYS, FakeOptions
from .script import FakeScript, Reply
from .transform import has_alpha


class FakeImages:
    """The `fake` provider. `script` (a `FakeScript`) is None when images are generated."""

    name = "fake"

    def __init__(self, options: Mapping[str, Any] | None = None, *, state: Any = None) -> None:
        options = dict(options or {})
        self.options = FakeOptions.from_mapping(options)
        self.script = script_from_options(options)
        # With a shared store every worker walks one script; in memory the script counts itself.
        self.script_cursors = ScriptCursors(
            state, self.script.replies if self.script else (), self.script.source if self.script else ""
        )
        self.cache = ImageCache(self.options.cache_entries, self.options.cache_bytes)

    async def generate(self, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        return await self._answer(request, ctx)

    async def edit(self, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        return await self._answer(request, ctx)

    async def variation(self, request: ImageRequest, ctx: Call) -> ImageResponse:
        result = await self._answer(request, ctx)
        assert isinstance(result, ImageResponse)  # variations never stream (the validator says so)
        return result

    async def aclose(self) -> None:
        return None

    # -- answers -----------------------------------------------------------------------

    async def _answer(self, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        if self.script is not None:
            position = await self.script_cursors.take(ctx.session)  # shared script cursor
            reply = self.script.take(request, session=ctx.session, model=ctx.model or "", position=position)
            if reply.error is not None:
                raise reply.error.to_exception()
            if not reply.generate:
                return await self._scripted(reply, request, ctx)
        jobs = plan(request, ctx.family)
        if request.stream and request.operation != "variation":
            return EventStream(self._generated_events(jobs, request))
        images = [Image((await self._frames(job, 0))[-1], mime_type=FORMAT_MIME[job.output_format]) for job in jobs]
        if ctx.family.revised_prompt and request.prompt:
            for image in images:
                image.revised_prompt = revised_prompt(request.prompt, request.style)
        first = jobs[0]
        return self._response(
            images,
            request,
            ctx,
            [job.size for job in jobs],
            first.output_format,
            "transparent" if first.alpha else "opaque",
        )

    async def _frames(self, job: Job, partials: int) -> tuple[bytes, ...]:
        key = (job, partials)
        cached = self.cache.get(key)
        if cached is None:
            # Pillow work is CPU-bound; a worker thread keeps the server's event loop answering.
            cached = await asyncio.to_thread(frames, job, partials)
            self.cache.put(key, cached)
        return cached

    def _response(
        self,
        images: list[Image],
        request: ImageRequest,
        ctx: Call,
        sizes: list[tuple[int, int]],
        output_format: str,
        background: str,
    ) -> ImageResponse:
        response = ImageResponse(images=images, model=ctx.model)
        if ctx.family.gpt_style_response:
            response.usage = usage_for(request, sizes)
            response.background = background
            response.output_format = output_format
            response.quality = resolved_quality(request.quality)
            response.size = f"{sizes[0][0]}x{sizes[0][1]}" if sizes else None
        return response

    async def _scripted(self, reply: Reply, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        images = reply.images_for(request.count)
        if ctx.family.revised_prompt and request.prompt:
            for image in images:
                image.revised_prompt = image.revised_prompt or revised_prompt(request.prompt, request.style)
        facts = [_describe(image) for image in images]
        default = _requested_size(request, ctx.family)
        sizes = [fact[0] or default for fact in facts]
        output_format = facts[0][1] if facts and facts[0][1] else request.output_format or "png"
        background = "transparent" if facts and facts[0][2] else "opaque"
        if request.stream and request.operation != "variation":
            return EventStream(self._scripted_events(images, request, sizes))
        return self._response(images, request, ctx, sizes, output_format, background)

    # -- streaming ---------------------------------------------------------------------

    async def _generated_events(self, jobs: list[Job], request: ImageRequest) -> AsyncIterator[ImageEvent]:
        partials = request.partial_images or 0
        for job in jobs:
            encoded = await self._frames(job, partials)
            mime = FORMAT_MIME[job.output_format]
            for event in _events(request, [Image(data, mime_type=mime) for data in encoded], job.size):
                yield event

    async def _scripted_events(
        self, images: list[Image], request: ImageRequest, sizes: list[tuple[int, int]]
    ) -> AsyncIterator[ImageEvent]:
        partials = request.partial_images or 0
        for image, size in zip(images, sizes, strict=True):
            fmt = format_of(image.data) if image.has_bytes else None
            encoded = [image]  # a URL or a file that is no PNG/JPEG/WEBP has no previews
            if fmt is not None:
                data = await asyncio.to_thread(frames_of, image.data, fmt, partials)
                encoded = [Image(d, mime_type=image.mime_type) for d in data[:-1]] + [image]
            for event in _events(request, encoded, size):
                yield event


def _events(request: ImageRequest, encoded: list[Image], size: tuple[int, int]) -> list[ImageEvent]:
    """partial_image events for all but the last image, then completed (docs/spec/openai-images.md §7)."""
    prefix = "image_edit" if request.operation == "edit" else "image_generation"
    # Stream events echo the settings as requested, so "auto" can appear (docs/spec/openai-images.md §7).
    echo = {
        "size": request.size or "auto",
        "quality": request.quality or "auto",
        "background": request.background or "auto",
        "output_format": request.output_format or "png",
    }
    events = [
        ImageEvent(
            kind="partial_image",
            prefix=prefix,
            image=image,
            partial_image_index=index,
            fields={"created_at": int(time.time()), **echo},
        )
        for index, image in enumerate(encoded[:-1])
    ]
    one = dataclasses.replace(request, n=1)
    events.append(
        ImageEvent(
            kind="completed",
            prefix=prefix,
            image=encoded[-1],
            usage=usage_for(one, [size]),
            fields={"created_at": int(time.time()), **echo},
        )
    )
    return events


def usage_for(request: ImageRequest, sizes: list[tuple[int, int]]) -> Usage:
    """Token figures shaped like OpenAI's for gpt-image (prompt, input images, output images)."""
    text = text_tokens(request.prompt)
    pictures = sum(image_tokens(decoded_size(f.data)) for f in request.images)
    out = sum(output_tokens(size, request.quality) for size in sizes)
    return Usage(
        input_tokens=text + pictures,
        output_tokens=out,
        total_tokens=text + pictures + out,
        input_text_tokens=text,
        input_image_tokens=pictures,
        output_image_tokens=out,
        output_text_tokens=0,
    )


def _requested_size(request: ImageRequest, family: ModelFamily) -> tuple[int, int]:
    requested = request.size_tuple()
    if requested is not None:
        return requested
    if request.images:
        return decoded_size(request.images[0].data)
    return parse_size(family.default_size) or (1024, 1024)


def _describe(image: Image) -> tuple[tuple[int, int] | None, str | None, bool]:
    """(size, format, has alpha) of a scripted image, from its header; Nones when it cannot be read."""
    if not image.has_bytes:
        return None, None, False
    try:
        return decoded_size(image.data), format_of(image.data), has_alpha(image.data)
    except Exception:  # scripted bytes may deliberately be no image at all
        return None, format_of(image.data), False


def script_from_options(options: Mapping[str, Any]) -> FakeScript | None:
    """The script the options name (`script`, `scripts` or `script_path`), or None."""
    given = [name for name in SCRIPT_KEYS if options.get(name) is not None]
    if len(given) > 1:
        raise ValueError(f"give the fake provider one script, not {' and '.join(given)}")
    if not given:
        return None
    value = options[given[0]]
    if given[0] == "script_path":
        return FakeScript.from_file(Path(value))
    if isinstance(value, FakeScript):
        return value
    if isinstance(value, list | tuple):
        return FakeScript(value, source=f"the '{given[0]}' option")
    raise ValueError(
        f"the fake provider's '{given[0]}' option must be a FakeScript or a list of replies, got {type(value).__name__}"
    )
