"""One journal entry as the store keeps it: the entry's fields, and its image bytes described lazily.

Building an entry on the hot path costs a few dict writes: the images are kept
as they came (bytes, or an `Image` still holding the provider's base64), and
their MIME type, width, height and sha256 are worked out the first time
somebody reads the entry, or just before their bytes are dropped (the
`max_image_mb` bound). A provider's base64 image dropped before anyone read it
is described from its first bytes only (MIME type, size, dimensions; no
sha256), and a relayed answer nobody read is let go unparsed, so keeping the
journal never costs a decode of every big answer the proxy relays.

A store may move a blob's bytes out of the Python heap as they came (`pieces`,
never decoded): to a file (`OnDisk`, the memory journal) or to Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..probe import HEAD_BYTES
from ..types import Image, b64decode_lenient, sniff_mime
from ..validation import header_dimensions


@dataclass(frozen=True)
class OnDisk:
    """Bytes a store wrote to a file of its own; `base64`: the file holds the provider's base64 text."""

    path: str
    base64: bool = False
    # Who takes the file back when the bytes are dropped (the spool reuses it); None: delete it.
    release: Callable[[str], None] | None = field(default=None, compare=False)

    def read(self) -> bytes | None:
        """The bytes (decoded when base64), or None once the file is gone (dropped, or the store closed)."""
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except OSError:
            return None
        return _decoded(data) if self.base64 else data

    def head(self, count: int) -> bytes:
        try:
            with open(self.path, "rb") as file:
                data = file.read((count // 3 + 1) * 4 if self.base64 else count)
        except OSError:
            return b""
        return _decoded(data) if self.base64 else data

    def remove(self) -> None:
        if self.release is not None:
            self.release(self.path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


# The pieces of a relayed answer, joined only when somebody reads it.
Chunks = tuple[bytes | memoryview, ...]

# Where a blob's bytes come from: bytes, an Image (base64 decoded on first use), a callable, the
# chunks of a relayed body, or a file a store wrote.
BlobSource = bytes | Image | Callable[[], bytes | None] | Chunks | OnDisk


@dataclass(slots=True)
class Blob:
    """An uploaded file, an answered image, or a relayed answer body of one entry."""

    source: BlobSource | None
    size: int  # the byte count, or an estimate of it before the bytes are decoded
    part: str | None = None  # the multipart field an upload came in (image, image[], mask)
    declared_mime: str | None = None
    info: dict[str, Any] | None = None
    dropped: bool = False
    sha256: str | None = None  # known before the bytes are read when a store hashed them as it wrote them

    def data(self) -> bytes | None:
        """The bytes, or None once they are dropped (or were never there: a provider URL)."""
        source = self.source
        if source is None:
            return None
        if isinstance(source, bytes):
            return source
        if isinstance(source, OnDisk):
            return source.read()  # not kept: the point of the file is to keep the heap small
        data: bytes | None
        if isinstance(source, tuple):
            data = b"".join(source)
        elif isinstance(source, Image):
            if not source.has_bytes and not (source.url or "").startswith("data:"):
                return None
            data = source.data
        else:
            data = source()
        self.source = data  # decoded once
        return data

    def pieces(self) -> tuple[Chunks, bool] | None:
        """The bytes as they are held, for a store to move elsewhere without decoding them:
        (pieces, True when they are base64 text). None when there is nothing to move."""
        source = self.source
        if source is None or isinstance(source, OnDisk):
            return None
        if isinstance(source, bytes):
            return (source,), False
        if isinstance(source, tuple):
            return source, False
        if isinstance(source, Image):
            if source._data is not None:
                return (source._data,), False
            if source.b64_length():
                return (source.b64_held(),), True
            url = source.url or ""
            if url.startswith("data:") and "," in url:
                return (url.split(",", 1)[1].encode("ascii"),), True
            return None
        data = source()
        return ((data,), False) if data is not None else None

    def describe(self) -> dict[str, Any]:
        """MIME type, width, height, byte count and sha256, worked out once."""
        if self.info is None:
            data = self.data()
            info: dict[str, Any] = {
                "mime_type": self.declared_mime,
                "width": None,
                "height": None,
                "bytes": self.size,
                "sha256": None,
            }
            if data is not None:
                info.update(
                    mime_type=sniff_mime(data) or self.declared_mime,
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
                info["width"], info["height"] = header_dimensions(data)
                self.size = len(data)
            if self.part is not None:
                info = {"part": self.part, **info}
            self.info = info
        return {**self.info, "bytes_dropped": self.dropped}

    def drop(self) -> int:
        """Let the bytes go; how many bytes that frees. An unread blob keeps what its head tells."""
        if self.dropped or self.source is None:
            return 0
        if self.info is None:
            # Bytes in hand hash at memory speed; base64 text would have to be decoded first, and a
            # file read whole (a store sheds on its event loop).
            source = self.source
            in_hand = isinstance(source, bytes) or (isinstance(source, Image) and source._data is not None)
            if in_hand:
                self.describe()
            else:
                self.info = self._described_from_head()
        self.discard()
        self.dropped = True
        return self.size

    def discard(self) -> None:
        """Forget the bytes without describing them (the entry itself is going)."""
        if isinstance(self.source, OnDisk):
            self.source.remove()
        self.source = None

    def _described_from_head(self) -> dict[str, Any]:
        """MIME type, size and dimensions from the first bytes (a PNG, JPEG or WEBP header is near the
        start); the sha256 would need every byte, so it stays unknown unless the store worked it out."""
        head = self._head(HEAD_BYTES)
        info: dict[str, Any] = {
            "mime_type": (sniff_mime(head) if head else None) or self.declared_mime,
            "width": None,
            "height": None,
            "bytes": self.size,
            "sha256": self.sha256,
        }
        if head:
            info["width"], info["height"] = header_dimensions(head)
        if self.part is not None:
            info = {"part": self.part, **info}
        return info

    def _head(self, count: int) -> bytes:
        source = self.source
        if isinstance(source, bytes):
            return source[:count]
        if isinstance(source, OnDisk):
            return source.head(count)
        if isinstance(source, Image) and source.has_bytes:
            if source._data is not None:
                return source._data[:count]
            return _decoded(source.b64_prefix((count // 3 + 1) * 4).encode("ascii"))
        return b""


class ChunkSink:
    """A relayed body kept as the chunks that went by (the form a store that writes elsewhere later wants)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def blob(self, content_type: str) -> Blob:
        return Blob(tuple(self.chunks), self.size, declared_mime=content_type)

    def abandon(self) -> None:
        self.chunks, self.size = [], 0


@dataclass(slots=True)
class Record:
    """A stored entry: its JSON fields, its uploads and its answered images.

    `relayed`: an answer relayed as the provider sent it, parsed for its images and usage by the
    first reader (`settle`), or let go unparsed (`drop_pending`).
    """

    fields: dict[str, Any]
    inputs: list[Blob] = field(default_factory=list)
    images: list[Blob] = field(default_factory=list)
    relayed: Blob | None = None
    # The entry's fields, left for its first reader to write (cheap: no image is touched).
    pending: Callable[[Record], None] | None = None
    # Its bytes are held elsewhere already (the server's answer cache): kept by reference, never
    # copied to a store's files.
    resident: bool = False
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = str(self.fields["id"])

    @property
    def pending_bytes(self) -> int:
        return self.relayed.size if self.relayed is not None else 0

    @property
    def held_bytes(self) -> int:
        blobs = sum(b.size for b in (*self.inputs, *self.images) if not b.dropped and b.source is not None)
        return blobs + self.pending_bytes

    def blobs(self) -> list[Blob]:
        """Every blob that may hold bytes: uploads, images and the relayed body."""
        return [*self.inputs, *self.images, *([self.relayed] if self.relayed is not None else [])]

    def settle_fields(self) -> None:
        """Write the fields left to the first reader (cheap: no image is touched)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending(self)

    def settle(self) -> None:
        """Finish the deferred work; the store calls this under its lock."""
        self.settle_fields()
        if self.relayed is not None:
            relayed, self.relayed = self.relayed, None
            raw = relayed.data()
            relayed.discard()
            if raw is None:
                self.fields["images_dropped"] = True
            else:
                self._settle_relayed(raw, relayed.declared_mime or "application/json")

    def drop_pending(self) -> int:
        """Let a relayed body go unread; the entry says its images were not kept. Bytes freed."""
        freed = self.pending_bytes
        if self.relayed is not None:
            self.relayed.discard()
            self.relayed = None
            self.fields["images_dropped"] = True
        self.settle_fields()
        return freed

    def discard(self) -> None:
        """Forget every byte held (the entry is evicted or cleared)."""
        for blob in self.blobs():
            blob.discard()

    def to_dict(self) -> dict[str, Any]:
        """The entry as the API answers it."""
        self.settle()
        return {
            **self.fields,
            "inputs": [b.describe() for b in self.inputs],
            "images": [b.describe() for b in self.images],
        }

    def _settle_relayed(self, raw: bytes, content_type: str) -> None:
        """A relayed body, parsed when first read: its images and usage."""
        from ..cassettes.summary import response_images
        from ..wire.jsonbytes import loads

        self.images = [
            Blob(data, len(data))
            for data in response_images({"body": {"string": raw}, "headers": {"content-type": [content_type]}})
        ]
        try:
            usage = loads(raw).get("usage")  # The codec's parser, five times the stdlib's speed
        except (ValueError, AttributeError):
            usage = None
        if isinstance(usage, dict):
            self.fields["usage"] = usage


def _decoded(text: bytes) -> bytes:
    try:
        return b64decode_lenient(text.decode("ascii", "replace"))
    except ValueError:
        return b""
