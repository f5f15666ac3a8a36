"""Atomic cassette writes: a temp file in the same directory, fsync, then os.replace.

A reader (or a process killed mid-write) sees the old file or the new one,
never half of one. `AtomicPersister` is the same thing behind vcrpy's persister
interface, for plain vcrpy users: ``my_vcr.register_persister(AtomicPersister)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vcr.persisters.filesystem import FilesystemPersister
from vcr.serialize import serialize

TEMP_SUFFIX = ".allm-tmp"
# mkstemp makes files 0600; a cassette is a shared fixture. (Reading the umask means
# changing it, which races with other threads, so the common default is used.)
_DEFAULT_MODE = 0o644


def write_atomic(path: str | Path, chunks: Iterable[str]) -> None:
    """Write the concatenated chunks to `path` so that it is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, _DEFAULT_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            # Without fsync a power cut after the rename can leave an empty file.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` for writing `path` (blocking), across the processes of this host.

    The cassette itself is replaced by each write (os.replace), so the lock is
    taken on what stays: the cassette's directory (flock works on a directory's
    descriptor, and no lock file clutters the cassettes). Every process
    recording into that directory takes it around its read-merge-write.
    flock does not cross hosts.
    """
    directory = Path(path).parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_stale_temps(path: Path, older_than: float = 60.0) -> None:
    """Delete temp files a killed writer of `path` left behind (the cassette itself is intact)."""
    now = time.time()
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - temp.stat().st_mtime > older_than:
                temp.unlink()


def is_empty(path: Path) -> bool:
    """vcrpy treats a missing or blank cassette as not recorded yet."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    if size > 4096:
        return False
    return not path.read_bytes().strip()


class AtomicPersister:
    """vcrpy's FilesystemPersister with atomic saves."""

    @classmethod
    def load_cassette(cls, cassette_path: str | Path, serializer: Any) -> Any:
        return FilesystemPersister.load_cassette(cassette_path, serializer)

    @staticmethod
    def save_cassette(cassette_path: str | Path, cassette_dict: dict[str, Any], serializer: Any) -> None:
        write_atomic(cassette_path, [serialize(cassette_dict, serializer)])
