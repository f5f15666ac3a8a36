"""Bytes the kernel sends from a memory file of their own: a kept answer, sent again and again.

    body = file_backed(answer)   # a FileBytes when worth it (big enough, Linux), else `answer` itself
    body.fd                      # a memfd holding the same bytes, closed when `body` is garbage

A `FileBytes` is an ordinary `bytes` to everyone (the journal, the ASGI messages, a test client);
only the connection layer (`http_guard.HeadWithBody`) looks for it, and gives the socket the file
with `os.sendfile` instead of copying the bytes in with `writev`. Why: a kept replay answer is the
same 226 KB for every repeat, and copying it into the socket was a quarter of its CPU; worse, the
copy ran through the CPU's caches, so the Python code that followed ran cold. From the file the
kernel hands the socket the file's pages, and the process never touches the bytes. Measured: replay
small C=16 +5-16% req/s across runs (docs/benchmarks.md, issue 15 part 9).

The price is a second copy of the bytes, in the memory file (shared memory, outside the heap), which
is why the answer cache counts it against its budget, and why only answers of `MIN_BYTES` to
`MAX_BYTES` are file-backed (a bigger one was sent slower from its file), at most `MAX_FILES` at a
time (each holds a file descriptor).
"""

from __future__ import annotations

import os
import threading

from ..journal.spool import write_all

# Below this a copy costs less than the file (a memfd, a write, a descriptor).
MIN_BYTES = 64 * 1024
# Above this sendfile lost: a 3.2 MB kept answer was sent 15-28% slower from its file than by writev
# (more than a socket buffer takes at once; the rest is queued as a copy either way).
MAX_BYTES = 1024 * 1024
# File descriptors held by kept answers at most; past it answers stay plain bytes.
MAX_FILES = 64

_memfd_create = getattr(os, "memfd_create", None)  # Linux only
_sendfile = getattr(os, "sendfile", None)
_lock = threading.RLock()  # re-entrant: `__del__` may run inside a collection that began while it was held
_live = 0


class FileBytes(bytes):
    """`bytes` with a memory file (`fd`, a memfd) that holds the same bytes, for `os.sendfile`.
    The file is read-only in effect: it is written once here and never again, so a send still in
    the kernel's hands when the object goes keeps the pages it was given."""

    fd: int

    def __reduce_ex__(self, protocol: object) -> tuple[type[bytes], tuple[bytes]]:
        return (bytes, (bytes(self),))  # a copy is plain bytes: one object owns the file

    def __del__(self) -> None:
        global _live
        fd = self.__dict__.pop("fd", None)
        if fd is not None:
            _close(fd)
            with _lock:
                _live -= 1


_close = os.close  # bound now: `__del__` may run late in the interpreter's shutdown


def file_backed(data: bytes) -> bytes:
    """`data` as a `FileBytes` when this system can send from a memory file, `data` is between
    `MIN_BYTES` and `MAX_BYTES` and fewer than `MAX_FILES` are live; else `data` itself (also if the
    file cannot be made)."""
    global _live
    if _memfd_create is None or _sendfile is None or not MIN_BYTES <= len(data) <= MAX_BYTES:
        return data
    if isinstance(data, FileBytes):
        return data
    with _lock:
        if _live >= MAX_FILES:
            return data
        _live += 1
    try:
        fd = _memfd_create("allm-kept-answer")  # close-on-exec by default
        try:
            write_all(fd, data)
        except OSError:
            _close(fd)
            raise
    except OSError:
        with _lock:
            _live -= 1
        return data
    backed = FileBytes(data)
    backed.fd = fd
    return backed


def live_files() -> int:
    """How many `FileBytes` hold a file now."""
    return _live
