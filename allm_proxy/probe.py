"""What the upload checks need of a file that streams through, worked out as its bytes go by.

A `FileProbe` keeps a file's first bytes (its magic bytes and image header:
PNG's IHDR, JPEG's SOF, WebP's header), counts it, hashes it when asked to,
and walks a PNG's chunks checking each CRC up to IEND, as Pillow's `verify()`
does for a whole file. So a streamed PNG is checked as fully as one read
whole, while the proxy never holds more than its head.
"""

from __future__ import annotations

import hashlib
import re
import zlib

from .types import StreamedFile

# Enough of an image to read its type and dimensions (PNG's IHDR is at byte 16, JPEG's SOF within a
# few kB unless big EXIF blocks come first; then the dimensions stay unknown).
HEAD_BYTES = 64 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_TYPE = re.compile(rb"\w\w\w\w")  # what Pillow's PNG reader accepts as a chunk type


class PngWalk:
    """Fed a file piece by piece: `intact` once every chunk up to IEND had its CRC right
    (IEND's own is not checked, as Pillow does not); `broken` at the first that did not."""

    def __init__(self) -> None:
        self.intact = False
        self.broken = False
        self._field = bytearray()
        self._need = len(PNG_SIGNATURE)
        self._state = "signature"
        self._left = 0  # bytes of the current chunk's data still to come
        self._crc = 0

    def feed(self, view: memoryview) -> None:
        at, end = 0, len(view)
        while at < end and not (self.intact or self.broken):
            if self._state == "data":
                take = min(self._left, end - at)
                self._crc = zlib.crc32(view[at : at + take], self._crc)
                self._left -= take
                at += take
                if self._left == 0:
                    self._state, self._need = "crc", 4
                continue
            take = min(self._need - len(self._field), end - at)
            self._field += view[at : at + take]
            at += take
            if len(self._field) == self._need:
                self._on_field(bytes(self._field))
                self._field.clear()

    def _on_field(self, field: bytes) -> None:
        if self._state == "signature":
            self.broken = field != PNG_SIGNATURE
            self._state, self._need = "header", 8
        elif self._state == "header":
            length, kind = int.from_bytes(field[:4], "big"), field[4:]
            if not _CHUNK_TYPE.match(kind):
                self.broken = True
            elif kind == b"IEND":
                self.intact = True
            else:
                self._crc = zlib.crc32(kind)
                self._left = length
                self._state, self._need = ("data", 0) if length else ("crc", 4)
        else:  # the CRC of the chunk just read
            self.broken = int.from_bytes(field, "big") != self._crc
            self._state, self._need = "header", 8


class FileProbe:
    """One streaming file's head, byte count, sha256 (when `digest`) and PNG walk."""

    def __init__(self, *, digest: bool) -> None:
        self.head = bytearray()
        self.size = 0
        self._sha = hashlib.sha256() if digest else None
        self._png: PngWalk | None = None
        self._sniffed = False

    def feed(self, view: memoryview) -> None:
        before = len(self.head)
        if before < HEAD_BYTES:
            self.head += view[: HEAD_BYTES - before]
        if not self._sniffed and len(self.head) >= len(PNG_SIGNATURE):
            self._sniffed = True
            if self.head.startswith(PNG_SIGNATURE):
                self._png = PngWalk()
                self._png.feed(memoryview(self.head)[:before])  # what came before this piece
        if self._png is not None:
            self._png.feed(view)
        self.size += len(view)
        if self._sha is not None:
            self._sha.update(view)

    def result(self) -> StreamedFile:
        return StreamedFile(
            size=self.size,
            sha256=self._sha.hexdigest() if self._sha is not None else "",
            intact=self._png is not None and self._png.intact,
        )
