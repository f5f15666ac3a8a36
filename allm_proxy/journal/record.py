"""One journal entry as the store keeps it: the entry's fields, and its image bytes described lazily.

Building an entry on the hot path costs a few dict writes: the images are kept
as they came (bytes, or an `Image` still holding the provider's base64), and
their MIME type, width, height and sha256 are worked out the first time
somebody reads the entry, or just before their bytes are dropped (the
`max_image_mb` bound). A provider's base64 image dropped before anyone read it
is described from its first bytes only (MIME type, size, dimensions; no
sha256), and a relayed answer nobody read is let go unparsed, so keeping the
journal never costs a decode of every big answer the proxy relays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..probe import HEAD_BYTES
from ..types import Image, b64decode_lenient, sniff_mime
from ..validation import header_dimensions

# Where a blob's bytes come from: bytes, an Image (base64 decoded on first use), or a callable.
BlobSource = bytes | Image | Callable[[], bytes | None]


@dataclass
class Blob:
    """An uploaded file or an answered image of one entry."""

    source: BlobSource | None
    size: int  # the byte count, or an estimate of it before the bytes are decoded
    part: str | None = None  # the multipart field an upload came in (image, image[], mask)
    declared_mime: str | None = None
    info: dict[str, Any] | None = None
    dropped: bool = False

    def data(self) -> bytes | None:
        """The bytes, or None once they are dropped (or were never there: a provider URL)."""
        source = self.source
        if source is None:
            return None
        if isinstance(source, bytes):
            return source
        data: bytes | None
        if isinstance(source, Image):
            if not source.has_bytes and not (source.url or "").startswith("data:"):
                return None
            data = source.data
        else:
            data = source()
        self.source = data  # decoded once
        return data

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
            # Bytes in hand hash at memory speed; base64 text would have to be decoded first.
            source = self.source
            in_hand = isinstance(source, bytes) or (isinstance(source, Image) and source._data is not None)
            if in_hand:
                self.describe()
            else:
                self.info = self._described_from_head()
        self.source = None
        self.dropped = True
        return self.size

    def _described_from_head(self) -> dict[str, Any]:
        """MIME type, size and dimensions from the first bytes (a PNG, JPEG or WEBP header is near the
        start); the sha256 would need every byte, so it stays unknown."""
        head = self._head(HEAD_BYTES)
        info: dict[str, Any] = {
            "mime_type": (sniff_mime(head) if head else None) or self.declared_mime,
            "width": None,
            "height": None,
            "bytes": self.size,
            "sha256": None,
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
        if isinstance(source, Image) and source.has_bytes:
            if source._data is not None:
                return source._data[:count]
            text = (source._b64 or "")[: (count // 3 + 1) * 4]
            try:
                return b64decode_lenient(text)
            except ValueError:
                return b""
        return b""


@dataclass
class Record:
    """A stored entry: its JSON fields, its uploads and its answered images."""

    fields: dict[str, Any]
    inputs: list[Blob] = field(default_factory=list)
    images: list[Blob] = field(default_factory=list)
    # Work left for the first reader (parsing a relayed body for its images and usage),
    # and the bytes that work holds until then.
    # Called with the record (and `relayed=False` to skip parsing a relayed body about to be dropped).
    pending: Callable[..., None] | None = None
    pending_bytes: int = 0

    @property
    def id(self) -> str:
        return str(self.fields["id"])

    @property
    def held_bytes(self) -> int:
        blobs = sum(b.size for b in (*self.inputs, *self.images) if not b.dropped and b.source is not None)
        return blobs + self.pending_bytes

    def settle(self) -> None:
        """Finish the deferred work; the store calls this under its lock."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending(self)

    def drop_pending(self) -> int:
        """Let a relayed body go unread; the entry says its images were not kept. Bytes freed."""
        freed, self.pending_bytes = self.pending_bytes, 0
        pending, self.pending = self.pending, None
        if pending is not None:
            pending(self, relayed=False)  # the cheap part: time and params
            self.fields["images_dropped"] = True
        return freed

    def to_dict(self) -> dict[str, Any]:
        """The entry as the API answers it."""
        self.settle()
        return {
            **self.fields,
            "inputs": [b.describe() for b in self.inputs],
            "images": [b.describe() for b in self.images],
        }
