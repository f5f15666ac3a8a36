"""One generated image of the fake provider as data (a `Job`), how it is made, and the cache of made ones.

A `Job` holds everything that decides the bytes and nothing else, so it is
the cache key: two requests that must give the same image give equal jobs.
Input images enter the key as a digest, never as the bytes themselves.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from PIL import Image as PILImage

from ...capabilities import ModelFamily
from ...errors import InvalidRequestError
from ...imaging import decoded_size, encode
from ...types import ImageRequest, Operation, parse_size
from .render import scene, seed_of
from .transform import coarse, edit, has_alpha, load, variation


@dataclass(frozen=True)
class Job:
    """The `index`-th image of a request, resolved: concrete size, format and alpha."""

    operation: Operation
    prompt: str
    size: tuple[int, int]
    index: int
    output_format: str
    compression: int | None
    alpha: bool
    style: str | None = None
    digest: str = ""
    inputs: tuple[bytes, ...] = field(default=(), compare=False, repr=False)
    mask: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def size_text(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


# The fake draws every pixel in Python's process: bound the work one request can ask for
# (model ids no family knows are otherwise only bounded at 8192x8192, n up to 10).
MAX_DRAWN_PIXELS = 64 * 1024 * 1024


def plan(request: ImageRequest, family: ModelFamily) -> list[Job]:
    """The jobs of a request, one per image of `n`."""
    fmt = (request.output_format or "png").lower()
    compression = request.output_compression if fmt != "png" else None  # PNG is lossless either way
    inputs = tuple(f.data for f in request.images)
    mask = request.mask.data if request.mask is not None else None
    if request.operation == "generate":
        size = request.size_tuple() or parse_size(family.default_size) or (1024, 1024)
        alpha = request.background == "transparent"
        digest = ""
    else:
        size = request.size_tuple() or decoded_size(inputs[0])
        alpha = request.background == "transparent" or (request.background != "opaque" and has_alpha(inputs[0]))
        digest = _digest(inputs, mask)
    if size[0] * size[1] * request.count > MAX_DRAWN_PIXELS:
        raise InvalidRequestError(
            f"The fake provider draws at most {MAX_DRAWN_PIXELS // 2**20} megapixels per request; "
            f"{request.count} x {size[0]}x{size[1]} is more. Ask for a smaller size or fewer images.",
            param="size",
            code="invalid_size",
        )
    return [
        Job(
            operation=request.operation,
            prompt=request.prompt or "",
            size=size,
            index=index,
            output_format=fmt,
            compression=compression,
            alpha=alpha and fmt != "jpeg",
            style=request.style,
            digest=digest,
            inputs=inputs,
            mask=mask,
        )
        for index in range(request.count)
    ]


def _digest(inputs: tuple[bytes, ...], mask: bytes | None) -> str:
    hasher = hashlib.sha256()
    for data in (*inputs, mask or b""):
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def render(job: Job) -> PILImage.Image:
    """The picture of a job (CPU-bound: call it from a worker thread)."""
    seed = seed_of(job.operation, job.prompt, job.digest, job.index, job.size)
    caption = f"image {job.index + 1} · {job.size_text}"
    if job.operation == "generate":
        return scene(job.prompt, job.size, seed, transparent=job.alpha, muted=job.style == "natural", caption=caption)
    if job.operation == "edit":
        return edit(
            job.prompt,
            job.inputs,
            job.mask,
            job.size,
            seed,
            alpha=job.alpha,
            caption=caption,
            tint_seed=seed_of("tint", job.prompt, job.index),
        )
    return variation(job.inputs[0], job.size, job.index, seed, alpha=job.alpha)


def frames(job: Job, partials: int) -> tuple[bytes, ...]:
    """The encoded partial previews, coarse to fine, then the final image."""
    final = render(job)
    return (
        *(encode(coarse(final, step, partials), job.output_format, job.compression) for step in range(partials)),
        encode(final, job.output_format, job.compression),
    )


def frames_of(data: bytes, output_format: str, partials: int) -> tuple[bytes, ...]:
    """Partial previews of a given image (a scripted reply), then the image unchanged."""
    if partials == 0:
        return (data,)
    try:
        final = load(data)
    except Exception:  # scripted bytes may deliberately be a broken image: send it without previews
        return (data,)
    return (*(encode(coarse(final, step, partials), output_format) for step in range(partials)), data)


class ImageCache:
    """A thread-safe LRU of encoded images, bounded in entries and in bytes."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, tuple[bytes, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: object) -> tuple[bytes, ...] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: tuple[bytes, ...]) -> None:
        size = sum(len(v) for v in value)
        if size > self.max_bytes or self.max_entries <= 0:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= sum(len(v) for v in old)
            self._items[key] = value
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= sum(len(v) for v in dropped)

    def __len__(self) -> int:
        return len(self._items)
