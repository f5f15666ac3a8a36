"""The Gemini adapter: OpenAI image requests as Gemini generateContent calls.

Generations and edits become ``POST {base}/{version}/models/{model}:generateContent``
(docs/spec/gemini-images.md §3-5); the answers become one `ImageResponse`.
What Gemini lacks, the proxy does itself: `n` fans out into n calls (image
models refuse candidateCount > 1), masks are composited locally
(mask.py), output formats are transcoded, variations are an edit when
`variations = "emulate"`, and streaming clients get one completed event per
image (Gemini makes no partial images).

    engine = Engine(image_adapter="gemini", env={"GEMINI_API_KEY": "..."})
    generate_image(engine, "a kestrel", size="1792x1024", quality="hd")   # 16:9 at 2K
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from PIL import Image as PILImage

from ...call import Call
from ...errors import InvalidRequestError, ProxyError, UnsupportedOperationError, UpstreamError
from ...imaging import decoded_size, encode, format_of, transcode
from ...types import EventStream, Image, ImageEvent, ImageRequest, ImageResponse, ImageStream, InputFile
from ..base import AdapterSetup
from .errors import error_from_response, most_telling, transport_error
from .mask import MASK_HINT_INSTRUCTION, composite_masked, mask_hint_png
from .options import GeminiOptions
from .response import GeminiResult, parse_generate_response, sum_usage
from .sizes import GeminiImageConfig, image_config_for

VARIATION_PROMPT = (
    "Make a variation of this image: keep its subject, composition, palette and style, "
    "and vary the details as a second take by the same artist would."
)
_ECHO_QUALITIES = ("low", "medium", "high")
# Pillow's complaints about bytes Google sent; they are Google's fault (502), never a proxy 500.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError)


@dataclass(frozen=True)
class _Failed:
    """The error of one generateContent call, made from Google's answer (or from not reaching Google)."""

    error: ProxyError


@dataclass
class _Made:
    """One finished image and what the echo fields report about it."""

    image: Image
    size: str
    output_format: str
    background: str
    result: GeminiResult


class GeminiImages:
    """`ImageAdapter` for Google's Gemini API (generateContent)."""

    name = "gemini"

    def __init__(self, setup: AdapterSetup) -> None:
        self._http = setup.http
        self._catalog = setup.catalog
        self.options = GeminiOptions.from_mapping(setup.options)
        # One bound for all calls of this adapter, so n=10 from several clients at once
        # cannot flood Google (and earn 429s) with dozens of parallel calls.
        self._slots = asyncio.Semaphore(self.options.max_concurrency)

    async def generate(self, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        prompt = request.prompt or ""
        return await self._run(request, ctx, images=[], prompt=prompt, prefix="image_generation")

    async def edit(self, request: ImageRequest, ctx: Call) -> ImageResponse | ImageStream:
        prompt = request.prompt or ""
        return await self._run(request, ctx, images=request.images, prompt=prompt, prefix="image_edit")

    async def variation(self, request: ImageRequest, ctx: Call) -> ImageResponse:
        if self.options.variations != "emulate":
            raise UnsupportedOperationError(
                "Gemini has no image variations endpoint, so this proxy rejects variations by default. "
                "To emulate them (an edit that asks the model for a variation of your image), set "
                'variations = "emulate" under [providers.gemini] in the proxy\'s config '
                '(Engine: image_adapter_opts={"variations": "emulate"}).',
                param="model",
            )
        result = await self._run(request, ctx, images=request.images[:1], prompt=VARIATION_PROMPT, prefix="image_edit")
        # The validator refuses stream=true for variations, so this is always a whole answer.
        assert isinstance(result, ImageResponse)
        return result

    async def aclose(self) -> None:
        """Nothing to close: the HTTP client belongs to the engine."""

    # -- one request ------------------------------------------------------------------

    async def _run(
        self, request: ImageRequest, ctx: Call, *, images: list[InputFile], prompt: str, prefix: str
    ) -> ImageResponse | ImageStream:
        if request.background == "transparent":
            raise InvalidRequestError(
                "Gemini image models make opaque images only; use background 'opaque' or 'auto'.",
                param="background",
                code="invalid_value",
            )
        if ctx.model is None:  # only an adapter whose AdapterInfo names no default gets here
            raise InvalidRequestError("Name a Gemini model, or start the proxy with --default-model.", param="model")
        model = ctx.model.removeprefix("models/")
        # Ratios and tiers are the target model's, whatever rules the requested name follows.
        target = self._catalog.for_provider(model, "gemini")
        config = image_config_for(request.size, request.quality, target, model=model)
        body = _body(self._parts(request, images, prompt), config)
        results = await self._fan_out(body, request.count, model, ctx)
        fmt = _output_format(request, results)
        # Compositing and transcoding 4K images takes Pillow a while: keep the event loop free meanwhile.
        made = await asyncio.to_thread(lambda: [self._finish(result, request, fmt) for result in results])
        quality = request.quality if request.quality in _ECHO_QUALITIES else "high"
        if request.wants_stream:
            return EventStream(_events(made, prefix, quality))
        first = made[0]
        return ImageResponse(
            images=[m.image for m in made],
            model=model,
            usage=sum_usage([m.result.usage for m in made]),
            background=first.background,
            output_format=first.output_format,
            quality=quality,
            size=first.size,
        )

    def _parts(self, request: ImageRequest, images: list[InputFile], prompt: str) -> list[dict[str, Any]]:
        parts = [_inline_part(f.data, f.mime_type) for f in images]
        if request.mask is not None and images and self.options.mask_hint:
            parts.append(_inline_part(mask_hint_png(request.mask.data), "image/png"))
            prompt = f"{prompt}\n\n{MASK_HINT_INSTRUCTION}"
        parts.append({"text": prompt})
        return parts

    async def _fan_out(self, body: dict[str, Any], n: int, model: str, ctx: Call) -> list[GeminiResult]:
        """n calls at once (bounded); the images that came back, or the most telling of Google's errors.

        Only what Google answered (or a failure to reach it) is weighed against the other calls.
        Anything else raised beneath the adapter (a cassette miss from the transport, a bug, a
        cancellation) reaches the caller untouched, never hidden behind a partial answer.
        """
        calls = (self._call(body, model, ctx) for _ in range(n))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        results: list[GeminiResult] = []
        failures: list[ProxyError] = []
        for outcome in outcomes:
            if isinstance(outcome, GeminiResult):
                results.append(outcome)
            elif isinstance(outcome, _Failed):
                failures.append(outcome.error)
            else:
                raise outcome
        if not results:
            raise most_telling(failures)
        return results

    async def _call(self, body: dict[str, Any], model: str, ctx: Call) -> GeminiResult | _Failed:
        base = f"{self.options.base_url}/{self.options.api_version}"
        url = f"{base}/models/{quote(model, safe='-._~')}:generateContent"
        headers = {"content-type": "application/json"}
        if ctx.api_key:
            headers["x-goog-api-key"] = ctx.api_key
        async with self._slots:
            try:
                response = await self._http.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                error = transport_error(exc, model=model)
                error.__cause__ = exc  # kept for the log, as `raise ... from exc` would
                return _Failed(error)
        if response.status_code != 200:
            return _Failed(error_from_response(response.status_code, response.content, model=model))
        try:
            return parse_generate_response(response.content, model=model, safety_code=self.options.safety_code)
        except ProxyError as exc:  # a safety block, no image, a body that is not Google's
            return _Failed(exc)

    def _finish(self, result: GeminiResult, request: ImageRequest, fmt: str) -> _Made:
        """Mask compositing and output format `fmt`, then the echo facts read from the final bytes."""
        compression = request.output_compression if fmt in ("jpeg", "webp") else None
        background = "opaque"
        try:
            if request.mask is not None and request.images:
                composed = composite_masked(request.images[0].data, request.mask.data, result.data)
                data = encode(composed, fmt, compression)
                background = "transparent" if composed.mode == "RGBA" and fmt != "jpeg" else "opaque"
            else:
                data = transcode(result.data, fmt, compression)
            width, height = decoded_size(data)
        except _DECODE_ERRORS as exc:
            raise UpstreamError(f"Gemini sent an image the proxy cannot decode ({type(exc).__name__}: {exc}).") from exc
        fmt_out = format_of(data) or "png"
        image = Image(data, mime_type=f"image/{fmt_out}", revised_prompt=result.text)
        return _Made(image=image, size=f"{width}x{height}", output_format=fmt_out, background=background, result=result)


def _output_format(request: ImageRequest, results: list[GeminiResult]) -> str:
    """The one format of every image of the answer (OpenAI echoes a single output_format).

    The client's choice, else what Gemini sent when all images agree; PNG for mask
    composites (lossless keeps the unmasked pixels exact) and for mixed answers
    (no image loses quality).
    """
    if request.output_format:
        return request.output_format
    formats = {format_of(r.data) for r in results}
    if request.mask is not None or len(formats) != 1:
        return "png"
    return formats.pop() or "png"


def _inline_part(data: bytes, mime_type: str) -> dict[str, Any]:
    # Standard base64 and the sniffed type: Google reads both alphabets, but standard is what its docs show.
    return {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode("ascii")}}


def _body(parts: list[dict[str, Any]], config: GeminiImageConfig) -> dict[str, Any]:
    generation: dict[str, Any] = {"responseModalities": ["IMAGE"]}
    image_config = config.to_json()
    if image_config:
        generation["imageConfig"] = image_config
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation}


async def _events(made: list[_Made], prefix: str, quality: str) -> AsyncIterator[ImageEvent]:
    """One completed event per image, each with the usage of the call that made it."""
    for item in made:
        yield ImageEvent(
            kind="completed",
            prefix=prefix,
            image=item.image,
            usage=item.result.usage,
            fields={
                "size": item.size,
                "quality": quality,
                "background": item.background,
                "output_format": item.output_format,
                "created_at": int(time.time()),
            },
        )
