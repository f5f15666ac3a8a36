"""Where the memory journal keeps image bytes: files in a private temp directory, not the Python heap.

    spool = Spool()
    await spool.spill(blob)        # blob.source becomes OnDisk(path): the heap lets the bytes go
    spool.close()                  # the directory and every file in it go (also at exit)

The directory is made (0700, by `tempfile.mkdtemp`) when the first blob is
spilled, so an engine that journals nothing makes none. The bytes are written
as they came (a provider's base64 stays base64): keeping an entry never decodes
an answer. Small bodies are written on the event loop (a page-cache write of a
few hundred kB costs less than the hop to a thread); big ones in a thread.

Files of dropped bytes are reused rather than deleted (up to `RECYCLED_FILES`):
overwriting pages the kernel already caches costs a fifth to an eighth of the
CPU of writing a new file and deleting an old one, and under load the journal
drops one answer for each it keeps.

The directory is made where `scratch.scratch_dir` says: in `/dev/shm` when it
has room for the journal's whole budget, so that no kept answer is written back
to a disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

from ..scratch import scratch_dir
from .record import Blob, Chunks, OnDisk

log = logging.getLogger("allm_proxy.journal")

# Bodies up to this size are written without leaving the event loop.
INLINE_WRITE_MAX = 256 * 1024
# Files of dropped bytes kept for reuse (beyond it they are deleted).
RECYCLED_FILES = 64


def remove_orphans(root: Path) -> None:
    """Remove the spool directories in `root` of processes that are gone (a proxy killed with SIGKILL
    runs no exit handler; in /dev/shm its files would hold memory until the machine restarts)."""
    for directory in root.glob("allm-journal-*-*"):
        pid = directory.name.split("-")[2]
        try:
            if not pid.isdigit() or int(pid) == os.getpid() or directory.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue  # gone already
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except PermissionError:
            continue  # alive, another user's


class Spool:
    """A private directory of blob files, removed on `close` and when the process exits.

    `budget`: the bytes the journal may keep, for choosing where the directory goes (`scratch_dir`).
    Thread-safe; the journal drops a blob (`recycle`) under its own lock, so no reader still holds
    the path a new blob is written to.
    """

    def __init__(self, budget: int = 0) -> None:
        self.budget = budget
        self._directory: Path | None = None
        self._finalizer: weakref.finalize[..., Spool] | None = None
        self._names = itertools.count()
        self._free: list[str] = []
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path | None:
        """The directory, once something was spilled (and until `close`)."""
        return self._directory

    async def spill(self, blob: Blob, *, relayed: Blob | None = None) -> None:
        """Move `blob`'s bytes to a file of their own; on a write error they stay in memory.
        (`relayed`: the record's relayed body, written unhashed.)"""
        found = blob.pieces()
        if found is None:
            return
        pieces, is_base64 = found
        path = self.new_path()
        # Bytes as they are (not a provider's base64, nor a relayed body that is parsed later) are hashed
        # on the way out: the sha256 stays known when they are dropped unread, as it did in memory.
        digest = not is_base64 and blob is not relayed
        try:
            if sum(len(p) for p in pieces) > INLINE_WRITE_MAX:
                blob.sha256 = await asyncio.to_thread(_write, path, pieces, digest)
            else:
                blob.sha256 = _write(path, pieces, digest)
        except OSError as exc:
            log.warning("journal: could not write image bytes to %s (%s); keeping them in memory", path, exc)
            return
        blob.source = self.on_disk(path, base64=is_base64)

    def spill_now(self, blob: Blob) -> None:
        """`spill` for a caller already off the event loop (a reader settling an entry in a thread)."""
        found = blob.pieces()
        if found is None:
            return
        path = self.new_path()
        try:
            blob.sha256 = _write(path, found[0], not found[1])
        except OSError as exc:
            log.warning("journal: could not write image bytes to %s (%s); keeping them in memory", path, exc)
            return
        blob.source = self.on_disk(path, base64=found[1])

    def sink(self) -> SpoolSink:
        """A file a relayed body is written to as it goes by, so no request holds its answer twice."""
        return SpoolSink(self)

    def on_disk(self, path: str, *, base64: bool = False) -> OnDisk:
        return OnDisk(path, base64=base64, release=self.recycle)

    def new_path(self) -> str:
        """A file to write: a dropped blob's, or a new one (the directory made on first use)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._directory is None:
                where = scratch_dir(self.budget)
                remove_orphans(Path(where or tempfile.gettempdir()))
                prefix = f"allm-journal-{os.getpid()}-"
                self._directory = Path(tempfile.mkdtemp(prefix=prefix, dir=where))  # mode 0700
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
            return str(self._directory / f"{next(self._names)}.bin")

    def recycle(self, path: str) -> None:
        """`path`'s bytes are dropped: keep the file for the next blob, or delete it."""
        with self._lock:
            if (
                self._directory is not None
                and len(self._free) < RECYCLED_FILES
                and path.startswith(str(self._directory) + os.sep)
            ):
                self._free.append(path)
                return
        OnDisk(path).remove()

    def close(self) -> None:
        """Remove the directory and its files; a later spill makes a new one."""
        with self._lock:
            finalizer, self._finalizer, self._directory = self._finalizer, None, None
            self._free = []
        if finalizer is not None:
            finalizer()


class SpoolSink:
    """One relayed body on its way to a spool file: chunks are written as they go by (a page-cache
    write of one chunk costs less than holding it). A write error abandons the body (its entry then
    says its images are not known)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.size = 0
        self._path: str | None = None
        self._fd: int | None = None
        self._failed = False

    def write(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            if self._fd is None:
                self._path = self.spool.new_path()
                self._fd = _open(self._path)
            write_all(self._fd, chunk)
            self.size += len(chunk)
        except OSError as exc:
            log.warning("journal: could not write a relayed answer to %s (%s); not keeping it", self._path, exc)
            self.abandon()
            self._failed = True

    def blob(self, content_type: str) -> Blob:
        fd, self._fd = self._fd, None
        if fd is None or self._path is None:
            return Blob(None, 0, declared_mime=content_type)
        try:
            os.ftruncate(fd, self.size)  # a reused file may have been longer
        finally:
            os.close(fd)
        return Blob(self.spool.on_disk(self._path), self.size, declared_mime=content_type)

    def abandon(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self._path is not None:
            self.spool.recycle(self._path)
            self._path = None
        self.size = 0


def _open(path: str) -> int:
    # No O_TRUNC: a reused file's pages are overwritten in place, and cut to size when done.
    return os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:  # a write may take less than it was given
        view = view[os.write(fd, view) :]


def _write(path: str, pieces: Chunks, digest: bool) -> str | None:
    """Write `pieces` to `path` (a new or a reused file); their sha256 when `digest`."""
    hasher = hashlib.sha256() if digest else None
    fd = _open(path)
    try:
        size = 0
        for piece in pieces:
            write_all(fd, piece)
            size += len(piece)
            if hasher is not None:
                hasher.update(piece)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return hasher.hexdigest() if hasher is not None else None
